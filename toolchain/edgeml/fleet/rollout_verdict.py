"""A staged rollout's arithmetic: the waves a fleet is split into, and the verdict on one wave.

Pure functions of plain values, used by :mod:`.rollout` (the state kept in
the fleet store) and tested on fixed vectors.

**Waves** (:func:`plan_waves`): the canary share of the fleet first, then
each wave share, *cumulative*: ``canary=5%, waves=25%,100%`` means 5 % of
the devices, then up to 25 % of the fleet, then all of it. A share's size
rounds up, so a share above 0 is at least one device; a device is in one
wave only, the devices are taken in the order of their sorted ids, and a
wave left with no device (the fleet is too small for the step) is skipped.

**A wave's verdict** (:func:`judge_wave`), from the last update step each
device of the wave reported (``None``: nothing yet). A device has
*executed* once its last step is final (``committed``, ``failed`` or
``rolled_back``); ``failed`` and ``rolled_back`` count as failures.

* ``fail`` when at least ``min_executed`` devices executed (capped at the
  wave's size) and more than ``abort_failure_rate`` of them failed; or when
  the wave's devices' error rate (bad rows / rows, on the new bundle) is
  above the control devices' (not yet announced, same period) by more than
  ``error_margin``, both with at least ``min_rows`` rows;
* ``pass`` only when every device of the wave executed and the failures are
  within the rate;
* ``inconclusive`` otherwise: the rollout waits (and, past the wave's
  timeout, pauses: it never passes a wave on silence).

Example (river-style: the verdict on fixed counts):

>>> judge_wave({"a": "committed", "b": "committed", "c": "downloading"}, abort_failure_rate=0.1,
...            min_executed=3).outcome
'inconclusive'
>>> v = judge_wave({"a": "committed", "b": "failed", "c": "committed"}, abort_failure_rate=0.1, min_executed=3)
>>> v.outcome, v.reason
('fail', '1 of 3 executed devices failed (33%), above the abort rate 10%')
>>> plan_waves([f"pi-{i:02}" for i in range(10)], parse_share("10%", "canary"), [0.5, 1.0])
[['pi-00'], ['pi-01', 'pi-02', 'pi-03', 'pi-04'], ['pi-05', 'pi-06', 'pi-07', 'pi-08', 'pi-09']]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgeml.errors import FleetError

#: The steps a device reports of an update (``protocol.updates``), in the order they come.
STEPS = ("offered", "downloading", "verifying", "testing", "active", "committed", "failed", "rolled_back")
#: The final steps: a device that reported one has executed the update.
FINAL = ("committed", "failed", "rolled_back")
FAILED = ("failed", "rolled_back")
OUTCOMES = ("pass", "fail", "inconclusive")

_SHARE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_share(value: str | float, name: str, *, zero: bool = False) -> float:
    """A share of the fleet from ``"5%"``, ``"0.05"`` or a number, above 0 (or 0 with ``zero``) and at most 1.

    ``name`` (the flag or argument) is named in the error.

    >>> parse_share("5%", "--canary"), parse_share("0.25", "--waves"), parse_share(1, "--waves")
    (0.05, 0.25, 1.0)
    >>> parse_share("5 percent", "--canary")
    Traceback (most recent call last):
    ...
    edgeml.errors.FleetError: --canary '5 percent': not a share of the fleet; give a percentage (5%) or a \
fraction (0.05)
    >>> parse_share("150%", "--abort-failure-rate", zero=True)
    Traceback (most recent call last):
    ...
    edgeml.errors.FleetError: --abort-failure-rate '150%': must be from 0% to 100%; e.g. 10%
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FleetError(f"{name} {value!r}: not a share of the fleet; give a percentage (5%) or a fraction (0.05)")
    if isinstance(value, str):
        match = _SHARE.match(value)
        if not match:
            raise FleetError(f"{name} {value!r}: not a share of the fleet; give a percentage (5%) or a fraction "
                             "(0.05)")
        share = float(match[1]) / (100.0 if match[2] else 1.0)
    else:
        share = float(value)
    if not (math.isfinite(share) and (share > 0 or zero and share == 0) and share <= 1.0):
        bounds, example = ("from 0% to 100%", "10%") if zero else ("above 0% and at most 100%", "5%")
        raise FleetError(f"{name} {value!r}: must be {bounds}; e.g. {example}")
    return round(share, 12)


