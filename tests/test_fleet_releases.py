"""Signed releases (edgeml.fleet.releases): numbering per fleet that only grows, concurrent releases, the release
folder's contents, the signature a device verifies, and ``edgeml release``'s wiring.

Real keys, a real SQLite store, the session's demo bundle and a copy of it
under another manifest version (another identity), verified by the runtime.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from edgeml.cli import main
from edgeml.errors import FleetError
from edgeml.fleet import keys, releases
from edgeml.fleet import schema as t
from edgeml.fleet.store import Store
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.errors import UpdateRefused
from edgeml_runtime.update import signing
from edgeml_runtime.update.trust import TrustState, verify_release

NOW = 1_796_000_000.0


@pytest.fixture(scope="module")
def bundles(demo_bundle, tmp_path_factory) -> list:
    copy = tmp_path_factory.mktemp("releases") / "demo-2"
    shutil.copytree(demo_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": "2"}, indent=2))
    return [demo_bundle, copy]


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/fleet.db"


@pytest.fixture
def store(url):
    with Store.open(url) as opened:
        yield opened


@pytest.fixture
def key_dir(tmp_path):
    return keys.init(tmp_path / "keys", now=NOW)


def release(store, bundle, key_dir, tmp_path, fleet="plant-a", **kwargs):
    return releases.make_release(store, bundle, fleet=fleet, keys_dir=key_dir, releases_dir=tmp_path / "releases",
                                 now=NOW, **kwargs)


def test_the_release_folder_holds_what_the_signed_release_states(store, bundles, key_dir, tmp_path):
    made = release(store, bundles[0], key_dir, tmp_path, cohort="line-2", health={"min_rows": 500},
                   expires_days=7)
    folder = tmp_path / "releases" / "plant-a" / "1"
    assert made.version == 1 and made.path == str(folder) and made.cohort == "line-2"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["1"]  # no temporary folder left
    assert sorted(p.name for p in folder.iterdir()) == ["bundle.tar.gz", "release.json", "root.json"]
    signed, archive = made.document["signed"], (folder / "bundle.tar.gz").read_bytes()
    assert signed["bundle"]["sha256"] == hashlib.sha256(archive).hexdigest()
    assert signed["bundle"]["bytes"] == len(archive)
    assert signed["bundle"]["identity"] == made.identity == read_manifest(bundles[0]).identity
    assert (signed["timestamp"], signed["expires"]) == ("2026-11-30T00:53:20Z", "2026-12-07T00:53:20Z")
    assert signed["health"] == {"min_windows": 2, "min_rows": 500, "max_error_rate": 0.05, "max_latency_ms": 50.0,
                                "max_crashes": 0}
    assert json.loads((folder / "release.json").read_text()) == made.document
    assert json.loads((folder / "root.json").read_text()) == keys.root_envelope(key_dir)
    assert releases.get(store, "plant-a", 1) == made


def test_a_device_verifies_the_release_with_the_root_public_key_only(store, bundles, key_dir, tmp_path):
    made = release(store, bundles[0], key_dir, tmp_path)
    folder = tmp_path / "releases" / "plant-a" / "1"
    release_env = json.loads((folder / "release.json").read_text())
    root_env = json.loads((folder / "root.json").read_text())
    state = TrustState.load(tmp_path / "device")
    checked = verify_release(release_env, root_env, signing.read_public(key_dir / "root.pub"), state,
                             fleet="plant-a", now=NOW + 60)
    assert (checked.version, checked.bundle.identity, checked.root_version) == (1, made.identity, 1)
    release_env["signed"]["bundle"]["sha256"] = "0" * 64
    with pytest.raises(UpdateRefused, match="bad_signature"):
        verify_release(release_env, root_env, signing.read_public(key_dir / "root.pub"), state, fleet="plant-a",
                       now=NOW + 60)


def test_versions_only_grow_per_fleet_and_a_rollback_is_a_new_release(store, bundles, key_dir, tmp_path):
    a1, a2 = (release(store, b, key_dir, tmp_path) for b in bundles)
    b1 = release(store, bundles[1], key_dir, tmp_path, fleet="plant-b")
    assert (a1.version, a2.version, b1.version) == (1, 2, 1)
    with store._write() as conn:  # a lost row does not hand its number out again
        conn.execute(sa.delete(t.releases).where(t.releases.c.fleet == "plant-a", t.releases.c.version == 2))
    back = releases.make_release(store, identity=a1.identity, fleet="plant-a", keys=key_dir,  # the rollout's call
                                 releases_dir=tmp_path / "releases", now=NOW)
    assert back.version == 3 and back.identity == a1.identity
    assert [r.version for r in releases.list_releases(store, "plant-a")] == [1, 3]
    assert releases.latest(store, "plant-a") == back and releases.latest(store, "plant-c") is None
    keys.rotate(key_dir)
    rotated = release(store, bundles[1], key_dir, tmp_path, fleet="plant-b")
    assert rotated.version == 2 and rotated.document["signed"]["root_version"] == 2
    assert rotated.document["signatures"][0]["keyid"] == keys.signer(key_dir).keyid


def test_concurrent_releases_never_share_a_version(url, store, bundles, key_dir, tmp_path):
    first = release(store, bundles[0], key_dir, tmp_path)  # the bundle is kept once, before the race
    made, errors = [], []

    def one():
        try:
            with Store.open(url) as own:
                made.append(releases.make_release(own, first.identity, fleet="plant-a", keys_dir=key_dir,
                                                  releases_dir=tmp_path / "releases", now=NOW).version)
        except Exception as exc:  # noqa: BLE001 (reported below, with the versions made)
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sorted(made) == [2, 3, 4, 5, 6, 7]
    assert sorted(int(p.name) for p in (tmp_path / "releases" / "plant-a").iterdir()) == list(range(1, 8))


def test_mistakes_are_refused_and_store_nothing(store, bundles, key_dir, tmp_path):
    with pytest.raises(FleetError, match=r"fleet '\.\.' .*letters, digits"):
        release(store, bundles[0], key_dir, tmp_path, fleet="..")
    with pytest.raises(FleetError, match="the registry keeps no archive of bundle ababab"):
        release(store, "ab" * 32, key_dir, tmp_path)
    with pytest.raises(FleetError, match="is not a keys folder"):
        release(store, bundles[0], tmp_path / "nokeys", tmp_path)
    with pytest.raises(FleetError, match=r"health\.min_rows is 0"):
        release(store, bundles[0], key_dir, tmp_path, health={"min_rows": 0})
    assert releases.list_releases(store, "plant-a") == [] and releases.latest(store, "..") is None
    with pytest.raises(FleetError, match="fleet 'plant-a' has no release 1"):
        releases.get(store, "plant-a", 1)


def test_the_release_command(url, bundles, key_dir, tmp_path, monkeypatch):
    runner = CliRunner()
    help_text = runner.invoke(main, ["release", "--help"]).output
    assert "rollback is a new release of an older bundle" in help_text and "--max-latency-ms" in help_text
    monkeypatch.setenv("EDGEML_FLEET_STORE", url)
    done = runner.invoke(main, ["release", str(bundles[0]), "--fleet", "plant-a", "--keys", str(key_dir),
                                "--releases", str(tmp_path / "r"), "--min-rows", "300", "--json"])
    assert done.exit_code == 0, done.output
    record = json.loads(done.stdout)
    assert record["version"] == 1 and record["document"]["signed"]["health"]["min_rows"] == 300
    assert (tmp_path / "r" / "plant-a" / "1" / "bundle.tar.gz").is_file()
    wrong = runner.invoke(main, ["release", str(bundles[0]), "--fleet", "plant-a", "--keys", str(tmp_path)])
    assert wrong.exit_code == 2 and "error: " in wrong.output and "is not a keys folder" in wrong.output
    assert "Traceback" not in wrong.output and isinstance(wrong.exception, SystemExit)
