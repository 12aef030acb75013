"""Prepare a table for the search: schema, split, inputs, fitted preprocessing, matrices and labels.

:func:`prepare` is the one place the sequence is written; ``edgeml build``,
the tests and the benchmarks all call it, so what they measure is what a
build does.

Example:

>>> from edgeml.data.demo import demo_frame
>>> p = prepare(demo_frame(rows=300, seed=0), "failure")
>>> p.task, p.classes, p.split.sizes
('classification', (0, 1), {'train': 210, 'valid': 45, 'test': 45})
>>> p.X["train"].shape[0] == len(p.y["train"]) == 210
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer

from edgeml.data.kinds import Dropped
from edgeml.data.outliers import find_label_outliers, outlier_note
from edgeml.data.preprocess import (
    Split,
    describe_inputs,
    encode_frame,
    encode_labels,
    feature_frame,
    label_classes,
    make_preprocessor,
    split_frame,
)
from edgeml.data.schema import InferredSchema, clean_labels, infer_schema
from edgeml.errors import DataError
from edgeml_runtime.schema import InputSchema

PARTS = ("train", "valid", "test")


@dataclass(frozen=True)
class Prepared:
    """A table made ready for the search, every statistic fitted on the rows the shipped model learns from.

    Those rows are the training and validation splits together (:attr:`fit_rows`): the search validates on
    them (cross-validation, or a holdout on ``valid``) and the shipped model is refitted on all of them, so the
    preprocessor (categories, ranges, medians), the input schema and the calibration rows come from them
    too. ``X["test"]``/``y["test"]`` stay held out: the honest metrics and the reduced-precision drops are
    measured there.
    """

    schema: InferredSchema
    frame: pd.DataFrame  #: the labelled rows, labels cleaned
    split: Split
    inputs: InputSchema  #: the model's raw inputs, with categories and ranges from train+validation
    preprocessor: ColumnTransformer  #: fitted on train+validation
    features: Mapping[str, pd.DataFrame]  #: each part's raw input columns
    X: Mapping[str, np.ndarray]  #: each part through the preprocessor
    y: Mapping[str, np.ndarray]  #: class indices (classification) or float64 values (regression)
    classes: tuple  #: the sorted distinct labels; empty for regression
    #: regression labels left out as far outside the rest (:mod:`edgeml.data.outliers`): (data row, value)
    label_outliers: tuple[tuple[int, float], ...] = ()

    @property
    def task(self) -> str:
        return self.schema.task

    @property
    def label(self) -> str:
        return self.schema.label

    def feeds(self, part: str) -> dict[str, np.ndarray]:
        """One part's rows encoded as the runtime encodes them (one array per model input)."""
        return encode_frame(getattr(self.split, part), self.inputs, f"the {part} split")

    @property
    def fit_rows(self) -> pd.DataFrame:
        """The labelled rows the shipped model and the preprocessing are fitted on: train, then validation."""
        return pd.concat([self.split.train, self.split.valid])

    def fit_features(self) -> pd.DataFrame:
        """:attr:`fit_rows`' raw input columns (the drift reference is drawn from them)."""
        return pd.concat([self.features["train"], self.features["valid"]])

    def fit_matrix(self, *, with_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The model matrix and labels of train+validation (and the test rows too, ``with_test``: ``--refit-all``).

        >>> from edgeml.data.demo import demo_frame
        >>> X, y = prepare(demo_frame(rows=300, seed=0), "failure").fit_matrix()
        >>> X.shape[0], len(y)
        (255, 255)
        """
        parts = PARTS if with_test else PARTS[:2]
        return np.concatenate([self.X[p] for p in parts]), np.concatenate([self.y[p] for p in parts])

    @cached_property
    def calibration(self) -> dict[str, np.ndarray]:
        """The train+validation rows as the runtime encodes them: what reduced precisions are calibrated on."""
        return encode_frame(self.fit_rows, self.inputs, "the training and validation splits")


def prepare(frame: pd.DataFrame, label: str, *, task: str | None = None, drop: Iterable[str] = (),
            time_column: str | None = None, seed: int = 0, unnamed: Iterable[str] = (),
            keep_label_outliers: bool = False) -> Prepared:
    """Infer the schema, split, describe the inputs and fit the preprocessing, in the order a build does.

    ``label``, ``drop`` and ``time_column`` may name a column as the header rule reads it
    (:func:`~edgeml.data.schema.infer_schema`); ``unnamed`` are the columns whose CSV header cell was empty
    (:attr:`edgeml.data.ingest.Table.unnamed`). A regression label's few values far outside the rest are left
    out, with a notice, unless ``keep_label_outliers`` (:mod:`edgeml.data.outliers`).
    """
    schema = infer_schema(frame, label, task=task, drop=list(drop), time_column=time_column, unnamed=tuple(unnamed))
    label = schema.label  # as the frame names it
    frame = clean_labels(frame, schema)
    outliers = ()
    if schema.task == "regression" and not keep_label_outliers:
        values = pd.to_numeric(frame[label])
        if len(found := find_label_outliers(values)):
            schema = replace(schema, notices=(*schema.notices, outlier_note(label, values, found)))
            outliers = tuple((int(row) + 1, float(values[row])) for row in found)
            frame = frame.drop(index=found)
    split = split_frame(frame, label, schema.task, seed=seed, time_column=schema.time_column)
    inputs = describe_inputs(schema.columns, pd.concat([split.train, split.valid]))
    features = {part: feature_frame(getattr(split, part), inputs, f"the {part} split") for part in PARTS}
    pre = make_preprocessor(inputs).fit(pd.concat([features["train"], features["valid"]]))
    X = {part: pre.transform(f) for part, f in features.items()}
    if schema.task == "classification":
        classes = label_classes(frame[label])
        y = {part: encode_labels(getattr(split, part)[label], classes) for part in PARTS}
    else:
        classes = ()
        y = {part: pd.to_numeric(getattr(split, part)[label]).to_numpy(np.float64) for part in PARTS}
    return Prepared(schema, frame, split, inputs, pre, features, X, y, classes, outliers)


def without_inputs(data: Prepared, reasons: Mapping[str, str]) -> Prepared:
    """``data`` without the input columns named in ``reasons`` (name: why), each recorded in ``schema.dropped``
    with its reason (the manifest's ``dropped`` list); the split, the labels and the other inputs' categories
    and ranges stay as they are, the preprocessing is refitted on the same train+validation rows.

    >>> from edgeml.data.demo import demo_frame
    >>> p = prepare(demo_frame(rows=300, seed=0), "failure")
    >>> q = without_inputs(p, {"machine_type": "not needed here"})
    >>> "machine_type" in q.inputs.names, q.schema.dropped[-1].reason, q.split.sizes == p.split.sizes
    (False, 'not needed here', True)
    >>> q.X["train"].shape[1] < p.X["train"].shape[1]
    True
    """
    unknown = [n for n in reasons if n not in data.inputs.names]
    if unknown:
        raise DataError(f"cannot drop {', '.join(map(repr, unknown))}: not among the inputs "
                        f"({', '.join(map(repr, data.inputs.names))}); name input columns")
    kept = tuple(c for c in data.inputs.columns if c.name not in reasons)
    if not kept:
        raise DataError(f"dropping {', '.join(map(repr, reasons))} would leave no input; keep at least one")
    inputs = InputSchema(kept)
    schema = replace(data.schema, columns=tuple(c for c in data.schema.columns if c.name not in reasons),
                     dropped=(*data.schema.dropped, *(Dropped(n, r) for n, r in reasons.items())))
    features = {part: frame[inputs.features] for part, frame in data.features.items()}
    pre = make_preprocessor(inputs).fit(pd.concat([features["train"], features["valid"]]))
    X = {part: pre.transform(f) for part, f in features.items()}
    return replace(data, schema=schema, inputs=inputs, preprocessor=pre, features=features, X=X)
