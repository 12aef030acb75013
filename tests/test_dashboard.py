"""The dashboard (``edgeml fleet run --dashboard``) in a real browser against a live controller and real devices.

Headless Chromium (Debian's ``chromium``, driven by Playwright with the system
browser: ``make system-deps`` installs it) opens the page served by a real
controller process, fed through a real Mosquitto by three real
``edgeml-runtime run`` device processes reading rows on stdin. The page shows
the devices; then the devices read shifted rows (the world got hotter) and,
with no reload, the heatmap flags the shifted columns and the drift decision
appears; a click on a cell draws the reference histogram with exactly the
numbers of ``/api/v1/drift/cell``. No console message is an error or a
warning. Screenshots of the fleet and drift views are written to
``test-artifacts/``.

The controller and the devices run this checkout's code (``python -m`` with
``PYTHONPATH`` at this repository's ``toolchain`` and ``runtime``), not
whatever an editable install elsewhere points at.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from broker import require_mosquitto, wait_until
from fleet_traffic import FAST_POLICY, SHIFT, fleet_broker

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
FLEET, DEVICES = "plant-a", ("d1", "d2", "d3")
ROWS, WINDOW_ROWS = 600, 300
#: The seconds of one slice of FAST_POLICY: windows a slice apart are judged apart.
SLICE = 2.0
#: The retrain command: it reads the evidence on stdin and says it is done.
READ = "import json, sys; json.load(sys.stdin)"


def here_env() -> dict:
    """The environment that runs this checkout's packages."""
    path = os.pathsep.join([str(REPO / "runtime"), str(REPO / "toolchain")])
    return {**os.environ, "PYTHONPATH": path + (os.pathsep + os.environ["PYTHONPATH"]
                                                if os.environ.get("PYTHONPATH") else "")}


def edgeml(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "edgeml.cli", *map(str, args)], capture_output=True, text=True,
                       env=here_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows(seed: int, shift: dict | None = None) -> str:
    from edgeml.data.demo import demo_frame

    frame = demo_frame(rows=ROWS, seed=seed, label=False)
    for column, delta in (shift or {}).items():
        frame[column] = frame[column] + delta
    return "".join(json.dumps(r) + "\n" for r in frame.astype(str).to_dict("records"))


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium not found: install Debian's chromium package (make system-deps does)")
    return found


@contextlib.contextmanager
def browser_page():
    """One page of headless Chromium (the system's, driven by Playwright), and the console messages it says:
    ``(page, said)``; :func:`complaints` picks the errors and warnings out of ``said``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            said: list[str] = []
            page.on("console", lambda m: said.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: said.append(f"pageerror: {e}"))
            yield page, said
        finally:
            browser.close()


def complaints(said: list[str]) -> list[str]:
    """The console's errors, warnings and uncaught exceptions."""
    return [m for m in said if m.split(":", 1)[0] in ("error", "warning", "pageerror")]


# -- the routes and settings, without a browser -------------------------------------------------------------------

def test_the_page_and_its_files_are_served_with_their_types_and_no_cache(tmp_path):
    from edgeml.fleet import dashboard
    from edgeml.fleet.files import FileServer

    with FileServer(tmp_path) as server:
        dashboard.mount(server)
        for path, kind in [("/", "text/html"), ("/dashboard/index.html", "text/html"),
                           ("/dashboard/app.js", "text/javascript"), ("/dashboard/style.css", "text/css")]:
            with urllib.request.urlopen(server.url + path) as r:
                assert r.headers["Content-Type"].startswith(kind) and r.headers["Cache-Control"] == "no-cache"
                assert r.read() == dashboard.read("index.html" if path == "/" else path.rsplit("/", 1)[1])
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url + "/dashboard/../files.py")
        assert missing.value.code == 404


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


