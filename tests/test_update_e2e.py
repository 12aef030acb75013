"""Over-the-air updates end to end: a real Mosquitto, the real controller (`edgeml fleet run` with its HTTP
server), and five real device processes, four `edgeml-runtime run` fed rows without pause and one
`edgeml-runtime serve` under a steady request load, all provisioned with the root public key only.

In file order, on one fleet (the tests share it: each starts where the one before left it):

1. a staged rollout (canary 20 %, waves 60 %, 100 %) of release 2 goes wave by wave to done: every device
   verifies, downloads (one through a proxy that cuts the download mid-way: it resumes), self-tests, swaps in,
   passes its health gate and commits, while every row read (and every request row served) is scored once;
2. announcements an intruder publishes on a device's release topic (a tampered release, an older genuine one,
   one signed by a release key revoked since by a key rotation) are refused with their reason, reported on the
   device's update topic and kept by the controller;
3. a release whose bundle fails its self-test fails on the canary: the rollout aborts and rolls back with a new,
   higher release of the bundle the fleet ran, which the canary installs; the failed release is not retried;
4. a release whose health gate cannot be reached in time leaves the canary's wave inconclusive: the rollout
   pauses at its wave timeout and says so; the canary, killed with SIGKILL while on test, comes back on a
   consistent slot (its previous bundle: a crash on test is past the release's limit) and reports the rollback;
5. a sixth device, new to the fleet, installs the release of the rollout that was done (announced, retained, on
   the fleet's topic) when it first connects.
"""

from __future__ import annotations

import json
import socket
import time

import fleet_traffic
import pytest
from broker import free_port, require_mosquitto, wait_until
from fleet_traffic import Controller, edgeml, fleet_broker
from ota_fleet import DEVICES, FLEET, SERVER, Device
from release_helpers import second_bundle
from update_helpers import CuttingProxy, _broken_bundle

