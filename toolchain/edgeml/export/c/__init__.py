"""Plain C beside TensorFlow Lite Micro: a bundle's model as C99 const tables and loops, exact in float32.

``edgeml firmware BUNDLE --form c`` writes ``edgeml_model.h`` and
``edgeml_model.c``: the preprocessing (imputation, category one-hot,
scaling), the model (tree ensembles walked over flat tables with the
smallest integer types that fit, see :mod:`.forest`; linear models and MLPs
as const float weights and their activations, see :mod:`.steps`), softmax or
the logistic function, and the decision threshold, with no interpreter, no
tensor arena, no heap and no recursion. The API is in :mod:`.sources`.

Where the model comes from: the bundle's ``model.onnx``, read node by node
(:mod:`.reader`, whose docstring says why ONNX and not a TFLite file), never a
pickled estimator. :func:`const_bytes` gives the exact const data the
generated C holds; :mod:`.size` sizes a fitted model's C form the same way
for the search, before any bundle exists.

Example::

    write_c_firmware("dist/sensors-1", "firmware/")   # -> firmware/edgeml_model.h, firmware/edgeml_model.c
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from edgeml.errors import ExportError
from edgeml.export.c.program import Program
from edgeml.export.c.reader import read_onnx
from edgeml.export.c.sources import HEADER, SOURCE, c_sources, title
from edgeml.export.inverse import NODE_PREFIX
from edgeml_runtime.bundle import open_bundle, read_manifest


def bundle_program(manifest, data: bytes, art) -> Program:
    """The :class:`Program` of a bundle's ONNX artifact ``art`` (its bytes ``data``)."""
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # a DecodeError of protobuf's
        raise ExportError(f"{art.path} is not an ONNX model ({exc}); rebuild the bundle") from None
    output = art.outputs.get("probabilities") or art.outputs.get("value")
    if output is None:
        raise ExportError(f"{art.path}: the manifest names none of its outputs; rebuild the bundle")
    return read_onnx(model, manifest.schema, output)


def reference_artifact(manifest):
    """The bundle's fp32 ONNX model, which every other artifact is verified against."""
    found = [a for a in manifest.artifacts if a.format == "onnx" and a.precision == "fp32"]
    if not found:
        raise ExportError("the bundle has no fp32 ONNX model to write C from; rebuild it with this edgeml")
    return found[0]


def read_bundle(bundle) -> tuple[object, object, bytes, Program]:
    """The manifest of ``bundle`` (a folder or ``.tar.gz``), its ONNX artifact, that file's bytes, and its
    :class:`Program`."""
    with open_bundle(bundle) as folder:
        manifest = read_manifest(folder)
        art = reference_artifact(manifest)
        data = folder.artifact(art)
    return manifest, art, data, bundle_program(manifest, data, art)


def bundle_sources(bundle) -> tuple[str, str, Program]:
    """The header's and the source's text for ``bundle``, and the program they hold."""
    manifest, art, data, program = read_bundle(bundle)
    classes = [str(c) for c in manifest.classes or ()]
    threshold = manifest.decision.threshold if manifest.decision is not None else None
    inverse = any(n.name.startswith(NODE_PREFIX) for n in onnx.load_from_string(data).graph.node)
    note = "The label was learnt on a log scale; edgeml_predict ends with the inverse: out[0] is the label." \
        if inverse else ""
    header, source = c_sources(program, title(manifest.name, manifest.version, art.path, art.sha256), classes,
                               threshold, note)
    return header, source, program


def write_c_firmware(bundle, out) -> list[Path]:
    """Write :data:`HEADER` and :data:`SOURCE` (plain C) for ``bundle`` into the folder ``out``."""
    header, source, _ = bundle_sources(bundle)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / HEADER).write_text(header, encoding="ascii")
    (out / SOURCE).write_text(source, encoding="ascii")
    return [out / HEADER, out / SOURCE]


@dataclass(frozen=True)
class CForm:
    """What the plain-C form of an exported model takes on a 32-bit board: ``flash`` (const data and code, as
    :mod:`.size` counts it) and ``ram`` (the float buffers of one row, on the stack)."""

    flash: int
    ram: int


def c_form(data: bytes, schema, output: str, task: str, classes=()) -> CForm:
    """The :class:`CForm` of ``model.onnx`` (its bytes ``data``, graph output ``output``) as the build exports it,
    before any bundle exists; :class:`~edgeml.errors.ExportError` says why the C form cannot be written."""
    from edgeml.export.c.size import c_ram_bytes, program_code_bytes

    program = read_onnx(onnx.load_from_string(data), schema, output)
    flash = program.const_bytes(classes)["total"] + program_code_bytes(program, task)
    return CForm(flash, c_ram_bytes(program))


def const_bytes(bundle, pointer_bytes: int = 4) -> dict[str, int]:
    """The exact bytes of const data the generated C of ``bundle`` holds: ``tables``, ``strings``, ``total``
    (:meth:`Program.const_bytes`)."""
    manifest, _, _, program = read_bundle(bundle)
    return program.const_bytes(manifest.classes or (), pointer_bytes)


__all__ = ["HEADER", "SOURCE", "CForm", "bundle_program", "bundle_sources", "c_form", "const_bytes", "read_bundle",
           "reference_artifact", "write_c_firmware"]
