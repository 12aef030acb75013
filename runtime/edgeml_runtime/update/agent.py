"""The update agent: a release heard or handed over, checked, fetched, tested, swapped in, judged, committed.

One :class:`UpdateAgent` runs inside ``edgeml-runtime run`` and ``serve``
(the ``update_*`` settings, :mod:`.options`), on a thread of its own, so
scoring never waits for it. For each release it takes these steps, each
reported on the device's ``update`` topic (:mod:`edgeml_runtime.protocol.updates`;
stored in the outbox, never dropped by its bound):

1. **offered**: an announcement arrived (retained on the device's and the fleet's release topic, so a device
   that was off hears it when back); one it runs, has failed or refused already is passed over silently, and
   one heard while another release is on test waits for that one's verdict;
2. **verifying**: :func:`.trust.verify_release` (root, release key, fleet, version, expiry); a refusal ends it
   as **failed** with the ``refusal``. Until it verifies, nothing in the announcement is believed: its steps
   carry no rollout id;
3. **downloading**: :func:`.fetch.fetch_archive` (the path from the signed release, resumed after a cut). A
   server out of reach, or a bad copy on it, keeps the release ``downloading`` (with the reason) and tries again
   after each of :data:`AGAIN_SECONDS`: the server's fault, never a failure of the release;
4. **testing**: unpacked into a new slot (:mod:`.slots`) and :func:`.fetch.self_test` on the device's engines;
5. **active**: switched and swapped into the running process (``run`` between two batches, ``serve`` between
   two requests: every row scored by one of the two); the **health gate** (:class:`.health.HealthGate`) reads
   the new bundle's drift windows;
6. **committed** when the gate passes; **rolled_back** when it fails, or the device crashed more often than
   the release allows while on test: the previous bundle is swapped back, the release never retried
   automatically, and past ``update_max_rollbacks`` automatic rollbacks no release is taken until one is
   installed by hand.

A kill -9 at any step leaves a consistent slot: :meth:`UpdateAgent.startup` recovers the slots and names the
bundle to load (the one on test counts a crash, as an exception on the way out does; past the release's
``max_crashes`` it is rolled back). A stop asked for mid-install leaves the release where it was, unfailed.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path

from ..errors import (
    BundleError,
    EdgeMLError,
    EngineError,
    ProtocolError,
    SettingsError,
    UpdateError,
    UpdateRefused,
    UpdateUnreachable,
)
from ..payloads import utc_now
from ..protocol.topics import DeviceTopics
from ..protocol.updates import parse_release_topic, update_status
from .fetch import self_test
from .health import HealthGate
from .metadata import Release
from .options import UpdateOptions
from .process import FolderLock
from .slots import Slots
from .trust import TrustState, read_json, verify_release, write_json

#: The signed release document of the pending slot (its health limits survive a restart).
PENDING_RELEASE = "pending-release.json"
#: Seconds between the tries of a download (each resuming the one before); past the last, the release waits to
#: be heard again.
RETRY_DELAYS = (2.0, 4.0, 8.0, 16.0)
#: Seconds before a release whose archive could not be fetched is tried again, doubling up to the last.
AGAIN_SECONDS = (60.0, 120.0, 240.0, 480.0, 900.0)


class _Halted(Exception):
    """The process is stopping: the install under way is left where it is (the slots survive that), unreported."""


class UpdateAgent:
    """See the module docstring. ``report(payload)`` publishes one step (None: logged only)."""

    def __init__(self, options: UpdateOptions, device: DeviceTopics, *, log: logging.Logger | None = None,
                 clock=time.time, retry_delays: tuple[float, ...] = RETRY_DELAYS):
        from .signing import read_public

        self.options, self.device, self.clock = options, device, clock
        self.retry_delays = tuple(retry_delays)
        self.log = log or logging.getLogger("edgeml_runtime.update")
        self.folder = options.folder_for(device.fleet, device.device_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.root_public = read_public(options.root_key)
        self._lock = FolderLock(self.folder)  # before anything in the folder is read or tidied
        self.trust = TrustState.load(self.folder)
        self.slots = Slots(self.folder)
        self.report = None
        self._early: list[dict] = []                     # steps reported before report is set
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._passed_over: set[tuple[int, str]] = set()  # (version, release document) of releases heard already
        self._swap = None
        self._deferred: tuple[str, bytes] | None = None  # an announcement heard while a release was on test
        self._again: dict[int, int] = {}                 # version -> times its archive could not be fetched
        self._halt = threading.Event()                  # set by stop(): a download's wait ends at once
        self._unreachable: set[int] = set()             # versions whose archive could not be fetched this time
        self._fallback: Path | None = None              # the bundle given on the command line
        self._gate: tuple[HealthGate, str, int, int | None] | None = None  # gate, identity, release, rollout

    # -- the process around it ------------------------------------------------------------------------
    def startup(self, bundle) -> Path:
        """The bundle the process should load: the slot on test or the active one, else ``bundle`` (the command
        line's). Call once, before loading anything."""
        self._fallback = Path(bundle)
        for name in self.slots.recover():
            self.log.info("update: removed %s, left by an interrupted update", name)
        pending = self.slots.state["pending"]
        if pending is not None:
            release = self._pending_release()
            if pending.get("step") in ("installed", "stopped"):  # installed by hand, or a clean stop: no crash
                self.slots.mark("switched")
            else:
                crashes = self.slots.crashed()
                if release is None or crashes > release.health.max_crashes:
                    limit = release.health.max_crashes if release else 0
                    self._roll_back(pending["version"], pending["identity"], pending.get("rollout"),
                                    f"the device restarted {crashes} time(s) while release {pending['version']} was on "
                                    f"test (the release allows {limit})", swap=False)
        return self.slots.current() or self._fallback

    def attach(self, swap, sinks, report) -> None:
        """Start: ``swap(path)`` puts a tested bundle into the running process; ``sinks`` (the
        :class:`~edgeml_runtime.run.WindowSinks`) tell the health gate each window; ``report`` publishes a step."""
        self._swap, self.report = swap, report
        sinks.listeners.append(self._window)
        for payload in self._early:
            self._send(payload)
        self._early.clear()
        pending = self.slots.state["pending"]
        release = self._pending_release()
        if pending is not None and release is not None:  # on test when the process stopped: judge it again
            self._start_gate(release, pending["identity"], pending.get("rollout"))
        self._thread = threading.Thread(target=self._loop, name="edgeml-update", daemon=True)
        self._thread.start()

    def offer(self, topic: str, payload: bytes) -> None:
        """An announcement heard on ``topic`` (the MQTT thread calls this; it only queues)."""
        self._jobs.put(("announcement", (topic, payload)))

    def stop(self, timeout: float = 10.0, *, clean: bool = True) -> None:
        """End the agent's thread (an update under way is left where it is: the slots survive that, as they do a
        kill). A bundle on test when the process stops ``clean`` (a signal, the end of its input) is judged again
        at the next start with no crash counted; one that stops on an exception counts one then, as a kill does."""
        if self._thread is None:
            return
        self._halt.set()
        self._jobs.put(("stop", None))
        self._thread.join(timeout)
        pending = self.slots.state["pending"]
        if clean and not self._thread.is_alive() and pending is not None and pending.get("step") == "switched":
            self.slots.mark("stopped")

    # -- the thread -----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            kind, value = self._jobs.get()
            if kind == "stop":
                return
            try:
                if kind == "announcement":
                    self._announced(*value)
                elif kind == "gate":
                    self._judged(*value)
            except Exception:  # noqa: BLE001 - a bug in one update must not end the device process
                self.log.exception("update: unexpected failure; the device keeps running its current bundle")

    def _announced(self, topic: str, payload: bytes) -> None:
        if not payload:  # a withdrawn announcement (an aborted rollout clears its retained message)
            self.log.debug("update: the announcement on %s was withdrawn", topic)
            return
        try:
            message = json.loads(payload)
            release_env, root_env = message["release"], message["root"]
            offered = int(release_env["signed"]["version"])
            rollout = message.get("rollout")
        except (ValueError, KeyError, TypeError) as exc:
            self.log.warning("update: an announcement that is not one was passed over (%s)", exc)
            return
        key = (offered, json.dumps(release_env, sort_keys=True))  # a tampered copy is another key than the real one
        if self._known(offered) or key in self._passed_over:
            return
        if self.slots.state["pending"] is not None:  # one release on test at a time: this one waits for its verdict
            self._deferred = (topic, payload)
            return
        if offered <= self.trust.release_version and _to_fleet(topic):
            self.log.debug("update: release %d on %s is not newer than release %d: passed over", offered, topic,
                           self.trust.release_version)  # the fleet's last release, retained: old news to this device
            return
        self._passed_over.add(key)
        bundle = (release_env.get("signed", {}).get("bundle") or {}).get("identity")
        self._step(offered, bundle, "offered", None)  # the rollout id is unsigned: told only once the release verifies
        self._install(release_env, root_env, rollout, lambda release: self._fetch(release, rollout))
        if offered in self._unreachable:  # the archive could not be fetched: tried again later, resumed
            self._unreachable.discard(offered)
            self._passed_over.discard(key)
            tries = self._again[offered] = self._again.get(offered, 0) + 1
            delay = AGAIN_SECONDS[min(tries, len(AGAIN_SECONDS)) - 1]
            timer = threading.Timer(delay, self._jobs.put, args=(("announcement", (topic, payload)),))
            timer.daemon = True
            timer.start()

    def _known(self, version: int) -> bool:
        """A release this device runs, tests, or has failed (announcements are retained: heard at every connect)."""
        pending, active = self.slots.state["pending"], self.slots.state["active"]
        return (version in self.trust.failed or (pending and pending["version"] == version)
                or (active and active["version"] == version))

    # -- one install ----------------------------------------------------------------------------------
    def _install(self, release_env, root_env, rollout, fetch, *, by_hand: bool = False) -> Release | None:
        """Verify, fetch (``fetch(release) -> archive path``), unpack, test, switch and swap (``by_hand``: the
        next start swaps); the release, or None if it ended (failed, reported)."""
        offered = _version(release_env)
        self._step(offered, _identity(release_env), "verifying", None)
        if self.trust.rollbacks >= self.options.max_rollbacks and not by_hand:
            return self._failed(offered, _identity(release_env), rollout,
                                f"{self.trust.rollbacks} automatic rollbacks, over update_max_rollbacks = "
                                f"{self.options.max_rollbacks}: install a release by hand (edgeml-runtime update)")
        try:
            release = verify_release(release_env, root_env, self.root_public, self.trust, fleet=self.device.fleet,
                                     now=None if self.options.no_clock else self.clock())
        except UpdateRefused as exc:  # unverified: its rollout id is not believed either
            return self._failed(offered, _identity(release_env), None, str(exc), refusal=exc.reason)
        self.trust.keep_root(root_env)  # a newer root, verified: kept now, so a revoked key stays revoked
        identity = release.bundle.identity
        archive = None
        try:
            archive = fetch(release)
            self._check_halt()
            self._step(release.version, identity, "testing", rollout)
            slot = self.slots.unpack(archive, release.version)
            self_test(slot, self.log)
            self._check_halt()
            self.slots.switch(release.version, identity, rollout)
        except _Halted:
            self.log.info("update: release %d left where it was: the process is stopping", release.version)
            return None
        except UpdateRefused as exc:
            self.trust.fail(release.version)
            return self._failed(release.version, identity, rollout, str(exc), refusal=exc.reason)
        except UpdateUnreachable as exc:  # not the release's fault: still downloading, tried again later
            self._unreachable.add(release.version)
            self.log.warning("update: release %d waits for its archive: %s", release.version, exc)
            self._step(release.version, identity, "downloading", rollout, reason=str(exc))
            return None
        except (UpdateError, BundleError, EngineError, OSError) as exc:
            self.trust.fail(release.version)
            return self._failed(release.version, identity, rollout, str(exc))
        finally:
            if archive is not None and not by_hand:
                Path(archive).unlink(missing_ok=True)  # a download is unpacked or refused: its copy is not kept
        self.trust.trust(release, root_env)
        write_json(self.folder / PENDING_RELEASE, release_env)
        if by_hand:
            self.slots.mark("installed")
            self.trust.rollbacks = 0  # a person chose this release: automatic updates may go on again
            self.trust.save()
            return release
        return release if self._swap_in(release, identity, rollout) else None

    def install_by_hand(self, folder) -> Release | None:
        """``edgeml-runtime update FOLDER``: a release folder (release.json, root.json, the archive) copied by hand,
        under the same checks; it runs on test, health gate and all, from the next start of the device process.
        The release, or None if it was refused or failed (said in the log and in the steps reported)."""
        from ..bundle import sha256_file

        folder = Path(folder)
        if folder.name == "release.json" and folder.is_file():  # the release file named instead of its folder
            folder = folder.parent
        if not folder.is_dir():
            raise UpdateError(f"{folder} is not a release folder: give the folder edgeml release wrote (it holds "
                              "release.json, root.json and bundle.tar.gz), or its release.json")
        docs = {}
        for name in ("release.json", "root.json"):
            try:
                docs[name] = json.loads((folder / name).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UpdateError(f"{folder / name} cannot be read as JSON ({exc}); copy the whole release folder "
                                  "that edgeml release wrote") from None

        def local(release: Release) -> Path:
            archive = folder / release.bundle.archive
            if not archive.is_file() or archive.stat().st_size != release.bundle.bytes or \
                    sha256_file(archive) != release.bundle.sha256:
                raise UpdateRefused("bad_archive", f"{archive} is not the archive release {release.version} signs "
                                                   f"({release.bundle.bytes} bytes, SHA-256 "
                                                   f"{release.bundle.sha256[:12]}…); copy the release folder again")
            return archive

        return self._install(docs["release.json"], docs["root.json"], None, local, by_hand=True)

    def _check_halt(self) -> None:
        if self._halt.is_set():
            raise _Halted()

    def _fetch(self, release: Release, rollout) -> Path:
        from .fetch import fetch_archive

        if not self.options.server:
            raise UpdateUnreachable("no update_server is set: the device cannot fetch the bundle; set update_server "
                                    "to the controller's HTTP server, or install the release by hand "
                                    "(edgeml-runtime update)")
        self._step(release.version, release.bundle.identity, "downloading", rollout)
        try:
            token = self.options.token()
        except SettingsError as exc:
            raise UpdateUnreachable(str(exc)) from None
        return fetch_archive(self.options.server, self.device.fleet, release, self.folder / "downloads", token=token,
                             retry_delays=self.retry_delays, halt=self._halt, log=self.log)

    def _swap_in(self, release: Release, identity: str, rollout) -> bool:
        self._start_gate(release, identity, rollout)
        try:
            self._check_halt()
            self._swap(self.slots.current())
        except _Halted:
            return False  # switched, not swapped: the next start loads it on test
        except (EdgeMLError, TimeoutError, OSError) as exc:
            self._gate = None
            if self._halt.is_set():  # the scoring loop ended first: the next start loads it on test
                return False
            self.slots.rollback()
            self.trust.fail(release.version)
            self._failed(release.version, identity, rollout, f"the new bundle could not be swapped in: {exc}")
            return False
        self._step(release.version, identity, "active", rollout, health=self._health())
        return True

    # -- the health gate --------------------------------------------------------------------------------
    def _start_gate(self, release: Release, identity: str, rollout) -> None:
        self._gate = (HealthGate(release.health), identity, release.version, rollout)

    def _window(self, window: dict, identity: str | None) -> None:
        """A window sent (on the scoring thread): counted if the bundle on test scored it; a verdict is queued."""
        gate = self._gate
        if gate is None or identity != gate[1]:
            return
        latency = window.get("latency") or {}
        ms = 1000.0 * latency["seconds"] / latency["rows"] if latency.get("rows") else 0.0
        gate[0].update(int(window.get("rows", 0)), int(window.get("bad_rows", 0)), ms)
        if gate[0].verdict != "pending":
            self._gate = None
            self._jobs.put(("gate", (gate,)))

    def _judged(self, gate) -> None:
        health, identity, version, rollout = gate
        pending = self.slots.state["pending"]
        if pending is None or pending["version"] != version:
            self.log.warning("update: the verdict on release %d came when it was no longer on test; ignored", version)
            return
        try:
            self._verdict(health, identity, version, rollout)
        finally:
            if self._deferred is not None:  # an announcement heard meanwhile: its turn now
                self._jobs.put(("announcement", self._deferred))
                self._deferred = None

    def _verdict(self, health, identity, version, rollout) -> None:
        if health.verdict == "pass":
            self.slots.commit()
            (self.folder / PENDING_RELEASE).unlink(missing_ok=True)
            self._step(version, identity, "committed", rollout, health=self._health(health))
            self.log.info("update: release %d committed (%s)", version, health.reason)
            return
        self._roll_back(version, identity, rollout, f"health gate: {health.reason}", health=health)

    def _roll_back(self, version, identity, rollout, reason: str, *, swap: bool = True, health=None) -> None:
        back = self.slots.rollback() or self._fallback
        self.trust.fail(version)
        count = self.trust.rolled_back()
        (self.folder / PENDING_RELEASE).unlink(missing_ok=True)
        if swap:
            try:
                self._swap(back)
            except (EdgeMLError, TimeoutError, OSError) as exc:
                reason += f"; swapping {back} back in failed too ({exc}): restart the device"
        self.log.error("update: release %d rolled back to %s (%s); automatic rollbacks so far: %d", version, back,
                       reason, count)
        self._step(version, identity, "rolled_back", rollout, reason=reason,
                   health=self._health(health) if health is not None else None)

    def _health(self, health: HealthGate | None = None) -> dict:
        h = health or (self._gate[0] if self._gate else None)
        return h.counts() if h is not None else {"windows": 0, "rows": 0, "bad": 0, "latency_ms": None}

    def _pending_release(self) -> Release | None:
        doc = read_json(self.folder / PENDING_RELEASE, "the pending release")
        try:
            return Release.from_signed(doc["signed"]) if doc else None
        except (UpdateError, KeyError, TypeError):
            return None

    # -- reporting --------------------------------------------------------------------------------------
    def _failed(self, version, identity, rollout, reason: str, refusal: str | None = None) -> None:
        self.log.error("update: release %s not installed: %s", version, reason)
        self._step(version, identity, "failed", rollout, reason=reason, refusal=refusal)
        return None

    def _step(self, version, identity, step, rollout, *, reason=None, refusal=None, health=None) -> None:
        if step not in ("failed", "rolled_back"):
            self.log.info("update: release %s %s", version, step)
        payload = update_status(self.device, release=max(int(version or 0), 1), bundle=identity, step=step,
                                time=utc_now(), rollout=rollout, reason=reason, refusal=refusal, health=health)
        if self.report is None:
            self._early.append(payload)
        else:
            self._send(payload)

    def _send(self, payload: dict) -> None:
        try:
            self.report(payload)
        except EdgeMLError as exc:
            self.log.error("update: step %s of release %s could not be stored for sending (%s)", payload["step"],
                           payload["release"], exc)


def _to_fleet(topic: str) -> bool:
    """Whether ``topic`` is a fleet's release topic (not one device's)."""
    try:
        return parse_release_topic(topic)[1] is None
    except ProtocolError:
        return False


def _version(envelope) -> int:
    try:
        return int(envelope["signed"]["version"])
    except (KeyError, TypeError, ValueError):
        return 0


def _identity(envelope) -> str | None:
    try:
        identity = envelope["signed"]["bundle"]["identity"]
        return identity if isinstance(identity, str) and len(identity) == 64 else None
    except (KeyError, TypeError):
        return None


__all__ = ["PENDING_RELEASE", "RETRY_DELAYS", "UpdateAgent"]
