"""What the update agent refuses and why, and a download cut mid-way or a server out of reach: with real keys, a
real store and releases, the controller's real file server (the harness: tests/update_helpers.py).
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import update_helpers
from broker import wait_until
from update_helpers import DEVICE, FLEET, CuttingProxy, _refused

from edgeml.fleet import keys, releases
from edgeml_runtime.protocol.updates import release_topic
from edgeml_runtime.update import signing
from edgeml_runtime.update.options import UpdateOptions

# -- a download cut, a server away -----------------------------------------------------------------------

def test_a_download_cut_mid_way_resumes_with_the_rest_only(device, world):
    size = Path(world.made["two"].path, "bundle.tar.gz").stat().st_size
    proxy = CuttingProxy(world.server.url, cut=size // 2)  # the headers and less than half the archive
    try:
        d = device(server=proxy.url)
        d.agent.offer(release_topic(FLEET, DEVICE), world.offer(world.made["two"]))
        assert d.wait("committed", "failed", "rolled_back")[-1] == "committed", d.said()
        gets = [r for r in proxy.requests if "bundle.tar.gz" in r[0]]
        assert proxy.cuts == 1 and len(gets) == 2, proxy.requests
        assert gets[0][1] is None and gets[1][1] is not None  # the second asked for the rest only
        have = int(gets[1][1].split("=")[1].rstrip("-"))
        assert 0 < have < size // 2
        d.close()
    finally:
        proxy.close()

#: The harness's fixtures (tests/update_helpers.py), used by name below.
world, records, device = update_helpers.world, update_helpers.records, update_helpers.device


def test_a_server_out_of_reach_keeps_the_release_downloading_not_failed(device, world):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    d = device(server=dead)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(world.made["two"]))
    wait_until(lambda: d.steps and d.steps[-1]["reason"], 30, what="the download's reason to wait")
    assert [s["step"] for s in d.steps] == ["offered", "verifying", "downloading", "downloading"]
    assert "3 attempt(s)" in d.steps[-1]["reason"] and d.steps[-1]["refusal"] is None  # not final: a wave waits
    assert 2 not in d.agent.trust.failed  # not the release's fault
    # the server back (the device's setting fixed), the release heard again: installed
    d.agent.options = UpdateOptions(root_key=d.options.root_key, folder=d.options.folder, server=world.server.url)
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(world.made["two"]))
    assert d.wait("committed", "failed", "rolled_back", after=before)[-1] == "committed", d.said()
    d.close()


def test_a_bad_copy_on_the_server_waits_and_the_unsigned_archive_path_is_not_believed(device, world):
    d = device()
    fresh = world.release("two")  # a release of its own: its served copy is damaged here
    served = Path(fresh.path) / "bundle.tar.gz"
    good = served.read_bytes()
    served.write_bytes(good + b"\0" * 512)  # re-hashed by nobody: the signed size and SHA-256 no longer hold
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(fresh))
    wait_until(lambda: d.steps and d.steps[-1]["reason"], 30, what="the download's reason to wait")
    assert d.steps[-1]["step"] == "downloading" and "changed after the release was signed" in d.steps[-1]["reason"]
    assert fresh.version not in d.agent.trust.failed
    served.write_bytes(good)  # the server's copy mended; an announcement pointing elsewhere is not followed
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(fresh, archive=f"/releases/{FLEET}/999/bundle.tar.gz"))
    assert d.wait("committed", "failed", "rolled_back", after=before)[-1] == "committed", d.said()
    d.close()


# -- what is refused, and why -------------------------------------------------------------------------

def test_tampered_forged_older_and_foreign_releases_are_refused_with_their_reason(device, world):
    d = device()
    two = world.made["two"]
    # a tampered release: the bundle's hash changed after signing
    doc = json.loads(json.dumps(two.document))
    doc["signed"]["bundle"]["sha256"] = "0" * 64
    assert _refused(d, world.offer(two, document=doc))["refusal"] == "bad_signature"
    # a release signed by a key the root does not list (a forger's own)
    forger, _ = signing.generate()
    forged = signing.sign(dict(two.document["signed"], version=50), forger)
    assert _refused(d, world.offer(two, document=forged))["refusal"] == "unknown_key"
    # a release for another fleet
    other = releases.make_release(world.store, world.bundles["two"], fleet="plant-b", keys_dir=world.keys,
                                  releases_dir=world.releases_dir)
    assert _refused(d, world.offer(other))["refusal"] == "other_fleet"
    d.close()


def test_an_older_version_is_refused_once_a_higher_one_is_trusted(device, world):
    d = device()
    three = world.release("two")  # a new, higher release of the same bundle
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(three))
    assert d.wait("committed", "failed", "rolled_back")[-1] == "committed", d.said()
    assert d.agent.trust.release_version == three.version
    assert _refused(d, world.offer(world.made["one"]))["refusal"] == "old_version"  # on the device's own topic
    # the fleet's topic keeps its last release retained for devices that missed it: old news here, not a refusal
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET), world.offer(world.made["one"]))
    time.sleep(0.3)
    assert len(d.steps) == before
    d.close()


def test_a_rotated_release_key_is_trusted_and_a_revoked_one_refused(device, world, tmp_path):
    d = device()
    old_key_release = world.made["two"]
    rotated = tmp_path / "keys"
    shutil.copytree(world.keys, rotated)
    keys.rotate(rotated, revoke_old=True)
    root_v2 = keys.root_envelope(rotated)
    # the old key's release checked against the new root: revoked
    assert _refused(d, world.offer(old_key_release, root=root_v2))["refusal"] == "revoked_key"
    # a release signed by the new key installs, with no change on the device (it holds the root key only)
    new = world.release("two", keys_dir=rotated)
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(new, root=root_v2))
    assert d.wait("committed", "failed", "rolled_back", after=before)[-1] == "committed", d.said()
    assert d.agent.trust.root_version == 2
    # the old root (version 1, still listing the revoked key) is no longer taken
    assert _refused(d, world.offer(world.release("two")))["refusal"] in ("old_root", "revoked_key")
    d.close()


