"""The release signing keys (edgeml.fleet.keys): init, rotate, revoke, what they write, and the CLI's wiring.

Real Ed25519 keys; every root.json is checked with the runtime's own verify,
as a device provisioned with root.pub checks it.
"""

from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner

from edgeml.cli import main
from edgeml.errors import FleetError
from edgeml.fleet import keys
from edgeml_runtime.errors import UpdateRefused
from edgeml_runtime.update import signing
from edgeml_runtime.update.metadata import Root

NOW = 1_796_000_000.0  # 2026-11-30T00:53:20Z


def device_root(folder) -> Root:
    """root.json as a device reads it: verified with the provisioned root.pub only."""
    public = signing.read_public(folder / "root.pub")
    envelope = json.loads((folder / "root.json").read_text())
    return Root.from_signed(signing.verify(envelope, {signing.key_id(signing.public_raw(public)): public}))


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_the_root_a_device_verifies_and_private_keys_only_the_owner_reads(tmp_path):
    folder = keys.init(tmp_path / "keys", expires_days=10, now=NOW)
    root = device_root(folder)
    (release_key,) = keys.list_keys(folder)
    assert root.version == 1 and root.revoked == () and list(root.release_keys) == [release_key.keyid]
    assert root.expires_at == NOW // 1 + 10 * 86400
    public = signing.read_public(folder / f"release-{release_key.keyid[:16]}.pub")
    assert signing.public_hex(public) == root.release_keys[release_key.keyid] == release_key.public
    assert mode(folder) == 0o700 and mode(folder / "root.key") == 0o600
    assert mode(folder / f"release-{release_key.keyid[:16]}.key") == 0o600
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["root.key", "root.pub", "root.json", f"release-{release_key.keyid[:16]}.key",
         f"release-{release_key.keyid[:16]}.pub"])  # no temporary file left
    assert keys.signer(folder).keyid == release_key.keyid


def test_init_refuses_a_folder_holding_keys_and_changes_nothing(tmp_path):
    folder = keys.init(tmp_path / "keys", now=NOW)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(FleetError, match=r"already holds keys \(root\.key, root\.pub, root\.json, release-.*"
                                         r"edgeml keys rotate"):
        keys.init(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "root.json").write_text("{}")
    with pytest.raises(FleetError, match=r"already holds keys \(root\.json\)"):
        keys.init(tmp_path / "other")


def test_rotate_adds_a_key_that_signs_and_keeps_or_revokes_the_old(tmp_path):
    folder = keys.init(tmp_path / "keys", now=NOW)
    first = keys.signer(folder).keyid
    second = keys.rotate(folder, now=NOW + 1)
    root = device_root(folder)
    assert root.version == 2 and list(root.release_keys) == [first, second] and root.revoked == ()
    assert keys.signer(folder).keyid == second
    assert [(k.keyid, k.status) for k in keys.list_keys(folder)] == [(first, "listed"), (second, "active")]
    third = keys.rotate(folder, revoke_old=True, now=NOW + 2)
    root = device_root(folder)
    assert root.version == 3 and list(root.release_keys) == [first, second, third]
    assert root.revoked == (first, second) and keys.signer(folder).keyid == third


def test_revoke_by_prefix_falls_back_to_the_newest_key_left_and_then_to_none(tmp_path):
    folder = keys.init(tmp_path / "keys", now=NOW)
    first, second = keys.signer(folder).keyid, keys.rotate(folder, now=NOW)
    assert keys.revoke(folder, second[:10].upper(), now=NOW) == second
    root = device_root(folder)
    assert root.version == 3 and root.revoked == (second,) and keys.signer(folder).keyid == first
    with pytest.raises(FleetError, match="is revoked already"):
        keys.revoke(folder, second)
    with pytest.raises(FleetError, match=r"key id 'abc' is no release key root.json lists .*8 hex digits"):
        keys.revoke(folder, "abc")
    keys.revoke(folder, first)
    with pytest.raises(FleetError, match="no release key that may sign.*edgeml keys rotate"):
        keys.signer(folder)


def test_the_root_key_is_read_only_to_change_root_json(tmp_path):
    folder = keys.init(tmp_path / "keys", now=NOW)
    offline = tmp_path / "root.key"
    (folder / "root.key").rename(offline)
    assert keys.signer(folder).private is not None  # signing a release needs no root key
    with pytest.raises(FleetError, match=r"root\.key is missing.*bring the offline root key back"):
        keys.rotate(folder)
    assert device_root(folder).version == 1


def test_a_changed_root_json_is_refused(tmp_path):
    folder = keys.init(tmp_path / "keys", now=NOW)
    envelope = json.loads((folder / "root.json").read_text())
    envelope["signed"]["version"] = 9
    (folder / "root.json").write_text(json.dumps(envelope))
    with pytest.raises(UpdateRefused, match="bad_signature") as refused:
        keys.signer(folder)
    assert refused.value.reason == "bad_signature"


def test_the_cli_commands(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "keys"
    assert "offline" in runner.invoke(main, ["keys", "--help"]).output
    done = runner.invoke(main, ["keys", "init", str(folder), "--expires-days", "30"])
    assert done.exit_code == 0, done.output
    assert runner.invoke(main, ["keys", "rotate", str(folder), "--revoke-old"]).exit_code == 0
    listed = json.loads(runner.invoke(main, ["keys", "list", str(folder), "--json"]).output)
    assert listed["root_version"] == 2 and [k["status"] for k in listed["keys"]] == ["revoked", "active"]
    again = runner.invoke(main, ["keys", "init", str(folder)])
    assert again.exit_code == 2 and "error: " in again.output and "already holds keys" in again.output
    assert "Traceback" not in again.output and isinstance(again.exception, SystemExit)  # sys.exit, no crash
    missing = runner.invoke(main, ["keys", "list", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "is not a keys folder" in missing.output
