"""Schema inference: each rule on its own, then whole tables, real ones included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgeml.data.ingest import read_table
from edgeml.data.kinds import (
    Dropped,
    classify_column,
    constant_reason,
    identifier_reason,
    is_blank,
    is_boolean,
    is_datetime_text,
    parse_numbers,
    present_values,
)
from edgeml.data.schema import InferredSchema, clean_labels, infer_schema, infer_task
from edgeml.errors import DataError
from edgeml_runtime.schema import DATETIME_PARTS


def kinds(schema: InferredSchema) -> dict[str, str]:
    return {c.name: c.kind for c in schema.columns}


def reasons(schema: InferredSchema) -> dict[str, str]:
    return {d.name: d.reason for d in schema.dropped}


# -- real data ------------------------------------------------------------------------------------


def test_ai4i(datasets):
    frame = read_table(datasets / "ai4i2020.csv").frame
    schema = infer_schema(frame, "Machine failure", drop=["TWF", "HDF", "PWF", "OSF", "RNF"])
    assert schema.task == "classification"
    assert reasons(schema) == {
        "UDI": "identifier: 10000 unique values in 10000 rows",
        "Product ID": "identifier: 10000 unique values in 10000 rows",
        "TWF": "dropped by --drop",
        "HDF": "dropped by --drop",
        "PWF": "dropped by --drop",
        "OSF": "dropped by --drop",
        "RNF": "dropped by --drop",
    }
    assert kinds(schema) == {
        "Type": "categorical",
        "Air temperature [K]": "numeric",
        "Process temperature [K]": "numeric",
        "Rotational speed [rpm]": "numeric",
        "Torque [Nm]": "numeric",
        "Tool wear [min]": "numeric",
    }
    by_name = {c.name: c for c in schema.columns}
    assert by_name["Air temperature [K]"].features == ("Air_temperature_K",)
    assert by_name["Air temperature [K]"].dtype == "float64"
    assert by_name["Tool wear [min]"].dtype == "int64"
    assert "Machine failure" not in by_name
    assert len(schema.notices) == 7
    assert "dropped column 'UDI' (identifier: 10000 unique values in 10000 rows)" in schema.notices


def test_telco(datasets):
    frame = read_table(datasets / "telco-churn.csv").frame
    schema = infer_schema(frame, "Churn")
    assert schema.task == "classification"
    assert reasons(schema) == {"customerID": "identifier: 7043 unique values in 7043 rows"}
    found = kinds(schema)
    assert found["TotalCharges"] == "numeric"  # 11 blanks among 7043 rows are missing values, not a category
    assert found["MonthlyCharges"] == "numeric"
    assert found["SeniorCitizen"] == "numeric"  # 0/1 integers stay numeric
    assert found["tenure"] == "numeric"
    for yes_no in ("Partner", "Dependents", "PhoneService", "PaperlessBilling"):
        assert found[yes_no] == "boolean"
    for text in ("gender", "MultipleLines", "InternetService", "Contract", "PaymentMethod"):
        assert found[text] == "categorical"
    assert list(found) == [c for c in frame.columns if c not in ("customerID", "Churn")]


def test_ccpp(datasets):
    schema = infer_schema(read_table(datasets / "ccpp.csv").frame, "PE")
    assert schema.task == "regression"
    assert kinds(schema) == {"AT": "numeric", "EV": "numeric", "AP": "numeric", "RH": "numeric"}
    assert schema.dropped == () and schema.notices == ()


# -- blanks and presence --------------------------------------------------------------------------


def test_is_blank_only_for_text():
    assert is_blank(pd.Series(["a", " ", "", "\t", None])).tolist() == [False, True, True, True, False]
    assert is_blank(pd.Series(["a", " ", 1, None], dtype=object)).tolist() == [False, True, False, False]
    assert is_blank(pd.Series([1.0, np.nan])).tolist() == [False, False]


def test_present_values_drops_missing_and_blank():
    assert present_values(pd.Series(["a", " ", None, "b"])).tolist() == ["a", "b"]


# -- constant and empty ---------------------------------------------------------------------------


def test_constant_reason():
    assert constant_reason(pd.Series(["x", "x"])) == "constant: every value is 'x'"
    assert constant_reason(pd.Series([3, 3])) == "constant: every value is 3"
    assert constant_reason(pd.Series([1.5]), missing=2) == "constant: every value is 1.5 (2 missing)"
    assert constant_reason(pd.Series(["x", "y"])) is None


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([None, None, None], "empty: no values"),
        ([np.nan, np.nan, np.nan], "empty: no values"),
        ([" ", "", None], "empty: no values"),
        (["v1", "v1", "v1"], "constant: every value is 'v1'"),
        ([7, 7, 7], "constant: every value is 7"),
        (["v1", " ", None], "constant: every value is 'v1' (2 missing)"),
    ],
)
def test_empty_and_constant_columns_are_dropped(values, reason):
    assert classify_column(pd.Series(values, name="c")) == Dropped("c", reason)


# -- boolean --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["Yes", "No", "yes"], True),
        (["Y", "n", " y "], True),
        (["true", "FALSE"], True),
        (["t", "f", "t"], True),
        ([True, False, True], True),
        (pd.array([True, None, False], dtype="boolean"), True),
        ([0, 1, 1], False),  # a 0/1 integer column stays numeric
        (["yes", "maybe"], False),
        (["yes", "y"], False),  # two true words: not a yes/no column
        (["yes", "no", "n/a"], False),
    ],
)
def test_is_boolean(values, expected):
    assert is_boolean(present_values(pd.Series(values))) is expected


def test_object_column_of_bools_with_gaps_is_boolean():
    assert classify_column(pd.Series([True, None, False], dtype=object, name="ok")) == "boolean"


# -- numeric --------------------------------------------------------------------------------------


def test_numeric_text_threshold_is_97_percent():
    numbers = [str(i + 0.5) for i in range(97)]
    assert parse_numbers(pd.Series(numbers + ["a", "b", "c"])) is not None
    assert parse_numbers(pd.Series(numbers[:96] + ["a", "b", "c", "d"])) is None


def test_numeric_text_ignores_blanks():
    column = pd.Series(["29.85", " ", "1889.5", "", "108.15", None], name="TotalCharges")
    assert classify_column(column) == "numeric"
    assert parse_numbers(present_values(column)).tolist() == [29.85, 1889.5, 108.15]


def test_numeric_dtypes():
    assert classify_column(pd.Series([1.5, np.nan, 2.5], name="x")) == "numeric"
    assert classify_column(pd.Series(pd.array([1, None, 5, 5], dtype="Int64"), name="x")) == "numeric"
    assert parse_numbers(pd.Series([True, False])) is None


# -- datetime -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["2024-03-01", "2024-03-02", "2024-03-03"], True),
        (["2024-03-01T10:15:00Z", "2024-03-01 10:16:30", "2024-03-01T10:17:00.250"], True),
        (["2024-01-05 10:00:00+01:00", "2024-07-05 10:00:00+02:00"], True),  # mixed offsets (DST)
        (["2024", "2025", "2026"], False),  # plain numbers, not dates
        (["20240101", "20240102"], False),
        (["03/01/2024", "03/02/2024"], True),  # month-first, by the convention for "/" (tests/test_dates.py)
        (["13/06/2020", "06/13/2020"], False),  # day-first and month-first: no order reads both
        (["2024-03-01", "soon", "2024-03-03"], False),
    ],
)
def test_is_datetime_text(values, expected):
    assert is_datetime_text(pd.Series(values)) is expected


def test_datetime_threshold_is_97_percent():
    dates = [f"2024-01-01 {h:02}:{m:02}" for h in range(10) for m in range(10)]
    assert is_datetime_text(pd.Series(dates[:97] + ["x", "y", "z"]))
    assert not is_datetime_text(pd.Series(dates[:96] + ["w", "x", "y", "z"]))


def test_datetime_columns():
    assert classify_column(pd.Series(pd.to_datetime(["2024-01-01", "2024-02-01"]), name="t")) == "datetime"
    unique_stamps = pd.Series([f"2024-01-01T00:{m:02}:00" for m in range(60)], name="t")
    assert classify_column(unique_stamps) == "datetime"  # unique per row, yet not an identifier


# -- identifier -----------------------------------------------------------------------------------


def test_text_identifier_needs_20_rows_and_95_percent_unique():
    assert identifier_reason(pd.Series([f"id{i}" for i in range(19)])) is None
    assert identifier_reason(pd.Series([f"id{i}" for i in range(20)])) == "identifier: 20 unique values in 20 rows"
    assert identifier_reason(pd.Series([f"id{i}" for i in range(95)] + ["id0"] * 5)) is not None
    assert identifier_reason(pd.Series([f"id{i}" for i in range(94)] + ["id0"] * 6)) is None


def test_float_measurements_are_never_identifiers():
    rng = np.random.default_rng(0)
    readings = pd.Series(rng.normal(300, 2, 500), name="Air temperature [K]")
    assert identifier_reason(readings) is None
    assert classify_column(readings) == "numeric"


def test_integer_identifiers():
    shuffled = pd.Series(np.random.default_rng(1).permutation(1000) + 5000, name="account")
    assert classify_column(shuffled) == Dropped("account", "identifier: 1000 unique values in 1000 rows")
    assert identifier_reason(pd.Series([3.0, 4.0, 5.0, 6.0])) == "identifier: counts up by 1 from 3 to 6"
    assert identifier_reason(pd.Series([3, 4])) is None  # too short to call a counter
    assert identifier_reason(pd.Series([1, 2, 4])) is None
    assert classify_column(pd.Series([10, 20, 10, 30] * 10, name="speed")) == "numeric"


def test_numeric_text_identifier():
    codes = pd.Series([f"{i:06}" for i in range(100, 150)], name="customer_no")
    assert classify_column(codes).reason == "identifier: 50 unique values in 50 rows"


def test_categorical():
    assert classify_column(pd.Series(["L", "M", "H", "L"] * 10, name="Type")) == "categorical"
    assert classify_column(pd.Series(pd.Categorical(["a", "b", "a"]), name="c")) == "categorical"


# -- task -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["Yes", "No", "No", "Yes"], "classification"),
        ([True, False, False, True], "classification"),
        (["low", "high", "mid", "low", "high", "mid"], "classification"),
        ([0, 1, 0, 1], "classification"),
        ([float(i % 20) for i in range(40)], "classification"),  # integer-valued, 20 classes
        ([i % 21 for i in range(42)], "regression"),  # 21 distinct integers
        ([0.5, 1.5, 0.5, 2.25], "regression"),
        (["1.5", "2.5", "1.5"], "regression"),  # numbers written as text
    ],
)
def test_infer_task(values, task):
    assert infer_task(pd.Series(values, name="y")) == task


def test_given_task_is_validated():
    with pytest.raises(DataError, match="task 'clustering'.*--task classification or --task regression"):
        infer_task(pd.Series([0, 1, 0, 1], name="y"), "clustering")
    assert infer_task(pd.Series([0, 1, 0, 1], name="y"), "regression") == "regression"


def test_regression_on_text_label_suggests_classification():
    with pytest.raises(DataError, match="label 'Churn' is boolean.*--task classification"):
        infer_task(pd.Series(["Yes", "No", "Yes"], name="Churn"), "regression")
    with pytest.raises(DataError, match="label 'grade' is not numeric \\(e.g. 'low'\\).*--task classification"):
        infer_task(pd.Series(["low", "high", "low"], name="grade"), "regression")


def test_single_class_label():
    with pytest.raises(DataError, match="label 'y' has a single value \\('No'\\) in all 3 rows"):
        infer_task(pd.Series(["No", "No", "No"], name="y"))


def test_a_class_with_one_row_is_kept_but_a_label_of_single_rows_is_refused():
    """One rare class is a class (the split keeps it in training); mostly single-row classes are a measurement."""
    assert infer_task(pd.Series(["a", "a", "b", "b", "rare"], name="y")) == "classification"
    many = r"label 'PE': classes 0.5, 1.5, 2.5, 3.5, 4.5 and 2 more have only 1 row, 7 of the 7 classes.*--task regr"
    with pytest.raises(DataError, match=many):
        infer_task(pd.Series([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5], name="PE"), "classification")


# -- whole tables ---------------------------------------------------------------------------------


@pytest.fixture
def frame() -> pd.DataFrame:
    n = 30
    return pd.DataFrame(
        {
            "row": range(1, n + 1),
            "when": [f"2024-05-{d:02}T08:30:00" for d in range(1, n + 1)],
            "temp [C]": [20 + i / 10 for i in range(n)],
            "temp (C)": [str(20 + i / 10) if i % 10 else " " for i in range(n)],
            "site": ["north", "south", "east"] * 10,
            "firmware": ["1.2"] * n,
            "notes": [None] * n,
            "alarm": ["yes", "no"] * 15,
        }
    )


def test_infer_schema_end_to_end(frame):
    schema = infer_schema(frame, "alarm")
    assert schema.label == "alarm" and schema.task == "classification" and schema.time_column is None
    assert [(c.name, c.kind) for c in schema.columns] == [
        ("when", "datetime"),
        ("temp [C]", "numeric"),
        ("temp (C)", "numeric"),
        ("site", "categorical"),
    ]
    by_name = {c.name: c for c in schema.columns}
    # 08:30 on every day of May 2024: the parts that vary (tests/test_dates.py has the rules)
    assert by_name["when"].parts == ("day", "dayofweek", "dayofyear_sin", "dayofyear_cos", "dayofweek_sin",
                                     "dayofweek_cos")
    assert by_name["when"].features == tuple(f"when__{p}" for p in by_name["when"].parts)
    assert set(by_name["when"].parts) < set(DATETIME_PARTS)
    assert by_name["temp [C]"].features == ("temp_C",)
    assert by_name["temp (C)"].features == ("temp_C_2",)  # made unique
    assert by_name["temp (C)"].dtype == str(frame["temp (C)"].dtype)
    assert by_name["site"].categories == () and by_name["site"].range is None  # filled in by preprocessing
    assert reasons(schema) == {
        "row": "identifier: 30 unique values in 30 rows",
        "firmware": "constant: every value is '1.2'",
        "notes": "empty: no values",
    }
    assert schema.notices == (
        "dropped column 'row' (identifier: 30 unique values in 30 rows)",
        "dropped column 'firmware' (constant: every value is '1.2')",
        "dropped column 'notes' (empty: no values)",
    )


def test_missing_labels_are_dropped_with_a_notice(frame):
    frame.loc[[0, 5], "alarm"] = None
    frame.loc[7, "alarm"] = "  "
    schema = infer_schema(frame, "alarm")
    assert schema.notices[0] == "dropped 3 rows with no value for label 'alarm'"
    cleaned = clean_labels(frame, schema)
    assert len(cleaned) == len(frame) - 3
    assert 0 not in cleaned.index and 7 not in cleaned.index


def test_drop_option(frame):
    schema = infer_schema(frame, "alarm", drop=["site", "site"])
    assert "site" not in kinds(schema)
    assert reasons(schema)["site"] == "dropped by --drop"
    assert "dropped column 'site' (dropped by --drop)" in schema.notices


def test_time_column(frame):
    assert infer_schema(frame, "alarm", time_column="when").time_column == "when"
    assert infer_schema(frame, "alarm", time_column="row").time_column == "row"
    with pytest.raises(DataError, match=r"time column 'site' holds neither dates \(ISO 8601.*\) nor numbers"):
        infer_schema(frame, "alarm", time_column="site")


def test_unknown_label_suggests_close_names(frame):
    with pytest.raises(DataError, match=r"label 'Alarm' is not a column.*did you mean 'alarm'.*--label"):
        infer_schema(frame, "Alarm")
    with pytest.raises(DataError, match=r"label 'temp' is not a column.*did you mean 'temp \[C\]'"):
        infer_schema(frame, "temp")


def test_real_names_are_suggested(datasets):
    frame = read_table(datasets / "ai4i2020.csv").frame
    with pytest.raises(DataError, match=r"label 'failure'.*did you mean 'Machine failure'.*14 in all"):
        infer_schema(frame, "failure")


def test_unknown_drop_and_time_columns(frame):
    with pytest.raises(DataError, match=r"column to drop 'sites' is not a column.*'site'.*--drop"):
        infer_schema(frame, "alarm", drop=["sites"])
    with pytest.raises(DataError, match=r"time column 'time' is not a column.*--time-column"):
        infer_schema(frame, "alarm", time_column="time")


def test_label_cannot_be_dropped(frame):
    with pytest.raises(DataError, match="label 'alarm' is also given to --drop"):
        infer_schema(frame, "alarm", drop=["alarm"])


def test_label_without_values(frame):
    frame["alarm"] = None
    with pytest.raises(DataError, match="label 'alarm' has no values"):
        infer_schema(frame, "alarm")


def test_nothing_left_to_learn_from():
    frame = pd.DataFrame({"k": ["same"] * 4, "y": [1, 2, 1, 2]})
    with pytest.raises(DataError, match=r"no column is left to learn 'y' from \('k': constant"):
        infer_schema(frame, "y")


def test_column_names_must_be_text():
    with pytest.raises(DataError, match="column 0 is named 0 \\(int\\)"):
        infer_schema(pd.DataFrame([[1, 2], [3, 4]]), "1")


def test_regression_label_error_through_infer_schema(frame):
    with pytest.raises(DataError, match="label 'site' is not numeric.*--task classification"):
        infer_schema(frame, "site", task="regression")


def test_nested_values_are_refused_with_the_fix():
    column = pd.Series([{"fw": "1.2"}, None, {"fw": "1.3"}], name="meta")
    with pytest.raises(DataError, match=r"column 'meta' holds nested values.*--drop 'meta'"):
        classify_column(column)


def test_drop_given_as_one_string(frame):
    assert reasons(infer_schema(frame, "alarm", drop="site"))["site"] == "dropped by --drop"


def test_duplicate_names_in_a_frame_are_refused():
    frame = pd.DataFrame([[1, 2, 3], [4, 5, 6]], columns=["a", "a", "y"])
    with pytest.raises(DataError, match="duplicate column names 'a'"):
        infer_schema(frame, "y")