from edgeml.fleet import keys, releases
from edgeml.fleet.rollout import rollouts
from edgeml.fleet.store import Store
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.protocol.updates import announcement, release_topic


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, demo_bundle):
    require_mosquitto()
    tmp = tmp_path_factory.mktemp("ota-e2e")
    broker = fleet_broker(tmp / "mosquitto").start()
    store_url = f"sqlite:///{tmp / 'fleet.db'}"
    key_dir = keys.init(tmp / "keys")
    releases_dir = tmp / "releases"
    port = free_port()
    bundles = {"one": demo_bundle, "two": second_bundle(demo_bundle, tmp), "broken": _broken_bundle(demo_bundle, tmp)}
    with Store.open(store_url) as store:
        releases.make_release(store, bundles["one"], fleet=FLEET, keys_dir=key_dir, releases_dir=releases_dir)
    config = tmp / "fleet.toml"
    config.write_text(f'[broker]\nurl = "{broker.url}"\n\n[store]\nurl = "{store_url}"\n\n'
                      f'[controller]\nreleases = "{releases_dir}"\nhttp = "127.0.0.1:{port}"\n'
                      f'dashboard = "127.0.0.1:{port}"\nrollout_every = 0.3\n\n'
                      '[policy]\nslice = "2s"\nslices = 60\n')  # the drift grid: two-second slices
    archive = releases.folder_of(releases_dir, FLEET, 1) / "bundle.tar.gz"
    proxy = CuttingProxy(f"http://127.0.0.1:{port}", cut=archive.stat().st_size // 2)
    controller = Controller(tmp, "--config", str(config)).start()
    fleet_traffic.STARTED.remove(controller)  # the module's, not one test's: stopped below
    f = {"tmp": tmp, "broker": broker, "store": store_url, "keys": key_dir, "releases": releases_dir,
         "http": f"http://127.0.0.1:{port}", "bundle": demo_bundle, "bundles": bundles, "config": config,
         "controller": controller, "proxy": proxy}
    devices = {}
    try:
        controller.wait_log("subscribed to", 60)
        devices = {name: Device(name, f).start() for name in DEVICES}
        f["devices"] = devices
        with Store.open(store_url) as store:
            wait_until(lambda: {d.device for d in store.devices(FLEET)} >= set(DEVICES), 60,
                       what="the five devices' births")
        yield f
    finally:
        for d in devices.values():
            if d.proc.poll() is None:
                d.kill()
        code = controller.stop()
        proxy.close()
        broker.stop()
    assert code == 0, controller.log()[-3000:]


def _release(f, bundle: str, **health) -> int:
    with Store.open(f["store"]) as store:
        return releases.make_release(store, f["bundles"][bundle], fleet=FLEET, keys_dir=f["keys"],
                                     releases_dir=f["releases"], health=health or None).version


def _start(f, version: int, *extra) -> int:
    out = edgeml("rollout", "start", version, "--fleet", FLEET, "--canary", "20%", "--waves", "60%,100%",
                 "--min-executed", "1", "--keys", f["keys"], "--releases", f["releases"], "--json",
                 "--config", f["config"], *extra)
    return json.loads(out.stdout)["id"]


def _status(f, rollout: int) -> dict:
    return json.loads(edgeml("rollout", "status", rollout, "--json", "--config", f["config"]).stdout)


def _ended(f, rollout: int, timeout: float = 120) -> dict:
    """The rollout's status once it is no longer running (done, aborted or paused)."""
    return wait_until(lambda: (s := _status(f, rollout))["state"] in ("done", "aborted", "paused") and s, timeout,
                      what=f"rollout {rollout} to end", interval=0.5)


def _steps(f, device: str, release: int) -> list[str]:
    return [e["step"] for e in _events(f, device) if e["release"] == release]


def _events(f, device: str) -> list[dict]:
    import sqlalchemy as sa

    from edgeml.fleet import schema as t

    e = t.update_events
    with Store.open(f["store"]) as store, store.engine.connect() as conn:
        rows = conn.execute(sa.select(e.c.release, e.c.step, e.c.refusal, e.c.reason)
                            .where(e.c.fleet == FLEET, e.c.device == device).order_by(e.c.id)).mappings().all()
    return [dict(r) for r in rows]


def _metrics(f) -> dict:
    """The controller's /metrics, parsed by prometheus_client's own parser: (name, labels) -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f["http"] + "/metrics", timeout=30).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _running(f, device: str) -> str | None:
    """The bundle of ``device``'s newest stored window."""
    with Store.open(f["store"]) as store:
        windows = store.windows(FLEET, None, device=device, last=1)
    return windows[-1].bundle_sha256 if windows else None


def test_a_staged_rollout_goes_wave_by_wave_to_every_device(fleet):
    f = fleet
    two = read_manifest(f["bundles"]["two"]).identity
    version = _release(f, "two")
    rollout = _start(f, version)
    status = _ended(f, rollout)
    assert status["state"] == "done", (status, f["controller"].log()[-3000:])
    waves = [sorted(d["device"] for d in status["devices"] if d["wave"] == w) for w in range(3)]
    assert waves == [["d1"], ["d2", "d3"], ["d4", "d5"]]
    for name in DEVICES:
        assert _steps(f, name, version) == ["offered", "verifying", "downloading", "testing", "active",
                                            "committed"], (name, f["devices"][name].text()[-2000:])
    wait_until(lambda: all(_running(f, d) == two for d in DEVICES), 30, what="every device's windows of bundle 2")
    # the waves went in order: no device of a wave was announced before the wave before it had committed
    announced = {d["device"]: d["announced"] for d in status["devices"]}
    assert announced["d1"] < min(announced["d2"], announced["d3"]) < min(announced["d4"], announced["d5"])
    gets = [r for r in f["proxy"].requests if "bundle.tar.gz" in r[0]]
    assert f["proxy"].cuts == 1 and len(gets) == 2 and gets[1][1].startswith("Range: bytes="), gets  # resumed
    human = edgeml("fleet", "status", "--config", f["config"]).stdout
    assert f"rollout #{rollout} of release {version}: done" in human
    metrics = _metrics(f)
    assert metrics[("edgeml_fleet_devices_online", (("fleet", FLEET),))] == len(DEVICES)
    assert metrics[("edgeml_fleet_rollout_state", (("fleet", FLEET), ("state", "done")))] == 1
    assert metrics[("edgeml_fleet_rollout_state", (("fleet", FLEET), ("state", "running")))] == 0
    assert metrics[("edgeml_fleet_update_steps_total", (("fleet", FLEET), ("step", "committed")))] >= len(DEVICES)


def _get(f, path: str):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f["http"] + path, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_dashboard_draws_the_rollout_its_waves_and_each_devices_step(fleet):
    """The Rollouts view in headless Chromium (Debian's, as tests/test_dashboard.py drives it): the done rollout,
    its three waves all executed, each device's last step; a screenshot in test-artifacts/."""
    from playwright.sync_api import expect
    from test_dashboard import ARTIFACTS, browser_page, complaints  # it skips without chromium

    f = fleet
    (latest,) = [r for r in _get(f, f"/api/v1/rollouts?fleet={FLEET}")[1] if r["state"] == "done"]
    with browser_page() as (page, said):
        page.goto(f["http"] + "/")
        page.click('#tabs button[data-view="rollouts"]')
        card = page.locator(f'#rollouts-list article.rollout[data-id="{latest["id"]}"]')
        expect(card.locator("h2")).to_contain_text(f"Rollout #{latest['id']} of release {latest['release']}")
        expect(card.locator("h2")).to_contain_text("done")
        waves = card.locator("table").nth(0).locator("tbody tr")
        expect(waves).to_have_count(3)
        expect(waves.locator("td:nth-child(2)")).to_have_text(["1", "2", "2"])  # devices per wave
        expect(waves.locator("td:nth-child(4)")).to_have_text(["1", "2", "2"])  # executed
        steps = card.locator("table").nth(1).locator("tbody tr td:nth-child(3)")
        expect(steps).to_have_text(["committed"] * len(DEVICES))
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard-rollouts.png"
        page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert complaints(said) == [], said


def test_the_json_api_and_its_event_stream_show_the_fleet(fleet):
    """The read-only API behind the dashboard, on the controller's HTTP server (docs/fleet.md), while devices run."""
    f = fleet
    two = read_manifest(f["bundles"]["two"]).identity
    code, status = _get(f, f"/api/v1/status?fleet={FLEET}")
    assert code == 200 and [d["device"] for d in status["fleets"][FLEET]["devices"]] == list(DEVICES)
    assert status["rollouts"][0]["state"] == "done"
    def two_slices():
        got = _get(f, f"/api/v1/drift?fleet={FLEET}&bundle={two}")
        return got if all(s["rows"] for s in got[1]["slices"][-2:]) else None

    code, grid = wait_until(two_slices, 30, what="two complete slices of bundle 2's windows", interval=0.5)
    assert code == 200 and "air_temp_c" in grid["columns"] and grid["columns"][-1] == "(output)"
    assert len(grid["psi"]) == len(grid["slices"]) and all(len(r) == len(grid["columns"]) for r in grid["psi"])
    filled = [i for i, s in enumerate(grid["slices"]) if s["rows"]]
    assert filled, grid["slices"]
    settled = filled[-2]  # the latest complete slice may still get a window that ended in it; the one before not
    start = grid["slices"][settled]["start"]
    code, cell = _get(f, f"/api/v1/drift/cell?fleet={FLEET}&bundle={two}&column=air_temp_c&start={start}")
    assert code == 200 and len(cell["labels"]) == len(cell["reference"]) == len(cell["counts"])
    assert cell["rows"] == sum(cell["counts"]) > 0 and abs(sum(cell["reference"]) - 1) < 1e-9
    assert cell["psi"] == grid["psi"][settled][grid["columns"].index("air_temp_c")]
    code, one = _get(f, f"/api/v1/drift?fleet={FLEET}&bundle={two}&device=d2")
    assert code == 200 and sum(s["rows"] for s in one["slices"]) < sum(s["rows"] for s in grid["slices"])
    code, rollouts = _get(f, f"/api/v1/rollouts?fleet={FLEET}")
    code, detail = _get(f, f"/api/v1/rollouts/{rollouts[0]['id']}")
    assert code == 200 and {d["device"] for d in detail["devices"]} == set(DEVICES)
    assert _get(f, "/api/v1/rollouts/999")[0] == 404
    assert _get(f, f"/api/v1/drift?fleet={FLEET}")[1] == {"error": "/api/v1/drift needs ?bundle=..."}
    assert _get(f, "/api/v1/decisions?last=x")[0] == 400
    code, models = _get(f, f"/api/v1/models?fleet={FLEET}")
    assert code == 200 and set(models) == {"versions", "retrains"}
    # the event stream: a change event at once, with the store's counts
    with socket.create_connection(("127.0.0.1", int(f["http"].rsplit(":", 1)[1])), timeout=10) as conn:
        conn.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"\n\n" not in got.split(b"\r\n\r\n", 1)[-1]:
            got += conn.recv(65536)
    head, body = got.split(b"\r\n\r\n", 1)
    assert b"text/event-stream" in head and body.startswith(b"event: change\ndata: ")
    counts = json.loads(body.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert counts["windows"] > 0 and counts["online"] == len(DEVICES)


def _publish(f, device: str, release: dict, root: dict, version: int) -> None:
    """An intruder's announcement on ``device``'s own release topic (this broker is open; the generated ACL lets
    only the controller publish there)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"intruder-{device}")
    host, port = f["broker"].url.split("://")[1].rsplit(":", 1)
    client.connect(host, int(port))
    client.loop_start()
    message = announcement(FLEET, release=release, root=root, device=device, time="2026-12-03T10:00:00Z",
                           archive=f"/releases/{FLEET}/{version}/bundle.tar.gz")
    client.publish(release_topic(FLEET, device), json.dumps(message), qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def _refusal(f, device: str, version: int) -> dict:
    wait_until(lambda: any(e["release"] == version and e["step"] == "failed" for e in _events(f, device)), 30,
               what=f"{device}'s refusal of release {version}")
    return [e for e in _events(f, device) if e["release"] == version][-1]


def test_tampered_older_and_revoked_releases_are_refused_and_a_rotated_key_trusted(fleet):
    f = fleet
    with Store.open(f["store"]) as store:
        first, latest = releases.get(store, FLEET, 1), releases.latest(store, FLEET)
    root = keys.root_envelope(f["keys"])
    # tampered: a higher version written over a genuine release, its signature kept
    tampered = json.loads(json.dumps(latest.document))
    tampered["signed"]["version"] = latest.version + 100
    _publish(f, "d2", tampered, root, latest.version)
    assert _refusal(f, "d2", latest.version + 100)["refusal"] == "bad_signature"
    # older: release 1, genuine, replayed to roll d3 back
    _publish(f, "d3", first.document, root, 1)
    assert _refusal(f, "d3", 1)["refusal"] == "old_version"
    # a release signed by the old key before it was revoked: refused once the new root revokes that key
    held = _release(f, "two")
    edgeml("keys", "rotate", f["keys"], "--revoke-old")
    new_root = keys.root_envelope(f["keys"])
    assert new_root["signed"]["version"] == 2
    with Store.open(f["store"]) as store:
        _publish(f, "d4", releases.get(store, FLEET, held).document, new_root, held)
    assert _refusal(f, "d4", held)["refusal"] == "revoked_key"
    for device in DEVICES:  # nothing refused changed what any device runs
        assert _running(f, device) == read_manifest(f["bundles"]["two"]).identity
    # the releases from here on are signed by the new key: the devices take the new root with them (tests below)


def test_a_self_test_failure_on_the_canary_aborts_and_rolls_back(fleet):
    f = fleet
    two = read_manifest(f["bundles"]["two"]).identity
    broken = _release(f, "broken")
    rollout = _start(f, broken)
    status = _ended(f, rollout)
    assert status["state"] == "aborted", status
    assert "failed" in status["reason"]
    assert _steps(f, "d1", broken)[-2:] == ["testing", "failed"]
    assert all(_steps(f, d, broken) == [] for d in DEVICES if d != "d1")  # the next waves never heard of it
    rollback = releases.latest(Store.open(f["store"]), FLEET)
    assert rollback.version > broken and rollback.document["signed"]["bundle"]["identity"] == two
    wait_until(lambda: _steps(f, "d1", rollback.version)[-1:] == ["committed"], 60,
               what="the canary's install of the rollback release")
    assert _running(f, "d1") == two
    trust = json.loads((f["devices"]["d1"].folder / "update" / "trust.json").read_text())
    assert trust["root_version"] == 2  # the rotated root came with the release the new key signed
    time.sleep(1.0)  # the broken release is announced no more, and d1 never retries it
    assert _steps(f, "d1", broken)[-2:] == ["testing", "failed"]


def test_an_inconclusive_wave_pauses_at_its_timeout_and_a_killed_device_comes_back_consistent(fleet):
    f = fleet
    two = read_manifest(f["bundles"]["two"]).identity
    slow = _release(f, "one", min_windows=1_000_000, min_rows=1_000_000_000)  # never judged in this test
    rollout = _start(f, slow, "--wave-timeout", "4s")
    wait_until(lambda: _steps(f, "d1", slow)[-1:] == ["active"], 60, what="the canary on test")
    status = _ended(f, rollout, 30)
    assert status["state"] == "paused" and "inconclusive after 4s" in status["reason"], status
    one = read_manifest(f["bundles"]["one"]).identity
    wait_until(lambda: _running(f, "d1") == one, 30, what="the canary's windows of the release on test")
    canary = f["devices"]["d1"]
    canary.kill()  # SIGKILL while on test
    canary.start()
    wait_until(lambda: _steps(f, "d1", slow)[-1:] == ["rolled_back"], 60, what="the canary's rollback at restart")
    event = [e for e in _events(f, "d1") if e["release"] == slow][-1]
    assert "restarted 1 time" in event["reason"]
    wait_until(lambda: _running(f, "d1") == two, 30, what="the canary scoring with bundle 2 again")
    slots = json.loads((canary.folder / "update" / "slots.json").read_text())
    assert slots["active"]["identity"] == two and slots["pending"] is None


def test_a_device_the_rollouts_missed_installs_the_fleets_release_when_it_connects(fleet):
    f = fleet
    with Store.open(f["store"]) as store:
        done = [r for r in rollouts(store, FLEET) if r["state"] == "done"]
    assert [r["release"] for r in done] == [2]
    late = f["devices"]["d6"] = Device("d6", f).start()  # new to the fleet, with the bundle it was installed with
    wait_until(lambda: _steps(f, "d6", 2)[-1:] == ["committed"], 60, what="d6's install of the fleet's release",
               interval=0.2)
    assert _steps(f, "d6", 2) == ["offered", "verifying", "downloading", "testing", "active", "committed"]
    assert _running(f, "d6") == read_manifest(f["bundles"]["two"]).identity
    assert "announced to the whole fleet" in f["controller"].log()
    assert late.proc.poll() is None


def test_every_row_read_and_every_request_row_was_scored_once(fleet):
    """Last: the devices stop cleanly; what each was sent equals what its windows counted, across every swap."""
    f = fleet
    devices = f["devices"]
    whole = [name for name in devices if name != "d1"]  # d1 was killed once: the rows in its pipe then were lost
    for name in whole:
        d = devices[name]
        assert d.stop() == 0, d.text()[-3000:]
        assert "Traceback" not in d.text()
    assert devices[SERVER].failed_requests == []
    with Store.open(f["store"]) as store:
        def counted(name):
            return sum(w.rows + w.bad_rows for w in store.windows(FLEET, None, device=name))

        wait_until(lambda: all(counted(n) == devices[n].sent for n in whole), 30,
                   what="every device's last windows stored")
        for name in whole:
            assert counted(name) == devices[name].sent > 0, name
            assert sum(w.bad_rows for w in store.windows(FLEET, None, device=name)) == 0
