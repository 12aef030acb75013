"""The calibrated window verdict on seeded streams, river-style: false alarms counted, exact verdict sequences.

A reference is built by the host's own ``build_reference`` on 50,000 seeded
training rows of ten columns (nine numeric, one with 2 % missing values, and
a categorical one with rare categories) and a two-class output; seeded
streams of the same distributions, shifted where a test says so, go through
a real :class:`DriftMonitor`, which judges each window with
:func:`judge_window`. Each window runs eleven tests (ten columns and the
output) at 0.01 / 11. The p-values are checked against scipy on the host.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from edgeml.bundle.reference import build_reference
from edgeml_runtime.drift import DriftMonitor, DriftSettings
from edgeml_runtime.errors import SettingsError
from edgeml_runtime.protocol import VerdictRule, add_counts, judge_window
from edgeml_runtime.protocol.stats import chi2_sf, homogeneity_test, upper_gamma
from edgeml_runtime.schema import InputColumn, InputSchema
from edgeml_runtime.settings import resolve_settings

NUMERIC = [f"x{i}" for i in range(9)]
CATEGORIES = ("A", "B", "C", "D", "E")
CATEGORY_SHARES = (0.6, 0.3, 0.08, 0.015, 0.005)
OUTPUT_SHARES = (0.8, 0.2)
SCHEMA = InputSchema((*(InputColumn(n, "numeric", (n,)) for n in NUMERIC),
                      InputColumn("kind", "categorical", ("kind",), categories=CATEGORIES)))
RULE = VerdictRule()  # alpha 0.01, PSI 0.1 / 0.25, share 0.3, min_rows 100
LEVEL = 0.01 / 11


def draw(rng: np.random.Generator, n: int, shift: dict | None = None, silent: tuple = ()) -> tuple[dict, np.ndarray]:
    """``n`` rows of the training distributions; ``shift`` adds to numeric columns, ``silent`` ones are all missing."""
    values = {
        "x0": rng.normal(0, 1, n), "x1": rng.normal(5, 2, n), "x2": rng.lognormal(0, 0.5, n),
        "x3": rng.exponential(1, n), "x4": rng.uniform(0, 10, n), "x5": rng.standard_t(3, n),
        "x6": rng.gamma(2, 2, n), "x7": rng.normal(-3, 0.5, n), "x8": rng.normal(0, 1, n),
    }
    values["x8"][rng.random(n) < 0.02] = np.nan  # a sensor that misses 2 % of its readings
    for name, by in (shift or {}).items():
        values[name] = values[name] + by
    for name in silent:
        values[name] = np.full(n, np.nan)
    feeds = {k: v.astype(np.float32).reshape(-1, 1) for k, v in values.items()}
    feeds["kind"] = np.array(CATEGORIES, dtype=object)[rng.choice(5, n, p=CATEGORY_SHARES)].reshape(-1, 1)
    return feeds, rng.choice(2, n, p=OUTPUT_SHARES)


@pytest.fixture(scope="module")
def reference():
    feeds, _ = draw(np.random.default_rng(20261201), 50_000)
    outputs = np.random.default_rng(7).choice(2, 10_000, p=OUTPUT_SHARES)
    ref = build_reference({k: v.ravel() for k, v in feeds.items()}, SCHEMA, outputs, "classification", (0, 1))
    assert ref["rows"] == {"train": 50_000, "valid": 10_000} and ref["output"]["split"] == "valid"
    return ref


def batches(seed: int, rows: int, largest: int, **drift) -> list[tuple[dict, np.ndarray]]:
    """``rows`` seeded rows in batches of seeded sizes (1 to ``largest``), as a device receives them."""
    rng, out = np.random.default_rng(seed), []
    while rows:
        n = min(rows, int(rng.integers(1, largest + 1)))
        out.append(draw(rng, n, **drift))
        rows -= n
    return out


def judged(reference, fed: list, window_rows: int, rule: VerdictRule = RULE) -> list[dict]:
    """The windows a real monitor closes on ``fed`` batches, judged as it hands them over."""
    monitor = DriftMonitor(reference, SCHEMA, DriftSettings(window_rows=window_rows, rule=rule), clock=lambda: 0.0)
    out = [w for feeds, outputs in fed for w in monitor.update(feeds, outputs).poll()]
    assert {w["rows"] for w in out} == {window_rows} and monitor.rows == 0
    return out


def stream(reference, seed: int, window_rows: int, windows: int, **drift) -> list[dict]:
    """``windows`` windows of ``window_rows`` seeded rows."""
    out = judged(reference, batches(seed, window_rows * windows, min(3 * window_rows, 50_000), **drift), window_rows)
    assert len(out) == windows
    return out


def statuses(windows: list[dict]) -> np.ndarray:
    """One row per window, one status per input column then the output."""
    return np.array([[c["status"] for c in w["columns"].values()] + [w["output"]["status"]] for w in windows])


def at_most(trials: int, p: float) -> int:
    """The count a binomial(trials, p) stays at or under with probability 0.999: the margin of a false-alarm count."""
    return int(stats.binom.ppf(0.999, trials, p))


# -- false alarms without drift ----------------------------------------------------------------

def test_without_drift_100_row_windows_raise_false_alarms_at_the_stated_level_where_psi_alone_fired(reference):
    windows = stream(reference, seed=1, window_rows=100, windows=2000)
    flagged = statuses(windows) != "ok"
    assert all(w["verdict"]["tests"] == 11 and w["verdict"]["level"] == 0.000909091 for w in windows)
    # column level: 22,000 tests, each at 0.01 / 11; expected 20, at most 36 at the 0.999 binomial quantile
    assert flagged.sum() <= at_most(flagged.size, LEVEL), flagged.sum()
    # window level: the chance that any status of a window is not ok is at most alpha = 0.01
    assert flagged.any(axis=1).sum() <= at_most(len(windows), RULE.alpha)
    assert [w["verdict"]["status"] for w in windows] == ["ok"] * 2000  # drift needs 3 of 10 significant columns
    # The same windows under the old rule (the status from the PSI alone): (1/n + 1/m)·χ²(9) with n = 100 is
    # above 0.1 for about 35 % of the decile columns and 0.25 for about 1 %.
    psi = np.array([[c["psi"] for n, c in w["columns"].items() if n in NUMERIC[:8]] for w in windows])
    assert 0.30 < (psi >= 0.1).mean() < 0.48 and 0.004 < (psi >= 0.25).mean() < 0.02
    assert (psi >= 0.25).mean() > 5 * flagged[:, :8].mean()


@pytest.mark.parametrize("window_rows,windows", [(1000, 400), (10_000, 40)])
def test_without_drift_larger_windows_stay_at_the_level_too(reference, window_rows, windows):
    judged = stream(reference, seed=window_rows, window_rows=window_rows, windows=windows)
    flagged = statuses(judged) != "ok"
    assert flagged.sum() <= at_most(flagged.size, LEVEL)
    assert all(w["verdict"]["status"] == "ok" for w in judged)


# -- real shifts ---------------------------------------------------------------------------------

def test_a_small_real_shift_is_flagged_at_10000_rows_and_not_at_100(reference):
    # x0 ~ N(0, 1) moved by 0.4 sd: PSI about 0.15 over its ten bins, a moderate shift
    big = stream(reference, seed=3, window_rows=10_000, windows=5, shift={"x0": 0.4})
    for w in big:
        x0 = w["columns"]["x0"]
        assert 0.1 <= x0["psi"] < 0.25 and x0["p_value"] < 1e-100 and x0["status"] == "moderate", x0
        assert all(c["status"] == "ok" for n, c in w["columns"].items() if n != "x0")
        assert w["verdict"]["status"] == "ok" and w["verdict"]["drifted_columns"] == []
    # At 100 rows the test rejects only as often as its power says: X² is noncentral χ²(9, λ), λ = n·m/(n + m)
    # times the χ² divergence of the shifted shares from the reference's (about 0.16, so a third of the windows)
    small = stream(reference, seed=4, window_rows=100, windows=400, shift={"x0": 0.4})
    e = np.array(reference["columns"]["x0"]["shares"])
    a = np.diff([0, *stats.norm.cdf(np.array(reference["columns"]["x0"]["edges"]) - 0.4), 1])
    power = stats.ncx2.sf(stats.chi2.isf(LEVEL, 9), 9, 100 * 50_000 / 50_100 * ((a - e) ** 2 / e).sum())
    low, high = stats.binom.interval(0.999, 400, power)
    assert 0.25 < power < 0.4 and low <= sum(w["columns"]["x0"]["status"] != "ok" for w in small) <= high
    # 0.6 sd is a PSI of about 0.36: significant at 10,000 rows
    (w,) = stream(reference, seed=5, window_rows=10_000, windows=1, shift={"x0": 0.6})
    assert w["columns"]["x0"]["status"] == "significant" and w["verdict"]["drifted_columns"] == ["x0"]


def test_a_big_shift_is_flagged_at_100_rows(reference):
    # three of ten columns moved by 2 sd: PSI above 2 and X² in the hundreds in every 100-row window
    windows = stream(reference, seed=6, window_rows=100, windows=50, shift={"x0": 2.0, "x1": 4.0, "x7": 1.0})
    for w in windows:
        assert w["verdict"]["status"] == "drift" and {"x0", "x1", "x7"} <= set(w["verdict"]["drifted_columns"]), w
        assert all(w["columns"][n]["p_value"] < 1e-20 for n in ("x0", "x1", "x7"))
    # the other seven columns and the output still raise false alarms at the level only (400 tests)
    others = sum(c["status"] != "ok" for w in windows for n, c in [*w["columns"].items(), ("output", w["output"])]
                 if n not in ("x0", "x1", "x7"))
    assert others <= at_most(50 * 8, LEVEL)


# Streams of 500-row windows whose shift starts (and ends) at known windows. Without drift a status is
# significant only if its test rejects at 0.01 / 11 and its PSI reaches 0.25, which 500 rows of noise do not
# reach (about 9 / 500 = 0.02); with a shift of 1.5 sd (or a silent sensor) every window sees it (X² > 400).
SHIFT = {"x0": 1.5, "x1": 3.0, "x4": 4.5}
SEQUENCES = {
    "step at window 4": ([{}] * 4 + [{"shift": SHIFT}] * 6, ["ok"] * 4 + ["drift"] * 6),
    "one column": ([{}] * 2 + [{"shift": {"x0": 1.5}}] * 6, ["ok"] * 8),
    "sensors go silent at window 6": ([{}] * 6 + [{"silent": ("x2", "x3", "x5")}] * 4, ["ok"] * 6 + ["drift"] * 4),
    "shift and recovery": ([{}] * 3 + [{"shift": SHIFT}] * 3 + [{}] * 2, ["ok"] * 3 + ["drift"] * 3 + ["ok"] * 2),
}


@pytest.mark.parametrize("name", SEQUENCES)
def test_seeded_streams_give_exact_verdict_sequences(reference, name):
    phases, expected = SEQUENCES[name]
    windows = []
    for i, drift in enumerate(phases):
        windows += stream(reference, seed=100 + i, window_rows=500, windows=1, **drift)
    assert [w["verdict"]["status"] for w in windows] == expected
    for drift, w in zip(phases, windows, strict=True):
        moved = sorted(drift.get("shift", {})) + sorted(drift.get("silent", ()))
        assert w["verdict"]["drifted_columns"] == sorted(moved, key=list(w["columns"]).index), (drift, w["verdict"])


# -- fleet sums -----------------------------------------------------------------------------------

def test_summed_small_windows_reach_the_verdict_of_one_big_window(reference):
    # PSI about 0.15 for x0 (0.4 sd), 0.45 for x1, x7 and x8 (0.7 sd): three of ten columns significant
    shift = {"x0": 0.4, "x1": 1.4, "x7": 0.35, "x8": 0.7}
    fed = batches(8, 10_000, 300, shift=shift)
    small, (big,) = judged(reference, fed, 100), judged(reference, fed, 10_000)
    assert add_counts(small)["rows"] == big["rows"] == 10_000
    fleet = judge_window(reference, add_counts(small), RULE)
    assert fleet["verdict"] == big["verdict"] == {"status": "drift", "drifted_columns": ["x1", "x7", "x8"],
                                                  "share": 0.3, "tests": 11, "level": 0.000909091}
    assert fleet["columns"] == {n: {k: c[k] for k in ("psi", "js", "p_value", "status")}
                                for n, c in big["columns"].items()}
    assert fleet["output"] == {k: big["output"][k] for k in ("psi", "js", "p_value", "status")}
    assert fleet["columns"]["x0"]["status"] == "moderate"


# -- the p-value, against scipy -------------------------------------------------------------------

def test_the_p_value_matches_scipy_over_a_grid_of_x_and_df():
    worst = 0.0
    for df in [*range(1, 101), 150, 200, 333, 500, 1000]:
        for x in np.geomspace(1e-4, 4000, 160):
            expected = stats.chi2.sf(x, df)
            if expected > 1e-290:
                worst = max(worst, abs(chi2_sf(float(x), df) - expected) / expected)
    assert worst < 1e-10, worst
    for a in (0.1, 0.75, 2.3, 17.5, 240.25):  # not only half-integers
        for x in (1e-3, 0.5 * a, a, a + 1, 3 * a + 5):
            assert upper_gamma(a, x) == pytest.approx(special.gammaincc(a, x), rel=1e-10, abs=1e-300)
    assert chi2_sf(1e6, 3) == 0.0 and chi2_sf(0.0, 1) == 1.0
    with pytest.raises(ValueError, match="whole degrees of freedom >= 1, not 0"):
        chi2_sf(1.0, 0)
    with pytest.raises(ValueError, match="a > 0"):
        upper_gamma(0.0, 1.0)


def test_the_statistic_is_pearsons_test_of_homogeneity_as_scipy_computes_it():
    rng = np.random.default_rng(11)
    for _ in range(50):
        bins = int(rng.integers(2, 12))
        shares = rng.dirichlet(np.ones(bins) * 5)
        reference = rng.multinomial(5000, shares)
        counts = rng.multinomial(int(rng.integers(300, 3000)), rng.dirichlet(np.ones(bins) * 5))
        if (np.minimum(counts.sum(), 5000) * (counts + reference) / (counts.sum() + 5000)).min() < 5:
            continue  # sparse cells are pooled first: the plain test is compared on tables without any
        x, df, p = homogeneity_test(counts.tolist(), (reference / 5000).tolist(), 5000)
        chi2, p_scipy, df_scipy, _ = stats.chi2_contingency(np.array([counts, reference]), correction=False)
        assert (x, df, p) == (pytest.approx(chi2, rel=1e-9), df_scipy, pytest.approx(p_scipy, rel=1e-9, abs=1e-300))


def test_sparse_bins_are_pooled_before_the_test():
    # 100 rows against 1,000: a bin is tested alone from 55 pooled values (5 expected in the window's row).
    # 4 + 50 values are pooled, and still too few, join the smallest other cell (6 + 50): 4 cells, 3 df
    assert homogeneity_test([40, 30, 20, 6, 4], [0.4, 0.3, 0.2, 0.05, 0.05], 1000)[1] == 3
    # 3 + 30 and 2 + 20 pooled make 55: a cell of their own, 4 cells
    assert homogeneity_test([40, 30, 25, 3, 2], [0.4, 0.3, 0.25, 0.03, 0.02], 1000)[1] == 3
    # 2 + 20 and 2 + 20 make 44: they join 26 + 260, 3 cells
    assert homogeneity_test([40, 30, 26, 2, 2], [0.4, 0.3, 0.26, 0.02, 0.02], 1000)[1] == 2
    # 5 % of a window missing where the reference never misses: at 10,000 rows it is a cell of its own
    x, df, p = homogeneity_test([4750, 4750, 500], [0.5, 0.5, 0.0], 50_000)
    assert df == 2 and p < 1e-200


# -- the setting -------------------------------------------------------------------------------------

BASE_ENV = {"EDGEML_FLEET": "plant-a", "EDGEML_DEVICE_ID": "pi-07", "EDGEML_BROKER": "mqtt://gw:1883"}


def test_alpha_is_a_device_setting_checked_by_the_rule():
    assert resolve_settings({}, environ=BASE_ENV).drift.rule.alpha == 0.01
    assert resolve_settings({"alpha": 0.05}, environ=BASE_ENV).drift.rule == VerdictRule(alpha=0.05)
    assert resolve_settings({}, environ=dict(BASE_ENV, EDGEML_ALPHA="0.001")).drift.rule.alpha == 0.001
    with pytest.raises(SettingsError, match=r"^alpha = 0.0 \(from environment variable EDGEML_ALPHA\): must be a "
                                            r"probability above 0 and below 1; e.g. 0.01 \(the default"):
        resolve_settings({}, environ=dict(BASE_ENV, EDGEML_ALPHA="0"))
    with pytest.raises(SettingsError, match=r"^alpha = 1.0 \(from flag --alpha\): must be a probability"):
        resolve_settings({"alpha": 1.0}, environ=BASE_ENV)
