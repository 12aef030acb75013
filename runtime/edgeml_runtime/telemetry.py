"""Drift telemetry over MQTT (paho-mqtt 2.x; MQTT 5 or 3.1.1): birth, drift windows, death.

Topics, for fleet ``F`` and device ``D``, come from
:class:`~.protocol.topics.DeviceTopics`; payloads are built by
:mod:`.protocol.envelopes` (JSON, described by the package's
``schemas/*.schema.json`` and ``docs/telemetry.md``):

* ``edgeml/F/D/birth``: retained, QoS 1, published on every connect: the
  device, runtime and model, the window settings, and ``bdSeq``.
* ``edgeml/F/D/drift``: QoS 1, one message per closed window, sent in order
  from the durable :class:`~.outbox.Outbox` and deleted from it only on the
  broker's PUBACK.
* ``edgeml/F/D/death``: retained, QoS 1: registered as the Last Will at each
  connect (so the broker publishes it if the device vanishes) and published
  on a clean :meth:`Telemetry.stop`; it carries the connection's ``bdSeq``.
* ``edgeml/F/D/predictions``: optional, QoS 0, not durable.

It can also read the records to score from a topic
(:meth:`Telemetry.subscribe_records`).

``bdSeq`` comes from :meth:`Outbox.next_session`, so it never repeats, not
even across restarts, nor when the outbox is replaced. A drift message carries the ``session`` (the bdSeq of the
connection it is sent on or will be, when the window closed) and ``seq`` (0, 1,
2, … within the session): consumers de-duplicate on (fleet, device, session, seq)
(:func:`~.protocol.envelopes.window_key`).
``historical`` is true for a window enqueued before the current connection was
established (while offline, or by an earlier run).

One thread (started by :meth:`Telemetry.start`) owns the MQTT client: it
connects with exponential backoff and jitter, publishes, and runs paho's loop;
the caller's thread only writes to the outbox. A new client is made for each
connection, so nothing is ever queued in paho's memory: the outbox is the queue.
Connecting and reconnecting are :class:`~.connection.Connection`'s (this
class's base); what is sent on a connection is this module's.

Nothing stored or received can stop it: a window the outbox cannot keep (a
full disk) is counted (``unkept``) and reported as dropped by the next window
that is kept; a stored message that cannot be sent is quarantined and counted
as dropped; a window larger than the broker's Maximum Packet Size (MQTT 5
CONNACK) has its error sample trimmed, or is quarantined if even that is not
enough (a broker that closes the connection each time one message is sent is
treated alike after :data:`~.delivery.STRIKES` tries: :mod:`.delivery`); input-topic messages are handled
by :class:`~.inbox.TopicRecords`, which never raises, so each is acknowledged.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque

from .connection import IN_FLIGHT, POLL_SECONDS, Connection
from .deadletter import DeadLetters
from .delivery import Delivery
from .errors import OutboxError, TelemetryError
from .inbox import TopicRecords
from .mqtt import MqttSettings
from .outbox import Outbox
from .payloads import dumps, utc_now
from .protocol import envelopes
from .protocol.topics import DeviceTopics

PREDICTION_QUEUE = 1000
#: Predictions handed to paho per pass of the loop (each pass also sends drift windows and reads the socket).
PREDICTION_BATCH = 200


class Telemetry(Connection):
    """Publishes one device's birth, drift windows and death; see the module docstring.

    ``device`` says who publishes, and where (the settings' ``device``).
    ``birth`` must hold ``model`` and ``window``, as
    :func:`~.protocol.envelopes.describe_model` and
    :func:`~.protocol.envelopes.describe_window` build them; any other keys are
    published in the birth message as they are.
    """

    def __init__(self, settings: MqttSettings, device: DeviceTopics, *, birth: dict, outbox: Outbox,
                 log: logging.Logger | None = None, dead_letters: DeadLetters | None = None):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise TelemetryError("paho-mqtt is not installed; install the runtime with its MQTT extra: "
                                 "pip install 'edgeml-runtime[mqtt]'") from None
        self._mqtt = mqtt
        envelopes.check_description(birth)
        self.settings, self.topics, self.outbox = settings, device, outbox
        self.log = log or logging.getLogger("edgeml_runtime.telemetry")
        self._birth, self._model = dict(birth), dict(birth["model"])
        self._ssl = settings.ssl_context()
        self._host, self._port, _ = settings.endpoint
        self._client_id = settings.client_id or device.client_id

        self._lock = threading.Lock()            # session, seq, counters: shared with the caller's thread
        self._session = outbox.next_session()
        self._seq = 0
        self._counts = dict(sent=0, acked=0, refused=0, predictions_sent=0, predictions_dropped=0, unkept=0)
        self._unkept = 0                         # windows not stored and not yet reported as dropped
        self._dead_letters = dead_letters
        self._records: TopicRecords | None = None  # once subscribe_records() is called
        self._releases: tuple[tuple[str, ...], object] | None = None  # once subscribe_releases() is called
        self._connected = False
        self._last_error: str | None = None
        self._predictions: deque[bytes] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stop_deadline = math.inf
        # Owned by the MQTT thread:
        self._inflight: dict[int, int] = {}      # paho mid -> outbox id
        self._cursor = 0                         # highest outbox id handed to paho on this connection
        self._live_from = 0                      # outbox ids up to this one are historical
        self._connack = None
        self._window = IN_FLIGHT
        self._delivery = Delivery(outbox, device.drift, mqtt5=settings.protocol == "5", log=self.log,
                                  update_topic=device.update)
        self._acked_here = 0                     # windows acknowledged on this connection
        self._death_mid: int | None = None
        self._death_acked = False

    # -- the caller's side -------------------------------------------------
    def start(self) -> None:
        """Start the MQTT thread; returns at once. A broker that is down is retried, never raised."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"edgeml-mqtt-{self.topics.device_id}", daemon=True)
            self._thread.start()

    def subscribe_records(self, topic: str, items: queue.Queue) -> None:
        """Also read records to score from ``topic`` into ``items``, as :class:`~.stream.Item` s.

        Each message is one JSON object, or several as JSON Lines; a line that
        is not a JSON object becomes an Item with its error. Subscribed at
        QoS 1 on every connection, with a session the broker keeps for
        :data:`~.connection.SESSION_EXPIRY` seconds, so records published while the device
        is offline wait for it. Call before :meth:`start`. A message over the
        settings' ``input_max_bytes`` is refused; if ``items`` stays full for
        a second, the record is dropped; both are counted and kept in the
        dead-letter file (:class:`~.inbox.TopicRecords`).
        """
        if self._thread is not None:
            raise TelemetryError("subscribe_records() must be called before start()")
        self._records = TopicRecords(topic, items, max_bytes=self.settings.input_max_bytes,
                                     dead_letters=self._dead_letters, log=self.log)

    def subscribe_releases(self, topics: tuple[str, ...], handler) -> None:
        """Also hear the controller's release announcements on ``topics`` (retained, QoS 1, on every connection):
        ``handler(topic, payload_bytes)`` is called on the MQTT thread and must return at once and never raise
        (the update agent queues the message). Call before :meth:`start`."""
        if self._thread is not None:
            raise TelemetryError("subscribe_releases() must be called before start()")
        self._releases = (tuple(topics), handler)

    def send_update(self, payload: dict) -> int:
        """Store one update step (:func:`~.protocol.updates.update_status`) in the outbox to be sent in order with
        the drift windows; the outbox's bound never drops it (``keep``). Its outbox id; raises
        :class:`~.errors.OutboxError` if it cannot be stored (the caller logs it: an update goes on)."""
        return self.outbox.put(self.topics.update, dumps(payload), keep=True)

    def send_drift(self, window: dict) -> int:
        """Add the envelope to a closed window, store it in the outbox, and return its ``seq``.

        It is sent by the MQTT thread as soon as it is connected. Its
        ``outbox_dropped`` counts every window dropped before it and not yet
        reported, those its own put drops included. A window the outbox cannot
        keep (a full disk, a window over the bound) is counted in ``unkept``,
        logged, and reported as dropped by the next window that is kept:
        scoring goes on. Never raises for the outbox.
        """
        with self._lock:
            seq = self._seq
            self._seq += 1

            backlog = len(self.outbox)  # what waits before this window: how far behind the device's reports are

            def build(dropped: int) -> bytes:
                return dumps(envelopes.drift(self.topics, session=self._session, seq=seq, model=self._model,
                                             outbox_dropped=dropped, outbox_backlog=backlog, window=window))

            try:
                self.outbox.put(self.topics.drift, build, unkept=self._unkept)
                self._unkept = 0
            except OutboxError as exc:
                self._unkept += 1
                self._counts["unkept"] += 1
                level = logging.ERROR if self._counts["unkept"] in (1, 10, 100) or \
                    not self._counts["unkept"] % 1000 else logging.DEBUG
                self.log.log(level, "drift window %d of session %d could not be kept (%s); %d so far, reported as "
                             "dropped in the next window kept", seq, self._session, exc, self._counts["unkept"])
            return seq

    def set_model(self, model: dict) -> None:
        """The model (:func:`~.protocol.envelopes.describe_model`) that scores from now on (``serve`` swapped
        bundles): the drift windows sent after this carry it, and so does the birth of the next connection."""
        envelopes.check_description({**self._birth, "model": model})
        with self._lock:
            self._model = dict(model)
            self._birth = {**self._birth, "model": dict(model)}

    def send_prediction(self, payload: dict) -> None:
        """Publish one prediction at QoS 0 if connected; otherwise (or when too many wait) it is dropped."""
        if not self._connected or len(self._predictions) >= PREDICTION_QUEUE:
            with self._lock:
                self._counts["predictions_dropped"] += 1
            return
        message = envelopes.prediction(self.topics, session=self._session, time=utc_now(), body=payload)
        self._predictions.append(dumps(message))

    def stop(self, timeout: float = 5.0) -> None:
        """Send what waits (within ``timeout``), publish the death message, disconnect.

        Windows not acknowledged by then stay in the outbox for the next run.
        """
        if self._thread is None:
            return
        self._stop_deadline = time.monotonic() + timeout
        self._stopping.set()
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():
            self.log.warning("MQTT: the connection did not close within %.1f s; %d window(s) stay in the outbox",
                             timeout, len(self.outbox))

    @property
    def stats(self) -> dict:
        """How telemetry is doing, for logs and health checks.

        ``sent`` drift publishes (resends included), ``acked`` and ``refused``
        (MQTT 5 only) by the broker since start; ``pending`` windows in the
        outbox; ``dropped`` windows the outbox ever dropped; ``unkept``
        windows the outbox could not store; ``trimmed`` windows whose error
        sample was cut to fit the broker's packet size; ``quarantined``
        stored messages moved aside because they could not be sent;
        ``connected``; ``session`` (the current bdSeq) and ``seq`` (the next
        window's); ``predictions_sent`` / ``predictions_dropped``; for an input
        topic ``records_received`` (rows queued, bad ones included),
        ``row_errors`` (of those), ``records_dropped`` (no room in the queue),
        ``messages_refused`` (too large, or unreadable) and ``dead_letters``
        (kept in the dead-letter file); ``last_error`` (the last connection or
        refusal problem, None once connected).
        """
        inbox = dict(self._records.counts) if self._records is not None else \
            dict(records_received=0, records_dropped=0, messages_refused=0, row_errors=0)
        letters = self._dead_letters.count if self._dead_letters is not None else 0
        with self._lock:
            return dict(self._counts, **inbox, trimmed=self._delivery.trimmed, pending=len(self.outbox),
                        dropped=self.outbox.dropped_total,
                        quarantined=self.outbox.quarantined, dead_letters=letters,
                        connected=self._connected, session=self._session, seq=self._seq,
                        last_error=self._last_error)

    def __enter__(self) -> Telemetry:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the MQTT thread: what it sends on a connection (connecting is Connection's) --------
    def _established(self, client) -> None:
        self._inflight.clear()
        self._acked_here = 0
        self._cursor = 0
        self._live_from = self.outbox.last_id
        # Connected before the birth goes out: a consumer that sees the birth may already expect predictions.
        # They are only handed to paho in _serve, after the birth, so none can overtake it.
        with self._lock:
            self._connected = True
            self._last_error = None
        birth = envelopes.birth(self.topics, bd_seq=self._session, time=utc_now(), description=self._birth,
                                runtime={"version": _runtime_version(), "mqtt_protocol": self.settings.protocol})
        client.publish(self.topics.birth, dumps(birth), qos=1, retain=True)
        if self._records is not None:
            client.subscribe(self._records.topic, qos=1)
        if self._releases is not None:
            client.subscribe([(t, 1) for t in self._releases[0]])
        self.log.info("MQTT: connected to %s as %s (MQTT %s, session %d); %d window(s) waiting", self.settings.url,
                      self._client_id, self.settings.protocol, self._session, len(self.outbox))

    def _serve(self, client) -> None:
        ok = self._mqtt.MQTT_ERR_SUCCESS
        while not self._stopping.is_set():
            self._pump(client)
            self._publish_predictions(client)
            rc = client.loop(POLL_SECONDS)
            if rc != ok:
                self.log.warning("MQTT: connection to %s lost (%s); %d window(s) wait in the outbox",
                                 self.settings.url, self._mqtt.error_string(rc), len(self.outbox))
                self._delivery.lost(self._inflight, self._acked_here)
                return
        self._shutdown(client)

    def _pump(self, client) -> None:
        """Hand paho the next waiting windows, in outbox order, up to :data:`~.connection.IN_FLIGHT` unacknowledged
        (fewer if the broker's Receive Maximum says so)."""
        room = self._window - len(self._inflight)
        if room <= 0:
            return
        try:
            waiting = self.outbox.pending(limit=room, after=self._cursor)
        except OutboxError as exc:  # the file was damaged under us: keep the connection, say it once
            self._failed(str(exc))
            return
        for msg in waiting:
            payload = self._delivery.payload(msg, historical=msg.id <= self._live_from)
            if payload is None:
                self._cursor = msg.id
                continue
            try:
                info = client.publish(msg.topic, payload, qos=1)
            except (ValueError, TypeError) as exc:  # a topic or payload paho refuses
                self._delivery.set_aside(msg.id, f"paho refuses to publish it ({exc})")
                self._cursor = msg.id
                continue
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                return  # the connection just dropped; the loop reports it
            self._inflight[info.mid] = msg.id
            self._cursor = msg.id
            with self._lock:
                self._counts["sent"] += 1

    def _shutdown(self, client) -> None:
        ok = self._mqtt.MQTT_ERR_SUCCESS
        reserve = min(1.0, max(0.0, self._stop_deadline - time.monotonic()) / 2)  # time kept for the death
        while (self._inflight or self.outbox.pending(limit=1, after=self._cursor)) and \
                time.monotonic() < self._stop_deadline - reserve:
            self._pump(client)
            if client.loop(POLL_SECONDS) != ok:
                return
        self._publish_predictions(client, limit=len(self._predictions))
        self._death_acked = False
        self._death_mid = client.publish(self.topics.death, self._death_payload("shutdown"), qos=1,
                                         retain=True).mid
        while not self._death_acked and time.monotonic() < self._stop_deadline:
            if client.loop(POLL_SECONDS) != ok:
                return
        client.disconnect()
        for _ in range(20):  # let the DISCONNECT go out
            if client.socket() is None or client.loop(POLL_SECONDS) != ok:
                break
        self.log.info("MQTT: disconnected from %s; %d window(s) stay in the outbox", self.settings.url,
                      len(self.outbox))

    def _publish_predictions(self, client, limit: int = PREDICTION_BATCH) -> None:
        """Hand paho up to ``limit`` waiting predictions (QoS 0); its next loop writes them out."""
        sent = 0
        while self._predictions and sent < limit:
            client.publish(self.topics.predictions, self._predictions.popleft(), qos=0)
            sent += 1
        if sent:
            with self._lock:
                self._counts["predictions_sent"] += sent

    def _death_payload(self, reason: str) -> bytes:
        return dumps(envelopes.death(self.topics, bd_seq=self._session, reason=reason,
                                     time=utc_now() if reason == "shutdown" else None))

    # paho callbacks: called by client.loop(), on the MQTT thread (on_connect is Connection's)
    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        msg_id = self._inflight.pop(mid, None)
        if msg_id is None:
            if mid == self._death_mid:
                self._death_acked = True
            if reason_code.is_failure:
                self.log.error("MQTT: the broker refused a message (%s); check the ACL allows %s",
                               reason_code, self.topics.all)
            return
        if reason_code.is_failure and self._delivery.refused(msg_id, reason_code):  # sending again cannot help
            with self._lock:
                self._counts["refused"] += 1
            return
        if reason_code.is_failure:  # MQTT 5 only; 3.1.1 brokers acknowledge and discard
            with self._lock:
                self._counts["refused"] += 1
                self._last_error = f"the broker refused drift message {msg_id}: {reason_code}"
            self.log.error("MQTT: the broker refused drift window %d (%s); it stays in the outbox and is sent "
                           "again after the next reconnect. Check the ACL allows %s", msg_id, reason_code,
                           self.topics.drift)
            return
        self._acked_here += 1
        try:
            self.outbox.ack(msg_id)
        except OutboxError as exc:  # a full disk: it is sent again after a reconnect, and de-duplicated
            self.log.error("MQTT: cannot forget acknowledged window %d (%s); it will be sent again", msg_id, exc)
        with self._lock:
            self._counts["acked"] += 1

    def _on_message(self, client, userdata, message) -> None:
        if self._releases is not None and message.topic in self._releases[0]:
            try:
                self._releases[1](message.topic, bytes(message.payload))
            except Exception:  # noqa: BLE001 - the handler's bug must not take the connection down
                self.log.exception("MQTT: the release announcement on %s could not be handed over", message.topic)
            return
        if self._records is not None:
            self._records.on_message(client, userdata, message)  # never raises: paho acknowledges every message


def _runtime_version() -> str:
    from . import __version__

    return __version__
