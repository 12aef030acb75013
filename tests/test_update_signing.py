"""Signed releases (issue 18): keys, envelopes, root.json and release.json, and every refusal of verify_release
with its exact ``reason``; the trust state, persisted atomically."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from edgeml_runtime.errors import UpdateError, UpdateRefused
from edgeml_runtime.update import signing
from edgeml_runtime.update.metadata import Release, Root, make_release, make_root, parse_time
from edgeml_runtime.update.signing import generate, key_id, public_hex, public_raw, sign, verify
from edgeml_runtime.update.trust import TrustState, verify_release

T = "2026-12-03T10:00:00Z"
NOW = parse_time(T)
FAR = "2027-12-01T00:00:00Z"
BUNDLE = {"identity": "ab" * 32, "name": "demo", "version": "1", "archive": "bundle.tar.gz", "sha256": "cd" * 32,
          "bytes": 1234}
HEALTH = {"min_windows": 2, "min_rows": 200, "max_error_rate": 0.05, "max_latency_ms": 50.0, "max_crashes": 0}

ROOT_KEY, RELEASE_KEY, NEW_KEY, STRANGER = (generate() for _ in range(4))


def kid(pair) -> str:
    return key_id(public_raw(pair[1]))


def root_env(version=1, listed=(RELEASE_KEY,), revoked=(), expires=FAR, signer=ROOT_KEY) -> dict:
    keys = {kid(pair): public_hex(pair[1]) for pair in listed}
    return sign(make_root(version, keys, [kid(p) for p in revoked], expires), signer[0])


def release_signed(version=7, fleet="plant-a", timestamp=T, expires="2027-01-02T10:00:00Z", root_version=1) -> dict:
    return make_release(fleet, "", version, BUNDLE, HEALTH, root_version, timestamp, expires)


def release_env(signer=RELEASE_KEY, **fields) -> dict:
    return sign(release_signed(**fields), signer[0])


@pytest.fixture
def state(tmp_path) -> TrustState:
    return TrustState.load(tmp_path)


def check(release, root, state, *, fleet="plant-a", now=NOW):
    return verify_release(release, root, ROOT_KEY[1], state, fleet=fleet, now=now)


# --- keys and envelopes ---------------------------------------------------------------------------------------


def test_key_files_round_trip_and_the_private_one_is_for_its_owner_only(tmp_path):
    private, public = generate()
    signing.write_private(tmp_path / "release.key", private)
    signing.write_public(tmp_path / "release.pub", public)
    assert stat.S_IMODE(os.stat(tmp_path / "release.key").st_mode) == 0o600
    assert (tmp_path / "release.key").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "release.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again, again_public = signing.read_private(tmp_path / "release.key"), signing.read_public(tmp_path / "release.pub")
    envelope = sign({"n": 1}, again)
    assert verify(envelope, {kid((private, public)): again_public}) == {"n": 1}
    assert envelope["signatures"][0]["keyid"] == key_id(bytes.fromhex(public_hex(public))) == kid((private, public))
    assert public_hex(signing.public_from_hex(public_hex(public))) == public_hex(public)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release.key", "release.pub"]  # no temporary file left


def test_a_key_file_that_is_not_a_key_names_the_file(tmp_path):
    (tmp_path / "root.pub").write_text("not a key\n")
    with pytest.raises(UpdateError, match=r"root.pub is not a PEM public key .*copy the root public key"):
        signing.read_public(tmp_path / "root.pub")
    with pytest.raises(UpdateError, match=r"the private key file .*missing.key cannot be read"):
        signing.read_private(tmp_path / "missing.key")


def test_without_cryptography_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives", None)
    with pytest.raises(UpdateError, match=r"need the cryptography package .*pip install 'edgeml-runtime\[ota\]'"):
        generate()


def test_one_good_signature_among_others_is_enough():
    envelope = sign({"n": 1}, RELEASE_KEY[0])
    envelope["signatures"].insert(0, sign({"n": 1}, STRANGER[0])["signatures"][0])
    assert verify(envelope, {kid(RELEASE_KEY): RELEASE_KEY[1]}) == {"n": 1}


@pytest.mark.parametrize("envelope, match", [
    ([], r"the document is a list, not a signed JSON object"),
    ({"signed": {}}, r"the document has no 'signatures'"),
    ({"signed": [], "signatures": []}, r"signed is a list, expected an object"),
    ({"signed": {}, "signatures": []}, r"signatures is \[\], expected a non-empty list"),
    ({"signed": {}, "signatures": [{"keyid": 3, "sig": ""}]}, r"signatures\[0\].keyid is '3', expected a string"),
    ({"signed": {}, "signatures": [{"keyid": "a", "sig": "@@"}]}, r"signatures\[0\].sig is not base64"),
])
def test_a_malformed_envelope_is_refused_naming_the_key(envelope, match):
    with pytest.raises(UpdateRefused, match=match) as refused:
        verify(envelope, {})
    assert refused.value.reason == "malformed"


# --- verify_release: the round trip and every refusal -----------------------------------------------------------


def test_a_signed_release_round_trips(state):
    signed = release_signed()
    release = check(sign(signed, RELEASE_KEY[0]), root_env(), state)
    assert release == Release.from_signed(signed) and release.to_signed() == signed
    assert (release.version, release.bundle.sha256, release.health.min_rows) == (7, "cd" * 32, 200)
    assert Root.from_signed(root_env()["signed"]).to_signed() == root_env()["signed"]
    assert state.release_version == 0 and not state.path.exists()  # verifying does not change the state


def _refusal(reason: str, match: str, call) -> None:
    with pytest.raises(UpdateRefused, match=match) as refused:
        call()
    assert refused.value.reason == reason


@pytest.mark.parametrize("path, value", [
    (("version",), 8), (("fleet",), "plant-b"), (("bundle", "sha256"), "ef" * 32), (("health", "max_crashes"), 5),
    (("expires",), "2030-01-01T00:00:00Z"),
])
def test_a_tampered_signed_field_is_a_bad_signature(state, path, value):
    envelope = release_env()
    (envelope["signed"][path[0]] if len(path) == 2 else envelope["signed"])[path[-1]] = value
    _refusal("bad_signature", r"\(bad_signature\): release.json's signature by key \w{16}… does not verify",
             lambda: check(envelope, root_env(), state))


def test_a_release_signed_by_a_key_not_in_root_is_an_unknown_key(state):
    _refusal("unknown_key", rf"release.json is signed by '{kid(STRANGER)[:16]}', none of the keys trusted here",
             lambda: check(release_env(signer=STRANGER), root_env(), state))


def test_a_release_signed_by_a_revoked_key_is_refused(state):
    root = root_env(listed=(RELEASE_KEY,), revoked=(RELEASE_KEY,))
    _refusal("revoked_key", rf"signed by key {kid(RELEASE_KEY)[:16]}…, revoked by root.json version 1",
             lambda: check(release_env(), root, state))


@pytest.mark.parametrize("version", [6, 7])
def test_an_older_or_equal_release_version_is_refused(state, version):
    state.release_version = 7
    _refusal("old_version", rf"release.json: version {version} is not above 7, the release trusted now",
             lambda: check(release_env(version=version), root_env(), state))


def test_a_release_expired_by_the_clock_is_refused(state):
    expires = parse_time("2027-01-02T10:00:00Z")
    assert check(release_env(), root_env(), state, now=expires - 1).version == 7
    _refusal("expired", r"release.json \(version 7\) expired at 2027-01-02T10:00:00Z \(the time here is "
                        r"2027-01-02T10:00:00Z\)", lambda: check(release_env(), root_env(), state, now=expires))


def test_without_a_clock_the_newest_timestamp_seen_tells_the_time(state):
    assert check(release_env(), root_env(), state, now=None).version == 7  # nothing seen yet: not expired
    state.newest_timestamp = parse_time("2027-01-05T00:00:00Z")  # a newer release was seen since
    _refusal("expired", r"expired at 2027-01-02T10:00:00Z \(the time here is 2027-01-05T00:00:00Z\)",
             lambda: check(release_env(), root_env(), state, now=None))
    # a clock behind what was seen does not bring the release back
    _refusal("expired", r"expired at 2027-01-02T10:00:00Z", lambda: check(release_env(), root_env(), state, now=NOW))


def test_a_release_for_another_fleet_is_refused(state):
    _refusal("other_fleet", r"release.json is for fleet 'plant-b', this device is in 'plant-a'",
             lambda: check(release_env(fleet="plant-b"), root_env(), state))


@pytest.mark.parametrize("tamper", ["another key", "changed"])
def test_a_root_not_signed_by_the_provisioned_key_is_a_bad_root(state, tamper):
    root = root_env(signer=STRANGER) if tamper == "another key" else root_env()
    if tamper == "changed":
        root["signed"]["release_keys"] = {kid(STRANGER): {"public": public_hex(STRANGER[1])}}
    _refusal("bad_root", r"root.json is not signed by this device's root key \(root.json",
             lambda: check(release_env(signer=STRANGER), root, state))


def test_a_root_older_than_the_trusted_one_is_refused(state):
    state.root_version = 3
    _refusal("old_root", r"root.json: version 2 is older than version 3, the root trusted now",
             lambda: check(release_env(root_version=2), root_env(version=2), state))
    _refusal("old_root", r"signed under root version 4, but root.json given with it is version 3",
             lambda: check(release_env(root_version=4), root_env(version=3), state))


def test_an_expired_root_is_refused(state):
    _refusal("expired", r"root.json \(version 1\) expired at 2026-12-03T10:00:00Z",
             lambda: check(release_env(), root_env(expires=T), state))


def test_a_release_key_rotation(state):
    """Root v2 lists the new release key and revokes the old: the new key's releases verify, the old one's not."""
    first = check(release_env(version=7), root_env(version=1), state)
    state.trust(first, root_env(version=1))
    rotated = root_env(version=2, listed=(RELEASE_KEY, NEW_KEY), revoked=(RELEASE_KEY,))
    new = check(release_env(signer=NEW_KEY, version=8, root_version=2), rotated, state)
    assert new.version == 8
    _refusal("revoked_key", r"revoked by root.json version 2",
             lambda: check(release_env(version=8, root_version=2), rotated, state))
    state.trust(new, rotated)
    _refusal("old_root", r"root.json: version 1 is older than version 2",
             lambda: check(release_env(version=9), root_env(version=1), state))


# --- malformed documents name the key ---------------------------------------------------------------------------


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("fleet"), r"release.json: the document has no 'fleet'"),
    (lambda s: s.update(extra=1), r"release.json: the document holds unknown keys 'extra'"),
    (lambda s: s.update(version="7"), r"release.json: version is '7', expected a whole number, at least 1"),
    (lambda s: s.update(version=True), r"release.json: version is True, expected a whole number"),
    (lambda s: s.update(_type="root"), r"release.json: _type is 'root', expected 'release'"),
    (lambda s: s.update(timestamp="2026-12-03 10:00"), r"timestamp is '2026-12-03 10:00', expected a UTC time"),
    (lambda s: s.update(expires="2026-02-30T00:00:00Z"), r"expires is '2026-02-30T00:00:00Z', expected a UTC time "
                                                         r"YYYY-MM-DDTHH:MM:SSZ that exists"),
    (lambda s: s.update(expires=T), r"expires is '2026-12-03T10:00:00Z', expected a time after the timestamp"),
    (lambda s: s.update(cohort=None), r"cohort is None, expected a string \(.. for the whole fleet\)"),
    (lambda s: s["bundle"].pop("sha256"), r"release.json: bundle has no 'sha256'"),
    (lambda s: s["bundle"].update(sha256="AB" * 32), r"bundle.sha256 is 'ABAB.*', expected 64 lowercase hex digits"),
    (lambda s: s["bundle"].update(archive="../x.tar.gz"), r"bundle.archive is '../x.tar.gz', expected a plain file"),
    (lambda s: s["bundle"].update(bytes=0), r"bundle.bytes is 0, expected a whole number, at least 1"),
    (lambda s: s.update(bundle=[]), r"release.json: bundle is \[\], expected an object"),
    (lambda s: s["health"].update(max_error_rate=1.5), r"health.max_error_rate is 1.5, expected a number from 0.0"),
    (lambda s: s["health"].update(max_latency_ms=0), r"health.max_latency_ms is 0, expected a number above 0.0"),
    (lambda s: s["health"].update(max_latency_ms=float("nan")), r"health.max_latency_ms is nan, expected a number"),
    (lambda s: s["health"].pop("min_rows"), r"release.json: health has no 'min_rows'"),
])
def test_a_malformed_release_is_refused_naming_the_key(change, match):
    signed = release_signed()
    change(signed)
    _refusal("malformed", match, lambda: Release.from_signed(signed))


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("revoked"), r"root.json: the document has no 'revoked'"),
    (lambda s: s.update(release_keys=[]), r"root.json: release_keys is \[\], expected an object"),
    (lambda s: s.update(revoked=["x"]), r"root.json: revoked is \['x'\], expected a list of key ids"),
    (lambda s: s["release_keys"].update({"ab" * 32: {"public": "cd" * 32}}),
     r"release_keys.abababababababab… is 'abab.*', expected the key id of its public key"),
    (lambda s: s["release_keys"].update({"ab" * 32: {"public": "xy"}}), r"release_keys.abababababababab….public is "
                                                                         r"'xy', expected 64 lowercase hex digits"),
    (lambda s: s.update(version=0), r"root.json: version is 0, expected a whole number, at least 1"),
])
def test_a_malformed_root_is_refused_naming_the_key(change, match):
    signed = root_env()["signed"]
    change(signed)
    _refusal("malformed", match, lambda: Root.from_signed(signed))


def test_a_malformed_root_inside_a_good_signature_is_malformed_not_bad_root(state):
    bad = sign({"_type": "root", "version": 1}, ROOT_KEY[0])
    _refusal("malformed", r"root.json: the document has no 'expires', 'release_keys', 'revoked'",
             lambda: check(release_env(), bad, state))


# --- the trust state --------------------------------------------------------------------------------------------


def test_the_trust_state_persists_atomically_and_reloads_equal(tmp_path):
    state = TrustState.load(tmp_path)
    root = root_env()
    state.trust(check(release_env(), root, state), root)
    state.fail(5)
    assert state.rolled_back() == 1
    again = TrustState.load(tmp_path)
    assert again == state
    assert (again.root_version, again.release_version, again.newest_timestamp, again.failed, again.rollbacks) == \
        (1, 7, NOW, [5], 1)
    assert again.root == root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trust.json"]  # the temporary file was renamed
    _refusal("old_version", r"version 7 is not above 7", lambda: check(release_env(), root, again))


def test_a_damaged_trust_state_is_an_error_not_a_fresh_start(tmp_path):
    (tmp_path / "trust.json").write_text('{"root_version": 1')
    with pytest.raises(UpdateError, match=r"trust.json \(the update trust state\) cannot be read .*delete it"):
        TrustState.load(tmp_path)
    (tmp_path / "trust.json").write_text(json.dumps({"root_version": 1}))
    with pytest.raises(UpdateError, match=r"trust.json is not an update trust state"):
        TrustState.load(tmp_path)
