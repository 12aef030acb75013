"""How a device's telemetry reaches its broker, on the MQTT thread: clients, CONNECT, CONNACK, reconnecting.

:class:`Connection` is the part of :class:`~.telemetry.Telemetry` that
handles the link, not what goes over it. It makes a new paho client for each
connection (so nothing is ever queued in paho's memory: the outbox is the
queue) with the settings' credentials and TLS, the death message as its Last
Will and, for an input topic, a session the broker keeps for
:data:`SESSION_EXPIRY` seconds. It waits :data:`CONNACK_TIMEOUT` seconds for
the broker to accept, reads the broker's limits from the CONNACK (Receive
Maximum, Maximum Packet Size), and reconnects with exponential backoff and
jitter between ``reconnect_min`` and ``reconnect_max``, taking a new session
(``bdSeq``, :meth:`~.outbox.Outbox.next_session`) after each connection the
broker accepted. Each problem is logged once as a warning, then at DEBUG
while it repeats, and kept as ``last_error``.

What is sent on an accepted connection is the subclass's: it provides
``_established(client)`` (the birth), ``_serve(client)`` (windows and
predictions until the connection ends or the telemetry stops),
``_death_payload(reason)``, ``_on_publish`` and ``_on_message``, and sets the
attributes read here in its ``__init__``.
"""

from __future__ import annotations

import logging
import random
import time

#: Drift messages in flight (sent, not yet acknowledged) at once.
IN_FLIGHT = 20
#: How long paho's loop waits for network traffic before the thread looks at the outbox again.
POLL_SECONDS = 0.05
CONNACK_TIMEOUT = 10.0
#: How long the broker keeps the session (and queued input records) of a device that reads an input topic.
SESSION_EXPIRY = 7 * 24 * 3600


class Connection:
    """The MQTT thread's connection handling, for :class:`~.telemetry.Telemetry` (see the module docstring)."""

    def _run(self) -> None:
        delay = self.settings.reconnect_min
        while not self._stopping.is_set():
            try:
                established = self._connection()
            except Exception:  # a bug or an unexpected library error must not end telemetry
                self.log.exception("MQTT: unexpected error; reconnecting")
                established = False
            if self._stopping.is_set():
                break
            if established:
                with self._lock:  # windows from now on belong to the next connection
                    self._session = self.outbox.next_session()
                    self._seq = 0
                delay = self.settings.reconnect_min
            self._stopping.wait(delay * random.uniform(0.5, 1.0))
            if not established:
                delay = min(delay * 2, self.settings.reconnect_max)

    def _connection(self) -> bool:
        """One connection from CONNECT to its end; True if the broker accepted it."""
        mqtt = self._mqtt
        client = self._new_client()
        try:
            client.connect(self._host, self._port, self.settings.keepalive, **self._session_options())
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake, certificate
            self._failed(f"cannot connect to {self.settings.url}: {exc}")
            return False
        self._connack = None
        give_up = time.monotonic() + CONNACK_TIMEOUT
        while self._connack is None:
            rc = client.loop(POLL_SECONDS)
            if self._connack is not None:
                break
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self._failed(f"{self.settings.url} closed the connection before accepting it")
                return False
            if time.monotonic() > min(give_up, self._stop_deadline):
                client.disconnect()
                self._failed(f"{self.settings.url} did not answer the CONNECT in time")
                return False
        if self._connack.is_failure:
            client.disconnect()
            self._failed(f"{self.settings.url} refused the connection: {self._connack} (check the user name, "
                         "password, client certificate and ACL)")
            return False
        self._established(client)
        try:
            self._serve(client)
        finally:
            with self._lock:
                self._connected = False
        return True

    def _session_options(self) -> dict:
        """A clean session, unless the broker must keep an input-topic subscription (and its records) for us."""
        if self.settings.protocol != "5":
            return {}
        if self._records is None:
            return {"clean_start": True}
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY
        return {"clean_start": False, "properties": properties}

    def _new_client(self):
        mqtt = self._mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self._client_id,
                             protocol=mqtt.MQTTv5 if self.settings.protocol == "5" else mqtt.MQTTv311,
                             **({} if self.settings.protocol == "5" else {"clean_session": self._records is None}))
        client.enable_logger(_DebugOnly(self.log.getChild("paho"), {}))
        client.max_inflight_messages_set(IN_FLIGHT + 2)   # + birth and death: paho never queues
        client.max_queued_messages_set(IN_FLIGHT + 2)
        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self.settings.password)
        if self._ssl is not None:
            client.tls_set_context(self._ssl)
        client.will_set(self.topics.death, self._death_payload("lost"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _failed(self, message: str) -> None:
        with self._lock:
            repeated = message == self._last_error
            self._last_error = message
        self.log.log(logging.DEBUG if repeated else logging.WARNING, "MQTT: %s; retrying", message)

    # paho callback: called by client.loop(), on the MQTT thread
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack = reason_code
        # An MQTT 5 broker may take fewer unacknowledged messages than IN_FLIGHT; one stays for birth or death.
        limit = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        self._window = IN_FLIGHT if limit is None else max(1, min(IN_FLIGHT, limit - 1))
        # ... and packets up to a size: a larger one makes it close the connection, every time.
        self._delivery.connected(properties)


class _DebugOnly(logging.LoggerAdapter):
    """paho's own log lines, all at DEBUG: the telemetry logs connection changes itself, once."""

    def log(self, level, msg, *args, **kwargs):
        super().log(logging.DEBUG, msg, *args, **kwargs)
