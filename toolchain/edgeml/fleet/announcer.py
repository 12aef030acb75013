"""The controller's part of staged rollouts: advance the running ones on a timer, announcing releases over MQTT.

Every ``rollout_every`` seconds (``--rollout-every``; 0 turns it off) the
controller takes or renews the store's ``rollout`` lease as its ``holder``
and, if it holds it, calls :func:`edgeml.fleet.rollout.advance` on every
running rollout of its fleets (so of several controllers only one announces
and judges). ``advance`` hands each device of the wave to :meth:`Rollouts.announce`,
which publishes :func:`edgeml_runtime.protocol.updates.announcement` retained
at QoS 1 on ``edgeml/<fleet>/_controller/release/<device>``:

* ``release``: the signed release envelope (the ``releases`` row's document);
* ``root``: the signed root it is checked against: ``root.json`` of the keys
  folder the rollout was started with (``edgeml rollout start --keys``), the
  current one, or else the ``root.json`` of the release's own folder;
* ``archive``: the path of its ``bundle.tar.gz`` on the controller's HTTP
  server (``/releases/<fleet>/<version>/bundle.tar.gz``, :mod:`.files`).

An aborted rollout that rolled nothing back (aborted by hand, or failed
without keys to sign a rollback) has its announcements withdrawn: an empty
retained message on each announced device's topic, so a device that was off
does not install it when it comes back. When a rollout is done, its release is also announced, retained, on the
fleet's topic ``edgeml/<fleet>/_controller/release``: a device the rollout
did not reach (off during it, or new since) installs it when it connects.

An announcement is marked sent once the broker acknowledged it (PUBACK); one
not acknowledged stops the advance (FleetError, logged) and is published
again at the next tick: retained, a repeat is the same message. Each line
``advance`` returns is logged.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import sqlalchemy as sa

from edgeml.errors import FleetError
from edgeml_runtime.protocol.status import iso
from edgeml_runtime.protocol.updates import announcement, release_topic

from . import schema as t

#: The store lease whose holder advances rollouts.
LEASE = "rollout"


def archive_path(fleet: str, version: int) -> str:
    """Where the controller's HTTP server serves a release's bundle archive.

    >>> archive_path("plant-a", 7)
    '/releases/plant-a/7/bundle.tar.gz'
    """
    from .releases import ARCHIVE

    return f"/releases/{fleet}/{int(version)}/{ARCHIVE}"


def running(store, fleets: tuple[str, ...] = ()) -> list[int]:
    """The ids of the running rollouts (of ``fleets``; every fleet's if empty), oldest first."""
    r = t.rollouts
    q = sa.select(r.c.id).where(r.c.state == "running").order_by(r.c.id)
    if fleets:
        q = q.where(r.c.fleet.in_(fleets))
    with store._read() as conn:
        return list(conn.execute(q).scalars())


def to_fleet(store, fleets: tuple[str, ...] = ()) -> list[int]:
    """The rollouts done whose release is not announced on their fleet's topic yet: each fleet's latest done one."""
    r = t.rollouts
    q = sa.select(r.c.id, r.c.fleet, r.c.plan).where(r.c.state == "done").order_by(r.c.id.desc())
    if fleets:
        q = q.where(r.c.fleet.in_(fleets))
    latest: dict[str, tuple[int, dict]] = {}
    with store._read() as conn:
        for rollout_id, fleet, plan in conn.execute(q):
            latest.setdefault(fleet, (rollout_id, plan))
    return sorted(i for i, plan in latest.values() if not plan.get("announced_to_fleet"))


def to_withdraw(store, fleets: tuple[str, ...] = ()) -> list[int]:
    """Each fleet's latest rollout if it was aborted, rolled nothing back and its announcements are still retained
    (an older one's topics may hold a later rollout's announcements by now)."""
    r = t.rollouts
    q = sa.select(r.c.id, r.c.fleet, r.c.state, r.c.plan).order_by(r.c.id.desc())
    if fleets:
        q = q.where(r.c.fleet.in_(fleets))
    latest: dict[str, tuple] = {}
    with store._read() as conn:
        for row in conn.execute(q):
            latest.setdefault(row.fleet, row)
    return sorted(row.id for row in latest.values() if row.state == "aborted"
                  and row.plan.get("rollback_release") is None and not row.plan.get("withdrawn"))


class Rollouts:
    """The rollout timer of one controller: :meth:`maybe` in its loop, :meth:`close` when it stops."""

    def __init__(self, store, settings, publish, connected, log: logging.Logger):
        self.store, self.settings, self.log = store, settings, log
        self.publish, self.connected = publish, connected  # Ingest.publish, and whether its client is connected
        self.every = settings.rollout_every
        self.next = time.monotonic()
        self.held = False
        self.warned: set[tuple[str, int]] = set()

    def maybe(self) -> None:
        if not self.every or time.monotonic() < self.next:
            return
        self.next = time.monotonic() + self.every
        if self.connected():
            self.advance(time.time())

    def advance(self, now: float) -> list[str]:
        """One tick: under the lease, every running rollout moved on as far as it goes; the lines logged."""
        from . import rollout

        said: list[str] = []
        try:
            self.held = self.store.acquire_lease(LEASE, self.settings.holder, self.settings.lease_seconds, now=now)
            if not self.held:
                return said
            for rollout_id in running(self.store, self.settings.fleets):
                for line in rollout.advance(self.store, rollout_id, now=now, announce=self.announce):
                    self.log.info("%s", line)
                    said.append(line)
            for rollout_id in to_fleet(self.store, self.settings.fleets):
                said.append(self.announce_to_fleet(rollout_id))
                self.log.info("%s", said[-1])
            for rollout_id in to_withdraw(self.store, self.settings.fleets):
                said.append(self.withdraw(rollout_id))
                self.log.info("%s", said[-1])
        except FleetError as exc:
            self.log.error("advancing rollouts failed: %s; trying again in %g s", exc, self.every)
        return said

    def announce(self, fleet: str, device: str, record, rollout_id: int) -> None:
        """Publish ``record`` (a :class:`~.releases.ReleaseRecord`) to ``device``, retained; FleetError if the
        broker did not acknowledge it."""
        payload = announcement(fleet, release=record.document, root=self.root_of(rollout_id, record),
                               archive=archive_path(fleet, record.version), time=iso(time.time()), device=device,
                               rollout=rollout_id)
        self._check_served(record)
        topic = release_topic(fleet, device)
        if not self.publish(topic, json.dumps(payload, separators=(",", ":")).encode()):
            raise FleetError(f"the broker did not acknowledge the announcement of release {record.version} on "
                             f"{topic}; it is announced again at the next advance")

    def announce_to_fleet(self, rollout_id: int) -> str:
        """A rollout done: its release, retained on the fleet's topic, for the devices it did not reach (off, or
        new since); FleetError (tried again at the next tick) if the broker did not acknowledge it."""
        from . import releases, rollout

        r = rollout.get(self.store, rollout_id)
        record = releases.get(self.store, r.fleet, r.release)
        payload = announcement(r.fleet, release=record.document, root=self.root_of(rollout_id, record),
                               archive=archive_path(r.fleet, record.version), time=iso(time.time()),
                               rollout=rollout_id)
        topic = release_topic(r.fleet)
        if not self.publish(topic, json.dumps(payload, separators=(",", ":")).encode()):
            raise FleetError(f"the broker did not acknowledge the announcement of release {record.version} on "
                             f"{topic}; it is announced again at the next advance")
        with self.store._write() as conn:  # kept in the store: a controller restarted before this still does it
            conn.execute(sa.update(t.rollouts).where(t.rollouts.c.id == rollout_id).values(
                plan={**r.plan, "announced_to_fleet": time.time()}))
        return f"rollout {rollout_id} done: release {record.version} announced to the whole fleet {r.fleet} on {topic}"

    def withdraw(self, rollout_id: int) -> str:
        """An aborted rollout with no rollback release: its retained announcements are cleared (an empty retained
        message), so a device that was off when it was announced does not install it when it comes back."""
        from . import rollout

        r = rollout.get(self.store, rollout_id)
        rd = t.rollout_devices
        with self.store._read() as conn:
            devices = list(conn.execute(sa.select(rd.c.device).where(rd.c.rollout == rollout_id,
                                                                     rd.c.announced.is_not(None))
                                        .order_by(rd.c.device)).scalars())
        for device in devices:
            if not self.publish(release_topic(r.fleet, device), b""):
                raise FleetError(f"the broker did not acknowledge clearing {release_topic(r.fleet, device)}; "
                                 "tried again at the next advance")
        with self.store._write() as conn:
            conn.execute(sa.update(t.rollouts).where(t.rollouts.c.id == rollout_id).values(
                plan={**r.plan, "withdrawn": time.time()}))
        return f"rollout {rollout_id} aborted: its announcement withdrawn from {len(devices)} device(s)"

    def root_of(self, rollout_id: int, record) -> dict:
        """The signed root to check ``record`` against: the rollout's keys folder's, else the release folder's."""
        from . import rollout
        from .keys import root_envelope
        from .releases import ROOT_JSON

        keys = rollout.get(self.store, rollout_id).plan.get("keys")
        if keys:
            return root_envelope(keys)
        path = Path(record.path) / ROOT_JSON
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FleetError(f"rollout {rollout_id} was started without --keys and {path} cannot be read ({exc}); "
                             "the announcement needs the signed root: restore the release folder") from None

    def _check_served(self, record) -> None:
        """Warn (once per release) if the release's folder is not where the HTTP server serves it from."""
        from .releases import ARCHIVE, folder_of

        key = (record.fleet, record.version)
        served = folder_of(self.settings.releases, record.fleet, record.version) / ARCHIVE
        if self.settings.http is None or key in self.warned or served.is_file():
            return
        self.warned.add(key)
        self.log.warning("release %d of fleet %s is in %s, not below the served folder %s: devices will get 404 for "
                         "its archive; run the controller with --releases set to the folder edgeml release wrote to",
                         record.version, record.fleet, record.path, self.settings.releases)

    def close(self) -> None:
        if self.held:
            try:
                self.store.release_lease(LEASE, self.settings.holder)
            except FleetError:
                pass  # it expires on its own
