"""Numbers written as text (``1.200,5``, ``$30``, ``2 BHK``, ``1200 - 1500``): one grammar, the runtime's
(:mod:`edgeml_runtime.textnumbers`), read the same by the host that judges and trains and by the device.

A column gets a number format when the host sees such text; every value of it is then read with that
format on both sides, and text that is no number there is a missing value with a note. A column without
a number format keeps the strict grammar, where such text is a row error.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml.data.ingest import read_table
from edgeml.data.kinds import Dropped, Judged, judge_column
from edgeml.data.numbers import choose_format, read_text
from edgeml.data.prepare import prepare
from edgeml.data.schema import infer_schema
from edgeml_runtime.cells import ABSENT, BadValue, to_number
from edgeml_runtime.features import FeatureEncoder, read_numbers, scalar_reader
from edgeml_runtime.schema import InputColumn, InputSchema, NumberFormat
from edgeml_runtime.textnumbers import parse_text_number, read_text_number

PLAIN = NumberFormat(".", "")
US = NumberFormat(".", ",")
EU = NumberFormat(",", ".")
COMMA = NumberFormat(",", "")
SPACE = NumberFormat(",", " ")
SWISS = NumberFormat(".", "'")
FORMATS = [PLAIN, US, EU, COMMA, SPACE, SWISS, NumberFormat(".", " ")]
IT_SALARY = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "it-salary-2020.csv"


@pytest.mark.parametrize(("text", "fmt", "value"), [
    ("1,200", US, 1200.0), ("1,234,567", US, 1234567.0), ("1,234,567.25", US, 1234567.25),
    ("1.200,5", EU, 1200.5), ("1.234.567", EU, 1234567.0), ("1,5", COMMA, 1.5), ("1,5", EU, 1.5),
    ("1 234,5", SPACE, 1234.5), ("1\u00a0234,5", SPACE, 1234.5), ("1'234.5", SWISS, 1234.5),
    ("-3.5", PLAIN, -3.5), ("+3.5", PLAIN, 3.5), ("−3,5", COMMA, -3.5), ("-1,200", US, -1200.0),
    ("45%", PLAIN, 45.0), ("45 %", EU, 45.0), ("12,5%", COMMA, 12.5),
    ("$30", US, 30.0), ("$ 1,200", US, 1200.0), ("£1,200", US, 1200.0), ("30 €", EU, 30.0), ("30€", EU, 30.0),
    ("EUR 30", EU, 30.0), ("30 EUR", EU, 30.0), ("-$30", US, -30.0), ("$-30", US, -30.0), ("CHF 1'200", SWISS, 1200.0),
    ("2 BHK", PLAIN, 2.0), ("100 kg", PLAIN, 100.0), ("100kg", PLAIN, 100.0), ("12.5 km/h", PLAIN, 12.5),
    ("12,5 km/h", COMMA, 12.5), ("1200 sq ft", US, 1200.0), ("24 labour days", PLAIN, 24.0), ("21 °C", PLAIN, 21.0),
    ("1200 - 1500", US, 1350.0), ("1200-1500", PLAIN, 1350.0), ("1200 – 1500", PLAIN, 1350.0),
    ("1200 — 1500", PLAIN, 1350.0), ("10 to 20", PLAIN, 15.0), ("1,200 - 1,500", US, 1350.0),
    ("0,5-1,5", COMMA, 1.0), ("$1,000 - $2,000", US, 1500.0),
    ("~25", PLAIN, 25.0), ("≈25", PLAIN, 25.0), ("about 25", PLAIN, 25.0), ("ca. 25", EU, 25.0),
    ("approx. 25", PLAIN, 25.0), ("23+", PLAIN, 23.0), ("23+ years", PLAIN, 23.0), (">5", PLAIN, 5.0),
    ("<5", PLAIN, 5.0), ("< 1", PLAIN, 1.0), (">= 5", PLAIN, 5.0), ("≤5", PLAIN, 5.0), ("up to 10", PLAIN, 10.0),
    ("more than 3", PLAIN, 3.0), ("1e5", PLAIN, 1e5), ("1,5e3", COMMA, 1500.0), (" 5. ", PLAIN, 5.0),
    (".5", PLAIN, 0.5),
])
def test_each_form_reads_as_its_number(text, fmt, value):
    got = read_text_number(text, fmt)
    assert got == value or (math.isnan(value) and math.isnan(got)), (text, fmt, got)
    parsed = parse_text_number(text, fmt)  # the regular expression alone, without the float() shortcut
    assert (parsed is None) == math.isnan(value) and (parsed is None or parsed.value == value)


@pytest.mark.parametrize("text", [
    "2011-05-09", "09-05-2011", "05/09/2011", "2011-05", "12-05", "1500-1200", "17:00", "17:00:05",
    "1/22/2020 17:00", "9.5.2011", "09.05.2011", "A12", "A1", "Type 2", "1st", "2nd", "3rd floor", "12A", "3h",
    "S", "M", "XL", "less than year", "n/a-ish", "", " ", "NA", "nan", "inf", "-inf", "1e39", "-1e39", "1_000",
    "١٢", "1 (as QA Engineer) / 11 in total", "15, thereof 8 as CTO", "3 (in Poland)", "+5-10", "5 - 10+",
])
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.decimal}{f.grouping or '_'}")
def test_dates_times_codes_and_words_are_no_numbers(text, fmt):
    """Missing in a column with a number format (as the host made them in training), never a number."""
    assert math.isnan(read_text_number(text, fmt)), (text, fmt)
    assert parse_text_number(text, fmt) is None


@pytest.mark.parametrize(("text", "fmt", "value"), [
    ("1,200", PLAIN, float("nan")),  # without grouping, ',' before exactly three digits could be either
    ("1,200", COMMA, 1.2), ("1,200", EU, 1.2), ("1,200", US, 1200.0),
    ("1.200", PLAIN, 1.2), ("1.200", US, 1.2), ("1.200", EU, 1200.0), ("1.200", COMMA, float("nan")),
    ("1.5", COMMA, 1.5), ("1,5", PLAIN, 1.5), ("1,5", US, float("nan")), ("1.5", EU, float("nan")),
    ("1.200,5", US, float("nan")), ("1,200.5", EU, float("nan")), ("12,34,567", US, float("nan")),
])
def test_the_format_decides_what_a_mark_means(text, fmt, value):
    got = read_text_number(text, fmt)
    assert got == value or (math.isnan(value) and math.isnan(got)), (text, fmt, got)


def test_values_that_are_not_text_keep_the_strict_readers_errors():
    assert read_text_number(7, EU) == 7.0 and math.isnan(read_text_number(None, EU))
    for value in (True, ABSENT, 1e39, [1]):
        with pytest.raises(BadValue):
            read_text_number(value, EU)


# -- choosing one format from the values (locale evidence) --------------------------------------------------


@pytest.mark.parametrize(("values", "fmt", "noted"), [
    (["1,200", "2,500", "13,750"], US, True),  # all ambiguous: grouping ',' (and a note)
    (["1,200", "3,5", "7,25"], COMMA, False),  # '3,5' shows a decimal comma, so '1,200' is 1.2
    (["1.200", "1.200,5", "3.400"], EU, False),  # '1.200,5' ends with its decimal mark
    (["1,234,567", "12"], US, False), (["1.234.567", "12"], EU, False),
    (["1 234,5", "12,5"], SPACE, False), (["1'234.5", "12"], SWISS, False),
    (["1,200", "2.5"], US, False), (["12.5", "3.75"], PLAIN, False), (["2 BHK", "3 BHK"], PLAIN, False),
])
def test_the_format_is_chosen_from_locale_evidence(values, fmt, noted):
    chosen, notes = choose_format(values)
    assert chosen == fmt and bool(notes) == noted
    if noted:
        assert "'1,200' are read as 1200" in notes[0]


def test_ambiguous_values_alone_beside_a_decimal_comma_and_beside_grouping():
    alone = judge_column(pd.Series(["1,200", "2,500", "3,750", "12,000"] * 8, name="price"))
    assert alone.number_format == US and any("'1,200' are read as 1200" in n for n in alone.notes)
    beside = read_text(pd.Series(["1,200", "3,5"] * 10, name="w"))
    assert beside.number_format == COMMA and beside.values.tolist()[:2] == [1.2, 3.5]
    grouped = read_text(pd.Series(["1.200", "1.200,5"] * 10, name="w"))
    assert grouped.number_format == EU and grouped.values.tolist()[:2] == [1200.0, 1200.5]


# -- the device reads as the host judged, value by value ----------------------------------------------------


def device_read(column: InputColumn, values: list, careful: bool = False) -> tuple[list, dict]:
    feeds, errors = FeatureEncoder(InputSchema((column,)), careful=careful).encode({column.name: values}, len(values))
    return feeds[column.features[0]].ravel().tolist(), errors


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


HOUSING = (["1200", "1350.5", "980", "2100 - 2850", "1875", "n/a-ish", "1500", "1100-1300", "760", "2210"] * 4
           + [str(1000 + 7 * i) for i in range(400)])


def housing_frame() -> pd.DataFrame:
    area = HOUSING
    reads = [read_text_number(v, PLAIN) for v in area]
    price = [50.0 * (a if not math.isnan(a) else 1500.0) + 17.0 * i for i, a in enumerate(reads)]
    return pd.DataFrame({"area_sqft": area, "bhk": [f"{1 + i % 4} BHK" for i in range(len(area))], "price": price})


def test_a_plain_column_with_ranges_and_words_is_read_leniently_with_a_note():
    """The housing refusal: a few ranges among plain numbers become midpoints, a few words missing values,
    instead of '... row(s) of the training split cannot be converted'."""
    judged = judge_column(pd.Series(HOUSING, name="area_sqft"))
    assert judged == Judged("numeric", PLAIN, notes=judged.notes) and len(judged.notes) == 1
    note = judged.notes[0]
    assert note.startswith("column 'area_sqft': 12 values not written as plain numbers")
    assert "8 such as '2100 - 2850', '1100-1300'" in note
    assert note.endswith("; 4 values that are no number become missing: 'n/a-ish'")
    values, errors = device_read(InputColumn("area_sqft", "numeric", ("area",), number_format=judged.number_format),
                                 HOUSING)
    assert not errors and values[3] == 2475.0 and values[7] == 1200.0 and math.isnan(values[5])


def test_infer_schema_and_prepare_read_as_the_device_does():
    frame = housing_frame()
    schema = infer_schema(frame, "price")
    columns = {c.name: c for c in schema.columns}
    assert columns["area_sqft"].number_format == PLAIN and columns["bhk"].number_format == PLAIN
    assert any(n.startswith("column 'area_sqft'") for n in schema.notices)
    assert any(n.startswith("column 'bhk': read as numbers written as text") and "'bhk'" in n
               for n in schema.notices)
    prepared = prepare(frame, "price", seed=0)
    for part in ("train", "valid", "test"):
        rows = getattr(prepared.split, part)
        for column in prepared.inputs.columns:
            host = prepared.features[part][column.features[0]].tolist()
            assert same(host, device_read(column, rows[column.name].tolist())[0])
            assert same(host, device_read(column, rows[column.name].tolist(), careful=True)[0])
            assert same(host, [scalar_reader(column)(v) for v in rows[column.name]])  # the one-record path


TEXT_COLUMNS = {
    "Preis": (["1.200,5 €", "3,5 €", "€ 40", "12.400", "nicht bekannt"] + [f"{i},{i % 10}0" for i in range(40)], EU),
    "salary": (["$70,000", "$1,250,000", "85,000 USD", "$64,500.50", "ask me"]
               + [f"${10 + i % 15},000" for i in range(40)], US),
    "weight": (["12,5 kg", "7 kg", "0,25 kg", "3 kg"] * 10 + ["?", "heavy"], COMMA),
    "share": ([f"{i % 20}%" for i in range(40)] + ["all", "NA"], PLAIN),
    "size": ([f"{1 + i % 4} BHK" for i in range(40)] + ["Studio"], PLAIN),
    "years": ([str(i % 12) for i in range(30)] + ["1,5", "2,5", "0,5", "less than year", "~3", "23+", "4 months"]
              + ["1-2", "3 to 5"], COMMA),  # '1,5' is evidence of a decimal comma; no value says otherwise
}


@pytest.mark.parametrize("name", TEXT_COLUMNS)
def test_host_and_device_agree_value_by_value(name):
    values, fmt = TEXT_COLUMNS[name]
    series = pd.Series(values, name=name)
    judged = judge_column(series)
    assert isinstance(judged, Judged) and judged.kind == "numeric" and judged.number_format == fmt, judged
    column = InputColumn(name, "numeric", (name,), number_format=judged.number_format)
    host = read_numbers(values, judged.number_format)[0].astype(np.float32).tolist()
    fast, errors = device_read(column, values)
    careful, careful_errors = device_read(column, values, careful=True)
    assert not errors and not careful_errors and same(fast, host) and same(careful, host)
    assert all(f"column {name!r}" in n for n in judged.notes)
    words = [v for v, x in zip(values, host, strict=True) if math.isnan(x) and v.strip().lower() not in {"na", "?"}]
    assert all(repr(w) in judged.notes[0] for w in list(dict.fromkeys(words))[:3])


@pytest.mark.parametrize("values", [
    [f"{i}{('st', 'nd', 'rd', 'th')[min(i, 4) - 1]}" for i in range(1, 5)] * 10,
    [f"{c}{i}" for c in "ABCD" for i in range(1, 4)] * 4,
    [f"Type {i % 3}" for i in range(40)],
    ["S", "M", "L", "XL"] * 10,
    [f"{i % 5} {fruit}" for i, fruit in enumerate(["apples", "pears", "plums", "figs", "limes", "kiwis"] * 7)],
    [f"{12 + i % 3}A" for i in range(40)],
])
def test_a_real_category_stays_text(values):
    assert judge_column(pd.Series(values, name="c")) == Judged("categorical")


def test_numbers_written_as_text_can_still_be_a_row_identifier():
    judged = judge_column(pd.Series([f"{1000 + i:,}" for i in range(40)], name="order"))
    assert isinstance(judged, Dropped) and judged.reason == "identifier: 40 unique values in 40 rows"


def test_a_column_without_a_number_format_keeps_the_strict_grammar():
    column = InputColumn("area", "numeric", ("area",))
    values, errors = device_read(column, ["1200", "2100 - 2850", "1,5", "n/a"])
    assert values[0] == 1200.0 and sorted(errors) == [1, 2] and math.isnan(values[3])
    assert errors[1].reason == "could not read '2100 - 2850' as a number"


def test_beyond_float32_text_is_missing_and_a_number_a_row_error():
    column = InputColumn("x", "numeric", ("x",), number_format=PLAIN)
    for careful in (False, True):
        values, errors = device_read(column, ["1e39", "inf", 1e39, "3"], careful=careful)
        assert math.isnan(values[0]) and math.isnan(values[1]) and values[3] == 3.0
        assert list(errors) == [2] and errors[2].reason == "1e+39 is not a finite 32-bit number"


# -- fast paths against the regular expression -----------------------------------------------------------------

_PIECES = st.sampled_from(["1", "0", "9", "5", "12", "200", "3", ".", ",", " ", "-", "+", "e", "%", "$", "€", "kg",
                           " to ", " - ", "~", "<", "_", "١", "\u00a0", "'", "inf", "nan", "x", ":", "/", "st"])
TEXTS = st.lists(_PIECES, max_size=7).map("".join)


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS, st.sampled_from(FORMATS))
def test_the_float_shortcut_reads_as_the_grammar(text, fmt):
    """600 strings: read_text_number (float() first) equals the regular expression alone; where the plain
    grammar reads a number, every format with a decimal point reads the same number."""
    parsed = parse_text_number(text, fmt)
    got = read_text_number(text, fmt)
    assert (math.isnan(got) and parsed is None) or (parsed is not None and got == parsed.value), (text, fmt)
    if fmt.decimal == ".":
        try:
            plain = to_number(text)
        except BadValue:
            return
        assert plain == got or (math.isnan(plain) and math.isnan(got)), (text, fmt)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(TEXTS, st.floats(width=32), st.integers(-10**6, 10**6), st.sampled_from(
    ["1,5", "12,25", "3,0", "1.200,5", None, True, 1e39, ABSENT])), max_size=40), st.sampled_from(FORMATS))
def test_the_block_paths_read_as_the_scalar_path(values, fmt):
    """200 mixed columns per format: the block conversion equals read_text_number value by value, errors too."""
    x, bad = read_numbers(values, fmt)
    column = InputColumn("x", "numeric", ("x",), number_format=fmt)
    fast, fast_errors = device_read(column, values)
    careful, careful_errors = device_read(column, values, careful=True)
    assert same(fast, careful) and {i: e.reason for i, e in fast_errors.items()} == {
        i: e.reason for i, e in careful_errors.items()} == bad
    for i, v in enumerate(values):
        try:
            want = read_text_number(v, fmt)
        except BadValue as exc:
            assert bad[i] == str(exc)
            continue
        assert x[i] == want or (math.isnan(want) and math.isnan(x[i])), (i, v)


# -- the shared survey table -------------------------------------------------------------------------------------


@pytest.mark.skipif(not IT_SALARY.exists(), reason=f"{IT_SALARY} is absent (the shared data sets are not here)")
def test_it_salary_years_of_experience_read_on_host_and_device():
    frame = read_table(IT_SALARY).frame
    for name, want in (("Total years of experience", {"1,5": 1.5, "2,5": 2.5, "less than year": math.nan}),
                       ("Years of experience in Germany", {"0,5": 0.5, "< 1": 1.0, "3 (in Poland)": math.nan}),
                       ("Number of vacation days", {"~25": 25.0, "23+": 23.0, "unlimited": math.nan})):
        judged = judge_column(frame[name])
        assert judged.kind == "numeric" and judged.number_format == PLAIN, name
        assert judged.notes and judged.notes[0].startswith(f"column {name!r}: ")
        column = InputColumn(name, "numeric", ("x",), number_format=judged.number_format)
        values = frame[name].tolist()
        read, errors = device_read(column, values)
        assert not errors
        for text, value in want.items():
            at = values.index(text)
            assert read[at] == value or (math.isnan(value) and math.isnan(read[at])), (name, text)
