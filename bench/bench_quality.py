"""Model quality: edgeml (``--target x86-64``) against plain FLAML on a DataFrame, same rows, same time budget.

For each table and each repeated split (five for tables under 2,000 rows,
three above), the rows are split once with the split's seed: 80 % go to both
tools for training, the other 20 % are scored by both. edgeml gets its 80 %
as a CSV file, as a user hands it to ``edgeml build``, and its bundle scores
the held-out rows from their raw text through ``edgeml_runtime.Model`` as a
device would; FLAML gets the same rows of ``pandas.read_csv`` of the same
file, ``AutoML().fit(X, y, task=..., time_budget=B)`` with its defaults, and
predicts the held-out rows of that DataFrame. ``time_budget`` is the same
number for both; edgeml's export and verification time comes on top and is
reported beside.

Metrics: accuracy, balanced accuracy and F1 (binary: of the minority class of
the training rows; multiclass: macro) for classification, R² and MAE for
regression. A set is *worse* when edgeml's mean is below FLAML's by more than
the spread (standard deviation) of the paired per-split differences, or by
more than 0.005 where there is one split (``--large-splits 1``).

With ``--refit-all`` every split is also built as ``edgeml build
--refit-all`` (the model refitted on every training row after evaluation),
compared with FLAML beside the default build: a default build's model learns
from 85 % of the rows it is given, since its own test split is held out for
the bundle's honest metrics, while FLAML's learns from all of them.

    python bench/bench_quality.py --refit-all     # every set, 8 s a build, both edgeml builds (what make bench runs)
    python bench/bench_quality.py                 # every set, 8 s a build
    python bench/bench_quality.py --quick         # 3 sets, 5 s, 2 splits: a check that it runs
    python bench/bench_quality.py --sets heart-disease,wine --budget 20
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import DATASETS, RESULTS_DIR, ROOT, publish

QUICK_SETS = ("heart-disease", "wine", "concrete")
SMALL = 2_000  #: tables under this many rows get ``--splits`` repeated splits, the others ``--large-splits``
HELD_OUT = 0.2
ONE_SPLIT = 0.005  #: where there is one split: the difference that counts (MAE: this fraction of FLAML's)


@dataclass(frozen=True)
class Table:
    """A CSV as a user has it: the file, its label, columns a careful user leaves out, and how pandas reads it."""

    name: str
    path: Path
    label: str
    task: str
    drop: tuple[str, ...] = ()
    read_kw: dict = field(default_factory=dict)
    note: str = ""


# -- the sets ------------------------------------------------------------------------------------


def _real_tables():
    """``tests/real_tables.py``: the variant writers and the leaking column names of #11."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import real_tables
    finally:
        sys.path.remove(str(ROOT / "tests"))
    return real_tables


def _sklearn_csv(work: Path, name: str) -> Path:
    """A bundled scikit-learn table written out as the CSV a user would hold (label column ``target``)."""
    import sklearn.datasets as sk

    out = work / f"{name}.csv"
    getattr(sk, f"load_{name}")(as_frame=True).frame.to_csv(out, index=False)
    return out


def _derived(work: Path, name: str, source: str, rewrite) -> Path:
    """``source`` of the shared data sets with its rows rewritten by ``rewrite(header, rows, rng)``."""
    rt = _real_tables()
    header, rows = rt.read_rows(DATASETS / source)
    header, rows = rewrite(header, rows, np.random.default_rng(11))
    out = work / f"{name}.csv"
    rt.write_rows(out, header, rows)
    return out


def _few_rows(header, rows, rng):
    """400 rows drawn from the table: a small table."""
    return header, [rows[i] for i in sorted(rng.choice(len(rows), size=400, replace=False))]


def _rare_failures(header, rows, rng):
    """ai4i2020 with failures thinned to 0.8 % of the rows (every working machine kept)."""
    ok = [r for r in rows if r["Machine failure"] == "0"]
    failed = [r for r in rows if r["Machine failure"] != "0"]
    keep = set(rng.choice(len(failed), size=round(len(ok) * 0.008 / 0.992), replace=False).tolist())
    return header, [r for i, r in enumerate(failed) if i in keep] + ok


def _long_tail(header, rows, rng):
    """ccpp's power output stretched over three orders of magnitude: ``exp((PE - 420) / 10)``."""
    for r in rows:
        r["PE"] = f"{math.exp((float(r['PE']) - 420) / 10):.4g}"
    return header, rows


