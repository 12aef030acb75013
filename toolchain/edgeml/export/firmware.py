"""The firmware forms ``edgeml firmware`` writes, in one registry, and which one a bundle gets by default.

* ``tflm``: the TFLite file as a C array for TensorFlow Lite Micro
  (:mod:`edgeml.export.tflite.firmware`);
* ``c``: the model as plain C tables and loops (:mod:`edgeml.export.c`).

A bundle's default is its target profile's ``firmware`` key, as the manifest
records it (a bundle built before the key existed: the built-in profile of
the same name, else ``tflm``).

Example::

    write_firmware_form("dist/sensors-1", "firmware/")          # the profile's form
    write_firmware_form("dist/sensors-1", "firmware/", "tflm")  # TFLite Micro whatever the profile says
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgeml.errors import ExportError, TargetError
from edgeml_runtime.bundle import open_bundle, read_manifest

#: Form name -> the function writing it: ``(bundle, out, artifact) -> [written paths]``.
FIRMWARE_WRITERS: dict[str, Callable[..., list[Path]]] = {}


def register_form(name: str, writer: Callable[..., list[Path]]) -> None:
    """Add a firmware form; a name registered twice is refused."""
    if name in FIRMWARE_WRITERS:
        raise ValueError(f"firmware form {name!r} is already registered")
    FIRMWARE_WRITERS[name] = writer


def default_form(bundle) -> str:
    """The firmware form of ``bundle``'s target profile."""
    with open_bundle(bundle) as folder:
        target = read_manifest(folder).target
    if target.firmware:
        return target.firmware
    from edgeml.targets.profiles import load_target

    try:
        return load_target(target.name).firmware
    except TargetError:
        return "tflm"


def write_firmware_form(bundle, out, form: str | None = None, artifact: str | None = None) -> list[Path]:
    """Write firmware sources of ``form`` for ``bundle`` into the folder ``out``: by default ``tflm`` when an
    ``artifact`` (a TFLite file) is named, else :func:`default_form`."""
    form = form or ("tflm" if artifact is not None else default_form(bundle))
    writer = FIRMWARE_WRITERS.get(form)
    if writer is None:
        raise ExportError(f"firmware form {form!r} is unknown; edgeml writes {', '.join(FIRMWARE_WRITERS)}")
    if artifact is not None and form != "tflm":
        raise ExportError(f"--artifact picks a TFLite file for --form tflm; the {form} form is written from the "
                          "bundle's model.onnx: drop --artifact, or add --form tflm")
    return writer(bundle, out, artifact)


def _tflm(bundle, out, artifact):
    from edgeml.export.tflite.firmware import write_firmware

    return write_firmware(bundle, out, artifact)


def _plain_c(bundle, out, artifact):
    """The model's C, and for a microcontroller profile the example project around it (main.c, startup, link
    script, Makefile) scoring the bundle's sample rows, ``make check`` holding the board to the host's bits."""
    from edgeml.export.c import write_c_firmware
    from edgeml.firmware.project import checked_project

    return [*write_c_firmware(bundle, out), *checked_project(bundle, out)]


register_form("tflm", _tflm)
register_form("c", _plain_c)

__all__ = ["FIRMWARE_WRITERS", "default_form", "register_form", "write_firmware_form"]
