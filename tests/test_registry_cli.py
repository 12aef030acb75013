"""``edgeml registry add|list|show|promote|rollback`` wired to the registry's versions, on SQLite and PostgreSQL.

The logic is tested through the library (tests/test_registry_versions.py);
here, what each command prints and stores, and that errors are one line with
a non-zero exit and no traceback.
"""

from __future__ import annotations

import json

import fleet_helpers
import pytest
from click.testing import CliRunner
from fleet_helpers import count

from edgeml.cli import main
from edgeml.fleet import versions as reg
from edgeml.fleet.store import Store
from edgeml_runtime.bundle import read_manifest

url = fleet_helpers.url


@pytest.fixture(scope="module")
def second_bundle(demo_bundle, tmp_path_factory):
    return fleet_helpers.renumbered(demo_bundle, tmp_path_factory.mktemp("cli"))


def run(*args: str, url: str, code: int = 0):
    done = CliRunner().invoke(main, ["registry", *args, "--store", url], env={"MLFLOW_TRACKING_URI": ""})
    assert done.exit_code == code, done.output
    assert "Traceback" not in done.output
    return done


def test_add_list_show_promote_and_rollback(url, demo_bundle, second_bundle):
    first_id, second_id = read_manifest(demo_bundle).identity, read_manifest(second_bundle).identity
    added = run("add", str(demo_bundle), "--fleet", "plant-a", "--champion", url=url)
    assert "registered demo version 1" in added.stderr
    assert f"fleet plant-a: new version v1 (demo 1, {first_id[:12]})" in added.stderr
    assert f"fleet plant-a: champion none → v1 (demo 1, {first_id[:12]})" in added.stdout
    again = run("add", str(demo_bundle), "--fleet", "plant-a", url=url)  # a second version, no second archive
    assert "was already registered" in again.stderr and "new version v2" in again.stderr
    run("add", str(second_bundle), url=url)  # registered, no version yet
    with Store.open(url) as store:
        assert count(store, "bundle_archives") == 2
        lineage = reg.get(store, 1).lineage
    provenance = json.loads((demo_bundle / "manifest.json").read_text())["provenance"]
    assert lineage["trigger"] == "manual" and lineage["data"] == provenance["data"]
    assert lineage["seed"] == provenance["seed"] == 0 and lineage["data"]["rows"] > 0
    assert lineage["data"]["sha256"] == provenance["data"]["sha256"]

    listing = json.loads(run("list", "--json", url=url).stdout)
    assert [(v["version"], v["status"], v["aliases"]) for v in listing["versions"]] == [
        (1, "champion", ["champion"]), (2, "candidate", [])]
    assert [b["bundle_sha256"] for b in listing["unversioned"]] == [second_id]
    table = run("list", url=url).stdout.splitlines()
    assert table[0].split() == ["VERSION", "FLEET", "COHORT", "STATUS", "ALIASES", "BUNDLE", "IDENTITY", "ACTION",
                                "PARENT"]
    assert table[1].split() == ["1", "plant-a", "-", "champion", "champion", "demo", "1", first_id[:12], "added", "-"]
    assert table[4].startswith("bundles with no version") and table[5].split()[:3] == [second_id[:12], "demo", "2"]
    assert run("list", "--fleet", "plant-b", url=url).stderr.startswith("no versions of fleet plant-b")

    shown = run("show", "1", url=url).stdout
    assert shown.startswith("version 1 of fleet plant-a\n") and f"demo 1  {first_id}" in shown
    assert '"trigger": "manual"' in shown and "(aliases: champion)" in shown
    assert json.loads(run("show", "2", "--json", url=url).stdout)["lineage"]["trigger"] == "manual"

    made = run("add", str(second_bundle), "--fleet", "plant-a", url=url).stderr
    assert "new version v3 (demo 2" in made
    promoted = run("promote", "3", "--reason", "better", url=url).stdout
    assert promoted.strip() == (f"fleet plant-a: champion v1 (demo 1, {first_id[:12]}) → "
                                f"v3 (demo 2, {second_id[:12]})")
    assert "is already the champion; nothing changed" in run("promote", "3", url=url).stdout
    back = run("rollback", "--fleet", "plant-a", url=url).stdout
    assert back.strip() == (f"fleet plant-a: champion v3 (demo 2, {second_id[:12]}) → v4 (demo 1, {first_id[:12]}), "
                            "a new version restoring v1")
    with Store.open(url) as store:
        assert reg.champion(store, "plant-a").version == 4 and reg.get(store, 3).status == "retired"


@pytest.mark.parametrize("args, message", [
    (("show", "9"), "error: the registry has no version 9; list them with edgeml registry list"),
    (("promote", "9"), "error: the registry has no version 9; list them with edgeml registry list"),
    (("rollback", "--fleet", "plant-a"), "error: fleet 'plant-a' has no champion to roll back; promote one with "
                                         "edgeml registry promote VERSION"),
    (("add", "no/such/bundle", "--fleet", "plant-a"), "error: no/such/bundle does not exist or is not a bundle"),
    (("add", "x", "--champion"), "error: --champion and --cohort need --fleet"),
])
def test_errors_are_one_line_and_exit_non_zero(url, args, message):
    done = CliRunner().invoke(main, ["registry", *args, "--store", url], env={"MLFLOW_TRACKING_URI": ""})
    assert done.exit_code != 0 and "Traceback" not in done.output
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1


def test_nothing_to_roll_back_to(url, demo_bundle):
    run("add", str(demo_bundle), "--fleet", "plant-a", "--cohort", "line-2", "--champion", url=url)
    done = run("rollback", "--fleet", "plant-a", "--cohort", "line-2", url=url, code=2)
    assert "the champion of fleet 'plant-a' cohort 'line-2', replaced no earlier champion" in done.stderr


def test_help_shows_examples():
    for command in ("add", "list", "show", "promote", "rollback"):
        done = CliRunner().invoke(main, ["registry", command, "--help"])
        assert done.exit_code == 0 and f"edgeml registry {command}" in done.output
