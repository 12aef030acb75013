"""The registry's versions (edgeml.fleet.versions): chains of promotions, rejections and rollbacks, the kept
archives, and promotions from two processes at once.

On SQLite and on the real PostgreSQL of the test session (``url``/``store``).
The bundles are the session's demo bundle and copies of it under another
manifest ``version`` (so another identity), each verified by the runtime.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import textwrap

import fleet_helpers
import numpy as np
import pandas as pd
import pytest
from fleet_helpers import count

from edgeml.bundle.place import write_archive
from edgeml.errors import FleetError
from edgeml.fleet import versions as reg
from edgeml_runtime.bundle import open_bundle, read_manifest
from edgeml_runtime.model import Model

url, store = fleet_helpers.url, fleet_helpers.store


@pytest.fixture(scope="module")
def bundles(demo_bundle, tmp_path_factory) -> list:
    """Three bundles of distinct identities: the demo bundle, and copies of it as manifest versions 2 and 3."""
    out = [demo_bundle]
    for number in ("2", "3"):
        copy = tmp_path_factory.mktemp("versions") / f"demo-{number}"
        shutil.copytree(demo_bundle, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        (copy / "manifest.json").write_text(json.dumps({**manifest, "version": number}, indent=2))
        out.append(copy)
    assert len({read_manifest(b).identity for b in out}) == 3
    return out


def statuses(store, fleet="plant-a", cohort="") -> list[tuple[int, str, tuple]]:
    return [(v.version, v.status, v.aliases) for v in reg.versions(store, fleet, cohort)]


def test_promote_reject_and_rollback_chains(store, bundles):
    a, b, c = (reg.register(store, p, fleet="plant-a", lineage={"trigger": "manual", "data": {"sha256": f"{i}" * 64}})
               for i, p in enumerate(bundles))
    assert (a.version, b.version, c.version) == (1, 2, 3) and a.action == "added" and a.status == "candidate"
    assert reg.champion(store, "plant-a") is None
    first = reg.promote(store, a.version, reason="first")
    assert first.status == "champion" and first.aliases == ("champion",)
    assert first.lineage["previous_champion"] is None and first.lineage["promoted"]["reason"] == "first"
    # Promoting the champion again is a no-op: the row is as it was.
    assert reg.promote(store, a.version, reason="again") == first
    second = reg.promote(store, b.version)
    assert second.lineage["previous_champion"] == a.version
    assert statuses(store) == [(1, "retired", ()), (2, "champion", ("champion",)), (3, "candidate", ())]
    lost = reg.reject(store, c.version, reason="worse", champion_score=0.91, challenger_score=0.88)
    assert lost.status == "rejected" and lost.lineage["rejected"] == {
        "reason": "worse", "champion_score": 0.91, "challenger_score": 0.88}
    with pytest.raises(FleetError, match=r"version 2 is the champion of fleet 'plant-a' and cannot be rejected"):
        reg.reject(store, b.version, reason="no")
    third = reg.promote(store, c.version, reason="manual override")  # a rejected version may still be promoted
    assert third.lineage["previous_champion"] == b.version and "rejected" in third.lineage
    # Rolling back twice goes further back, each time as a new version: numbers only grow.
    back = reg.rollback(store, "plant-a", reason="bad in the field")
    assert (back.version, back.action, back.bundle_sha256, back.parent) == (
        4, "rolled_back", b.bundle_sha256, c.bundle_sha256)
    assert back.lineage["rolled_back_from"] == 3 and back.lineage["restores"] == 2
    assert back.lineage["data"] == {"sha256": "1" * 64} and back.lineage["previous_champion"] == a.version
    further = reg.rollback(store, "plant-a")
    assert (further.version, further.bundle_sha256, further.lineage["restores"]) == (5, a.bundle_sha256, 1)
    assert statuses(store) == [(1, "retired", ()), (2, "retired", ()), (3, "retired", ()), (4, "retired", ()),
                               (5, "champion", ("champion",))]
    with pytest.raises(FleetError, match=r"version 5, the champion of fleet 'plant-a', replaced no earlier champion"):
        reg.rollback(store, "plant-a")
    assert [v.version for v in reg.versions(store)] == [1, 2, 3, 4, 5] and count(store, "bundle_archives") == 3


def test_cohorts_have_their_own_champion_and_errors_name_what_is_missing(store, bundles):
    whole = reg.register(store, bundles[0], fleet="plant-a")
    line2 = reg.register(store, bundles[1], fleet="plant-a", cohort="line-2", action="trained",
                         parent=whole.bundle_sha256)
    reg.promote(store, whole.version)
    reg.promote(store, line2.version)
    assert reg.champion(store, "plant-a").version == whole.version
    assert reg.champion(store, "plant-a", "line-2").version == line2.version
    assert reg.champion(store, "plant-b") is None and [v.version for v in reg.versions(store, cohort="line-2")] == [2]
    with pytest.raises(FleetError, match=r"fleet 'plant-b' has no champion to roll back; promote one"):
        reg.rollback(store, "plant-b")
    with pytest.raises(FleetError, match=r"fleet 'plant-a' cohort 'line-2', replaced no earlier"):
        reg.rollback(store, "plant-a", "line-2")
    with pytest.raises(FleetError, match=r"the registry has no version 99; list them with edgeml registry list"):
        reg.get(store, 99)
    with pytest.raises(FleetError, match=r"action 'copied'"):
        reg.register(store, bundles[0], fleet="plant-a", action="copied")
    with pytest.raises(FleetError, match=r"keeps no archive of bundle abababababab"):
        reg.archive_path(store, "ab" * 32)


def test_the_archive_is_kept_once_and_written_back_byte_exact(store, bundles, demo_rows, tmp_path):
    folder = bundles[0]
    packed = tmp_path / "demo-1.tar.gz"
    write_archive(folder, packed)
    identity, manifest = reg.store_bundle(store, folder)
    assert reg.store_bundle(store, packed)[0] == identity  # the .tar.gz of the same bundle: no second copy
    reg.register(store, folder, fleet="plant-a")
    reg.register(store, folder, fleet="plant-b")
    assert count(store, "bundle_archives") == 1 and count(store, "bundles") == 1
    out = reg.archive_path(store, identity, tmp_path / "out")
    assert out.read_bytes() == packed.read_bytes() and (out.parent.name, out.name) == (identity[:16], "demo-1.tar.gz")
    with tarfile.open(out) as tar:
        assert "manifest.json" in {m.name.split("/", 1)[-1] for m in tar.getmembers()}
    with open_bundle(out) as bundle:
        assert bundle.manifest().identity == identity and bundle.manifest_json() == manifest
    rows = pd.read_csv(demo_rows).head(20).to_dict("records")
    from_archive, from_folder = Model.load(out).predict(rows), Model.load(folder).predict(rows)
    np.testing.assert_array_equal(from_archive.labels, from_folder.labels)
    np.testing.assert_array_equal(from_archive.probabilities, from_folder.probabilities)
    assert len(from_archive.labels) == 20


PROMOTER = textwrap.dedent("""
    import sys, time
    from edgeml.fleet.store import Store
    from edgeml.fleet import versions as reg
    from pathlib import Path
    url, folder, me, mine = sys.argv[1], Path(sys.argv[2]), sys.argv[3], [int(n) for n in sys.argv[4:]]
    with Store.open(url) as store:
        reg.champion(store, "plant-a")  # connected and warm
        (folder / f"ready-{me}").touch()
        while len(list(folder.glob("ready-*"))) < 2:  # both start promoting at once
            time.sleep(0.001)
        for number in mine:
            reg.promote(store, number)
