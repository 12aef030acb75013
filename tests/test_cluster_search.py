"""The search on a cluster: a real Spark in ``local[2]`` mode, started once for this module, runs two trials at a
time in its own Python workers; every trial comes back to the driver's record, judged on the budgets, and a build
on Spark ships a bundle that verifies."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from click.testing import CliRunner
from conftest import build_bundle

from edgeml.cli import main
from edgeml.config import BuildConfig, read_config_file
from edgeml.data.demo import demo_frame
from edgeml.data.prepare import prepare
from edgeml.errors import ConfigError, SearchError
from edgeml.search.automl import SearchSettings, run_search
from edgeml.search.cluster import ClusterSettings
from edgeml.search.trials import HardwareBudget
from edgeml.search.validation import Validation
from edgeml.targets.measure import TrialMeasure
from edgeml.verify.bundle_check import check_bundle

SPARK = ClusterSettings("spark", address="local[2]", concurrent_trials=2)


@pytest.fixture(scope="module")
def spark():
    """A local Spark with two worker slots, quiet, shared by this module's tests and stopped after them."""
    if shutil.which("java") is None:
        pytest.skip("no java runtime on PATH: Spark cannot start (make system-deps installs openjdk-17-jre-headless)")
    pytest.importorskip("pyspark", reason="pip install 'edgeml[spark]' (make install does)")
    from pyspark.sql import SparkSession

    from edgeml.search.cluster import spark_session

    spark_session("local[2]")
    session = SparkSession.getActiveSession()
    yield session
    session.stop()


@pytest.fixture(scope="module")
def demo():
    return prepare(demo_frame(rows=300, seed=0), "failure")


@pytest.mark.slow
def test_concurrent_trials_on_spark_are_all_recorded_and_judged(spark, demo):
    measure = TrialMeasure(demo.task, int(demo.X["train"].shape[1]), len(demo.inputs.features))
    budget = HardwareBudget(max_model_bytes=2000)  # the demo's first lgbm trials fit; its bigger ones do not
    seen = []
    settings = SearchSettings(demo.task, ("lgbm", "rf"), max_iter=6, seed=0, n_jobs=1, cluster=SPARK)
    result = run_search(demo.X["train"], demo.y["train"], demo.X["valid"], demo.y["valid"], settings,
                        progress=seen.append, budgets=budget, measure=measure,
                        validation=Validation("holdout", 1, len(demo.y["valid"])))
    trials = result.trials
    assert len(trials) == 6 and [t.iteration for t in trials] == list(range(6))
    assert seen == list(trials)  # progress heard every trial, in order
    assert {t.learner for t in trials} == {"lgbm", "rf"}
    assert all(t.cost is not None and t.cost.model_bytes > 0 and t.loss is not None for t in trials)
    assert [t.elapsed for t in trials] == sorted(t.elapsed for t in trials)
    for t in trials:  # each judged on the budget in its worker, the verdict carried back
        assert t.feasible is (t.cost.model_bytes <= 2000)
        assert t.broken == (() if t.feasible else ("max_model_bytes",))
    assert any(t.feasible for t in trials) and not all(t.feasible for t in trials)
    best = [t.best_loss for t in trials if t.best_loss is not None]
    assert best == sorted(best, reverse=True)  # the best so far, rebuilt on the driver, never gets worse
    assert result.cost.model_bytes <= 2000 and result.check.shipped.broken == ()


