"""The Open Inference Protocol v2 (KServe, Triton, MLServer) in terms of a bundle: metadata, requests, responses.

A bundle's model takes one input tensor per raw column of its input schema,
named as the column: numbers as ``FP32``, ``FP64``, any ``INT``/``UINT``
type or ``BOOL``; categories, text and datetimes (ISO 8601 text) as
``BYTES``. Each tensor has shape ``[n]`` or ``[n, 1]`` for ``n`` rows, its
``data`` flat or nested in row-major order, and JSON ``null`` is a missing
value. The outputs are those of the artifact: ``label`` (``BYTES``, or
``INT64`` when every class is a whole number) and ``probabilities``
(``FP32``, ``[n, classes]``, in the order of the model metadata's
``parameters.classes``) for a classifier, ``value`` (``FP32``, ``[n]``) for a
regressor. Triton's binary tensor extension is read for inputs
(``Inference-Header-Content-Length``); outputs are always JSON, which its
clients read as well.

A request that does not fit raises :class:`OipError` with the HTTP status
(400 for a malformed request, 404 for an unknown model or version) and a
message that names the input, what was wrong and the fix.

Example:

>>> decode_inputs({"inputs": [{"name": "t", "shape": [2], "datatype": "FP32", "data": [1.5, None]}]},
...               {"t": "numeric"})
({'t': [1.5, None]}, 2)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

import numpy as np

NUMBER_TYPES = {"BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
                "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
DATATYPES = (*NUMBER_TYPES, "BYTES")
#: The datatype a model metadata states for each kind of input column, and those a request may send.
STATED = {"numeric": "FP32", "boolean": "BOOL", "categorical": "BYTES", "datetime": "BYTES"}
ACCEPTED = {"numeric": set(NUMBER_TYPES) | {"BYTES"}, "boolean": {"BOOL", "BYTES", "INT8", "INT32", "INT64", "UINT8"},
            "categorical": set(DATATYPES), "datetime": {"BYTES"}}


class OipError(Exception):
    """A request the protocol refuses: ``status`` (400, 404) and the message for ``{"error": ...}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def model_metadata(manifest, platform: str) -> dict:
    """``GET /v2/models/{name}``: the model's name, version, platform, inputs and outputs."""
    inputs = [{"name": c.name, "datatype": STATED[c.kind], "shape": [-1]} for c in manifest.schema.columns]
    return {"name": manifest.name, "versions": [str(manifest.version)], "platform": platform,
            "inputs": inputs, "outputs": output_metadata(manifest),
            "parameters": {"bundle_sha256": manifest.identity, "task": manifest.task,
                           **({"classes": [_plain(c) for c in manifest.classes]} if manifest.classes else {})}}


