"""C sources that put a bundle's TFLite model into microcontroller firmware built with TensorFlow Lite Micro.

:func:`write_firmware` writes two files for one ``.tflite`` artifact:

* ``edgeml_model.c``: the file's bytes as a 16-byte aligned array;
* ``edgeml_model.h``: sizes, the feature order and category code tables,
  the operators to register (``EDGEML_REGISTER_OPS(resolver)`` for a
  ``tflite::MicroMutableOpResolver<EDGEML_N_OPS>``), the arena size TFLM
  measured at build time, and for a full-integer model ``edgeml_encode``
  (a float row to the int8 input tensor) and ``edgeml_output`` (an int8
  output to its value; not written when the output tensor is float32, as
  for a label learnt on a log scale, whose graph ends with ``DEQUANTIZE``
  and the inverse: ``EXP`` is then among the operators registered).

Nothing from the bundle enters the sources as it is: names, codes and
classes become C string literals of escaped bytes (:func:`c_string`), text
in comments is cut to a whitelist (:func:`c_comment`: no ``*/``, ``/*``,
``??`` trigraphs, newlines or non-ASCII), operator names must be TFLite
builtin names (:func:`resolver_method`), and numbers are formatted from
``int``/``float`` values. A bundle called ``x */ int evil; /*`` gets a comment,
not a declaration.

Every float constant is written as a C99 hexadecimal literal, so the C code
holds exactly the float32 values the runtime uses: ``edgeml_encode``,
(which turns off fused multiply-adds and refuses fast-math), gives the same int8 input as
:meth:`edgeml_runtime.litert.Encoding.quantized` (a test compiles it with
the host's C compiler and compares).

Example::

    write_firmware("dist/sensors-1", "firmware/")   # -> firmware/edgeml_model.h, firmware/edgeml_model.c
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from edgeml.errors import ExportError
from edgeml.export.csource import STRICT_FLOAT, c_comment, c_float, c_string, label_rule
from edgeml.export.csource import c_array as _array
from edgeml_runtime.bundle import open_bundle, read_manifest
from edgeml_runtime.litert import Encoding, read_metadata

HEADER, SOURCE = "edgeml_model.h", "edgeml_model.c"
#: TFLM resolver methods whose names are not the operator's name in CamelCase.
_RESOLVER_NAMES = {
    "BATCH_MATMUL": "AddBatchMatMul", "CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "MAX_POOL_2D": "AddMaxPool2D", "L2_POOL_2D": "AddL2Pool2D",
    "CUMSUM": "AddCumSum", "PADV2": "AddPadV2", "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
}


_OPERATOR = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def resolver_method(op: str) -> str:
    """The ``MicroMutableOpResolver`` method that registers builtin ``op`` (a TFLite builtin name, else refused).

    >>> resolver_method("FULLY_CONNECTED"), resolver_method("SELECT_V2"), resolver_method("BATCH_MATMUL")
    ('AddFullyConnected', 'AddSelectV2', 'AddBatchMatMul')
    >>> resolver_method("GREATER_EQUAL"), resolver_method("CONV_2D")
    ('AddGreaterEqual', 'AddConv2D')
    """
    if not isinstance(op, str) or not _OPERATOR.fullmatch(op):
        raise ExportError(f"operator {op!r} in the manifest's transform.operators is not a TFLite builtin operator "
                          "name (upper-case letters, digits and '_'); rebuild the bundle")
    return _RESOLVER_NAMES.get(op) or "Add" + "".join(part.capitalize() for part in op.split("_"))


def pick_artifact(manifest, artifact: str | None):
    tflite = [a for a in manifest.artifacts if a.format == "tflite"]
    if artifact is not None:
        chosen = [a for a in manifest.artifacts if a.path == artifact]
        if not chosen or chosen[0].format != "tflite":
            raise ExportError(f"--artifact {artifact!r} is not a TFLite artifact of this bundle; it has "
                              f"{', '.join(a.path for a in tflite) or 'none'}")
        return chosen[0]
    if not tflite:
        refused = "; ".join(f"{n.precision}: {n.reason}" for n in manifest.not_shipped if n.format == "tflite")
        if refused:  # a plain-C target whose TFLite file did not fit
            raise ExportError(f"the bundle has no TFLite artifact to put into firmware (not shipped: {refused}); "
                              "write the plain C instead (--form c), or rebuild for a profile with room for it")
        raise ExportError("the bundle has no TFLite artifact to put into firmware; build it for a target that "
                          "runs TFLite, e.g. --target cortex-m7")
    micro = [a for a in tflite if a.transform is not None and a.transform.op_set == "tflite-micro"]
    return (micro or tflite)[0]


def write_firmware(bundle, out, artifact: str | None = None) -> list[Path]:
    """Write :data:`HEADER` and :data:`SOURCE` for one TFLite artifact of ``bundle`` into the folder ``out``."""
    out = Path(out)
    with open_bundle(bundle) as folder:
        manifest = read_manifest(folder)
        art = pick_artifact(manifest, artifact)
        data = folder.artifact(art)
    threshold = None if manifest.decision is None else manifest.decision.threshold
    header, source = firmware_sources(manifest.name, manifest.version, art, data, threshold=threshold)
    out.mkdir(parents=True, exist_ok=True)
    (out / HEADER).write_text(header, encoding="ascii")
    (out / SOURCE).write_text(source, encoding="ascii")
    return [out / HEADER, out / SOURCE]


def firmware_sources(name: str, version: str, art, data: bytes, meta: dict | None = None, *,
                     threshold: float | None = None) -> tuple[str, str]:
    """The text of :data:`HEADER` and :data:`SOURCE` for artifact ``art`` (its bytes ``data``) of bundle ``name``.

    ``meta`` is the artifact's edgeml metadata (read from ``data`` when None);
    ``threshold`` the manifest's binary decision threshold, which
    ``edgeml_label`` applies as the runtime does (argmax without one).
    Every value from the bundle is escaped or checked on its way in.
    """
    if meta is None:
        raw = read_metadata(data)
        if raw is None:
            raise ExportError(f"{art.path} has no edgeml metadata; rebuild the bundle")
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise ExportError(f"{art.path}: its edgeml metadata is not JSON ({exc}); rebuild the bundle") from None
    try:
        declarations, definitions = _parts(meta, art.transform.to_dict() if art.transform else {}, threshold)
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{art.path}: its edgeml metadata is malformed ({exc!r}); rebuild the bundle") from None
    title = (f"Generated by edgeml for {c_comment(name)} v{c_comment(version)}: {c_comment(art.path)} "
             f"({c_comment(art.precision)}, {len(data):,} bytes, sha256 {c_comment(art.sha256[:16])}...). Do not "
             "edit; regenerate with `edgeml firmware`.")
    return render_sources(title, data, declarations, definitions)


def render_sources(title: str, data: bytes, declarations: list[str], definitions: list[str]) -> tuple[str, str]:
    """The header's and the source's text around the model's bytes (``title`` already :func:`c_comment` safe)."""
    header = "\n".join([
        f"/* {title} */", "#ifndef EDGEML_MODEL_H", "#define EDGEML_MODEL_H", "", "#include <stdint.h>", "",
        "#ifdef __cplusplus", 'extern "C" {', "#endif", "", *declarations, "",
        "#ifdef __cplusplus", "}", "#endif", "#endif  /* EDGEML_MODEL_H */", ""])
    hexed = [f"0x{b:02x}" for b in data]
    model = ",\n    ".join(", ".join(hexed[i:i + 16]) for i in range(0, len(hexed), 16))
    source = "\n".join([
        f"/* {title} */", "#include <math.h>", "#include <string.h>", f'#include "{HEADER}"', "",
        *STRICT_FLOAT, "",
        "/* TFLite Micro reads the model in place: keep it 16-byte aligned (and const, so it stays in flash). */",
        f"__attribute__((aligned(16))) const unsigned char edgeml_model[{len(data)}] = {{\n    {model}\n}};",
        f"const unsigned int edgeml_model_len = {len(data)};", "", *definitions, ""])
    return header, source