@pytest.mark.slow
def test_a_build_on_spark_ships_a_bundle_that_verifies(spark, tmp_path):
    out = tmp_path / "demo-spark"
    build_bundle(out, estimators=("lgbm",), max_iter=4, backend="spark", cluster_address="local[2]",
                 concurrent_trials=2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["search"]["trials"] == 4
    log = manifest["search"]["trial_log"]
    assert [t["iteration"] for t in log] == [0, 1, 2, 3]
    assert all(t["learner"] == "lgbm" and t["model_bytes"] > 0 and t["loss"] is not None for t in log)
    report = check_bundle(out)
    assert report.passed, report
    assert {c.kind for c in report.checks if c.status == "pass"} == {"file", "schema", "parity"}


def test_the_search_table_sets_where_trials_run(tmp_path):
    path = tmp_path / "edgeml.toml"
    path.write_text('[build]\nmax_trials = 3\n[search]\nbackend = "spark"\naddress = "spark://head:7077"\n'
                    "concurrent_trials = 4\n")
    assert read_config_file(path) == {"max_iter": 3, "backend": "spark", "cluster_address": "spark://head:7077",
                                      "concurrent_trials": 4}
    path.write_text('[build]\nbackend = "spark"\n')
    with pytest.raises(ConfigError, match=r"'backend' belongs in the \[search\] table, not \[build\]"):
        read_config_file(path)
    path.write_text('[search]\ntime_budget = 5\n')
    with pytest.raises(ConfigError, match=r"'time_budget' belongs in the \[build\] table, not \[search\]"):
        read_config_file(path)
    path.write_text("[search]\nconcurrent_trials = \"4\"\n")
    with pytest.raises(ConfigError, match=r"\[search\] concurrent_trials = '4' has the wrong type; expected an "
                                          "integer"):
        read_config_file(path)
    with pytest.raises(ConfigError, match=r"backend = 'dask' is not one of local, spark, ray \(set it with the "
                                          r"--backend flag or backend in edgeml.toml's \[search\] table\)"):
        BuildConfig(backend="dask")
    with pytest.raises(ConfigError, match=r"concurrent_trials = 0 is not allowed; give at least 1 \(set it with the "
                                          r"--concurrent-trials flag or concurrent_trials in edgeml.toml's \[search\]"):
        BuildConfig(concurrent_trials=0)


def test_the_backend_flag_reaches_the_build(tmp_path):
    result = CliRunner().invoke(main, ["build", "--backend", "dask", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "backend = 'dask' is not one of local, spark, ray" in result.output


def _tiny():
    X = demo_frame(rows=40, seed=0)[["air_temp_c"]].to_numpy()
    y = (X[:, 0] > X[:, 0].mean()).astype(int)
    return X[:30], y[:30], X[30:], y[30:]


def test_spark_connect_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setenv("SPARK_REMOTE", "sc://head:15002")
    with pytest.raises(SearchError, match=r"Spark Connect \(SPARK_REMOTE=sc://head:15002\) cannot run the search"):
        run_search(*_tiny(), SearchSettings("classification", ("lgbm",), max_iter=1, cluster=SPARK))


def test_a_backend_whose_engine_is_missing_names_the_extra():
    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed here: the ray backend runs (test_concurrent_trials_on_ray_...)")
    with pytest.raises(SearchError, match=r"the ray search backend needs ray\[tune\], which is not installed; "
                                          r"install it with pip install 'edgeml\[ray\]'"):
        run_search(*_tiny(), SearchSettings("classification", ("lgbm",), max_iter=1, cluster=ClusterSettings("ray")))


@pytest.mark.slow
def test_concurrent_trials_on_ray_are_all_recorded(tmp_path_factory):
    """Ray is not installed by make test (docs/cluster.md says why); with pip install 'edgeml[ray]' this runs."""
    ray = pytest.importorskip("ray", reason="the ray backend needs pip install 'edgeml[ray]' (not in make test)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    try:
        demo = prepare(demo_frame(rows=300, seed=0), "failure")
        measure = TrialMeasure(demo.task, int(demo.X["train"].shape[1]), len(demo.inputs.features))
        settings = SearchSettings(demo.task, ("lgbm", "rf"), max_iter=4, seed=0, n_jobs=1,
                                  cluster=ClusterSettings("ray", concurrent_trials=2))
        result = run_search(demo.X["train"], demo.y["train"], demo.X["valid"], demo.y["valid"], settings,
                            budgets=HardwareBudget(max_model_bytes=2000), measure=measure,
                            validation=Validation("holdout", 1, len(demo.y["valid"])))
    finally:
        ray.shutdown()
    assert [t.iteration for t in result.trials] == [0, 1, 2, 3]
    assert all(t.cost is not None and t.feasible is (t.cost.model_bytes <= 2000) for t in result.trials)