def output_metadata(manifest) -> list[dict]:
    if not manifest.classes:
        return [{"name": "value", "datatype": "FP32", "shape": [-1]}]
    return [{"name": "label", "datatype": _label_type(manifest.classes), "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(manifest.classes)]}]


def _label_type(classes) -> str:
    return "INT64" if all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes) else "BYTES"


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def read_body(body: bytes, headers: Mapping[str, str]) -> tuple[dict, bytes]:
    """The JSON part of an infer request and the binary data after it (Triton's binary tensor extension)."""
    split = headers.get("inference-header-content-length")
    if split is not None:
        if not split.isdigit() or int(split) > len(body):
            raise OipError(f"Inference-Header-Content-Length {split[:20]!r} is not a length within the body's "
                           f"{len(body):,} bytes")
        head, rest = body[: int(split)], body[int(split):]
    else:
        head, rest = body, b""
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OipError(f"the request body is not JSON ({exc}); send an inference request object with "
                       '"inputs"') from None
    if not isinstance(doc, dict):
        raise OipError(f"the request body is a JSON {type(doc).__name__}, not an object with \"inputs\"")
    return doc, rest


def decode_inputs(doc: Mapping, kinds: Mapping[str, str], binary: bytes = b"") -> tuple[dict[str, list], int]:
    """Column name -> its values, and the number of rows, from an infer request's ``inputs``."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise OipError('the request has no "inputs" list; give one tensor per input column: '
                       + ", ".join(map(repr, list(kinds)[:8])))
    columns: dict[str, list] = {}
    rows = None
    offset = 0
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise OipError(f"inputs[{i}] is not a tensor object with a \"name\"")
        name = tensor["name"]
        where = f"input {name!r}"
        if name not in kinds:
            raise OipError(f"{where} is not an input of the model; its inputs are {_few(kinds)}")
        if name in columns:
            raise OipError(f"{where} is given twice")
        datatype, shape = tensor.get("datatype"), tensor.get("shape")
        if datatype not in DATATYPES:
            raise OipError(f"{where} has datatype {datatype!r}; the protocol's are {', '.join(DATATYPES)}")
        if datatype not in ACCEPTED[kinds[name]]:
            raise OipError(f"{where} is a {kinds[name]} column and cannot come as {datatype}; send it as "
                           f"{STATED[kinds[name]]}")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 2 or
                not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape) or
                (len(shape) == 2 and shape[1] != 1)):
            raise OipError(f"{where} has shape {shape!r}; give [rows] or [rows, 1] (one value per row)")
        n = shape[0]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise OipError(f"{where}: binary_data_size {size!r} runs past the {len(binary):,} bytes of binary "
                               "data after the JSON header")
            values = _from_binary(binary[offset: offset + size], datatype, n, where)
            offset += size
        else:
            if "data" not in tensor:
                raise OipError(f"{where} has no \"data\"")
            values = _flat(tensor["data"])
            if len(values) != n:
                raise OipError(f"{where} has {len(values)} value(s) in \"data\" but shape {shape} says {n}")
        if rows is not None and n != rows:
            raise OipError(f"{where} has {n} row(s), the inputs before it {rows}; give every input the same rows")
        rows = n
        columns[name] = values
    missing = [k for k in kinds if k not in columns]
    if missing:
        raise OipError(f"the request lacks input(s) {_few(missing)}; give every input column as a tensor (values "
                       "null where missing)")
    return columns, rows


def _flat(data) -> list:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    out: list = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _from_binary(raw: bytes, datatype: str, n: int, where: str) -> list:
    if datatype == "BYTES":
        values, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise OipError(f"{where}: its BYTES data ends inside an element's 4-byte length")
            (size,) = struct.unpack_from("<I", raw, at)
            values.append(raw[at + 4: at + 4 + size].decode("utf-8", "replace"))
            at += 4 + size
    else:
        width = np.dtype(NUMBER_TYPES[datatype]).itemsize
        if len(raw) != n * width:
            raise OipError(f"{where}: {len(raw)} bytes of binary data, not the {n} x {width} its shape and {datatype} "
                           "take")
        values = np.frombuffer(raw, NUMBER_TYPES[datatype]).tolist()
    if len(values) != n:
        raise OipError(f"{where} has {len(values)} value(s) in its binary data but its shape says {n}")
    return values


def requested_outputs(doc: Mapping, manifest) -> list[str]:
    """The output names the request asks for (all by default); an unknown one is refused."""
    known = [o["name"] for o in output_metadata(manifest)]
    asked = doc.get("outputs")
    if asked is None:
        return known
    if not isinstance(asked, list):
        raise OipError('"outputs" must be a list of {"name": ...} objects')
    names = []
    for o in asked:
        name = o.get("name") if isinstance(o, dict) else None
        if name not in known:
            raise OipError(f"output {name!r} is not an output of the model; its outputs are {_few(known)}")
        names.append(name)
    return names


def response(doc: Mapping, manifest, predictions, outputs: list[str], artifact: str) -> dict:
    """The infer response: model name and version, the request's ``id``, the bundle identity, the outputs."""
    n = len(predictions)
    tensors = []
    for name in outputs:
        if name == "probabilities":
            proba = np.asarray(predictions.probabilities, dtype=np.float32)
            tensors.append({"name": name, "datatype": "FP32", "shape": [n, proba.shape[1]],
                            "data": proba.ravel().tolist()})
        elif name == "label":
            kind = _label_type(manifest.classes)
            data = [int(v) for v in predictions.labels] if kind == "INT64" else [str(v) for v in predictions.labels]
            tensors.append({"name": name, "datatype": kind, "shape": [n], "data": data})
        else:
            tensors.append({"name": name, "datatype": "FP32", "shape": [n],
                            "data": np.asarray(predictions.labels, dtype=np.float32).tolist()})
    out = {"model_name": manifest.name, "model_version": str(manifest.version)}
    if "id" in doc:
        out["id"] = doc["id"]
    out["parameters"] = {"bundle_sha256": manifest.identity, "artifact": artifact}
    out["outputs"] = tensors
    return out


def _few(names, limit: int = 8) -> str:
    names = list(names)
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


__all__ = ["ACCEPTED", "DATATYPES", "OipError", "STATED", "decode_inputs", "model_metadata", "output_metadata",
           "read_body", "requested_outputs", "response"]