def _parts(meta: dict, transform: dict, threshold: float | None = None) -> tuple[list[str], list[str]]:
    """The header's declarations and the source's definitions (besides the model array)."""
    columns = meta["input"]["columns"]
    features = [c["feature"] for c in columns]
    ops = transform.get("operators") or []
    micro = transform.get("tflite_micro") or {}
    outputs = meta["outputs"]
    classes = [str(v) for v in outputs["probabilities"]["classes"]] if "probabilities" in outputs else []
    head = [
        f"#define EDGEML_N_FEATURES {len(features)}  /* the float row, in edgeml_feature_names order */",
        f"#define EDGEML_N_OUTPUTS {len(classes) or 1}  /* {'class probabilities' if classes else 'the value'} */",
        f"#define EDGEML_INT8 {1 if meta['input']['dtype'] == 'int8' else 0}",
        f"#define EDGEML_OUTPUT_INT8 {1 if _int8_output(meta) else 0}  /* 0: the output tensor is float32 */",
        *_inverse_note(outputs),
    ]
    if micro.get("ran"):
        head.append(f"#define EDGEML_ARENA_BYTES {int(micro['arena_bytes'])}  /* measured in TFLite Micro at build "
                    f"time: AllocateTensors succeeds at {int(micro['arena_min'])} (64-bit host, an upper bound for a "
                    f"32-bit target), +{int(micro['arena_margin'])} to align */")
    else:
        head.append("/* EDGEML_ARENA_BYTES: not measured (TFLite Micro did not run at build time): start large and "
                    "read the interpreter's arena_used_bytes() */")
    if ops:
        head += ["/* Register these with a tflite::MicroMutableOpResolver<EDGEML_N_OPS>. */",
                 f"#define EDGEML_N_OPS {len(ops)}",
                 "#define EDGEML_REGISTER_OPS(resolver) do { "
                 + " ".join(f"(resolver).{resolver_method(op)}();" for op in ops) + " } while (0)"]
    head += ["", "extern const unsigned char edgeml_model[];", "extern const unsigned int edgeml_model_len;",
             "extern const char *const edgeml_feature_names[EDGEML_N_FEATURES];"]
    body = [_array("char *const", "edgeml_feature_names", (c_string(f) for f in features), 4)]
    for i, c in enumerate(columns):
        if "codes" in c:
            name = f"edgeml_codes_{i}"
            head.append(f"extern const char *const {name}[{len(c['codes'])}];  /* {c_comment(c['feature'])}: a "
                        "category's code is its position here, -1 if unknown */")
            body.append(_array("char *const", name, (c_string(v) for v in c["codes"]), 6))
    if classes:
        head.append(f"extern const char *const edgeml_classes[{len(classes)}];")
        body.append(_array("char *const", "edgeml_classes", (c_string(v) for v in classes), 6))
        more_head, more_body = _label_rule(len(classes), threshold)
        head, body = head + more_head, body + more_body
    if meta["input"]["dtype"] != "int8":
        head += ["", "/* A float32 model: the input tensor takes the float row itself (NAN for a missing number),",
                 "   and the output tensor holds the probabilities or the value. */"]
        return head, body
    more_head, more_body = _int8_encoder(meta, features)
    return head + more_head, body + more_body


