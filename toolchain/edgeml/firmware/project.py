"""The example firmware project written next to a plain-C model: it scores rows on the device and checks them.

The plain-C model (``edgeml_model.h`` / ``edgeml_model.c``) has one fixed API::

    #define EDGEML_N_FEATURES n   /* the float row, in edgeml_feature_names order */
    #define EDGEML_N_OUTPUTS k    /* class probabilities, or 1 value */
    #define EDGEML_CLASSIFIER 1 or 0
    extern const char *const edgeml_feature_names[EDGEML_N_FEATURES];
    void edgeml_predict(const float *x, float *out);
    int edgeml_label(const float *p);   /* classifiers only */

A row is float32: numbers as they are, NAN for a missing one, a category as its code (its position
in the input column's ``categories``, -1 if unknown), which :func:`float_rows` makes from raw rows
exactly as ``edgeml_runtime`` encodes them. Around the model this module writes:

* ``main.c``: scores every row of ``edgeml_rows.h``, prints each row's outputs (float32 bits in hex)
  and label, then ``checksum <hex>`` and ``stack <bytes>``;
* ``startup.c``, ``edgeml_startup.h``: the vector table, a reset handler (FPU on, ``.data`` copied,
  ``.bss`` zeroed, the stack painted) and semihosted output and exit;
* ``link.ld``: the part's flash and RAM (the target's ``[mcu]`` table) on the emulated board's memory map;
* ``Makefile``: ``make``, ``make run`` (QEMU), ``make check`` (the printed checksum against the host's);
* ``edgeml_rows.h`` and ``expected.mk``: the rows and the checksum the host computed on them
  (:func:`write_rows` for any float32 rows; :func:`write_bundle_rows` for a bundle's sample rows and
  their stored outputs, or raw records scored through ``edgeml_runtime``).

**The checksum** is 32-bit FNV-1a over, row after row, the row's outputs as float32 bytes
(little-endian) and then, for a classifier, its label as a little-endian int32. The host computes it
from numpy arrays (:func:`checksum`), so one line says whether the device computed, bit for bit,
what the host expected. Bit for bit is right when the host reproduces the C's float32 arithmetic; a
plain-C model of an ONNX or TFLite artifact agrees with the artifact within the manifest's tolerance
instead, which :func:`edgeml.firmware.parity.compare_outputs` checks on the rows the firmware printed.

Example:

>>> f"{checksum(np.array([[0.25, 0.75]], np.float32), np.array([1])):08x}"
'9f7354c3'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from edgeml.errors import EdgeMLError, ExportError, TargetError
from edgeml.export.tflite.firmware import c_comment, c_float, c_string
from edgeml.export.tflite.metadata import schema_tables
from edgeml.targets.profiles import TargetProfile, load_target
from edgeml_runtime.bundle import open_bundle, read_manifest
from edgeml_runtime.features import FeatureEncoder
from edgeml_runtime.litert import feeds_to_matrix
from edgeml_runtime.manifest import Manifest
from edgeml_runtime.samples import read_samples, score_rows
from edgeml_runtime.schema import InputSchema

ROWS, EXPECTED = "edgeml_rows.h", "expected.mk"
#: Copied as they are; ``link.ld`` and ``Makefile`` are filled in from the target profile.
STATIC_FILES = ("main.c", "startup.c", "edgeml_startup.h")
FNV_OFFSET, FNV_PRIME = 2166136261, 16777619
#: How the Makefile and :func:`edgeml.firmware.emulate.run` start QEMU: no display, monitor or UART; semihosting
#: on, its console on QEMU's standard output (by default it would go to standard error).
QEMU_FLAGS = ("-display", "none", "-monitor", "none", "-serial", "none", "-chardev", "stdio,id=semihosting",
              "-semihosting-config", "enable=on,target=native,chardev=semihosting")


def checksum(outputs: np.ndarray, labels: np.ndarray | None = None) -> int:
    """FNV-1a (32 bits) over each row's float32 outputs then its int32 label, all little-endian bytes.

    ``outputs`` is ``(rows, k)`` (any float dtype: it is rounded to float32 first, as the device
    computes), ``labels`` the class index of each row for a classifier, ``None`` for a regressor.
    """
    out = np.ascontiguousarray(np.asarray(outputs, dtype="<f4").reshape(len(outputs), -1))
    width = out.shape[1] * 4
    rows = out.view(np.uint8).reshape(len(out), width)
    if labels is not None:
        codes = np.ascontiguousarray(np.asarray(labels, dtype="<i4").reshape(-1, 1)).view(np.uint8)
        rows = np.concatenate([rows, codes.reshape(len(out), 4)], axis=1)
    h = FNV_OFFSET
    for b in rows.tobytes():
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h


def float_rows(schema: InputSchema, records: Sequence[Mapping]) -> np.ndarray:
    """Raw records as the ``(rows, EDGEML_N_FEATURES)`` float32 matrix the C model takes.

    Through the runtime's own :class:`~edgeml_runtime.features.FeatureEncoder` (numbers and their
    formats, booleans, datetime parts; missing is NaN) and code tables (a category is its position,
    -1 if unknown or missing), so the device sees what ``edgeml_runtime`` would feed a model.
    """
    columns = {c.name: [r.get(c.name) for r in records] for c in schema.columns}
    feeds, errors = FeatureEncoder(schema).encode(columns, len(records))
    if errors:
        first = errors[min(errors)]
        raise ExportError(f"the rows cannot be encoded for the model: {first} ({len(errors)} row(s) in all)")
    return feeds_to_matrix(feeds, schema_tables(schema), schema.features)


def write_project(out, profile: TargetProfile | str) -> list[Path]:
    """Write the project files that do not depend on the rows (main.c, startup, link.ld, Makefile) into ``out``."""
    profile = load_target(profile) if isinstance(profile, str) else profile
    mcu = profile.mcu
    if mcu is None:
        raise TargetError(f"target {profile.name!r} has no [mcu] table, so there is no firmware to build for it; "
                          "use a microcontroller profile (cortex-m7, cortex-m4) or add the table (docs/firmware.md)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fields = {"PROFILE": c_comment(profile.name), "CPU": c_comment(profile.cpu), "BOARD": mcu.board.machine,
              "ARCH_FLAGS": " ".join(mcu.cflags), "FLASH": str(mcu.flash_bytes), "RAM": str(mcu.ram_bytes),
              "STACK": str(mcu.stack_bytes), "FLASH_ORIGIN": f"0x{mcu.board.flash_origin:08x}",
              "RAM_ORIGIN": f"0x{mcu.board.ram_origin:08x}", "QEMU_FLAGS": " ".join(QEMU_FLAGS)}
    written = []
    for name in STATIC_FILES:
        written.append(out / name)
        written[-1].write_text(_template(name), encoding="ascii")
    for name, template in (("link.ld", "link.ld.in"), ("Makefile", "Makefile.in")):
        text = _template(template)
        for key, value in fields.items():
            text = text.replace(f"@@{key}@@", value)
        written.append(out / name)
        written[-1].write_text(text, encoding="ascii")
    return written


def _template(name: str) -> str:
    return resources.files("edgeml.firmware").joinpath("files", name).read_text(encoding="ascii")


def write_rows(out, rows: np.ndarray, outputs: np.ndarray, labels: np.ndarray | None = None,
               features: Sequence[str] | None = None) -> int:
    """Write ``rows`` (float32, ``(n, EDGEML_N_FEATURES)``) as the project's ``edgeml_rows.h``, and the checksum of
    what the device must compute on them (``outputs``, ``labels``: see :func:`checksum`) into ``expected.mk``.

    ``features`` (the row's column names) makes the firmware check, before scoring, that the model takes
    the same features in the same order. Returns the checksum.
    """
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or len(rows) == 0 or len(outputs) != len(rows):
        raise ExportError(f"rows must be a non-empty (rows, features) matrix with one output row each; got shape "
                          f"{rows.shape} and {len(outputs)} output rows")
    if features is not None and len(features) != rows.shape[1]:
        raise ExportError(f"{len(features)} feature names for rows of {rows.shape[1]} features")
    expected = checksum(outputs, labels)
    body = ",\n".join("    {" + ", ".join(c_float(v) for v in row) + "}" for row in rows)
    names = [] if features is None else [
        f"#define EDGEML_ROW_NAMES 1\nstatic const char *const edgeml_row_features[EDGEML_ROW_FEATURES] = "
        f"{{{', '.join(c_string(f) for f in features)}}};"]
    text = "\n".join([
        "/* The rows the example firmware scores, as float32 rows of the model's features (NAN: missing, a",
        f"   category: its code). Written by edgeml.firmware.project.write_rows: {len(rows)} rows; on them the",
        f"   host expects checksum {expected:08x} (expected.mk). */",
        "#ifndef EDGEML_ROWS_H", "#define EDGEML_ROWS_H", "#include <math.h>", "",
        f"#define EDGEML_N_ROWS {len(rows)}", f"#define EDGEML_ROW_FEATURES {rows.shape[1]}", *names,
        f"static const float edgeml_rows[EDGEML_N_ROWS][EDGEML_ROW_FEATURES] = {{\n{body}\n}};",
        "#endif", ""])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ROWS).write_text(text, encoding="ascii")
    (out / EXPECTED).write_text(f"# The checksum the host computed on {ROWS} (edgeml.firmware.project.checksum).\n"
                                f"EXPECTED_CHECKSUM = {expected:08x}\n", encoding="ascii")
    return expected


def float_artifact(manifest: Manifest, artifact: str | None = None) -> str:
    """``artifact``, or the bundle's first float32 artifact: the one a plain-C model is written from."""
    if artifact is not None:
        return artifact
    fp32 = [a.path for a in manifest.artifacts if a.precision == "fp32"]
    if not fp32:
        raise ExportError("the bundle has no float32 artifact whose outputs the firmware could be checked against; "
                          "pass the artifact's path")
    return fp32[0]


def bundle_rows(manifest: Manifest, folder, artifact: str | None = None, records: Sequence[Mapping] | None = None):
    """Rows of the bundle in ``folder`` as float rows, and what ``artifact`` computes on them: ``(rows, outputs,
    labels)``, ``labels`` the class indices (``None`` for regression).

    Without ``records``, the bundle's sample rows and the outputs stored with them; with ``records`` (raw
    rows, e.g. 1,000 of a test split), those rows scored now through ``edgeml_runtime``. ``artifact``
    defaults to the first float32 artifact (the one a plain-C model is written from).
    """
    artifact = float_artifact(manifest, artifact)
    if records is None:
        samples = read_samples(folder, manifest)
        records, expected = samples.rows, samples.outputs_for(artifact)
    else:
        expected = score_rows(folder, artifact, [{c: r.get(c) for c in manifest.schema.names} for r in records])
    rows = float_rows(manifest.schema, records)
    if expected.labels is None:
        return rows, expected.values.astype(np.float32).reshape(-1, 1), None
    index = {c: i for i, c in enumerate(manifest.classes)}
    return rows, expected.probabilities.astype(np.float32), np.array([index[c] for c in expected.labels], np.int32)


def write_bundle_rows(bundle, out, records: Sequence[Mapping] | None = None, *, artifact: str | None = None) -> int:
    """Write ``records`` (default: the bundle's sample rows) as the project's rows, with the checksum of what
    ``artifact`` computes on them (:func:`bundle_rows`); returns the checksum."""
    with open_bundle(bundle) as folder:
        manifest = read_manifest(folder)
        rows, outputs, labels = bundle_rows(manifest, folder, artifact, records)
    return write_rows(out, rows, outputs, labels, manifest.schema.features)


def write_bundle_project(bundle, out, *, artifact: str | None = None, target: TargetProfile | str | None = None,
                         records: Sequence[Mapping] | None = None) -> list[Path]:
    """Write the example project for ``bundle`` into ``out``, next to its plain-C model, scoring ``records``
    or the bundle's sample rows (:func:`write_bundle_rows`).

    ``target`` defaults to the profile the bundle was built for (the manifest's ``target.source``).
    """
    if target is None:
        with open_bundle(bundle) as folder:
            target = bundle_target(read_manifest(folder).target)
    written = write_project(out, target)
    write_bundle_rows(bundle, out, records, artifact=artifact)
    return [*written, Path(out) / ROWS, Path(out) / EXPECTED]


def bundle_target(recorded) -> str:
    """The profile a bundle was built for, from its manifest's ``target``: the file it came from, unless that
    is one of the shipped ``targets/``, then its name."""
    return recorded.source if recorded.source and not recorded.source.startswith("targets/") else recorded.name


def checked_project(bundle, out) -> list[Path]:
    """The example project for the plain-C model already in ``out``, on the bundle's sample rows, when the
    bundle's profile has an ``[mcu]`` table (none otherwise).

    The checksum ``make check`` expects is the one of the same C compiled for this machine
    (:mod:`edgeml.firmware.host`), which a board must equal to the bit; without a host C compiler, the one
    of the bundle's stored outputs (exact for tree models, whose C repeats ONNX Runtime's operations).
    """
    from edgeml.firmware.host import compiler, host_outputs

    with open_bundle(bundle) as folder:
        manifest = read_manifest(folder)
        try:
            profile = load_target(bundle_target(manifest.target))
        except EdgeMLError:
            return []
        if profile.mcu is None:
            return []
        rows, outputs, labels = bundle_rows(manifest, folder)
    written = write_project(out, profile)
    if compiler() is not None:
        outputs, labels = host_outputs(out, rows)
    write_rows(out, rows, outputs, labels, manifest.schema.features)
    return [*written, Path(out) / ROWS, Path(out) / EXPECTED]


__all__ = ["EXPECTED", "QEMU_FLAGS", "ROWS", "bundle_rows", "bundle_target", "checked_project", "checksum",
           "float_artifact", "float_rows", "write_bundle_project", "write_bundle_rows", "write_project", "write_rows"]
