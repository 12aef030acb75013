"""The controller's MQTT client: hear births, drift windows, deaths and update steps, commit, then acknowledge.

:class:`Ingest` is a paho-mqtt 2 client (MQTT 5 by default) with a
persistent session: a stable client id, ``clean_start`` off and a session
expiry interval, so the broker queues what devices send while the controller
is away and delivers it when it is back. It subscribes at QoS 1 to
:attr:`~.settings.ControllerSettings.filters` (``$share/<group>/...`` with a
group, so several controllers split the messages between them), asking for
retained messages only on a new subscription.

Acknowledgement is manual (``manual_ack=True``): paho's network thread only
queues each message; :meth:`Ingest.step`, on the caller's thread, gathers a
batch (up to ``batch_size`` messages, or what came within ``batch_wait``
seconds of the first) and hands it to a committer (:mod:`.workers`: the
caller's own thread, or ``--workers N`` store processes), which decodes each
message with :func:`edgeml_runtime.protocol.decode` and commits the batch
with :meth:`~.store.Store.record_messages`. Only once a batch's commit has
returned are the PUBACKs of its messages sent, batch after batch in the order
received. A controller killed at any moment has acknowledged only what is
committed; the broker sends the rest again, and the store's (fleet, device,
session, seq) key makes a resent window a no-op. A message that is not the
protocol is kept in the store's ``rejected`` table with the reason and
acknowledged: it will never become valid. If the store fails
(:class:`~edgeml.errors.FleetError`) nothing is acknowledged; the same batch
is committed again with backoff while the broker keeps the unacknowledged
messages.

A PUBACK belongs to the connection its message came on: messages of a
connection that ended are never acknowledged on the next (their packet ids
mean others there); the broker resends them, and they are stored once.

The client's Receive Maximum (``receive_maximum``, a CONNECT property) is
how many unacknowledged messages the broker may have in flight to it: it
must exceed ``batch_size`` for batches to fill, and with workers, cover the
batches they hold (``bench/results/ingest.md``). paho's socket is wrapped in
:class:`.transport.ReadAhead`, which reads and writes many packets per system call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .settings import ControllerSettings
from .transport import Client
from .workers import InProcess

#: Backoff between retries of a batch the store failed to commit, in seconds.
STORE_RETRY = (0.5, 30.0)
#: How long closing waits for the broker to take the last PUBACKs, and for the DISCONNECT to be written.
DISCONNECT_TIMEOUT = 10.0


class Received(NamedTuple):
    """One message as paho handed it over, with the connection it came on (``generation``).

    A tuple: one is made per message on paho's thread, and a frozen dataclass's ``__init__`` (an
    ``object.__setattr__`` per field) costs several times a tuple's.
    """

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


@dataclass
class _Flight:
    """A batch handed to the committer: its ticket, and its outcomes once committed (or when to send it again)."""

    batch: list[Received]
    ticket: int = 0
    outcomes: list[str] | None = None
    failed: bool = False
    delay: float = 0.0
    retry_at: float | None = None


@dataclass
class Counters:
    """What the client did since it started (``outcomes``: per store outcome, plus ``undecodable``)."""

    received: int = 0
    acknowledged: int = 0
    batches: int = 0
    store_failures: int = 0
    not_acknowledged: int = 0  #: committed, but their connection ended first (the broker resends them)
    abandoned: int = 0  #: not committed when told to stop (the store failing): the broker keeps them
    outcomes: dict = field(default_factory=dict)


class Ingest:
    """The MQTT client of one controller (see the module docstring): :meth:`start`, :meth:`step`, :meth:`close`."""

    def __init__(self, settings: ControllerSettings, store, *, committer=None, log: logging.Logger | None = None):
        self.settings, self.store = settings, store
        self.committer = committer or InProcess(store)
        self._flights: deque[_Flight] = deque()
        self._forming: list[Received] = []
        self._formed_at = 0.0
        self.log = log or logging.getLogger("edgeml.fleet.ingest")
        self.counters = Counters()
        self._queue: deque[Received] = deque()  # appended on paho's thread, taken on the caller's
        self._arrived = threading.Event()  # set when a message is appended to an empty queue
        self._generation = 0
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._disconnected = threading.Event()
        self._subacked = threading.Event()
        self._last_problem: str | None = None
        self.client = self._client()

    # -- the connection (paho's network thread) -------------------------------------------------------

    def _client(self) -> mqtt.Client:
        b = self.settings.broker
        v5 = b.protocol == "5"
        client = Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.settings.client_id,
                        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, manual_ack=True,
                        **({} if v5 else {"clean_session": False}))
        if b.username is not None:
            client.username_pw_set(b.username, b.password)
        if b.endpoint[2]:
            client.tls_set_context(b.ssl_context())
        client.reconnect_delay_set(b.reconnect_min, b.reconnect_max)
        client.on_connect, client.on_connect_fail = self._on_connect, self._on_connect_fail
        client.on_disconnect, client.on_subscribe = self._on_disconnect, self._on_subscribe
        client.on_message, client.take = self._on_message, self._take
        return client

    def start(self) -> Ingest:
        """Connect in the background (a broker that is down is retried with backoff, and logged)."""
        host, port, _ = self.settings.broker.endpoint
        options = {"clean_start": False, "properties": self._connect_properties()} \
            if self.settings.broker.protocol == "5" else {}
        self.client.connect_async(host, port, self.settings.broker.keepalive, **options)
        self.client.loop_start()
        return self

    def _connect_properties(self) -> Properties:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.settings.session_expiry
        properties.ReceiveMaximum = self.settings.receive_maximum
        return properties

    def _problem(self, message: str) -> None:
        repeated, self._last_problem = message == self._last_problem, message
        self.log.log(logging.DEBUG if repeated else logging.WARNING, "%s; retrying", message)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._problem(f"{self.settings.broker.url} refused the connection: {reason_code} (check the user "
                          "name, password, client certificate and ACL)")
            return
        self._generation += 1
        self._last_problem = None
        self.log.info("connected to %s as %s (session %s)", self.settings.broker.url, self.settings.client_id,
                      "resumed" if flags.session_present else "new")
        client.subscribe(self._topics())
        self._connected.set()

    def _topics(self) -> list:
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        return [(f, options if self.settings.broker.protocol == "5" else 1) for f in self.settings.filters]

    def _on_connect_fail(self, client, userdata) -> None:
        self._problem(f"cannot connect to {self.settings.broker.url}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self._disconnected.set()
        if not self._closing.is_set():
            self._problem(f"lost the connection to {self.settings.broker.url} ({reason_code})")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if self._closing.is_set():
            self._subacked.set()
            return
        refused = [f for f, rc in zip(self.settings.filters, reason_codes, strict=False) if rc.is_failure]
        if refused:
            self.log.error("the broker refused the subscriptions %s (check the controller's ACL: it reads "
                           "edgeml/<fleet>/+/birth|drift|death|update)", ", ".join(refused))
        else:
            self.log.info("subscribed to %s at QoS 1", ", ".join(self.settings.filters))

    def _on_message(self, client, userdata, message) -> None:
        self._take(message.topic, message.payload, message.mid, message.qos)

    def _take(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        if self._closing.is_set():
            return  # not acknowledged: the broker sends it again to the next controller
        self._queue.append(Received(topic, payload, mid, qos, self._generation))
        if not self._arrived.is_set():
            self._arrived.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- batches (the caller's thread) -------------------------------------------------------------

    def step(self, wait: float = 0.2, stop: threading.Event | None = None) -> int:
        """Gather messages into a batch and hand it to the committer when full (or ``batch_wait`` old); acknowledge,
        in order, every batch committed since. Waits up to ``wait`` s for a first message when idle; how many
        messages it handed over."""
        size = self.settings.batch_size
        if not self._forming and not self._flights:
            first = self._get(wait)
            if first is None:
                self._settle(0.0, stop)  # idle: a store process due to start again is started all the same
                return 0
            self._forming, self._formed_at = [first], time.monotonic()
        while len(self._forming) < size:
            m = self._get(0.0)
            if m is None and not self._flights and self._forming:  # nothing else to do: wait for the batch to fill
                m = self._get(self._formed_at + self.settings.batch_wait - time.monotonic())
            if m is None:
                break
            if not self._forming:
                self._formed_at = time.monotonic()
            self._forming.append(m)
        taken = 0
        ready = self._forming and (len(self._forming) >= size
                                   or time.monotonic() >= self._formed_at + self.settings.batch_wait)
        if ready and len(self._flights) < self.committer.depth:
            batch, self._forming = [m for m in self._forming if m.generation == self._generation], []
            if batch:  # older ones: resent by the broker, never acknowledged on this connection
                self._submit(_Flight(batch))
                taken = len(batch)
        self._settle(min(wait, 0.005) if self._flights else 0.0, stop)
        return taken

    def _get(self, timeout: float) -> Received | None:
        """The next message, waiting up to ``timeout`` s; None if none came."""
        try:
            return self._queue.popleft()
        except IndexError:
            if timeout <= 0:
                return None
        self._arrived.clear()
        if not self._queue:  # appended between the popleft and the clear: no wait
            self._arrived.wait(timeout)
        try:
            return self._queue.popleft()
        except IndexError:
            return None

    def _submit(self, flight: _Flight) -> None:
        flight.ticket = self.committer.submit([(m.topic, m.payload) for m in flight.batch])
        self._flights.append(flight)

    def _settle(self, timeout: float, stop: threading.Event | None) -> None:
        """Collect the committer's answers; acknowledge, in order, the batches at the head that are committed.

        A batch the store failed to commit is sent again after a backoff (and
        nothing after it is acknowledged before it); with ``stop`` set (or
        closing) it is abandoned instead: the broker keeps its messages.
        """
        answers = {ticket: (outcomes, error) for ticket, outcomes, error in self.committer.results(timeout)}
        now = time.monotonic()
        for flight in self._flights:
            if flight.ticket in answers:
                flight.outcomes, error = answers.pop(flight.ticket)
                if error is not None:
                    self._failed(flight, error, now)
            elif flight.retry_at is not None and now >= flight.retry_at:
                flight.retry_at = None
                flight.ticket = self.committer.submit([(m.topic, m.payload) for m in flight.batch])
        giving_up = (stop or self._closing).is_set()
        while self._flights and (self._flights[0].outcomes is not None or giving_up and self._flights[0].failed):
            flight = self._flights.popleft()
            if flight.outcomes is None:
                self.counters.abandoned += len(flight.batch)
                continue
            self._acknowledge(flight.batch, flight.outcomes)

    def _failed(self, flight: _Flight, error: str, now: float) -> None:
        self.counters.store_failures += 1
        flight.failed = True
        flight.delay = STORE_RETRY[0] if not flight.delay else min(flight.delay * 2, STORE_RETRY[1])
        flight.retry_at = now + flight.delay
        self.log.error("%s; %d message(s) not acknowledged, retrying in %.1f s", error, len(flight.batch),
                       flight.delay)

    def _acknowledge(self, batch: list[Received], outcomes: list[str]) -> None:
        c = self.counters
        c.batches += 1
        c.received += len(batch)
        for outcome in outcomes:
            c.outcomes[outcome] = c.outcomes.get(outcome, 0) + 1
        if batch[0].generation != self._generation:
            c.not_acknowledged += len(batch)  # the connection ended while committing: the broker resends them
            return
        for m in batch:
            self.client.ack(m.mid, m.qos)
        c.acknowledged += len(batch)

    # -- publishing and closing ----------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, timeout: float = 10.0) -> bool:
        """Publish retained at QoS 1; True once the broker acknowledged it (PUBACK) within ``timeout``."""
        info = self.client.publish(topic, payload, qos=1, retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def close(self) -> int:
        """Stop taking messages, commit and acknowledge those already received, disconnect; how many committed."""
        self._closing.set()
        before = self.counters.acknowledged + self.counters.not_acknowledged
        rest = [m for m in self._forming + list(self._queue) if m.generation == self._generation]
        self._queue.clear()
        self._forming = []
        for i in range(0, len(rest), self.settings.batch_size):
            self._submit(_Flight(rest[i:i + self.settings.batch_size]))
        while self._flights:
            self._settle(0.2, None)
        self.committer.close()
        if self.connected:
            self._round_trip()
        self._disconnected.clear()
        if self.client.disconnect() == mqtt.MQTT_ERR_SUCCESS:
            self._disconnected.wait(DISCONNECT_TIMEOUT)
        self.client.loop_stop()
        return self.counters.acknowledged + self.counters.not_acknowledged - before

    def _round_trip(self) -> None:
        """Wait until the broker has processed every PUBACK sent: subscribe again (a no-op) and wait for the SUBACK.

        Measured with Mosquitto 2.0.11 and paho 2.2: of the PUBACKs sent in
        the last moments before a DISCONNECT, some are not taken (the broker
        resent ~30 committed messages of 300 to the next session). The
        broker answers packets in order, so its SUBACK means it has every
        PUBACK before it. The subscription exists, so nothing is resent.
        """
        self._subacked.clear()
        self.client.subscribe(self._topics())
        if not self._subacked.wait(DISCONNECT_TIMEOUT):
            self.log.warning("the broker did not answer before disconnecting; it may resend the last messages "
                             "(they are stored once)")


def reject(store, items: list[tuple[str, bytes, str]]) -> None:
    """Keep messages that are not the protocol in the store's ``rejected`` table (one transaction)."""
    import sqlalchemy as sa

    from . import schema
    from .database import safe_text

    now = time.time()
    rows = [{"received": now, "topic": safe_text(topic), "reason": safe_text(reason),
             "payload": json.dumps(payload.decode("utf-8", "backslashreplace"), ensure_ascii=True)[:4096]}
            for topic, payload, reason in items]
    with store._write() as conn:  # the store's own write transaction: its failures are FleetErrors
        conn.execute(sa.insert(schema.rejected), rows)


def loads(payload: bytes):
    """The payload parsed by orjson (~10x the standard library here), or by ``json.loads`` where orjson refuses
    it, so what the standard library accepts (NaN, integers beyond 64 bits) and its error messages stay the same.

    >>> loads(b'{"rows": 3, "psi": NaN}')
    {'rows': 3, 'psi': nan}
    """
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)
