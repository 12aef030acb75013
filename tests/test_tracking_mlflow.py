"""The registry's versions logged to a real MLflow tracking store (SQLite, in tmp_path): runs, params, metrics, the
bundle artifact, model versions and the ``champion`` alias (edgeml.fleet.tracking).

Needs the ``tracking`` extra (``make install`` installs it); without it, only
the test of the error that names the extra runs.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from fleet_helpers import renumbered

from edgeml.fleet import versions as reg
from edgeml.fleet.store import Store
from edgeml.fleet.tracking import Tracking

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="mlflow is not installed: pip install 'edgeml[tracking]'")


@pytest.fixture(scope="module")
def two_bundles(demo_bundle, tmp_path_factory):
    return demo_bundle, renumbered(demo_bundle, tmp_path_factory.mktemp("tracked"))


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite tracking store for the module (creating its tables takes seconds); each test its own fleet."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@needs_mlflow
def test_versions_promotions_and_rollbacks_are_logged_to_mlflow(two_bundles, mlflow_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri
    tracking = Tracking(uri)
    with Store.open(f"sqlite:///{tmp_path}/fleet.db") as store:
        first = reg.register(store, two_bundles[0], fleet="plant-a", lineage={"trigger": "manual"},
                             tracking=tracking)
        second = reg.register(store, two_bundles[1], fleet="plant-a", action="trained", parent=first.bundle_sha256,
                              lineage={"trigger": {"kind": "drift"}, "scores": {"challenger": 0.93, "champion": 0.9},
                                       "rows": 400}, tracking=tracking)
        reg.promote(store, first.version, tracking=tracking)
        promoted = reg.promote(store, second.version, reason="better", tracking=tracking)
        back = reg.rollback(store, "plant-a", tracking=tracking)
        identity = second.bundle_sha256
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    logged = promoted.lineage["mlflow"]
    assert (logged["model"], logged["model_version"]) == ("edgeml-plant-a", "2")
    run = client.get_run(logged["run_id"])
    assert run.info.run_name == "v2" and run.info.status == "FINISHED"
    assert run.data.params == {"fleet": "plant-a", "cohort": "", "bundle_sha256": identity, "bundle": "demo 2",
                               "action": "trained", "trigger": "drift", "registry_version": "2"}
    assert run.data.metrics == {"scores.challenger": 0.93, "scores.champion": 0.9}
    assert run.data.tags["edgeml.parent"] == first.bundle_sha256
    [artifact] = client.list_artifacts(logged["run_id"], "bundle")
    assert artifact.path == "bundle/demo-2.tar.gz" and artifact.file_size > 1000
    local = client.download_artifacts(logged["run_id"], "bundle/demo-2.tar.gz", str(tmp_path))
    assert open(local, "rb").read() == reg.archive_path(Store.open(f"sqlite:///{tmp_path}/fleet.db"), identity,
                                                         tmp_path / "kept").read_bytes()
    # Three model versions (the rollback is a new one, of the first bundle), and the alias follows the champion.
    made = client.search_model_versions("name='edgeml-plant-a'")
    assert sorted(int(m.version) for m in made) == [1, 2, 3]
    assert back.lineage["mlflow"]["model_version"] == "3"
    champion = client.get_model_version_by_alias("edgeml-plant-a", "champion")
    assert str(champion.version) == "3" and champion.tags["edgeml.bundle_sha256"] == first.bundle_sha256
    assert champion.tags["edgeml.status"] == "champion"
    assert client.get_run(back.lineage["mlflow"]["run_id"]).data.params["action"] == "rolled_back"


@needs_mlflow
def test_a_version_made_before_tracking_is_logged_when_it_is_next_touched(two_bundles, mlflow_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri
    with Store.open(f"sqlite:///{tmp_path}/fleet.db") as store:
        plain = reg.register(store, two_bundles[0], fleet="plant-b", cohort="line 2")
        assert "mlflow" not in plain.lineage
        lost = reg.reject(store, plain.version, reason="worse", tracking=Tracking(uri))
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    [made] = client.search_model_versions("name='edgeml-plant-b-line_2'")
    assert made.tags["edgeml.status"] == "rejected" and lost.lineage["mlflow"]["model_version"] == str(made.version)


def test_without_mlflow_tracking_names_the_extra(tmp_path):
    """In a fresh interpreter where ``mlflow`` cannot be imported: asking for tracking fails naming the extra,
    and without a tracking URI nothing needs it."""
    script = f"""
import sys
sys.modules["mlflow"] = None  # import mlflow raises ModuleNotFoundError
from edgeml.fleet.tracking import Tracking
assert Tracking.configured(None, environ={{}}) is None
try:
    Tracking("sqlite:///{tmp_path}/mlflow.db").client
except Exception as exc:
    print(type(exc).__name__, exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("FleetError MLflow tracking to sqlite:///")
    assert "install the tracking extra: pip install 'edgeml[tracking]'" in done.stdout


@needs_mlflow
def test_the_commands_log_to_the_tracking_uri_or_mlflow_tracking_uri(two_bundles, mlflow_uri, tmp_path):
    from click.testing import CliRunner
    from mlflow.tracking import MlflowClient

    from edgeml.cli import main

    uri, store = mlflow_uri, f"sqlite:///{tmp_path}/fleet.db"
    runner = CliRunner()
    added = runner.invoke(main, ["registry", "add", str(two_bundles[0]), "--fleet", "plant-c", "--champion",
                                 "--store", store, "--tracking-uri", uri])
    assert added.exit_code == 0, added.output
    second = runner.invoke(main, ["registry", "add", str(two_bundles[1]), "--fleet", "plant-c", "--store", store],
                           env={"MLFLOW_TRACKING_URI": uri})
    promoted = runner.invoke(main, ["registry", "promote", "2", "--store", store], env={"MLFLOW_TRACKING_URI": uri})
    assert second.exit_code == 0 and promoted.exit_code == 0, second.output + promoted.output
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("edgeml-plant-c", "champion")
    assert str(champion.version) == "2" and champion.tags["edgeml.version"] == "2"
    first = client.get_run(client.get_model_version("edgeml-plant-c", "1").run_id)
    assert first.data.params["trigger"] == "manual" and first.data.params["action"] == "added"
