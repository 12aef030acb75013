"""The one date grammar: how a device, and the host that trains for it, read a date or a timestamp written as text.

:func:`parse_date` reads one value with a column's *date order* (``InputColumn.date_order``): ``None`` for
ISO 8601 only, else how a date written with the year last orders day and month (``"dmy"``, ``"mdy"``;
``"ymd"`` for a column that never writes one). :func:`date_orders` says which orders read every value of a
column, which is how the host decides day-first or month-first from evidence.

The forms (case-insensitive, spaces around ignored):

- ISO 8601 (every order): ``2024-03-01``, ``2024-03-01T12:30``, ``2024-03-01 12:30:05.250``, with ``Z`` or an
  offset (``+01:00``, ``+0100``, ``-05``), which is turned into UTC;
- year first (any order but ``None``): ``2024/3/1``, ``2024.03.01``, ``2024-3-1``;
- year last (``"dmy"`` or ``"mdy"``): ``09-05-2011``, ``1/22/2020``, ``22.01.2020``, the same separator twice;
- month names in English, full or abbreviated (any order but ``None``): ``5 Sep 2011``, ``05-Sep-2011``,
  ``05SEP2011``, ``Sep 5, 2011``, ``September 5th 2011``, after an optional weekday (``Mon, 5 Sep 2011``, not
  checked against the date);
- after any of them, a time ``HH:MM[:SS[.fff]]`` with an optional ``AM``/``PM`` and then an optional ``Z``,
  offset, ``UTC`` or ``GMT``.

Years are written with four digits: a two-digit year (``05/06/07``) is refused, since nothing in one value says
its century, and with it no order of three small numbers can be decided from evidence. Plain numbers
(``2024``, ``20240301``) are never dates. One precompiled regular expression reads every form.

Example:

>>> parse_date("09-05-2011", "dmy"), parse_date("1/22/2020 5:00 PM", "mdy")
(datetime.datetime(2011, 5, 9, 0, 0), datetime.datetime(2020, 1, 22, 17, 0))
>>> parse_date("2024-03-01T12:30:00+01:00", None), parse_date("n/a", None) is None
(datetime.datetime(2024, 3, 1, 11, 30), True)
>>> date_orders(["05/06/2020", "13/06/2020"])
('dmy',)
>>> parse_date("13/06/2020", None)
Traceback (most recent call last):
...
edgeml_runtime.cells.BadValue: could not read '13/06/2020' as an ISO 8601 date or datetime
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import cache

__all__ = ["ORDERS", "date_orders", "orders_reading", "parse_date", "reads"]

#: Every date order, ``None`` (ISO 8601 only) first; :data:`edgeml_runtime.schema.DATE_ORDERS` are the others.
ORDERS = (None, "ymd", "dmy", "mdy")

_MONTH = (r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
          r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?")
_WEEKDAY = r"mon(?:day)?|tue(?:s(?:day)?)?|wed(?:nesday)?|thu(?:r(?:s(?:day)?)?)?|fri(?:day)?|sat(?:urday)?|sun(?:day)?"
_S = r"[-/.,]?\s*"  # between the fields of a date with a month name: 05-Sep-2011, 5 Sep 2011, Sep 5, 2011, 05SEP2011
_TH = r"(?:st|nd|rd|th)?"

_DATE_PATTERN = (
    rf"""\s*(?:(?P<wd>{_WEEKDAY})\.?,?\s+)?
    (?:(?P<y1>\d{{4}})(?P<s1>[-/.])(?P<m1>\d{{1,2}})(?P=s1)(?P<d1>\d{{1,2}})             # 2024-03-01, 2024/3/1
      |(?P<a>\d{{1,2}})(?P<s2>[-/.])(?P<b>\d{{1,2}})(?P=s2)(?P<y2>\d{{4}})               # 09-05-2011, 1/22/2020
      |(?P<d3>\d{{1,2}}){_TH}{_S}(?P<n3>{_MONTH})\.?{_S}(?P<y3>\d{{4}})                 # 5 Sep 2011
      |(?P<n4>{_MONTH})\.?{_S}(?P<d4>\d{{1,2}}){_TH}{_S}(?P<y4>\d{{4}}))                # Sep 5, 2011
    (?:(?P<ts>[T ]|\s+|,\s*)(?P<H>\d{{1,2}}):(?P<M>\d\d)(?::(?P<S>\d\d)(?:[.,](?P<F>\d{{1,9}}))?)?
      (?:\s*(?P<ap>[ap])\.?m\.?)?
      (?P<zs>\s*)(?P<z>z|utc|gmt|[+-]\d\d(?::?\d\d)?)?)?
    \s*"""
)


@cache
def _date() -> re.Pattern:
    """The date grammar, compiled when first used: a bundle without a datetime column never pays for it."""
    return re.compile(_DATE_PATTERN, re.ASCII | re.IGNORECASE | re.VERBOSE)

_ALL, _NOT_ISO = frozenset(ORDERS), frozenset(ORDERS[1:])
_MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}


def parse_date(text: str, order: str | None = None) -> datetime | None:
    """``text`` as a naive UTC datetime, None for a missing value (empty, ``NA``, ``null``...).

    ``order`` is the column's date order (see the module); text it does not read raises
    :class:`~edgeml_runtime.cells.BadValue` naming the value.

    >>> parse_date("Sep 5, 2011", "dmy"), parse_date("05.09.2011 23:59:58.5", "dmy")
    (datetime.datetime(2011, 9, 5, 0, 0), datetime.datetime(2011, 9, 5, 23, 59, 58, 500000))
    >>> parse_date("31/04/2020", "dmy")
    Traceback (most recent call last):
    ...
    edgeml_runtime.cells.BadValue: '31/04/2020' is no valid date or time (day is out of range for month)
    """
    n = len(text)
    if (n == 10 or n == 16 or n == 19) and text[4] == "-" == text[7] and (
            n == 10 or (text[10] in "Tt " and text[13] == ":" and (n == 16 or text[16] == ":"))):
        try:  # the commonest ISO 8601 shapes, which fromisoformat reads as the expression below does, faster
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    m = _date().fullmatch(text)
    if m is None:
        return _unread(text, order)
    wd, y1, s1, m1, d1, a, _, b, y2, d3, n3, y3, n4, d4, y4, ts, hh, mm, ss, frac, ap, zs, zone = m.groups()
    if y1 is not None:
        year, month, day = y1, m1, d1
        iso = s1 == "-" and len(m1) == len(d1) == 2 and wd is None
    elif y2 is not None:
        if order == "dmy":
            year, month, day = y2, b, a
        elif order == "mdy":
            year, month, day = y2, a, b
        else:
            return _unread(text, order, " (it writes the year last, which this column's dates do not)")
        iso = False
    else:
        year, day, name = (y3, d3, n3) if y3 is not None else (y4, d4, n4)
        month, iso = _MONTHS[name[:3].lower()], False
    if order is None and not (iso and _iso_time(ts, hh, ap, zs, zone)):
        return _unread(text, order)
    try:
        if hh is None:
            return datetime(int(year), int(month), int(day))
        d = datetime(int(year), int(month), int(day), *_clock(hh, mm, ss, frac, ap))
        return d if zone is None else _to_utc(d, zone)
    except (ValueError, OverflowError) as exc:
        raise _bad(f"{text!r} is no valid date or time ({exc})") from None


def date_orders(texts: Iterable[str]) -> tuple[str | None, ...]:
    """The orders of :data:`ORDERS` that read every one of ``texts`` (missing values read under every order).

    >>> date_orders(["05/06/2020"]), date_orders(["05/06/2020", "06/13/2020"]), date_orders(["2020-06-13"])
    (('dmy', 'mdy'), ('mdy',), (None, 'ymd', 'dmy', 'mdy'))
    """
    left = set(ORDERS)
    for text in texts:
        left &= orders_reading(text)
        if not left:
            break
    return tuple(o for o in ORDERS if o in left)


def orders_reading(text: str) -> frozenset:
    """The orders that read ``text``, in two or three readings: what ISO 8601 (``None``) reads every order
    reads, and what ``"ymd"`` reads (year first, month names) ``"dmy"`` and ``"mdy"`` read too.

    >>> sorted(orders_reading("13/06/2020")), sorted(orders_reading("5 Sep 2011")), orders_reading("soon")
    (['dmy'], ['dmy', 'mdy', 'ymd'], frozenset())
    """
    if reads(text, "ymd"):
        return _ALL if reads(text, None) else _NOT_ISO
    return frozenset(o for o in ("dmy", "mdy") if reads(text, o))


def reads(text: str, order: str | None) -> bool:
    """Whether :func:`parse_date` reads ``text`` with ``order`` (as a date or as a missing value)."""
    try:
        parse_date(text, order)
    except ValueError:
        return False
    return True


def _iso_time(sep, hour, ampm, zone_space, zone) -> bool:
    """Whether the time part of a match is as ISO 8601 writes it (or absent)."""
    if hour is None:
        return True
    return sep in ("T", "t", " ") and len(hour) == 2 and ampm is None and not zone_space and \
        (zone is None or zone[0] in "Zz+-")


def _clock(hh, mm, ss, frac, ampm) -> tuple[int, int, int, int]:
    """Hour, minute, second and microsecond of a match's time."""
    hour = int(hh)
    if ampm is not None:
        if not 1 <= hour <= 12:
            raise ValueError(f"hour {hour} with {ampm.upper()}M; with AM or PM the hour is 1 to 12")
        hour = hour % 12 + (12 if ampm in "pP" else 0)
    micro = int(frac[:6].ljust(6, "0")) if frac else 0
    return hour, int(mm), int(ss) if ss else 0, micro