def parse_waves(value: str | Sequence, name: str = "waves") -> list[float]:
    """Cumulative wave shares from ``"25%,100%"`` (or a list), each above the one before, the last 100 %.

    >>> parse_waves("25%,100%")
    [0.25, 1.0]
    >>> parse_waves("50%,25%,100%", "--waves")
    Traceback (most recent call last):
    ...
    edgeml.errors.FleetError: --waves '50%,25%,100%': each wave is the share of the fleet updated by its end, so \
each must be above the one before; e.g. 25%,100%
    """
    items = [s for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)
    text = value if isinstance(value, str) else ",".join(map(str, items))
    if not items:
        raise FleetError(f"{name} {text!r}: give at least one wave; e.g. 25%,100%")
    shares = [parse_share(s, name) for s in items]
    if any(b <= a for a, b in zip(shares, shares[1:], strict=False)):
        raise FleetError(f"{name} {text!r}: each wave is the share of the fleet updated by its end, so each must be "
                         "above the one before; e.g. 25%,100%")
    if shares[-1] != 1.0:
        raise FleetError(f"{name} {text!r}: the last wave must be 100% (the whole fleet); e.g. 25%,100%")
    return shares


def parse_duration(value: str | float, name: str = "wave_timeout") -> float:
    """Seconds from a number or text such as ``"90s"``, ``"30m"``, ``"1h"``; above 0.

    >>> parse_duration("30m"), parse_duration(45)
    (1800.0, 45.0)
    """
    if isinstance(value, str):
        match = _DURATION.match(value)
        seconds = float(match[1]) * _UNIT[match[2]] if match else None
    else:
        seconds = None if isinstance(value, bool) or not isinstance(value, int | float) else float(value)
    if seconds is None or not (math.isfinite(seconds) and seconds > 0):
        raise FleetError(f"{name} {value!r}: not a duration above 0; give seconds (90) or text such as 90s, 30m, 1h")
    return seconds


