"""The health gate of a new bundle: pass, fail or keep testing, from the counts of its first drift windows.

A switched bundle runs on test (:class:`~edgeml_runtime.update.slots.Slots`)
until :class:`HealthGate` decides, with the release's
:class:`~edgeml_runtime.update.metadata.Health`:

* **fail** as soon as ``rows >= min_rows`` and the error rate (bad rows /
  rows) is over ``max_error_rate``, or ``windows >= min_windows`` and the mean
  one-row latency is over ``max_latency_ms``;
* **pass** once ``windows >= min_windows``, ``rows >= min_rows``, and both
  the error rate and the latency are within bounds;
* else **pending**. A verdict reached stays: later counts do not change it
  (:meth:`HealthGate.reset` starts over).

The state is counts; the verdict is a read-only property (like river's drift
detectors).

Example (windows of 100 rows; from the fourth on, 9 of them fail):

>>> from edgeml_runtime.update.metadata import Health
>>> gate = HealthGate(Health(min_windows=2, min_rows=200, max_error_rate=0.05, max_latency_ms=50.0))
>>> for i, bad in enumerate([0, 2, 1, 9, 9, 9, 9]):
...     before = gate.verdict
...     if gate.update(rows=100, bad=bad, latency_ms_per_row=4.0).verdict != before:
...         print(i, gate.verdict, gate.reason)
1 pass 2 windows, 200 rows: error rate 0.010 <= 0.05, latency 4.0 ms <= 50.0 ms
>>> gate = HealthGate(Health(min_windows=2, min_rows=200, max_error_rate=0.05, max_latency_ms=50.0))
>>> [gate.update(rows=100, bad=bad, latency_ms_per_row=4.0).verdict for bad in [9, 9, 0]]
['pending', 'fail', 'fail']
>>> gate.reason
'error rate 0.090 over 0.05 after 200 rows (18 bad)'
"""

from __future__ import annotations

from .metadata import Health

__all__ = ["HealthGate"]

VERDICTS = ("pending", "pass", "fail")


class HealthGate:
    """Counts of the bundle on test, and the verdict they give under ``health``."""

    def __init__(self, health: Health):
        self.health = health
        self.reset()

    def reset(self) -> None:
        """Forget every count: the verdict is pending again."""
        self.windows = self.rows = self.bad = 0
        self.latency_ms = 0.0  #: total scoring time of the rows, in milliseconds
        self._verdict, self._reason = "pending", ""

    def update(self, rows: int, bad: int, latency_ms_per_row: float, windows: int = 1) -> HealthGate:
        """Add ``windows`` drift windows of ``rows`` rows, ``bad`` of them refused or failed, scored in
        ``latency_ms_per_row`` each on average; decide if the counts allow it."""
        if self._verdict != "pending":
            return self
        self.windows += windows
        self.rows += rows
        self.bad += bad
        self.latency_ms += latency_ms_per_row * rows
        self._decide()
        return self

    @property
    def verdict(self) -> str:
        """``"pending"``, ``"pass"`` or ``"fail"``."""
        return self._verdict

    @property
    def reason(self) -> str:
        """Why the verdict (empty while pending)."""
        return self._reason

    @property
    def error_rate(self) -> float:
        return self.bad / self.rows if self.rows else 0.0

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_ms / self.rows if self.rows else 0.0

    def counts(self) -> dict:
        """The counts as an update status reports them (``health``: windows, rows, bad, latency_ms)."""
        return {"windows": self.windows, "rows": self.rows, "bad": self.bad, "latency_ms": self.mean_latency_ms}

    def _decide(self) -> None:
        h = self.health
        enough_rows, enough_windows = self.rows >= h.min_rows, self.windows >= h.min_windows
        if enough_rows and self.error_rate > h.max_error_rate:
            self._set("fail", f"error rate {self.error_rate:.3f} over {h.max_error_rate} after {self.rows} rows "
                              f"({self.bad} bad)")
        elif enough_windows and self.rows and self.mean_latency_ms > h.max_latency_ms:
            self._set("fail", f"latency {self.mean_latency_ms:.1f} ms a row over {h.max_latency_ms} ms after "
                              f"{self.windows} windows")
        elif enough_rows and enough_windows:
            self._set("pass", f"{self.windows} windows, {self.rows} rows: error rate {self.error_rate:.3f} <= "
                              f"{h.max_error_rate}, latency {self.mean_latency_ms:.1f} ms <= {h.max_latency_ms} ms")

    def _set(self, verdict: str, reason: str) -> None:
        self._verdict, self._reason = verdict, reason
