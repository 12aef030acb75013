"""The fleet's judging policy: the ``[policy]`` table of fleet.toml, validated key by key.

The horizon is ``slices`` consecutive time slices of ``slice`` seconds each,
aligned on multiples of ``slice`` since the epoch and taken by the windows'
``ended`` time: judging the same store again gives the same answer, and a
backlog drained late lands in the slices where it happened. Only complete
slices are judged (the last one ends at the latest multiple of ``slice``).

* a **fleet slice** is the counts of every device's windows ended in it,
  summed (:func:`edgeml_runtime.protocol.add_counts`) and judged by
  :func:`~edgeml_runtime.protocol.judge_window` under the policy's
  :class:`~edgeml_runtime.protocol.VerdictRule` (``alpha``, ``psi_moderate``,
  ``psi_significant``, ``drifted_share``, ``min_rows``);
* the fleet **drifts** when at least ``drifted_slices`` of the ``slices``
  drifted, at least ``min_devices`` devices reported ``min_rows`` rows over
  the horizon, and at least ``device_share`` of those drifted on their own
  horizon counts;
* a drifted fleet **recovers** (hysteresis) only when at most
  ``recover_slices`` (fewer than ``drifted_slices``) of the slices drifted;
* a device drifted on its own whose counts also differ from the rest of the
  fleet's (χ² homogeneity, at ``anomaly_alpha`` over its columns, Bonferroni),
  while at least ``min_devices`` report but too few drifted for a fleet
  drift, is a device **anomaly**;
* ``cooldown``: no second decision of one kind for one (fleet, bundle, device)
  within it;
* live **performance** (:mod:`.performance`): the labelled rows' counts over
  the horizon, summed, give the live ``performance_metric`` (``"auto"``: the
  build's search metric when counts give it, else ``accuracy`` or ``rmse``);
  worse than the build's ``metrics.test`` by more than
  ``performance_margin`` (absolute for accuracy, balanced accuracy, F1 and
  R²; relative for RMSE and MAE), with at least ``min_labelled`` labelled
  rows, is a ``performance`` decision, and at most half the margin again a
  ``performance_recovered`` one.

Durations (``judge_every``, ``slice``, ``cooldown``) are seconds, or text such
as ``"30s"``, ``"10m"``, ``"1h"``.

>>> p = Policy.from_table({"slice": "1m", "slices": 5, "drifted_slices": 2}, "fleet.toml")
>>> p.slice, p.horizon, p.rule().min_rows
(60.0, 300.0, 100)
>>> Policy.from_table({"slcie": 60}, "fleet.toml")
Traceback (most recent call last):
...
edgeml.errors.FleetError: fleet.toml: [policy] has no key 'slcie'; the keys are judge_every, slice, slices, \
drifted_slices, recover_slices, min_devices, device_share, min_rows, alpha, psi_moderate, psi_significant, \
drifted_share, anomaly_alpha, cooldown, performance_metric, performance_margin, min_labelled
>>> Policy.from_table({"drifted_slices": 11}, "fleet.toml")
Traceback (most recent call last):
...
edgeml.errors.FleetError: fleet.toml: [policy] drifted_slices = 11: must be a whole number from 1 to slices (10); \
e.g. drifted_slices = 3
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from edgeml.errors import FleetError
from edgeml_runtime.errors import SettingsError
from edgeml_runtime.protocol import VerdictRule

from .performance import COUNTED

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATIONS = ("judge_every", "slice", "cooldown")
_RULE = ("alpha", "psi_moderate", "psi_significant", "drifted_share", "min_rows")


@dataclass(frozen=True)
class Policy:
    """How the controller judges a fleet (see the module docstring); ``Policy()`` is the defaults."""

    judge_every: float = 10.0
    slice: float = 60.0
    slices: int = 10
    drifted_slices: int = 3
    recover_slices: int = 1
    min_devices: int = 3
    device_share: float = 0.3
    # The verdict rule's keys (:data:`_RULE`) default to the devices' own rule, so fleet and devices agree.
    min_rows: int = VerdictRule.min_rows
    alpha: float = VerdictRule.alpha
    psi_moderate: float = VerdictRule.psi_moderate
    psi_significant: float = VerdictRule.psi_significant
    drifted_share: float = VerdictRule.drifted_share
    anomaly_alpha: float = 0.01
    cooldown: float = 600.0
    performance_metric: str = "auto"
    performance_margin: float = 0.05
    min_labelled: int = 200

    def __post_init__(self):
        self._check()

    @property
    def horizon(self) -> float:
        """Seconds the judged slices span."""
        return self.slice * self.slices

    def rule(self) -> VerdictRule:
        """The verdict rule fleet slices and devices are judged by."""
        return VerdictRule(**{k: getattr(self, k) for k in _RULE})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def bounds(self, now: float) -> list[tuple[float, float]]:
        """The (start, end) of each judged slice, oldest first: complete slices, the last ending at or before now.

        >>> Policy(slice=60, slices=2, drifted_slices=2).bounds(150.0)
        [(0.0, 60.0), (60.0, 120.0)]
        """
        end = math.floor(now / self.slice) * self.slice
        return [(end - (self.slices - i) * self.slice, end - (self.slices - i - 1) * self.slice)
                for i in range(self.slices)]

    @classmethod
    def from_table(cls, table: Mapping, source: str) -> Policy:
        """The policy a ``[policy]`` table sets (the defaults for keys it leaves out); FleetError naming the key."""
        if not isinstance(table, Mapping):
            raise FleetError(f"{source}: [policy] must be a table of keys, not {type(table).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in table:
            if key not in names:
                raise FleetError(f"{source}: [policy] has no key {key!r}; the keys are {', '.join(names)}")
        values = {k: _duration(v, k, source) if k in _DURATIONS else v for k, v in table.items()}
        if "recover_slices" not in values and isinstance(values.get("drifted_slices"), int):
            # The default hysteresis (recover at 1 drifted slice) needs K >= 2; with K = 1, recover at 0.
            values["recover_slices"] = max(0, min(cls.recover_slices, values["drifted_slices"] - 1))
        try:
            return cls(**values)
        except FleetError as exc:
            raise FleetError(f"{source}: [policy] {exc}") from None

    def _check(self) -> None:
        whole = {"slices": (1, 10_000), "drifted_slices": (1, self.slices),
                 "recover_slices": (0, self.drifted_slices - 1), "min_devices": (1, 10**9),
                 "min_labelled": (1, 10**12)}
        for key, (low, high) in whole.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                hint = {"drifted_slices": "slices", "recover_slices": "drifted_slices - 1"}.get(key)
                top = f"{hint} ({high})" if hint else f"{high:,}"
                example = max(low, min(getattr(Policy, key), high))
                raise FleetError(f"{key} = {value!r}: must be a whole number from {low} to {top}; "
                                 f"e.g. {key} = {example}")
        for key in _DURATIONS:
            value = getattr(self, key)
            low = 0.0 if key != "slice" else 1e-3
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and value >= low) or (key == "slice" and value < low):
                raise FleetError(f"{key} = {value!r}: must be a duration of at least {low:g} seconds (a number of "
                                 f"seconds, or text such as \"30s\", \"10m\", \"1h\"); e.g. {key} = "
                                 f"{getattr(Policy, key):g}")
        for key in ("device_share", "anomaly_alpha"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1 or (
                    key == "anomaly_alpha" and value == 1):
                what = "a share of the devices, above 0 and at most 1" if key == "device_share" else \
                    "a probability above 0 and below 1"
                raise FleetError(f"{key} = {value!r}: must be {what}; e.g. {key} = {getattr(Policy, key)}")
        metrics = ("auto", *COUNTED["classification"], *COUNTED["regression"])
        if self.performance_metric not in metrics:
            raise FleetError(f"performance_metric = {self.performance_metric!r}: must be one of {', '.join(metrics)} "
                             "(the metrics counts of labelled rows give); e.g. performance_metric = \"auto\"")
        margin = self.performance_margin
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not (
                math.isfinite(margin) and 0 < margin <= 10):
            raise FleetError(f"performance_margin = {margin!r}: must be a number above 0 and at most 10 (in the "
                             "metric's units; a share of the build's value for rmse and mae); e.g. "
                             f"performance_margin = {Policy.performance_margin}")
        object.__setattr__(self, "performance_margin", float(margin))
        object.__setattr__(self, "slice", float(self.slice))
        object.__setattr__(self, "judge_every", float(self.judge_every))
        object.__setattr__(self, "cooldown", float(self.cooldown))
        try:
            self.rule()
        except SettingsError as exc:
            raise FleetError(str(exc)) from None


def _duration(value, key: str, source: str) -> float:
    """Seconds from a number or a text such as "30s", "10m", "1h", "1d"."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise FleetError(f"{source}: [policy] {key} = {value!r}: not a duration; give seconds (30) or text "
                             "such as \"30s\", \"10m\", \"1h\"")
        return float(match[1]) * _UNIT[match[2]]
    return value