def tables(work: Path) -> dict[str, callable]:
    """Every set by name: a function writing what it needs under ``work`` and giving its :class:`Table`."""
    rt = _real_tables()
    ai4i_leaks = ("UDI", "Product ID", "TWF", "HDF", "PWF", "OSF", "RNF")
    dates = next(c for c in rt.CASES if c.name == "concrete-index-dates")
    text = next(c for c in rt.CASES if c.name == "concrete-units-commas")
    d = DATASETS
    return {
        "ai4i2020": lambda: Table("ai4i2020", d / "ai4i2020.csv", "Machine failure", "classification", ai4i_leaks),
        "telco-churn": lambda: Table("telco-churn", d / "telco-churn.csv", "Churn", "classification",
                                     ("customerID",)),
        "ccpp": lambda: Table("ccpp", d / "ccpp.csv", "PE", "regression"),
        "concrete": lambda: Table("concrete", d / "concrete.csv", rt.STRENGTH, "regression"),
        "heart-disease": lambda: Table("heart-disease", d / "heart-disease.csv", "target", "classification"),
        "it-salary": lambda: Table("it-salary", d / "it-salary-2020.csv", rt.SALARY, "regression", rt.SALARY_LEAKS,
                                   note="long tail (one salary of 10^11), dates"),
        **{n: (lambda n=n, task=task: Table(n, _sklearn_csv(work, n), "target", task))
           for n, task in (("breast_cancer", "classification"), ("diabetes", "regression"),
                           ("wine", "classification"))},
        "ccpp-400": lambda: Table("ccpp-400", _derived(work, "ccpp-400", "ccpp.csv", _few_rows), "PE", "regression",
                                  note="under 500 rows"),
        "ai4i2020-rare": lambda: Table("ai4i2020-rare", _derived(work, "ai4i2020-rare", "ai4i2020.csv",
                                                                 _rare_failures),
                                       "Machine failure", "classification", ai4i_leaks, note="a class under 1 %"),
        "ccpp-long-tail": lambda: Table("ccpp-long-tail", _derived(work, "ccpp-long-tail", "ccpp.csv", _long_tail),
                                        "PE", "regression", note="label with a long tail"),
        "concrete-dates": lambda: Table("concrete-dates", dates.write(DATASETS, work), rt.STRENGTH, "regression",
                                        note="date columns, an index column"),
        "concrete-text": lambda: Table("concrete-text", text.write(DATASETS, work), rt.STRENGTH, "regression",
                                       read_kw={"sep": ";", "decimal": ","},
                                       note="numbers as text: units, decimal commas, ranges"),
    }


# -- one split -----------------------------------------------------------------------------------


def read(table: Table):
    """(header, raw text rows, DataFrame) of the same file, row for row, rows without a label left out."""
    import pandas as pd

    text = table.path.read_text(encoding="utf-8-sig")
    delimiter = table.read_kw.get("sep", ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader)
    rows = [dict(zip(header, r, strict=True)) for r in reader if r]
    frame = pd.read_csv(io.StringIO(text), **table.read_kw)
    if len(frame) != len(rows):
        raise SystemExit(f"{table.name}: pandas read {len(frame)} rows, csv {len(rows)}")
    keep = np.array([r[table.label].strip() != "" for r in rows])
    return header, [r for r, k in zip(rows, keep, strict=True) if k], frame[keep].reset_index(drop=True)


def truth(table: Table, rows) -> np.ndarray:
    """The labels of ``rows``: numbers for regression (decimal comma read), text for classification."""
    values = [r[table.label].strip() for r in rows]
    if table.task == "regression":
        return np.array([float(v.replace(",", ".")) for v in values])
    return np.array([_plain(v) for v in values], dtype=object)