def duration_text(seconds: float) -> str:
    """``30m``, ``1h``, ``90s``: a duration as the flags take it.

    >>> duration_text(1800), duration_text(5400), duration_text(90), duration_text(7200)
    ('30m', '90m', '90s', '2h')
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def plan_waves(devices: Sequence[str], canary: float | str, waves: Sequence[float] | str) -> list[list[str]]:
    """The devices of each wave, in order: the canary share, then each cumulative wave share (see the module).

    >>> plan_waves(["c", "a", "b"], 0.05, [0.25, 1.0])
    [['a'], ['b', 'c']]
    >>> plan_waves(["a", "a"], 0.05, [1.0])
    Traceback (most recent call last):
    ...
    edgeml.errors.FleetError: devices: 'a' is listed 2 times; a device is in one wave only
    """
    canary = parse_share(canary, "canary", zero=True)
    shares = parse_waves(waves) if isinstance(waves, str) else parse_waves(list(waves))
    ordered = sorted(devices)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a == b:
            raise FleetError(f"devices: {a!r} is listed {ordered.count(a)} times; a device is in one wave only")
    if not ordered:
        raise FleetError("devices: the rollout has no device; wait for the fleet's births or name them")
    plan, taken = [], 0
    for share in (canary, *shares):
        upto = min(len(ordered), math.ceil(round(share * len(ordered), 9))) if share > 0 else 0
        if upto > taken:
            plan.append(ordered[taken:upto])
            taken = upto
    return plan


@dataclass(frozen=True)
class Verdict:
    """The verdict on one wave: ``outcome`` (pass, fail, inconclusive), why, and the counts it was judged on.

    ``devices``: in the wave; ``executed``: reported a final step; ``failed``: of those, failed or rolled
    back (``committed``: the others); ``silent``: reported no step at all (``under_way``: the rest).
    """

    outcome: str
    reason: str
    devices: int
    executed: int
    failed: int
    silent: int

    @property
    def committed(self) -> int:
        return self.executed - self.failed

    @property
    def under_way(self) -> int:
        return self.devices - self.executed - self.silent

    def to_dict(self) -> dict:
        return {"outcome": self.outcome, "reason": self.reason, "devices": self.devices,
                "executed": self.executed, "failed": self.failed, "silent": self.silent}


def judge_wave(statuses: Mapping[str, str | None], *, abort_failure_rate: float, min_executed: int,
               canary_error: tuple[int, int] | None = None, control_error: tuple[int, int] | None = None,
               error_margin: float = 0.02, min_rows: int = 200) -> Verdict:
    """The verdict on a wave from each device's last step (see the module); errors are (bad rows, rows).

    >>> judge_wave({"a": "committed"}, abort_failure_rate=0.1, min_executed=3).outcome  # capped at the wave's size
    'pass'
    >>> judge_wave({"a": None, "b": "testing"}, abort_failure_rate=0.1, min_executed=1,
    ...            canary_error=(30, 300), control_error=(3, 300)).reason
    "the wave's error rate 10.0% on 300 rows is above the control devices' 1.0% on 300 rows by more than 2.0%"
    """
    _check_judging(statuses, abort_failure_rate, min_executed, error_margin, min_rows)
    steps = list(statuses.values())
    n = len(steps)
    executed = sum(s in FINAL for s in steps)
    failed = sum(s in FAILED for s in steps)
    counts = {"devices": n, "executed": executed, "failed": failed, "silent": sum(s is None for s in steps)}
    if executed and executed >= min(min_executed, n) and failed / executed > abort_failure_rate:
        return Verdict("fail", f"{failed} of {executed} executed devices failed ({failed / executed:.0%}), above "
                               f"the abort rate {abort_failure_rate:.0%}", **counts)
    errors = _error_problem(canary_error, control_error, error_margin, min_rows)
    if errors:
        return Verdict("fail", errors, **counts)
    if executed == n:
        return Verdict("pass", f"{n} of {n} devices executed, {failed} failed (at most {abort_failure_rate:.0%})",
                       **counts)
    return Verdict("inconclusive", f"{executed} of {n} reported ({failed} failed, {n - executed - counts['silent']} "
                                   f"under way, {counts['silent']} silent)", **counts)


def _error_problem(canary, control, margin: float, min_rows: int) -> str | None:
    if canary is None or control is None:
        return None
    (bad, rows), (control_bad, control_rows) = canary, control
    if rows < min_rows or control_rows < min_rows:
        return None
    rate, control_rate = bad / rows, control_bad / control_rows
    if rate - control_rate <= margin:
        return None
    return (f"the wave's error rate {rate:.1%} on {rows:,} rows is above the control devices' {control_rate:.1%} "
            f"on {control_rows:,} rows by more than {margin:.1%}")


def _check_judging(statuses, rate, min_executed, margin, min_rows) -> None:
    for device, step in statuses.items():
        if step is not None and step not in STEPS:
            raise FleetError(f"device {device!r} reported step {step!r}; the steps are {', '.join(STEPS)}")
    if not statuses:
        raise FleetError("a wave has at least one device; this one has none")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise FleetError(f"abort_failure_rate {rate!r}: must be a share from 0 to 1; e.g. 0.1")
    if isinstance(min_executed, bool) or not isinstance(min_executed, int) or min_executed < 1:
        raise FleetError(f"min_executed {min_executed!r}: must be a whole number of devices, at least 1; e.g. 3")
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin <= 1:
        raise FleetError(f"error_margin {margin!r}: must be a share from 0 to 1; e.g. 0.02")
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise FleetError(f"min_rows {min_rows!r}: must be a whole number of rows, at least 1; e.g. 200")
