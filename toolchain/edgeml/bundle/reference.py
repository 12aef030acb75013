"""The drift reference a bundle carries: fixed bins and their shares, from data the model was built on.

Inputs are described on the training split, as the model inputs the runtime's
:class:`~edgeml_runtime.features.FeatureEncoder` produces, and binned by the
runtime's own counters (:mod:`edgeml_runtime.drift`), so a device puts every
value in the very bin the host did. The output is described on the
validation split, as predicted by the host pipeline: a model's predictions on
its own training rows are overfit (a forest nearly reproduces the labels),
not what it will predict on new data. Datetimes are not monitored: a device
sees dates after the training period by construction, so their month and day
would always look drifted. The layout is documented in docs/drift.md.

Example:

>>> import numpy as np
>>> from edgeml_runtime.schema import InputColumn, InputSchema
>>> schema = InputSchema((InputColumn("rpm", "numeric", ("rpm",)),))
>>> ref = build_reference({"rpm": np.arange(1, 101, dtype=np.float32)}, schema, np.array([0, 1, 1, 1]),
...                       "classification", ("ok", "failure"))
>>> rpm = ref["columns"]["rpm"]
>>> rpm["edges"][:3], rpm["shares"][:3], rpm["range"]
([10.5, 20.5, 30.5], [0.1, 0.1, 0.1], [1.0, 100.0])
>>> ref["output"]["shares"]
[0.25, 0.75]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from edgeml_runtime.distributions import BinCounter, CategoryCounter, IndexCounter
from edgeml_runtime.drift import REFERENCE_FORMAT
from edgeml_runtime.schema import InputColumn, InputSchema

#: The training quantiles that become numeric bin edges (deciles: up to 9 inner edges, 10 bins).
QUANTILES = tuple(i / 10 for i in range(1, 10))


def build_reference(train_feeds: Mapping, schema: InputSchema, valid_outputs: Sequence, task: str,
                    classes: Sequence = (), output_split: str = "valid") -> dict:
    """``manifest["reference"]``: per input column, bins and shares from the training split; same for the output.

    ``train_feeds`` maps each feature name to its values on the training
    split (a DataFrame of model inputs will do); ``valid_outputs`` are the
    host pipeline's predictions on the validation split: class indices, or
    values for regression.
    """
    columns = {c.name: _DESCRIBE[c.kind](c, np.asarray(train_feeds[c.features[0]]).ravel()) for c in schema.columns}
    outputs = np.asarray(valid_outputs).ravel()
    if task == "classification":
        counts = IndexCounter(len(classes)).update(outputs).counts
        output = {"kind": "classes", "classes": list(classes), "shares": _shares(counts)}
    else:
        # The device's regression output is float32: bin what it will see.
        output = {"kind": "numeric", **_bins(outputs.astype(np.float32))}
    rows = len(np.asarray(train_feeds[schema.columns[0].features[0]])) if schema.columns else 0
    return {"format": REFERENCE_FORMAT, "bins": "right-closed", "rows": {"train": rows, output_split: len(outputs)},
            "columns": columns, "output": {**output, "split": output_split}}


def _numeric(column: InputColumn, values: np.ndarray) -> dict:
    values = values.astype(np.float32)
    present = values[~np.isnan(values)]
    if not present.size:
        return _unmonitored(column, "no values in the training split")
    bins = _bins(present)
    return {"kind": "numeric", "monitored": True, **bins, "missing_rate": 1 - present.size / values.size,
            "range": [float(present.min()), float(present.max())]}


def _bins(present: np.ndarray) -> dict:
    """Bins cut at the deciles of ``present``: each edge halfway between a decile and the next larger value.

    Halfway splits the training values exactly as the decile does, and keeps
    a value a rounding error away from a training value (a float32
    prediction summed in another order on another machine) in the same bin.
    Deciles equal to the maximum are left out, so no bin is empty.
    """
    distinct = np.unique(present).astype(np.float64)
    deciles = np.unique(np.quantile(present, QUANTILES, method="inverted_cdf")).astype(np.float64)
    deciles = deciles[deciles < distinct[-1]]
    above = distinct[np.searchsorted(distinct, deciles, side="right")]
    edges = [float(e) for e in (deciles + above) / 2]
    return {"edges": edges, "shares": _shares(BinCounter(edges).update(present).counts)}


def _boolean(column: InputColumn, values: np.ndarray) -> dict:
    counter = BinCounter([0.0]).update(values.astype(np.float32))
    return _counted(column, counter, values.size)


def _categorical(column: InputColumn, values: np.ndarray) -> dict:
    # A frequent missing value ('') can be among the model's categories; here it is the missing rate.
    categories = [c for c in column.categories if c != ""]
    counter = CategoryCounter(categories).update(values.tolist())
    return _counted(column, counter, values.size, categories=categories)


def _counted(column: InputColumn, counter, rows: int, **extra) -> dict:
    if counter.missing == rows:
        return _unmonitored(column, "no values in the training split")
    return {"kind": column.kind, "monitored": True, **extra, "shares": _shares(counter.counts),
            "missing_rate": counter.missing / rows}


def _datetime(column: InputColumn, values: np.ndarray) -> dict:
    return _unmonitored(column, "calendar parts of dates after training always differ from the training period")


def _unmonitored(column: InputColumn, reason: str) -> dict:
    return {"kind": column.kind, "monitored": False, "reason": reason}


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [c / total for c in counts] if total else [0.0] * len(counts)


#: How each kind of input column is described.
_DESCRIBE: dict[str, Callable[[InputColumn, np.ndarray], dict]] = {
    "numeric": _numeric,
    "boolean": _boolean,
    "categorical": _categorical,
    "datetime": _datetime,
}