""")


def test_promotions_from_two_processes_leave_one_champion(url, bundles, tmp_path):
    """Each of 40 versions is promoted once, half by each process, at the same time: every promotion must
    replace the champion before it, so the lineage is one chain through all 40, and one is champion at the end
    (without the lock, two promotions that read the same champion both replace it, and both stay champion)."""
    from edgeml.fleet.store import Store

    with Store.open(url) as s:
        kept = [reg.store_bundle(s, folder)[0] for folder in bundles]
        made = [reg.add_version(s, kept[i % 3], fleet="plant-a").version for i in range(40)]
    script = tmp_path / "promoter.py"
    script.write_text(PROMOTER)
    procs = [subprocess.Popen([sys.executable, str(script), url, str(tmp_path), str(n), *map(str, made[n::2])],
                              stderr=subprocess.PIPE, text=True) for n in (0, 1)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
        p.stderr.close()
    with Store.open(url) as s:
        final = {v.version: v for v in reg.versions(s, "plant-a")}
        winner = reg.champion(s, "plant-a")
    assert [n for n, v in final.items() if v.status == "champion"] == [winner.version]
    assert [n for n, v in final.items() if v.aliases] == [winner.version]
    chain, at = [], winner.version
    while at is not None:
        chain.append(at)
        at = final[at].lineage["previous_champion"]
    assert sorted(chain) == made  # every promotion replaced the one before it, none was lost


def test_add_version_needs_a_kept_bundle(store, bundles):
    identity, _ = reg.store_bundle(store, bundles[0])
    made = reg.add_version(store, identity, fleet="plant-a", action="trained", lineage={"trigger": "drift"})
    assert (made.version, made.action, made.name, made.lineage) == (1, "trained", "demo", {"trigger": "drift"})
    with pytest.raises(FleetError, match=r"keeps no bundle cdcdcdcdcdcd…; add it with edgeml registry add"):
        reg.add_version(store, "cd" * 32, fleet="plant-a")
