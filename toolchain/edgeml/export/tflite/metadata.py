"""The metadata a TFLite file carries (``edgeml``, JSON): enough for a consumer without Python or the manifest.

:func:`describe` writes the input's columns and code tables, the outputs'
meaning, the precision and the model family; :func:`schema_tables` gives the
code tables a row is encoded with (:func:`edgeml_runtime.litert.feeds_to_matrix`).

>>> from edgeml_runtime.schema import InputColumn, InputSchema
>>> schema = InputSchema((InputColumn("Type", "categorical", ("Type",), categories=("H", "L")),))
>>> schema_tables(schema)
{'Type': ['H', 'L']}
>>> describe(schema, "classification", [0, 1], "fp32", "trees", "LGBMClassifier")["input"]["columns"]
[{'feature': 'Type', 'column': 'Type', 'kind': 'categorical', 'codes': ['H', 'L']}]
"""

from __future__ import annotations

from edgeml.export.tflite.dense import INPUT_QUANT
from edgeml_runtime.litert import Encoding
from edgeml_runtime.schema import InputSchema


def schema_tables(schema: InputSchema) -> dict[str, list[str]]:
    """Per categorical feature, its code table: the value at position ``i`` has code ``i``."""
    return {c.features[0]: list(c.categories) for c in schema.columns if c.kind == "categorical"}


def describe(schema: InputSchema, task: str, classes, precision: str, family: str, estimator: str,
             encoding: Encoding | None = None, output_offset: float | None = None,
             inverse: tuple[str, float] | None = None) -> dict:
    """The metadata written into the file: enough for a consumer without Python or the manifest.

    A label learnt on a log scale (``inverse``) is inverted inside the graph: ``outputs.value.inverse`` says so
    and the output tensor is float32, the label itself, at every precision.
    """
    columns = []
    for c in schema.columns:
        for f in c.features:
            entry = {"feature": f, "column": c.name, "kind": c.kind}
            if c.kind == "categorical":
                entry["codes"] = list(c.categories)
            columns.append(entry)
    outputs = ({"probabilities": {"tensor": "probabilities", "classes": list(classes)}}
               if task == "classification" else {"value": {"tensor": "value"}})
    if output_offset is not None:
        outputs["value"]["offset"] = output_offset
    if inverse is not None:
        outputs["value"].update(dtype="float32", inverse={"learnt": inverse[0], "offset": inverse[1],
                                                          "in_graph": True})
    inp = {"tensor": "features", "dtype": "float32", "columns": columns,
           "missing": "NaN for a missing number; a category's code is its position in 'codes', -1 if unknown"}
    if encoding is not None:
        inp.update(dtype="int8", encoding=encoding.to_metadata(schema.features),
                   quantization={"scale": float(INPUT_QUANT.scale[0]), "zero_point": 0},
                   steps=("build the float32 row of 'columns' as above; encode it: 'numeric' features with NaN "
                          "replaced by 'fill', then 1.0/0.0 per 'onehot' (feature, code) pair, then "
                          "(z - mean) * inv_scale; quantize: clamp(round(z / scale) + zero_point, -128, 127); "
                          + ("the float32 output is the value itself (the graph dequantizes it and inverts the "
                             "label's log scale)" if inverse is not None else
                             "dequantize the int8 output with its tensor's scale and zero point, then add "
                             "outputs.value.offset if there is one")))
    return {
        "format": "edgeml-tflite/1",
        "task": task,
        "input": inp,
        "outputs": outputs,
        "precision": precision,
        "model": {"family": family, "estimator": estimator},
    }


__all__ = ["describe", "schema_tables"]