def _int8_output(meta: dict) -> bool:
    """Whether the output tensor is int8: an int8 model's, unless its graph ends in float32 (a log-scale label's
    inverse, ``outputs.value.dtype``)."""
    return meta["input"]["dtype"] == "int8" and (meta["outputs"].get("value") or {}).get("dtype") != "float32"


def _inverse_note(outputs: dict) -> list[str]:
    """A comment saying that the value is the label itself although it was learnt on a log scale."""
    inverse = (outputs.get("value") or {}).get("inverse")
    if not inverse:
        return []
    offset = float(inverse["offset"])
    return [f"/* The label was learnt as log1p(y - {c_comment(repr(offset))}); the graph ends with its inverse "
            f"expm1(z) + {c_comment(repr(offset))} in float32 (EXP is among the operators): the output is the "
            "label itself. */"]


def _label_rule(k: int, threshold: float | None) -> tuple[list[str], list[str]]:
    """``edgeml_label``: the class index from the (dequantized) probabilities, as ``edgeml_runtime`` chooses it:
    above the manifest's decision threshold for two classes, else the first most likely class (argmax)."""
    if threshold is None or k != 2:
        return label_rule()
    return label_rule((f"#define EDGEML_THRESHOLD {float(threshold)!r}  /* the manifest's decision.threshold (a "
                       "double, compared as the runtime does): edgeml_classes[1] when its probability is above it, "
                       "edgeml_classes[0] otherwise (equal too) */", "(double)p[1] > EDGEML_THRESHOLD"))


