"""`edgeml` command wiring: options, config file precedence, machine-readable output, clean errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeml.cli import main
from edgeml.config import BuildConfig, read_config_file, resolve
from edgeml.errors import ConfigError


@pytest.fixture
def runner():
    return CliRunner()


def test_build_on_demo_data_writes_bundle_and_json(runner, tmp_path):
    out = tmp_path / "demo-3"
    r = runner.invoke(main, ["build", "--max-trials", "2", "--estimators", "lgbm", "--out", str(out), "--json", "-q"])
    assert r.exit_code == 0, r.output
    manifest = json.loads(r.stdout)
    assert manifest["name"] == "demo" and manifest["version"] == "3"
    assert (out / "manifest.json").is_file() and (tmp_path / "demo-3.tar.gz").is_file()
    assert manifest["target"]["name"] == "rpi4"
    kinds = {c["name"]: c["kind"] for c in manifest["inputs"]}
    assert kinds["timestamp"] == "datetime" and kinds["machine_type"] == "categorical"


def test_build_shows_stages_and_summary(runner, tmp_path):
    r = runner.invoke(main, ["build", "--max-trials", "2", "--estimators", "lgbm", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    for stage in ("[1/7] ingest", "[4/7] search", "[6/7] verify", "[7/7] bundle", "Built demo v1 for rpi4"):
        assert stage in r.output
    assert "edgeml-runtime score" in r.output


def test_existing_out_needs_force_and_version_increases(runner, tmp_path):
    out = tmp_path / "bundle"
    args = ["build", "--max-trials", "1", "--estimators", "lgbm", "--out", str(out), "-q"]
    assert runner.invoke(main, args).exit_code == 0
    again = runner.invoke(main, args)
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output
    forced = runner.invoke(main, args + ["--force", "--json"])
    assert forced.exit_code == 0 and json.loads(forced.stdout)["version"] == "2"


def test_config_file_is_read_and_flags_win(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edgeml.toml").write_text('[build]\nmax_iter = 1\nestimators = ["rf"]\nname = "fromfile"\nseed = 4\n')
    r = runner.invoke(main, ["build", "--name", "fromflag", "--json", "-q"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["name"] == "fromflag" and m["search"]["best_learner"] == "rf" and m["provenance"]["seed"] == 4
    assert (tmp_path / "dist" / "fromflag-1").is_dir()


def test_unknown_config_key_is_named_with_a_suggestion(tmp_path):
    f = tmp_path / "edgeml.toml"
    f.write_text("[build]\ntime_budjet = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'time_budjet'.*did you mean 'time_budget'"):
        read_config_file(f)
    f.write_text('[build]\nseed = "four"\n')
    with pytest.raises(ConfigError, match=r"seed = 'four' has the wrong type; expected an integer"):
        read_config_file(f)


def test_resolve_layers_defaults_file_and_flags(tmp_path):
    (tmp_path / "edgeml.toml").write_text('[build]\ndata = "d.csv"\ntime_budget = 5\ndrop = "a,b"\n')
    c = resolve({"time_budget": 9.0, "target": None}, cwd=tmp_path)
    assert c == BuildConfig(data=str(tmp_path / "d.csv"), time_budget=9.0, drop=("a", "b"))


@pytest.mark.parametrize("args,message", [
    (["--data", "nope.csv", "--label", "y"], "nope.csv"),
    (["--data", "{demo}", "--label", "failur"], "did you mean"),
    (["--data", "{demo}"], "--label is required"),
    (["--target", "rpi5"], "rpi5"),
    (["--estimators", "catboost"], "catboost"),
    (["--metric", "rmse"], "metric 'rmse' does not apply to classification"),
])
def test_user_mistakes_exit_2_without_traceback(runner, tmp_path, args, message):
    from edgeml.data.demo import write_demo_csv

    demo = write_demo_csv(tmp_path / "demo.csv", rows=200)
    args = [a.replace("{demo}", str(demo)) for a in args]
    r = runner.invoke(main, ["build", "--max-trials", "1", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_targets_list_and_show(runner):
    r = runner.invoke(main, ["targets"])
    assert r.exit_code == 0 and "rpi4" in r.output and "x86-64" in r.output
    listed = json.loads(runner.invoke(main, ["targets", "--json"]).output)
    assert {p["name"] for p in listed} >= {"rpi4", "x86-64"}
    shown = runner.invoke(main, ["targets", "show", "rpi4"])
    assert shown.exit_code == 0 and "aarch64" in shown.output and "manylinux2014_aarch64" in shown.output
    assert json.loads(runner.invoke(main, ["targets", "show", "rpi4", "--json"]).output)["cores"] == 4
    missing = runner.invoke(main, ["targets", "show", "nope"])
    assert missing.exit_code == 2 and "rpi4" in missing.output


def test_demo_data_command(runner, tmp_path):
    out = tmp_path / "rows.csv"
    r = runner.invoke(main, ["demo-data", "--rows", "12", "--output", str(out), "--no-label"])
    assert r.exit_code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 13 and "failure" not in lines[0]
    bad = runner.invoke(main, ["demo-data", "--rows", "0", "--output", str(out)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_help_teaches(runner):
    r = runner.invoke(main, ["build", "--help"])
    assert r.exit_code == 0
    for text in ("Examples:", "--time-budget", "edgeml.toml", "--drop"):
        assert text in r.output


@pytest.mark.parametrize(("settings", "message"), [
    ({"task": "regression", "metric": "accuracy"},
     r"metric 'accuracy' does not apply to regression; use one of auto, r2, rmse, mae, mse, mape \(set it with the "
     r"--metric flag or metric in edgeml.toml's \[build\] table\)"),
    ({"metric": "acuracy"}, r"metric 'acuracy' is unknown; use one of accuracy, ap, auto, "),
    ({"estimators": ("lgbm", "xgbost")}, r"estimators: 'xgbost' is not a registered learner \(did you mean "
                                         r"'xgboost'\?\); use names from lgbm, xgboost, "),
    ({"time_budget": "60"}, r"time_budget = '60' has the wrong type; expected a number \(set it with the "
                            r"--time-budget flag"),
    ({"max_iter": True}, r"max_iter = True has the wrong type; expected an integer \(set it with the --max-trials"),
    ({"drop": ["a"]}, r"drop = \['a'\] has the wrong type; expected a list of names"),
])
def test_build_settings_are_checked_once_in_build_config(settings, message):
    with pytest.raises(ConfigError, match=message):
        BuildConfig(**settings)
    assert BuildConfig(task="regression", metric="rmse", estimators=("enet", "lgbm"), time_budget=5).metric == "rmse"


def test_a_metric_for_the_wrong_given_task_fails_before_the_data_is_read(runner, tmp_path):
    r = runner.invoke(main, ["build", "--data", str(tmp_path / "missing.csv"), "--label", "y", "--task", "regression",
                             "--metric", "accuracy", "--max-trials", "1"])
    assert r.exit_code == 2 and "metric 'accuracy' does not apply to regression" in r.output
    assert "missing.csv" not in r.output  # refused before the table was looked for
