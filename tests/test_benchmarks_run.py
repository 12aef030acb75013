"""The benchmarks in ``bench/`` still run against the library's current API.

Every benchmark module is imported (an import of a moved or removed name
fails here, not on the day someone wants numbers), and importing one must
not run it. The per-target benchmark then runs end to end on one target with
a tiny search, and the two paths that bundle a model a benchmark fitted
itself — the fixed MLP of ``bench_targets`` and a point of
``fit_cost_model`` — are checked to write bundles that ``edgeml verify``
passes. Bundles land under ``tmp_path``, so the session check validates
their manifests against the schema too.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
HELPERS = {"common", "load", "mcu_peers"}  # imported by the benchmarks, not run
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in HELPERS)


@pytest.fixture(scope="module")
def bench_path():
    """``bench/`` on ``sys.path``, as when a benchmark is run as a script."""
    sys.path.insert(0, str(BENCH))
    yield BENCH
    sys.path.remove(str(BENCH))


def _written(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}


def test_there_are_benchmarks_to_check():
    assert {"bench_targets", "fit_cost_model", "bench_runtime", "bench_drift", "bench_outbox", "bench_tflite",
            "bench_tflite_traverse", "bench_cells", "bench_quality"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_imports_without_running(bench_path, name):
    before = _written(BENCH / "results"), _written(BENCH / "out")
    module = importlib.import_module(name)
    assert callable(module.main), f"bench/{name}.py has no main()"
    assert (_written(BENCH / "results"), _written(BENCH / "out")) == before, f"importing bench/{name}.py wrote files"


def test_targets_benchmark_runs_end_to_end(bench_path, datasets, tmp_path):
    bench_targets = importlib.import_module("bench_targets")
    rc = bench_targets.main(["--max-iter", "2", "--targets", "rpi4", "--calls", "20", "--results", str(tmp_path),
                             "--work", str(tmp_path / "work")])
    assert rc == 0
    table = (tmp_path / "targets.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| ai4i2020 |", "| ccpp |"))]
    for data in ("ai4i2020", "ccpp"):  # rpi4 runs ONNX, .ort and TFLite, each verified by the build
        made = {r.split(" | ")[2].split(" (")[0] for r in rows if r.startswith(f"| {data} |")}
        assert {"model.onnx", "model.ort", "model.tflite"} <= made, table
    assert all(r.rstrip().endswith("| yes |") for r in rows), table  # fp32 artifacts score as model.onnx does


def test_a_directly_trained_mlp_is_bundled_as_a_build_bundles(bench_path, datasets, tmp_path):
    from edgeml.targets.profiles import load_target
    from edgeml.verify.bundle_check import check_bundle
    from edgeml_runtime.bundle import read_manifest

    bench_targets = importlib.import_module("bench_targets")
    rpi4 = load_target("rpi4")
    made = bench_targets.make_bundle(rpi4, "ccpp", ("mlp",), tmp_path / "ccpp-mlp", 1, 0, mlp_layers="24x12")
    report = check_bundle(made.folder)
    assert report.passed, report.to_dict()
    # ccpp has 4 inputs: weights and biases of 4 -> 24 -> 12 -> 1
    assert made.label == "mlp 24x12" and made.structure.n_weights == (4 + 1) * 24 + (24 + 1) * 12 + (12 + 1)
    manifest = read_manifest(made.folder)
    assert manifest.search.trials == 0 and manifest.provenance.model.config["hidden_layer_sizes"] == (24, 12)
    rows = bench_targets.measure(made, rpi4, calls=20)
    assert [r["artifact"] for r in rows] == [a.path for a in manifest.artifacts]
    assert all(r["within"] for r in rows) and rows[0]["value"] == pytest.approx(manifest.metrics.test["rmse"])


def test_a_cost_model_point_is_timed_on_a_verified_bundle(bench_path, datasets, tmp_path):
    from lightgbm import LGBMRegressor

    from edgeml.verify.bundle_check import check_bundle

    fit_cost_model = importlib.import_module("fit_cost_model")
    ds = fit_cost_model.prepared(datasets / "ccpp.csv", "PE", ())
    target = fit_cost_model.host_profile(tmp_path)
    model = LGBMRegressor(n_estimators=5, num_leaves=8, verbose=-1, n_jobs=1, random_state=0)
    point = fit_cost_model.measure(ds, "lgbm", "5 trees, 8 leaves", model, tmp_path, target,
                                   SimpleNamespace(rounds=1, calls=20))
    folder = tmp_path / "bundle"
    assert check_bundle(folder).passed
    assert point["artifact_bytes"] == (folder / "model.onnx").stat().st_size
    assert [p.name for p in folder.glob("model*")] == ["model.onnx"]  # the profile asks for fp32 ONNX alone
    assert point["structure"]["n_trees"] == 5 and point["latency_us"] > 0 and point["estimator_bytes"] > 0


def test_quality_benchmark_scores_both_tools_on_the_same_rows(bench_path, datasets, tmp_path):
    bench_quality = importlib.import_module("bench_quality")
    rc = bench_quality.main(["--sets", "wine", "--max-iter", "2", "--splits", "1", "--refit-all", "--results",
                             str(tmp_path), "--work", str(tmp_path / "work")])
    assert rc == 0
    table = (tmp_path / "quality.md").read_text()
    rows = {r.split(" | ")[3]: r.split(" | ") for r in table.splitlines() if r.startswith("| wine | 178 | 1 |")}
    assert set(rows) == {"accuracy", "balanced accuracy", "F1"}, table
    for cells in rows.values():  # the builds and FLAML scored the 36 held-out rows: in [0, 1], Δ the differences
        edge, refit, plain, delta, delta_refit = (float(cells[i]) for i in (4, 5, 6, 7, 9))
        assert all(0 <= v <= 1 for v in (edge, refit, plain))
        assert delta == pytest.approx(edge - plain, abs=2e-3) and delta_refit == pytest.approx(refit - plain, abs=2e-3)
        assert cells[8] in ("same", "better", "worse") and cells[10].rstrip(" |") in ("same", "better", "worse")
    assert "edgeml --refit-all against FLAML" in table
    assert "| wine |  | 2 |" in table and table.rstrip().endswith(".")  # edgeml ran the 2 trials it was given