def _int8_encoder(meta: dict, features: list[str]) -> tuple[list[str], list[str]]:
    """The int8 model's encoder (a float row to the int8 input tensor) and output decoder, as C."""
    outputs = meta["outputs"]
    enc = Encoding.from_metadata(meta["input"]["encoding"], features)
    q = meta["input"]["quantization"]
    slope, offset = enc.affine(float(q["scale"]), int(q["zero_point"]))
    take, fill, n_numeric, codes = enc.layout
    code = np.concatenate([np.zeros(n_numeric, np.float32), codes])
    added = float((outputs.get("value") or {}).get("offset", 0.0))
    if _int8_output(meta):
        decode_head = [
            "/* An int8 output -> its value, given the output tensor's params.scale and params.zero_point. Class",
            "   probabilities come in steps of 1/256: divide by their sum if they must add up to exactly 1. */",
            "float edgeml_output(int8_t q, float scale, int32_t zero_point);"]
        decode_body = ["", "float edgeml_output(int8_t q, float scale, int32_t zero_point) {",
                       f"    return scale * (float)(q - zero_point) + {c_float(added)};", "}"]
    else:
        decode_head = ["/* The output tensor is float32: the value itself (the graph dequantizes its int8 result). */"]
        decode_body = []
    head = [
        "",
        f"#define EDGEML_N_INPUTS {enc.width}  /* the int8 input tensor: imputed numbers, then one-hot categories */",
        "/* A float row (NAN for a missing number, categories as codes) -> the int8 input tensor, exactly as the",
        "   build verified it (edgeml_model.c turns off fused multiply-adds and refuses fast-math). */",
        "void edgeml_encode(const float *x, int8_t *q);",
        *decode_head,
    ]
    body = [
        _array("uint16_t", "edgeml_take", (str(int(t)) for t in take), 16, internal=True),
        _array("float", "edgeml_fill", (c_float(v) for v in fill), 4, internal=True),
        _array("float", "edgeml_code", (c_float(v) for v in code), 4, internal=True),
        _array("float", "edgeml_slope", (c_float(v) for v in slope), 4, internal=True),
        _array("float", "edgeml_offset", (c_float(v) for v in offset), 4, internal=True),
        "",
        "void edgeml_encode(const float *x, int8_t *q) {",
        "    for (int j = 0; j < EDGEML_N_INPUTS; j++) {",
        "        float v = x[edgeml_take[j]];",
        "        uint32_t bits;",
        "        memcpy(&bits, &v, sizeof bits);",
        "        if ((bits & 0x7fffffffu) > 0x7f800000u) v = edgeml_fill[j];  /* NaN, tested on the bits */",
        f"        if (j >= {n_numeric}) v = (v == edgeml_code[j]) ? 1.0f : 0.0f;",
        "        float r = v * edgeml_slope[j] + edgeml_offset[j];",
        "        r = r > 127.0f ? 127.0f : (r < -128.0f ? -128.0f : r);"
        "  /* clamp first: lrintf of +-inf is undefined */",
        "        q[j] = (int8_t)lrintf(r);",
        "    }",
        "}",
        *decode_body,
    ]
    return head, body


__all__ = ["HEADER", "SOURCE", "c_comment", "c_float", "c_string", "firmware_sources", "pick_artifact",
           "render_sources", "resolver_method", "write_firmware"]