def _to_utc(d: datetime, zone: str) -> datetime:
    """``d``, written in ``zone`` (``Z``, ``UTC``, ``GMT`` or an offset), in UTC."""
    if zone[0] not in "+-":
        return d
    minutes = int(zone[1:3]) * 60 + int(zone[-2:] if len(zone) > 3 else 0)
    if minutes >= 24 * 60:
        raise ValueError(f"offset {zone} is a day or more")
    return d - timedelta(minutes=-minutes if zone[0] == "-" else minutes)


@cache
def _cells():
    """:mod:`edgeml_runtime.cells`, for its missing-value words and :class:`BadValue`: imported on first use,
    since it imports this module."""
    from . import cells

    return cells


def _unread(text: str, order: str | None, why: str = "") -> None:
    """None for a missing value; otherwise the error saying that ``text`` is no date with ``order``."""
    if text.strip().lower() in _cells().NA_TOKENS:
        return None
    if order is None:
        raise _bad(f"could not read {text!r} as an ISO 8601 date or datetime")
    raise _bad(f"could not read {text!r} as a date{why or _ORDER_HINT[order]}")


_ORDER_HINT = {"ymd": " (year first, ISO 8601, or with a month name)",
               "dmy": " (day first like 31/12/2024, year first, or with a month name)",
               "mdy": " (month first like 12/31/2024, year first, or with a month name)"}


def _bad(message: str) -> ValueError:
    return _cells().BadValue(message)
