"""Dates and times: the one grammar (edgeml_runtime.dates), the order decided from evidence and the parts chosen
from the values (edgeml.data.dates), and the device and the host reading a column alike."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeml.data.dates import choose_parts, read_dates, time_order
from edgeml.data.kinds import DATETIME_SHARE, Dropped, Judged, judge_column
from edgeml.data.schema import infer_schema
from edgeml_runtime.cells import PART_TABLES, BadValue, datetime_parts, to_datetime
from edgeml_runtime.dates import ORDERS, date_orders, parse_date
from edgeml_runtime.features import FeatureEncoder
from edgeml_runtime.schema import DATE_ORDERS, DATETIME_PARTS, InputColumn, InputSchema

D = datetime

# -- the grammar: every form, read with the orders that read it ---------------------------------

FORMS = [
    # ISO 8601: every order reads it
    ("2024-03-01", ORDERS, D(2024, 3, 1)),
    ("2024-03-01T12:30", ORDERS, D(2024, 3, 1, 12, 30)),
    ("2024-03-01 12:30:05.250", ORDERS, D(2024, 3, 1, 12, 30, 5, 250000)),
    ("2024-03-01t12:30:05.1234567", ORDERS, D(2024, 3, 1, 12, 30, 5, 123456)),  # beyond microseconds: cut
    ("2024-03-01T12:30:00Z", ORDERS, D(2024, 3, 1, 12, 30)),
    ("2024-03-01T12:30:00+01:00", ORDERS, D(2024, 3, 1, 11, 30)),
    ("2024-03-01T00:30:00+0100", ORDERS, D(2024, 2, 29, 23, 30)),  # a leap day, in UTC
    ("2024-12-31T22:00-05", ORDERS, D(2025, 1, 1, 3, 0)),
    ("  2024-03-01 ", ORDERS, D(2024, 3, 1)),
    # year first, not ISO: every order but None
    ("2020/01/22", ORDERS[1:], D(2020, 1, 22)),
    ("2020.1.2 7:05", ORDERS[1:], D(2020, 1, 2, 7, 5)),
    ("2020-1-22", ORDERS[1:], D(2020, 1, 22)),
    ("2024-03-01 12:30 UTC", ORDERS[1:], D(2024, 3, 1, 12, 30)),
    # year last: day-first or month-first
    ("09-05-2011", ("dmy",), D(2011, 5, 9)),
    ("09-05-2011", ("mdy",), D(2011, 9, 5)),
    ("22.01.2020", ("dmy",), D(2020, 1, 22)),
    ("24/11/2020 11:14:15", ("dmy",), D(2020, 11, 24, 11, 14, 15)),
    ("1/22/2020", ("mdy",), D(2020, 1, 22)),
    ("1/22/2020 17:00", ("mdy",), D(2020, 1, 22, 17, 0)),
    # AM and PM
    ("1/22/2020 5:00 PM", ("mdy",), D(2020, 1, 22, 17, 0)),
    ("1/22/2020 12:00 am", ("mdy",), D(2020, 1, 22, 0, 0)),
    ("1/22/2020 12:15 P.M.", ("mdy",), D(2020, 1, 22, 12, 15)),
    ("22/01/2020 09:41:07AM", ("dmy",), D(2020, 1, 22, 9, 41, 7)),
    # month names, any case, read alike by every order but None
    ("5 Sep 2011", ORDERS[1:], D(2011, 9, 5)),
    ("Sep 5, 2011", ORDERS[1:], D(2011, 9, 5)),
    ("05-Sep-2011", ORDERS[1:], D(2011, 9, 5)),
    ("September 5 2011", ORDERS[1:], D(2011, 9, 5)),
    ("05SEP2011", ORDERS[1:], D(2011, 9, 5)),
    ("sept. 5th, 2011 2:05 pm", ORDERS[1:], D(2011, 9, 5, 14, 5)),
    ("Mon, 05 Sep 2011 14:00:00 +0200", ORDERS[1:], D(2011, 9, 5, 12, 0)),
    ("31 DECEMBER 1999 23:59 GMT", ORDERS[1:], D(1999, 12, 31, 23, 59)),
]


@pytest.mark.parametrize(("text", "orders", "expected"), FORMS)
def test_each_form_reads_with_the_orders_that_read_it(text, orders, expected):
    for order in orders:
        assert parse_date(text, order) == expected, order
    assert parse_date(text, orders[0]).tzinfo is None  # naive UTC


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("text", ["", "   ", "NA", "null", " n/a ", "None", "?", "nan"])
def test_missing_values_are_none_under_every_order(text, order):
    assert parse_date(text, order) is None


REFUSED = [
    "soon", "yesterday", "2024", "20240301", "1.5", "2100 - 2850", "12:30",
    "05/06/20",  # a two-digit year: no century, and no order of three small numbers, can be decided
    "13/13/2020", "31/04/2020", "2024-13-01", "2023-02-29", "32 Sep 2011", "Sepx 5 2011",
    "05/06-2020",  # two separators
    "1/1/2020 13:00 PM", "1/1/2020 0:30 AM", "2024-03-01T25:00", "2024-03-01 12:60", "2024-03-01 12:30 +25:00",
    "٢٠٢٤-٠٣-٠١",  # digits other than ASCII, which the number grammar refuses too
    "0001-01-01T00:30+01:00",  # before year 1 in UTC
]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("text", REFUSED)
def test_garbage_is_refused_naming_the_value(text, order):
    with pytest.raises(BadValue, match=re.escape(repr(text))):
        parse_date(text, order)


@pytest.mark.parametrize("text", ["2024/03/01", "2024-3-1", "5 Sep 2011", "2024-03-01 12:30 UTC", "2024-03-01 1:30",
                                  "2024-03-01  12:30", "09-05-2011", "2024-03-01T05:00 PM"])
def test_an_iso_column_refuses_what_iso_8601_does_not_write(text):
    with pytest.raises(BadValue, match=r"as an ISO 8601 date or datetime"):
        parse_date(text, None)


def test_a_year_first_column_refuses_dates_written_with_the_year_last():
    with pytest.raises(BadValue, match="writes the year last"):
        parse_date("05/06/2020", "ymd")


def test_ambiguous_dates_need_evidence_for_an_order():
    assert date_orders(["05/06/2020"]) == ("dmy", "mdy")
    assert date_orders(["05/06/2020", "13/06/2020"]) == ("dmy",)
    assert date_orders(["05/06/2020", "06/13/2020"]) == ("mdy",)
    assert date_orders(["05/06/2020", "13/06/2020", "06/13/2020"]) == ()
    assert date_orders(["2024-03-01", "", "n/a"]) == ORDERS


# -- the host decides the order from the values ----------------------------------------------------


def series(values, name="when"):
    return pd.Series(values, name=name, dtype=object)


def test_an_undecidable_order_follows_the_separator_and_says_so():
    slash = read_dates(series(["05/06/2020", "07/08/2021"]))
    dots = read_dates(series(["05.06.2020", "07.08.2021"]))
    assert (slash.order, dots.order) == ("mdy", "dmy")
    assert re.search(r"cannot be decided.*'05/06/2020'.*month-first.*'/'", slash.notes[0])
    assert re.search(r"cannot be decided.*day-first.*'\.'", dots.notes[0])


def test_a_day_above_12_decides_day_first_and_a_second_field_above_12_month_first():
    assert read_dates(series(["05/06/2020", "13/06/2020"])) == read_dates(series(["13/06/2020"])) \
        and read_dates(series(["05/06/2020", "13/06/2020"])).order == "dmy"
    assert read_dates(series(["05/06/2020", "06/13/2020"])).order == "mdy"
    assert read_dates(series(["05/06/2020", "13/06/2020"])).notes == ()


def test_dates_pointing_both_ways_are_no_date_column():
    values = series(["05/06/2020", "13/06/2020", "06/13/2020"])
    assert read_dates(values) is None
    assert judge_column(values) == Judged("categorical")


def test_values_that_do_not_read_become_missing_with_a_note():
    good = [f"{d:02}/0{m}/2020" for d in range(13, 29) for m in range(1, 8)]  # 112 day-first dates
    values = series(good[:100] + ["soon", "31/02/2020"])
    assert len(values) * (1 - DATETIME_SHARE) > 2  # within the 3 % allowed
    judged = judge_column(values)
    assert judged.kind == "datetime" and judged.date_order == "dmy"
    assert any("2 of 102 values are no dates ('31/02/2020', 'soon')" in n for n in judged.notes), judged.notes
    # and the device reads them as missing values too (the column has an order), not as errors
    column = input_column_of(values, judged)
    feeds, errors = FeatureEncoder(InputSchema((column,))).encode({"when": values.tolist()}, len(values))
    assert errors == {} and np.isnan(feeds[column.features[0]][-2:]).all()


def test_an_iso_column_with_a_few_unreadable_values_reads_leniently():
    values = series([f"2024-01-{d:02}" for d in range(1, 31)] * 2 + ["soon"])
    judged = judge_column(values)
    assert judged.date_order == "ymd" and "1 of 61 values is no date ('soon')" in judged.notes[0]
    strict = judge_column(series([f"2024-01-{d:02}" for d in range(1, 31)]))
    assert strict.date_order is None and strict.notes == ()


@pytest.mark.parametrize("garbage", [[], ["soon"], ["soon", "later", "13/13/2020"]])
def test_an_order_decided_on_part_of_a_long_column_reads_the_rest_alike(garbage, monkeypatch):
    import edgeml.data.dates as host_dates

    days = [datetime(2020, 1, 1) + timedelta(days=d) for d in range(120)]
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        values = series([d.strftime(fmt) for d in days[:60]] + garbage + [d.strftime(fmt) for d in days[60:]])
        whole = read_dates(values)
        monkeypatch.setattr(host_dates, "EVIDENCE_VALUES", 7)
        assert read_dates(values) == whole and (whole.order is None) == (fmt == "%Y-%m-%d" and not garbage)
        monkeypatch.undo()


@pytest.mark.parametrize("values", [["2024", "2021", "2026"], ["20240101", "20230102"], ["1.5", "2.5"]])
def test_plain_numbers_are_never_dates(values):
    assert read_dates(series(values)) is None
    assert judge_column(series(values)).kind == "numeric"


def test_mostly_text_is_not_read_whole():
    assert read_dates(series(["north", "south", "2024-03-01"] * 400)) is None


# -- the parts a model gets, from the values -------------------------------------------------------


def input_column_of(values: pd.Series, judged) -> InputColumn:
    from edgeml.data.schema import input_column

    return input_column(values, judged, set())[0]


def test_date_only_columns_have_no_time_parts():
    values = series(["09-05-2011", "23-11-2012", "01-01-2011", "17-07-2012"], name="day")
    chosen = choose_parts(values, "dmy")
    assert chosen.parts == ("month", "day", "dayofweek", "year", "dayofyear", "dayofyear_sin", "dayofyear_cos",
                            "dayofweek_sin", "dayofweek_cos")
    assert chosen.notes == ()  # not in increasing order: the year is kept


def test_times_of_one_day_have_only_time_parts():
    values = series(["2024-01-01 10:00", "2024-01-01 09:30", "2024-01-01 23:15"])
    assert choose_parts(values, None).parts == ("hour", "minute", "hour_sin", "hour_cos")


def test_monthly_dates_have_the_season_by_month():
    values = series([f"2024-{m:02}-01" for m in (3, 1, 12, 7)])
    assert choose_parts(values, None).parts == ("month", "dayofweek", "month_sin", "month_cos", "dayofweek_sin",
                                                "dayofweek_cos")


def test_an_ever_increasing_column_leaves_its_year_out_with_a_note():
    start = datetime(2011, 12, 1)
    log = series([(start + timedelta(hours=h)).strftime("%d/%m/%Y %H:%M") for h in range(1000)], name="dteday")
    reading = read_dates(log)
    assert reading.order == "dmy"
    chosen = choose_parts(log, "dmy")
    assert "year" not in chosen.parts and {"month", "hour", "hour_sin"} <= set(chosen.parts)
    assert chosen.notes == (f"column 'dteday' only ever increases (from 2011-12-01 00:00:00 to 2012-01-11 "
                            f"15:00:00): its year is left out, since an absolute date cannot generalise beyond "
                            f"the training period; its parts: {', '.join(chosen.parts)}",)
    shuffled = log.sample(frac=1, random_state=0)
    assert "year" in choose_parts(shuffled, "dmy").parts


def test_a_column_whose_only_varying_part_is_an_increasing_year_is_dropped():
    dropped = judge_column(series(["2018-01-01", "2024-01-01", "2029-01-01"], name="season"))  # Mondays
    assert dropped == Dropped("season", "only its year varies, and it only ever increases: an absolute date "
                                        "cannot generalise beyond the training period")


def test_a_datetime64_column_keeps_working_and_reads_like_its_text():
    stamps = pd.Series(pd.to_datetime(["2024-03-01 10:00", "2023-12-31 23:30", None, "2024-07-14 08:00"]),
                       name="when")
    judged = judge_column(stamps)
    assert judged == Judged("datetime")
    column = input_column_of(stamps, judged)
    assert column.parts == choose_parts(series(["2024-03-01 10:00", "2023-12-31 23:30", "2024-07-14 08:00"]),
                                        None).parts
    text = ["2024-03-01T10:00", "2023-12-31T23:30", None, "2024-07-14T08:00"]
    as_numpy = FeatureEncoder(InputSchema((column,))).encode({"when": stamps.to_numpy()}, 4)[0]
    as_text = FeatureEncoder(InputSchema((column,))).encode({"when": text}, 4)[0]
    assert {k: v.tobytes() for k, v in as_numpy.items()} == {k: v.tobytes() for k, v in as_text.items()}


def test_time_order_reads_day_first_dates_as_dates():
    dates = series(["13/01/2024", "02/02/2024", None, "05/01/2024", "01/12/2023"])
    assert time_order(dates).tolist() == [4, 3, 0, 1, 2]
    assert time_order(pd.Series(["10", "9", "11"])).tolist() == [1, 0, 2]  # numbers, not text


# -- the device and the host agree ----------------------------------------------------------------


def expected_parts(d: datetime, parts) -> list[float]:
    """Each part computed here from its definition (schema.DATETIME_PARTS), not by the runtime."""
    doy = d.timetuple().tm_yday
    plain = {"month": d.month, "day": d.day, "dayofweek": d.weekday(), "hour": d.hour, "minute": d.minute,
             "year": d.year, "dayofyear": doy}
    turns = {"month": (d.month - 1) / 12, "dayofyear": (doy - 1) / 365.25, "dayofweek": d.weekday() / 7,
             "hour": d.hour / 24}
    out = []
    for p in parts:
        base, _, fn = p.partition("_")
        out.append(float(plain[p]) if not fn else getattr(math, fn)(2 * math.pi * turns[base]))
    return out


FORMATS = {"dmy": ["%d-%m-%Y", "%d/%m/%Y %H:%M", "%d.%m.%Y %H:%M:%S"], "mdy": ["%m/%d/%Y %I:%M %p", "%m/%d/%Y"],
           "ymd": ["%Y/%m/%d %H:%M", "%d %b %Y", "%b %d, %Y %H:%M"], None: ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]}


@pytest.mark.parametrize(("order", "fmt"), [(o, f) for o, fs in FORMATS.items() for f in fs])
def test_host_and_device_read_a_column_alike(order, fmt):
    rng = np.random.default_rng(3)
    stamps = [datetime(2019, 1, 1) + timedelta(minutes=int(m)) for m in rng.integers(0, 3 * 525_600, 300)]
    stamps = [s.replace(second=0) if "%S" not in fmt else s for s in stamps]
    frame = pd.DataFrame({"when": [s.strftime(fmt) for s in stamps], "y": rng.integers(0, 2, 300).astype(str)})
    schema = infer_schema(frame, "y")
    (column,) = schema.columns
    assert (column.kind, column.date_order) == ("datetime", order)
    truth = [datetime.strptime(s.strftime(fmt), fmt) for s in stamps]
    assert len(column.parts) == len(set(column.parts)) >= 3
    if "%H" not in fmt and "%I" not in fmt:
        assert not {"hour", "minute", "hour_sin", "hour_cos"} & set(column.parts)
    for careful in (False, True):  # the device's encoder, alone: what runs on the device
        feeds, errors = FeatureEncoder(InputSchema((column,)), careful=careful).encode(
            {"when": frame["when"].tolist()}, len(frame))
        got = np.hstack([feeds[f] for f in column.features])
        want = np.array([expected_parts(t, column.parts) for t in truth], dtype=np.float32)
        assert errors == {} and np.allclose(got, want, atol=2e-7, rtol=0)


DATES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
WRITTEN = st.one_of(
    st.tuples(DATES, st.sampled_from(["%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M", "%d/%m/%Y %H:%M", "%m-%d-%Y %I:%M %p",
                                      "%d %B %Y", "%b %d, %Y %H:%M:%S"])).map(lambda t: t[0].strftime(t[1])),
    st.sampled_from(["soon", "", "NA", "13/13/2020", "2024", "05/06/20"]),
    DATES, st.none(), st.sampled_from([np.datetime64("2024-01-02T03:04:05"), np.datetime64("NaT"), 5, math.nan]),
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(WRITTEN, max_size=12), order=st.sampled_from(ORDERS),
       parts=st.permutations(DATETIME_PARTS).flatmap(lambda p: st.integers(1, len(p)).map(lambda k: tuple(p[:k]))))
def test_fast_and_careful_paths_agree_for_every_order_and_any_parts(values, order, parts):
    column = InputColumn("t", "datetime", tuple(f"t__{p}" for p in parts), date_order=order, parts=parts)
    encode = [FeatureEncoder(InputSchema((column,)), careful=c).encode({"t": values}, len(values)) for c in (1, 0)]
    (careful, bad_careful), (fast, bad_fast) = encode
    assert {k: v.tobytes() for k, v in careful.items()} == {k: v.tobytes() for k, v in fast.items()}
    assert {i: e.reason for i, e in bad_careful.items()} == {i: e.reason for i, e in bad_fast.items()}


def test_every_part_has_its_table_and_cyclic_parts_wrap_around():
    assert set(PART_TABLES) == set(DATETIME_PARTS) and set(DATE_ORDERS) == set(ORDERS[1:])
    december, january = (datetime_parts(datetime(y, m, 15), ("month_sin", "month_cos")) for y, m in
                         ((2023, 12), (2024, 1)))
    assert math.dist(december, january) < 0.55 and to_datetime("n/a", "dmy") is None


# -- a build: a dd-mm-yyyy column becomes parts, not hundreds of categories -----------------------


def test_prepare_turns_a_day_first_column_into_parts():
    from edgeml.data.prepare import prepare

    rng = np.random.default_rng(0)
    days = [datetime(2011, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 700, 240)]
    frame = pd.DataFrame({"dteday": [d.strftime("%d-%m-%Y") for d in days],
                          "temp": rng.normal(20, 5, 240).round(1),
                          "busy": ["yes" if d.weekday() < 5 else "no" for d in days]})
    p = prepare(frame, "busy")
    (when,) = [c for c in p.inputs.columns if c.name == "dteday"]
    assert when.kind == "datetime" and when.date_order == "dmy" and when.categories == ()
    assert when.features == tuple(f"dteday__{part}" for part in when.parts) and "dayofweek" in when.parts
    assert p.X["train"].shape[1] == len(when.parts) + 1  # its parts and temp: no one-hot of 200 dates
    day_of_week = p.features["train"]["dteday__dayofweek"].to_numpy()
    truth = [datetime.strptime(t, "%d-%m-%Y").weekday() for t in p.split.train["dteday"]]
    assert day_of_week.tolist() == truth


def outcome(text, order, shown=None):
    """What parse_date gives, or its message with the value shown as ``shown``."""
    try:
        return parse_date(text, order)
    except BadValue as exc:
        return str(exc).replace(repr(text), repr(shown or text))


@settings(max_examples=300, deadline=None)
@given(shape=st.sampled_from(["2024-03-01", "2024-03-01T12:30", "1999-12-31 23:59:59"]),
       edits=st.lists(st.tuples(st.integers(0, 18), st.sampled_from("0123456789-:Tt +Z.,/a")), max_size=3),
       order=st.sampled_from(ORDERS))
def test_the_iso_shortcut_reads_as_the_expression_does(shape, edits, order):
    """parse_date hands the commonest ISO 8601 shapes to datetime.fromisoformat; a leading space bypasses that."""
    text = list(shape)
    for i, ch in edits:
        text[i % len(text)] = ch
    text = "".join(text)
    assert outcome(text, order) == outcome(" " + text, order, shown=text)