def _own_address() -> str | None:
    """This machine's address on its default route (not loopback), if it has one (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_off_loopback_the_token_link_sets_the_cookie_that_opens_the_page(tmp_path):
    from edgeml.fleet import dashboard
    from edgeml.fleet.files import TOKEN_COOKIE, FileServer

    address = _own_address()
    if address is None:
        pytest.skip("this machine has no address but loopback: a client off loopback cannot be made")
    token = "s3cret-token-of-the-dashboard"
    with FileServer(tmp_path, host=address, token=token) as server:
        dashboard.mount(server)
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(server.url + "/")
        assert refused.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as wrong:
            opener.open(server.url + "/?token=not-the-token-at-all")
        assert wrong.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as signed_in:
            opener.open(server.url + f"/?token={token}")
        assert signed_in.value.code == 303 and signed_in.value.headers["Location"] == "/"
        assert signed_in.value.headers["Set-Cookie"] == f"{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        with pytest.raises(urllib.error.HTTPError) as elsewhere:  # the token link opens the page only
            opener.open(server.url + f"/dashboard/app.js?token={token}")
        assert elsewhere.value.code == 401
        cookie = {"Cookie": f"{TOKEN_COOKIE}={token}"}
        with opener.open(urllib.request.Request(server.url + "/dashboard/app.js", headers=cookie)) as r:
            assert r.status == 200 and r.read() == dashboard.read("app.js")


def test_dashboard_and_http_share_one_address():
    from edgeml.errors import FleetError
    from edgeml.fleet.settings import resolve

    alone = resolve({"dashboard": "127.0.0.1:8080"}, environ={})
    assert (alone.http, alone.dashboard, alone.served) == (None, ("127.0.0.1", 8080), ("127.0.0.1", 8080))
    both = resolve({"http": "127.0.0.1:8080"}, environ={"EDGEML_FLEET_DASHBOARD": "127.0.0.1:8080"})
    assert both.served == both.dashboard == ("127.0.0.1", 8080)
    with pytest.raises(FleetError, match=r"http = '0.0.0.0:8080' \(from flag --http\) and dashboard = "
                                         r"'127.0.0.1:9090' \(from environment EDGEML_FLEET_DASHBOARD\) differ"):
        resolve({"http": "0.0.0.0:8080"}, environ={"EDGEML_FLEET_DASHBOARD": "127.0.0.1:9090"})
    with pytest.raises(FleetError, match=r"dashboard = '9090' \(from flag --dashboard\): not HOST:PORT"):
        resolve({"dashboard": "9090"}, environ={})


def test_the_dashboard_key_of_fleet_toml(tmp_path):
    from edgeml.fleet.settings import resolve

    config = tmp_path / "fleet.toml"
    config.write_text('[controller]\ndashboard = "127.0.0.1:8181"\n')
    assert resolve({}, config, environ={}).served == ("127.0.0.1", 8181)


# -- the browser ----------------------------------------------------------------------------------------------------

class Device:
    """``edgeml-runtime run`` of this checkout, reading rows on stdin (kept open: the device stays online)."""

    def __init__(self, bundle: Path, broker_url: str, device: str, folder: Path):
        self.name = device
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeml_runtime.cli", "run", str(bundle), "--fleet", FLEET, "--device-id", device,
             "--broker", broker_url, "--outbox", str(folder / f"{device}.db"), "--window-rows", str(WINDOW_ROWS)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=open(folder / f"{device}.log", "wb"),
            text=True, env=here_env())

    def feed(self, text: str) -> None:
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def finish(self) -> int:
        if self.proc.poll() is None:
            self.proc.stdin.close()
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def live_fleet(tmp_path, demo_bundle):
    """A broker, a controller with --dashboard, a fast policy and a retrain command on drift, an empty store but
    for the bundle (version 1 of the fleet, champion); ``start_devices()`` starts the three devices."""
    require_mosquitto()
    broker = fleet_broker(tmp_path / "mosquitto").start()
    store = f"sqlite:///{tmp_path / 'fleet.db'}"
    edgeml("registry", "add", demo_bundle, "--store", store, "--fleet", FLEET, "--champion")
    config = tmp_path / "fleet.toml"
    # a drift decision requests a retrain: a program that reads the evidence and is done
    trigger = f'[trigger]\nname = "command"\non = ["drift"]\ncommand = {json.dumps([sys.executable, "-c", READ])}\n'
    config.write_text(f'[broker]\nurl = "{broker.url}"\n\n[store]\nurl = "{store}"\n{FAST_POLICY}\n{trigger}')
    port = free_port()
    log_path = tmp_path / "controller.log"
    with open(log_path, "wb") as log:
        controller = subprocess.Popen([sys.executable, "-m", "edgeml.cli", "fleet", "run", "--config", str(config),
                                       "--client-id", "dashboard-controller", "--dashboard", f"127.0.0.1:{port}"],
                                      stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=here_env())
    devices: list[Device] = []
    try:
        wait_until(lambda: "subscribed to" in log_path.read_text() or controller.poll() is not None, 60,
                   what="the controller's subscription")
        assert controller.poll() is None, log_path.read_text()
        assert f"dashboard at http://127.0.0.1:{port}/" in log_path.read_text()

        def start_devices() -> list[Device]:
            devices.extend(Device(demo_bundle, broker.url, name, tmp_path) for name in DEVICES)
            return devices

        yield {"url": f"http://127.0.0.1:{port}", "start_devices": start_devices, "bundle": demo_bundle}
    finally:
        codes = [d.finish() for d in devices]
        controller.send_signal(signal.SIGTERM)
        try:
            stopped = controller.wait(30)
        finally:
            if controller.poll() is None:
                controller.kill()
            broker.stop()
    assert codes == [0] * len(devices), [(tmp_path / f"{d.name}.log").read_text()[-2000:] for d in devices]
    assert stopped == 0, log_path.read_text()[-3000:]


def test_the_dashboard_shows_the_devices_then_flags_drift_live(live_fleet):
    from playwright.sync_api import expect

    from edgeml_runtime.bundle import read_manifest

    f = live_fleet
    bundle = read_manifest(f["bundle"]).identity
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page() as (page, said):
        page.goto(f["url"] + "/")
        expect(page.locator("#fleet-devices .empty")).to_have_text(
            "no devices yet: start the devices (edgeml-runtime run BUNDLE --fleet NAME --broker URL); they "
            "appear here as they say hello")  # the store is empty yet
        page.evaluate("window.neverReloaded = true")
        devices = f["start_devices"]()
        for i, device in enumerate(devices):
            device.feed(rows(100 + i))
        # the devices appear, online, with their bundle and last window
        online = page.locator('#devices tr[data-online="true"]')
        expect(online).to_have_count(len(DEVICES), timeout=60_000)
        expect(page.locator("#devices tbody tr td:nth-child(2)")).to_have_text(list(DEVICES))
        shown = get(f"{f['url']}/api/v1/status")["fleets"][FLEET]["devices"][0]
        expect(page.locator("#devices tbody tr td:nth-child(4)")).to_have_text(
            [f"{shown['bundle_name']} {shown['bundle_version']}"] * len(DEVICES))
        expect(page.locator("#devices tbody tr td:nth-child(7)")).to_have_text([re.compile(r"^2\d{3}-.* UTC$")]
                                                                               * len(DEVICES), timeout=30_000)
        # each device's outbox, as its last window stated it (format 7): a number waiting, none dropped
        expect(page.locator("#devices tbody tr td:nth-child(8)")).to_have_text(
            [re.compile(r"^\d+ waiting$")] * len(DEVICES))
        expect(page.locator("#live")).to_have_text("live")
        fleet_shot = ARTIFACTS / "dashboard-fleet.png"
        page.screenshot(path=str(fleet_shot), full_page=True)
        # the drift view: the calm windows, judged ok
        page.click('#tabs button[data-view="drift"]')
        labels = page.locator("#drift-heatmap text.row-label")
        expect(labels.first).to_be_visible()
        wait_until(lambda: _filled(f, bundle) == 2 * len(DEVICES), 30, what="the calm windows in the heatmap")
        assert page.locator("#drift-heatmap text.row-label.drifted").count() == 0
        time.sleep(SLICE)  # the shifted windows end in a later slice than the calm ones
        for i, device in enumerate(devices):
            device.feed(rows(200 + i, SHIFT))
        # with no reload, the shifted columns are flagged and the drift decision appears
        drifted = page.locator("#drift-heatmap text.row-label.drifted")
        expect(drifted.first).to_be_visible(timeout=60_000)
        expect(page.locator('#drift-decisions button[data-kind="drift"]')).to_have_count(1, timeout=60_000)
        wait_until(lambda: _filled(f, bundle) == 4 * len(DEVICES), 30, what="every window in the heatmap")
        grid = get(f"{f['url']}/api/v1/drift?fleet={FLEET}&bundle={bundle}")
        latest = max(i for i, s in enumerate(grid["slices"]) if s["rows"])
        significant = {c for c, s in zip(grid["columns"], grid["status"][latest], strict=True)
                       if s == "significant"}
        assert set(SHIFT) <= significant, grid["status"][latest]
        wait_until(lambda: set(drifted.evaluate_all("els => els.map(e => e.dataset.column)")) == significant, 20,
                   what=f"the page to flag exactly {sorted(significant)}")
        assert page.evaluate("window.neverReloaded") is True
        # a cell: the reference histogram against the slice's, the numbers of /api/v1/drift/cell
        start = grid["slices"][latest]["start"]  # a slice by its start: the horizon moves on meanwhile
        shown = int(start) if start.is_integer() else start  # as JavaScript writes the number
        page.click(f'#drift-heatmap rect.cell[data-column="air_temp_c"][data-start="{shown}"]')
        expect(page.locator('#drift-cell h2[data-column="air_temp_c"]')).to_be_visible()
        cell = get(f"{f['url']}/api/v1/drift/cell?fleet={FLEET}&bundle={bundle}&column=air_temp_c&start={start}")
        reference = page.locator("#drift-cell rect.bar.reference").evaluate_all(
            "els => els.map(e => [e.dataset.label, e.dataset.value])")
        assert [label for label, _ in reference] == cell["labels"]
        assert [float(value) for _, value in reference] == cell["reference"]
        current = page.locator("#drift-cell rect.bar.current").evaluate_all(
            "els => els.map(e => Number(e.dataset.count))")
        assert current == cell["counts"] and sum(current) == 3 * ROWS == cell["rows"]
        assert cell["status"] == "significant"
        # the decision's evidence, and the anomalies (none: every device saw the same world)
        page.click('#drift-decisions button[data-kind="drift"]')
        evidence = page.locator("#drift-evidence")
        expect(evidence).to_be_visible()
        assert '"summary"' in evidence.inner_text()
        expect(page.locator("#drift-anomalies li")).to_have_text("none")
        drift_shot = ARTIFACTS / "dashboard-drift.png"
        page.screenshot(path=str(drift_shot), full_page=True)
        page.click('#tabs button[data-view="rollouts"]')
        expect(page.locator("#rollouts-list .empty")).to_have_text(
            "no rollouts yet: edgeml rollout start RELEASE --fleet NAME")
        # the registry's version and the retrain the decision requested
        page.click('#tabs button[data-view="models"]')
        expect(page.locator('#models-versions tr[data-version="1"] td:nth-child(5)')).to_have_text("champion")
        retrain = page.locator("#models-retrains tr[data-retrain]")
        expect(retrain.locator("td:nth-child(5)")).to_have_text("done", timeout=60_000)
        (done,) = get(f"{f['url']}/api/v1/models?fleet={FLEET}")["retrains"]
        expect(retrain.locator("td")).to_have_text([str(done["id"]), FLEET, "command",
                                                    f"drift (#{done['decision_id']})", "done",
                                                    re.compile("UTC$"), "—", "—", "—", "—"])
    print(f"screenshots: {fleet_shot} {drift_shot}")
    assert complaints(said) == [], said


def _filled(f, bundle: str) -> int:
    """The windows in the fleet's heatmap now."""
    grid = get(f"{f['url']}/api/v1/drift?fleet={FLEET}&bundle={bundle}")
    return sum(s["windows"] for s in grid["slices"])


def test_docs_list_every_route_of_the_api():
    """docs/fleet.md's table of the JSON API is api.py's docstring's: each route, each parameter."""
    from edgeml.fleet import api

    routes = re.findall(r"``(GET /api/v1/[^`]+)``", api.__doc__)
    doc = (REPO / "docs" / "fleet.md").read_text()
    table = doc[doc.index("## Dashboard"):doc.index("## The loop")]
    assert len(routes) == 8 and [r for r in routes if f"| `{r}` |" not in table] == []