def _plain(value) -> str:
    """A class label as comparable text: ``1``, ``1.0`` and ``1 `` are one class."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else str(number)


def run_edgeml(table: Table, header, train_rows, test_rows, folder: Path, args, seed: int, refit_all: bool = False):
    """Build from the training rows written as CSV; score the held-out rows' raw text with the bundle
    (``refit_all``: as ``edgeml build --refit-all``, the model refitted on every training row after evaluation)."""
    from edgeml.build import Reporter, build
    from edgeml.config import BuildConfig
    from edgeml_runtime import Model
    from edgeml_runtime.headers import read_header

    class Clock(Reporter):
        def __init__(self):
            self.at = {}

        def stage(self, name, detail):
            self.at.setdefault(name, time.monotonic())

    data = folder / "train.csv"
    _real_tables().write_rows(data, header, train_rows)
    clock = Clock()
    result = build(BuildConfig(data=str(data), label=table.label, target="x86-64", task=table.task,
                               time_budget=float(args.budget), max_iter=args.max_iter, drop=table.drop, seed=seed,
                               out=str(folder / "bundle"), force=True, refit_all=refit_all), clock)
    after = clock.at.get("search", time.monotonic()) + result.manifest.search.seconds
    export_s = time.monotonic() - after if "bundle" not in clock.at else clock.at["bundle"] - after
    names = dict(zip(header, read_header(header).names, strict=True))  # the device's CSV header rule
    device = [{names[k]: v for k, v in r.items() if k != table.label} for r in test_rows]
    got = Model.load(result.bundle_dir).predict(device, on_error="skip")
    if table.task == "regression":
        pred = np.full(len(test_rows), float(np.median(truth(table, train_rows))))
        pred[got.rows] = np.asarray(got.labels, dtype=float)
    else:
        pred = np.full(len(test_rows), "<not scored>", dtype=object)
        pred[got.rows] = [_plain(v) for v in got.labels]
    return pred, {"export_s": max(export_s, 0.0), "trials": result.manifest.search.trials,
                  "unscored": len(test_rows) - len(got.rows), "learner": result.manifest.search.best_learner}


def run_flaml(table: Table, frame, train_idx, test_idx, y_train, args, seed: int):
    """Plain FLAML on the DataFrame: its defaults, the same budget, the same rows."""
    from flaml import AutoML

    X = frame.drop(columns=[table.label, *table.drop])
    # LightGBM refuses names with JSON's special characters ("[", ",", ...): renamed, as a user of FLAML must
    X.columns = [f"{re.sub(r'[^0-9A-Za-z_]+', '_', str(c)).strip('_')}_{i}" for i, c in enumerate(X.columns)]
    automl = AutoML()
    kw = {"max_iter": args.max_iter} if args.max_iter else {}
    started = time.monotonic()
    automl.fit(X.iloc[train_idx], y_train, task=table.task, time_budget=float(args.budget), seed=seed,
               verbose=0, **kw)
    pred = automl.predict(X.iloc[test_idx])
    seconds = time.monotonic() - started
    if table.task == "regression":
        return np.asarray(pred, dtype=float), {"seconds": seconds, "learner": automl.best_estimator}
    return np.array([_plain(v) for v in pred], dtype=object), {"seconds": seconds, "learner": automl.best_estimator}


def scores(task: str, y, pred, positive) -> dict[str, float]:
    """accuracy, balanced accuracy, F1 (classification) or R², MAE (regression) of ``pred`` against ``y``."""
    from sklearn import metrics as m

    if task == "regression":
        return {"R²": m.r2_score(y, pred), "MAE": m.mean_absolute_error(y, pred)}
    if positive is None:
        f1 = m.f1_score(y, pred, average="macro", zero_division=0)
    else:
        f1 = m.f1_score(y == positive, pred == positive, zero_division=0)
    return {"accuracy": m.accuracy_score(y, pred), "balanced accuracy": m.balanced_accuracy_score(y, pred),
            "F1": f1}


def one_split(table: Table, header, rows, frame, seed: int, work: Path, args) -> dict:
    """Both tools on split ``seed`` of the table: their scores on the same held-out rows, and their timings."""
    order = np.random.default_rng(seed).permutation(len(rows))
    n_test = max(1, round(len(rows) * HELD_OUT))
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    train_rows, test_rows = [rows[i] for i in train_idx], [rows[i] for i in test_idx]
    y_train, y_test = truth(table, train_rows), truth(table, test_rows)
    positive = None
    if table.task == "classification" and len(set(y_train)) == 2:
        classes, counts = np.unique(y_train.astype(str), return_counts=True)
        positive = classes[np.argmin(counts)]
    folder = work / f"{table.name}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    edge_pred, edge = run_edgeml(table, header, train_rows, test_rows, folder, args, seed)
    run = {"edgeml": scores(table.task, y_test, edge_pred, positive), "edge": edge, "rows": len(rows)}
    if args.refit_all:
        all_pred, _ = run_edgeml(table, header, train_rows, test_rows, folder, args, seed, refit_all=True)
        run["edgeml_all"] = scores(table.task, y_test, all_pred, positive)
    flaml_y = y_train if table.task == "regression" else frame[table.label].iloc[train_idx]
    flaml_pred, plain = run_flaml(table, frame, train_idx, test_idx, flaml_y, args, seed)
    shutil.rmtree(folder, ignore_errors=True)
    return run | {"flaml": scores(table.task, y_test, flaml_pred, positive), "plain": plain}


# -- the table -----------------------------------------------------------------------------------


def _ms(values, digits: int = 3) -> str:
    values = np.asarray(values, dtype=float)
    mean = f"{values.mean():.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ± {values.std(ddof=1):.{digits}f}"


def compare(metric: str, e: np.ndarray, f: np.ndarray) -> tuple[str, str, float]:
    """edgeml's per-split ``e`` against FLAML's ``f``: Δ as shown, the verdict, and the difference that goes into
    the mean over sets (R² floored at -1, so that one wild prediction cannot outweigh every other set; MAE as the
    log of the ratio FLAML / edgeml, scale-free)."""
    sign = -1.0 if metric == "MAE" else 1.0
    d = sign * (e - f)  # > 0: edgeml better
    spread = d.std(ddof=1) if len(d) > 1 else ONE_SPLIT * (abs(f.mean()) if metric == "MAE" else 1.0)
    verdict = "worse" if d.mean() < -spread else ("better" if d.mean() > spread else "same")
    mean = (float(np.mean(np.log(f / e))) if metric == "MAE" else
            float(np.mean(np.maximum(e, -1.0) - np.maximum(f, -1.0))) if metric == "R²" else float(d.mean()))
    shown = f"×{e.mean() / f.mean():.2f}" if metric == "MAE" and f.mean() else f"{(e - f).mean():+.3f}"
    return shown, verdict, mean


def set_lines(table: Table, runs: list[dict]) -> tuple[list[str], dict[str, dict[str, float]], dict[str, list]]:
    """The table rows of one set, and for each edgeml variant (``edgeml``, ``edgeml_all`` with
    ``--refit-all``) its mean difference per metric and the metrics where it is worse than FLAML."""
    variants = [v for v in ("edgeml", "edgeml_all") if v in runs[0]]
    lines, diffs, worse = [], {v: {} for v in variants}, {v: [] for v in variants}
    for metric in runs[0]["edgeml"]:
        f = np.array([r["flaml"][metric] for r in runs])
        values, cells = [], []
        for v in variants:
            e = np.array([r[v][metric] for r in runs])
            shown, verdict, diffs[v][metric] = compare(metric, e, f)
            if verdict == "worse":
                worse[v].append(metric)
            values.append(_ms(e))
            cells += [shown, verdict]
        lines.append(f"| {table.name} | {runs[0]['rows']:,} | {len(runs)} | {metric} | {' | '.join(values)} | "
                     f"{_ms(f)} | {' | '.join(cells)} |")
    return lines, diffs, worse


def report(done: list[tuple[Table, list[dict]]], args, seconds: float) -> str:
    """The Markdown results: one row per set and metric, timings, then the mean differences."""
    out = [f"# Model quality: edgeml (x86-64) against plain FLAML, {args.budget:g} s a build",
           "", f"`python bench/bench_quality.py {' '.join(args.argv)}`".replace(" `", "`"),
           f"({seconds / 60:.1f} min). Same training rows and held-out rows (20 %) for both, split once per repeat; "
           f"{args.splits} splits for tables under {SMALL:,} rows, {args.large_splits} above; mean ± standard "
           "deviation. edgeml scores the "
           "held-out rows from raw text with `edgeml_runtime.Model`; FLAML predicts on the DataFrame. "
           "Δ = edgeml − FLAML (MAE: edgeml / FLAML); *worse*/*better*: beyond the spread of the per-split "
           "differences (one split: 0.005, MAE 0.5 %)."
           + (" *edgeml* is a default build, whose model learns from 85 % of the training rows (its own test split, "
              "15 %, is held out for the bundle's honest metrics); *--refit-all* is the same build refitted on "
              "every training row after that evaluation, as FLAML's model is." if args.refit_all else ""), ""]
    if args.refit_all:
        out += ["| set | rows | splits | metric | edgeml | edgeml --refit-all | FLAML | Δ | verdict | Δ --refit-all | "
                "verdict --refit-all |", "|---|---:|---:|---|---:|---:|---:|---:|---|---:|---|"]
    else:
        out += ["| set | rows | splits | metric | edgeml | FLAML | Δ | verdict |",
                "|---|---:|---:|---|---:|---:|---:|---|"]
    means, worse = {}, {}
    for table, runs in done:
        lines, diffs, bad = set_lines(table, runs)
        out += lines
        for variant, per_metric in diffs.items():
            for k, v in per_metric.items():
                means.setdefault(variant, {}).setdefault(k, []).append(v)
        for variant, metrics in bad.items():
            worse.setdefault(variant, []).extend(f"{table.name} ({m})" for m in metrics)
    out += ["", "| set | note | edgeml trials | edgeml search + export/verify s | FLAML s | best learner edgeml / "
                "FLAML | rows edgeml did not score |", "|---|---|---:|---:|---:|---|---:|"]
    for table, runs in done:
        e, p = runs[-1]["edge"], runs[-1]["plain"]
        out.append(f"| {table.name} | {table.note} | {_ms([r['edge']['trials'] for r in runs], 0)} | "
                   f"{args.budget:g} + {_ms([r['edge']['export_s'] for r in runs], 1)} | "
                   f"{_ms([r['plain']['seconds'] for r in runs], 1)} | {e['learner']} / {p['learner']} | "
                   f"{sum(r['edge']['unscored'] for r in runs)} |")
    named = {"edgeml": "edgeml", "edgeml_all": "edgeml --refit-all"}
    out += [""]
    for variant, per_metric in means.items():
        out += [f"Mean difference over the sets, {named[variant]} against FLAML (positive: edgeml better; R² floored "
                "at −1 on both sides; MAE as the mean log of FLAML / edgeml): "
                + ", ".join(f"{k} {np.mean(v):+.4f} ({len(v)} sets)" for k, v in per_metric.items()) + ".",
                f"Worse than plain FLAML beyond the spread ({named[variant]}): "
                f"{', '.join(worse[variant]) or 'none'}.", ""]
    return "\n".join(out).rstrip("\n")


def quiet() -> None:
    """FLAML's logger and scikit-learn's warnings off the terminal."""
    warnings.filterwarnings("ignore")
    for name in ("flaml", "flaml.automl", "flaml.automl.logger", "flaml.tune", "lightgbm"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=8.0, help="seconds of search a build, both tools")
    ap.add_argument("--sets", default="", help="comma-separated set names (default: all)")
    ap.add_argument("--splits", type=int, default=5, help=f"repeated splits for tables under {SMALL:,} rows")
    ap.add_argument("--large-splits", type=int, default=3, help=f"repeated splits for tables of {SMALL:,} rows or more")
    ap.add_argument("--max-iter", type=int, default=None, help="trials a build instead of the time (for tests)")
    ap.add_argument("--refit-all", action="store_true",
                    help="also build each split with --refit-all (the model refitted on every training row), "
                         "compared with FLAML beside the default build")
    ap.add_argument("--quick", action="store_true", help=f"{', '.join(QUICK_SETS)}; 5 s; 2 splits")
    ap.add_argument("--results", type=Path, default=RESULTS_DIR)
    ap.add_argument("--work", type=Path, default=None, help="temporary folder (default: a new one, removed)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.sets, args.budget, args.splits, args.large_splits = args.sets or ",".join(QUICK_SETS), 5.0, 2, 1
    quiet()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    known = tables(work)
    names = [s for s in args.sets.split(",") if s] or list(known)
    if unknown := [n for n in names if n not in known]:
        raise SystemExit(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    started, done = time.monotonic(), []
    for name in names:
        table = known[name]()
        header, rows, frame = read(table)
        runs = []
        for seed in range(args.splits if len(rows) < SMALL else args.large_splits):
            runs.append(one_split(table, header, rows, frame, seed, work, args))
            shown = ", ".join(f"{k} {runs[-1]['edgeml'][k]:.3f}/{runs[-1]['flaml'][k]:.3f}" for k in runs[-1]["edgeml"])
            if "edgeml_all" in runs[-1]:
                shown += " (--refit-all " + ", ".join(f"{k} {v:.3f}" for k, v in runs[-1]["edgeml_all"].items()) + ")"
            print(f"[{time.monotonic() - started:6.0f} s] {name} split {seed}: edgeml/FLAML {shown}", flush=True)
        done.append((table, runs))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    publish("quality", report(done, args, time.monotonic() - started), args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
