"""Split the data, describe the inputs from the training split, and build the
preprocessing that becomes part of the exported model.

Every statistic here (categories, ranges, imputation values) is fitted on the
training split only. Raw values are turned into model inputs by the runtime's
:class:`~edgeml_runtime.features.FeatureEncoder`, the very code a device runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder

from edgeml.data.dates import time_order
from edgeml.data.kinds import show_value
from edgeml.data.schema import HOLDOUT_SHARE, rare_classes, rare_note
from edgeml.errors import DataError
from edgeml_runtime.features import FeatureEncoder
from edgeml_runtime.schema import InputColumn, InputSchema

#: Categories beyond this many (the rarest) score as "unknown", like unseen ones.
MAX_CATEGORIES = 64


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    notes: tuple[str, ...] = ()  #: what the split did with classes too rare to stratify, one line each

    @property
    def sizes(self) -> dict:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def split_frame(frame: pd.DataFrame, label: str, task: str, *, seed: int, time_column: str | None = None,
                test_size: float = HOLDOUT_SHARE, valid_size: float = HOLDOUT_SHARE) -> Split:
    """Train / validation / test split: stratified for classification, or in time order.

    Every class has rows in training: a class too rare to stratify
    (:func:`edgeml.data.schema.rare_classes`: fewer rows than give validation
    and test one each on average) has all its rows there, and the rest is
    stratified; in time order, a class that only appears after the training
    period has its rows moved into training. :attr:`Split.notes` names those
    classes and their counts.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"x": range(105), "y": ["a"] * 50 + ["b"] * 50 + ["c"] * 5})
    >>> split = split_frame(frame, "y", "classification", seed=0)
    >>> split.sizes, sorted(set(split.valid["y"]) | set(split.test["y"])), int((split.train["y"] == "c").sum())
    ({'train': 74, 'valid': 16, 'test': 15}, ['a', 'b'], 5)
    >>> print(split.notes[0])
    class 'c' (5 rows) is too rare for a stratified split (fewer than 7 rows): its rows are all used for \
training, none to validate or test on, so the test metrics do not measure it
    """
    if len(frame) < 30:
        raise DataError(f"only {len(frame)} labelled rows; edgeml needs at least 30 to train, validate and test")
    if time_column is not None:
        split = _in_time_order(frame, time_column, test_size, valid_size)
        return _train_every_class(split, label) if task == "classification" else split
    if task != "classification":
        rest, test = train_test_split(frame, test_size=test_size, random_state=seed)
        train, valid = train_test_split(rest, test_size=valid_size / (1 - test_size), random_state=seed)
        return Split(train, valid, test)
    rare = rare_classes(frame[label], min(test_size, valid_size))
    common = frame[~frame[label].isin(rare.index)]
    rest, test = train_test_split(common, test_size=test_size, random_state=seed, stratify=common[label])
    train, valid = train_test_split(rest, test_size=valid_size / (1 - test_size), random_state=seed,
                                    stratify=rest[label])
    if rare.empty:
        return Split(train, valid, test)
    kept = frame[frame[label].isin(rare.index)]
    return Split(pd.concat([train, kept]), valid, test, notes=(rare_note(rare, min(test_size, valid_size)),))


def _in_time_order(frame: pd.DataFrame, time_column: str, test_size: float, valid_size: float) -> Split:
    ordered = frame.iloc[time_order(frame[time_column])]  # dates read as a device reads them, or numbers
    n_test = int(round(len(frame) * test_size))
    n_valid = int(round(len(frame) * valid_size))
    n_train = len(frame) - n_test - n_valid
    return Split(ordered.iloc[:n_train], ordered.iloc[n_train : n_train + n_valid],
                 ordered.iloc[n_train + n_valid :])


def _train_every_class(split: Split, label: str) -> Split:
    """``split`` with the validation and test rows of classes the training rows lack moved into training."""
    known = set(split.train[label])
    late = [part[~part[label].isin(known)] for part in (split.valid, split.test)]
    if not any(len(rows) for rows in late):
        return split
    counts = pd.concat(late)[label].value_counts()
    shown = ", ".join(f"{show_value(v)} ({n} row{'s' if n != 1 else ''})" for v, n in counts.iloc[:5].items())
    more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
    note = (f"class(es) {shown}{more} first appear after the training period: their rows are moved into training "
            "so that the model knows them, and the test metrics do not measure them")
    return Split(pd.concat([split.train, *late]), split.valid[split.valid[label].isin(known)],
                 split.test[split.test[label].isin(known)], notes=(*split.notes, note))


def describe_inputs(columns: tuple[InputColumn, ...], train: pd.DataFrame) -> InputSchema:
    """Fill in each column's categories, observed range and missing rate from the training split."""
    schema = InputSchema(columns)
    feeds = encode_frame(train, schema, "the training split")
    described = []
    for col in columns:
        first = feeds[col.features[0]].ravel()
        if col.kind == "categorical":
            counts = pd.Series(first).value_counts(sort=True)
            cats = tuple(sorted(counts.index[:MAX_CATEGORIES]))
            described.append(replace(col, categories=cats, missing_rate=float(np.mean(first == ""))))
        else:
            missing = np.isnan(first)
            rng = (float(np.min(first[~missing])), float(np.max(first[~missing]))) if (~missing).any() else None
            described.append(replace(col, range=rng if col.kind == "numeric" else None,
                                     missing_rate=float(missing.mean())))
    return InputSchema(tuple(described))


def encode_frame(frame: pd.DataFrame, schema: InputSchema, what: str) -> dict[str, np.ndarray]:
    """The model inputs for every row of ``frame``; bad values are a :class:`DataError`."""
    columns = {name: frame[name].tolist() for name in schema.names}
    feeds, errors = FeatureEncoder(schema).encode(columns, len(frame))
    if errors:
        first = [errors[i] for i in sorted(errors)[:3]]
        raise DataError(
            f"{len(errors)} row(s) of {what} cannot be converted, e.g. "
            + "; ".join(f"column {e.column!r} (data row {frame.index[e.row - 1]}): {e.reason}" for e in first)
            + ". Fix or drop those values, or drop the column with --drop"
        )
    return feeds


def feature_frame(frame: pd.DataFrame, schema: InputSchema, what: str) -> pd.DataFrame:
    """The model inputs as a DataFrame with one column per feature name (what the host pipeline takes)."""
    feeds = encode_frame(frame, schema, what)
    return pd.DataFrame({name: arr.ravel() for name, arr in feeds.items()}, index=frame.index)


def make_preprocessor(schema: InputSchema) -> ColumnTransformer:
    """Median imputation for numbers, one-hot encoding for categories (unknown ones score as all zeros)."""
    numeric = [f for c in schema.columns if c.kind != "categorical" for f in c.features]
    categorical = [c for c in schema.columns if c.kind == "categorical"]
    parts = []
    if numeric:
        parts.append(("num", SimpleImputer(strategy="median"), numeric))
    if categorical:
        parts.append((
            "cat",
            OneHotEncoder(categories=[list(c.categories) for c in categorical], handle_unknown="ignore",
                          sparse_output=False, dtype=np.float32),
            [c.features[0] for c in categorical],
        ))
    if not parts:
        raise DataError("no usable input columns are left after dropping identifiers, constants and --drop")
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def encode_labels(values: pd.Series, classes: tuple) -> np.ndarray:
    """Class indices for label values (classification)."""
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values.tolist()], dtype=np.int64)


def label_classes(values: pd.Series) -> tuple:
    """The sorted distinct labels, as JSON-ready Python values."""
    return tuple(v.item() if hasattr(v, "item") else v for v in sorted(pd.unique(values)))
