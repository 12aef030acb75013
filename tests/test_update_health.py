"""The health gate of a new bundle (issue 18): fixed count sequences, the exact index of the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from edgeml_runtime.update.health import HealthGate
from edgeml_runtime.update.metadata import Health

HEALTH = Health(min_windows=3, min_rows=300, max_error_rate=0.05, max_latency_ms=20.0, max_crashes=0)


def first_verdict(windows) -> tuple[int | None, str, str]:
    """(index of the window that decided, verdict, reason) over ``windows`` of (rows, bad, latency ms a row)."""
    gate = HealthGate(HEALTH)
    for i, (rows, bad, latency) in enumerate(windows):
        if gate.update(rows, bad, latency).verdict != "pending":
            return i, gate.verdict, gate.reason
    return None, gate.verdict, gate.reason


def seeded(seed: int, n: int, rows: int, bad_rate: float, latency: float, change_at: int | None = None,
           bad_after: float = 0.0, latency_after: float = 0.0) -> list[tuple[int, int, float]]:
    """``n`` windows of ``rows`` rows, bad rows drawn with ``bad_rate`` (``bad_after`` from ``change_at`` on)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        late = change_at is not None and i >= change_at
        bad = int(rng.binomial(rows, bad_after if late else bad_rate))
        out.append((rows, bad, (latency_after if late else latency) + float(rng.uniform(-0.5, 0.5))))
    return out


@pytest.mark.parametrize("windows, expected", [
    # healthy: passes on the third window (the first with 3 windows and 300 rows)
    (seeded(1, 10, 100, 0.01, 5.0), (2, "pass")),
    # healthy but small windows: the rows decide, on the sixth window (6 x 50 = 300)
    (seeded(2, 10, 50, 0.0, 5.0), (5, "pass")),
    # broken from the start: fails as soon as 300 rows are in, not before
    (seeded(3, 10, 100, 0.3, 5.0), (2, "fail")),
    # a big first window with many errors fails at once, before min_windows
    ([(400, 40, 5.0)] + seeded(4, 5, 100, 0.0, 5.0), (0, "fail")),
    # slow: fails on latency when min_windows is reached
    (seeded(5, 10, 200, 0.0, 35.0), (2, "fail")),
    # too few rows ever: stays pending
    ([(10, 0, 5.0)] * 20, (None, "pending")),
])
def test_seeded_count_sequences_decide_at_the_expected_window(windows, expected):
    index, verdict, reason = first_verdict(windows)
    assert (index, verdict) == expected, reason


def test_the_reasons_say_the_numbers():
    assert first_verdict([(100, 0, 5.0)] * 3)[2] == \
        "3 windows, 300 rows: error rate 0.000 <= 0.05, latency 5.0 ms <= 20.0 ms"
    assert first_verdict([(100, 20, 5.0)] * 3)[2] == "error rate 0.200 over 0.05 after 300 rows (60 bad)"
    assert first_verdict([(100, 0, 30.0)] * 3)[2] == "latency 30.0 ms a row over 20.0 ms after 3 windows"


def test_the_bounds_themselves_pass():
    index, verdict, _ = first_verdict([(100, 5, 20.0)] * 3)  # exactly 0.05 and 20 ms
    assert (index, verdict) == (2, "pass")


def test_a_verdict_stays_until_reset_and_windows_may_come_several_at_once():
    gate = HealthGate(HEALTH).update(300, 0, 5.0, windows=3)
    assert gate.verdict == "pass"
    assert gate.update(1000, 900, 99.0).verdict == "pass"  # decided: later counts change nothing
    assert gate.counts() == {"windows": 3, "rows": 300, "bad": 0, "latency_ms": 5.0}
    gate.reset()
    assert (gate.verdict, gate.reason, gate.rows) == ("pending", "", 0)
    assert gate.update(300, 30, 5.0, windows=3).verdict == "fail"


def test_latency_is_the_mean_over_rows_not_over_windows():
    gate = HealthGate(HEALTH).update(280, 0, 10.0).update(10, 0, 100.0).update(10, 0, 100.0)
    assert gate.mean_latency_ms == pytest.approx((280 * 10 + 20 * 100) / 300)
    assert gate.verdict == "pass"  # 16 ms a row, though the mean of the three windows is 70 ms
