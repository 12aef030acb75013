"""The bundle registry over the fleet store: windows of an unknown bundle, adding and refusing bundles, the commands.

On SQLite and on the real PostgreSQL of the test session (``url``).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import fleet_helpers
import pytest
from click.testing import CliRunner
from conftest import BIN, run_env
from fleet_helpers import OTHER, decoded

from edgeml.cli import main
from edgeml.fleet.registry import add_bundle, list_bundles
from edgeml_runtime.errors import BundleError
from edgeml_runtime.protocol import VerdictRule, envelopes, judge_window
from edgeml_runtime.protocol.topics import DeviceTopics

#: The fixtures: each test on SQLite and on PostgreSQL.
url, store = fleet_helpers.url, fleet_helpers.store


@pytest.fixture(scope="module")
def demo_windows(demo_bundle, demo_rows, tmp_path_factory) -> list[dict]:
    """The drift windows a real ``edgeml-runtime run`` of the demo bundle writes over 50 rows (10 a window)."""
    out = tmp_path_factory.mktemp("demo-windows") / "windows.jsonl"
    done = subprocess.run([str(BIN / "edgeml-runtime"), "run", str(demo_bundle), "--device-id", "pi-07", "--fleet",
                           "plant-a", "--input", str(demo_rows), "--drift-output", str(out), "--window-rows", "10",
                           "--min-rows", "5", "--outbox", str(out.parent / "outbox.db")],
                          capture_output=True, text=True, env=run_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def demo_messages(demo_windows) -> list[tuple]:
    topics, messages = DeviceTopics("plant-a", "pi-07"), []
    for w in demo_windows:
        body = {k: v for k, v in w.items() if k not in ("seq", "model")}
        message = envelopes.drift(topics, session=1, seq=w["seq"], model=w["model"], outbox_dropped=0, window=body)
        messages.append(decoded(topics.drift, {**message, "historical": False}))
    return messages


def test_windows_of_an_unknown_bundle_are_kept_and_become_known_when_it_is_added(store, demo_bundle,
                                                                                  demo_windows):
    from edgeml_runtime.bundle import read_manifest

    identity = read_manifest(demo_bundle).identity
    assert len(demo_windows) == 5 and {w["model"]["bundle_sha256"] for w in demo_windows} == {identity}
    assert store.record_messages(demo_messages(demo_windows)).outcomes == ("stored",) * 5
    assert [w.known for w in store.windows("plant-a", identity)] == [False] * 5
    assert store.unknown_bundles() == {("plant-a", identity): 5}
    done = add_bundle(store, demo_bundle)
    assert (done.identity, done.added, done.windows) == (identity, True, 5)
    assert "registered demo version 1" in done.summary() and "5 stored windows of it are now known" in done.summary()
    assert [w.known for w in store.windows("plant-a", identity)] == [True] * 5 and store.unknown_bundles() == {}
    assert add_bundle(store, demo_bundle).added is False
    manifest = json.loads((demo_bundle / "manifest.json").read_text())
    assert store.reference(identity) == manifest["reference"] and store.reference(OTHER) is None
    listed = list_bundles(store)
    assert [(b["bundle_sha256"], b["name"], b["version"], b["source"]) for b in listed] == [
        (identity, "demo", "1", str(demo_bundle.resolve()))]
    # The controller judges the summed windows against the registered reference, as the device judged each.
    horizon = store.windows("plant-a", identity)
    rule = VerdictRule(min_rows=5)  # the run's --min-rows
    for w in horizon:  # columns come back in the bundle's order (PostgreSQL's json keeps it; jsonb would not)
        monitored = [n for n, c in manifest["reference"]["columns"].items() if c.get("monitored", True)]
        assert list(w.counts["columns"]) == monitored and len(monitored) >= 5
        assert judge_window(store.reference(identity), w.counts, rule)["verdict"] == w.verdict


def test_a_bundle_that_does_not_verify_is_refused_and_nothing_is_stored(store, demo_bundle, tmp_path):
    copy = tmp_path / "demo-1"
    shutil.copytree(demo_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    artifact = copy / manifest["artifacts"][0]["path"]
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match=rf"{manifest['artifacts'][0]['path']} does not match the manifest"):
        add_bundle(store, copy)
    (copy / "notes.txt").write_text("added later")
    with pytest.raises(BundleError, match="notes.txt is in the bundle but not listed in its manifest"):
        add_bundle(store, copy)
    assert list_bundles(store) == []


def test_the_registry_commands(url, demo_bundle, tmp_path):
    runner = CliRunner()
    added = runner.invoke(main, ["registry", "add", str(demo_bundle), "--store", url])
    assert added.exit_code == 0, added.output
    assert "registered demo version 1" in added.stderr
    listed = runner.invoke(main, ["registry", "list", "--json"], env={"EDGEML_FLEET_STORE": url})
    assert listed.exit_code == 0
    listing = json.loads(listed.stdout)
    assert listing["versions"] == [] and [b["name"] for b in listing["unversioned"]] == ["demo"]
    plain = runner.invoke(main, ["registry", "list", "--store", url])
    assert plain.stdout.startswith("bundles with no version")
    assert f"  {listing['unversioned'][0]['bundle_sha256'][:12]}  demo 1" in plain.stdout
    refused = runner.invoke(main, ["registry", "add", str(tmp_path), "--store", url])
    assert refused.exit_code == 2 and "manifest.json" in refused.stderr and "Traceback" not in refused.output
