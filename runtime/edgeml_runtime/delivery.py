"""What the MQTT thread sends for each stored window, and what it sets aside: nothing stored can block delivery.

:class:`Delivery` turns an outbox row into the bytes to publish, or
quarantines it (:meth:`~.outbox.Outbox.quarantine`: moved aside, counted as
dropped, so the next window kept reports it) when it can never be sent:

* its topic is not this device's drift or update topic, or its payload not a JSON object;
* its packet is larger than the broker's Maximum Packet Size (an MQTT 5
  CONNACK property) even after its sample of error messages is trimmed
  (:func:`~.payloads.trim_errors`; a trimmed window keeps all its counts);
* the broker refused it for a reason that sending again cannot cure
  (:data:`HOPELESS`);
* an MQTT 3.1.1 broker, which cannot tell its limit, closed the connection
  :data:`STRIKES` times in a row while it was the oldest in flight and
  nothing was acknowledged.

Example:

>>> with_historical(b'{"seq":0}', True)
b'{"seq":0,"historical":true}'
"""

from __future__ import annotations

import json
import logging

from .errors import OutboxError
from .outbox import Message, Outbox
from .payloads import dumps, publish_size, trim_errors

#: Connections in a row lost while the same window was in flight and nothing was acknowledged, before that
#: window is taken for one the broker cannot take (MQTT 3.1.1 brokers close the connection without a reason).
STRIKES = 5
#: PUBACK reasons (MQTT 5) that sending again cannot cure: packet too large, quota exceeded, payload format invalid.
HOPELESS = {0x95, 0x97, 0x99}


class Delivery:
    """The sending decisions of one device's MQTT thread (not thread-safe: that thread only)."""

    def __init__(self, outbox: Outbox, topic: str, *, mqtt5: bool, log: logging.Logger, update_topic: str = ""):
        self.outbox, self.topic, self.mqtt5, self.log = outbox, topic, mqtt5, log
        self.update_topic = update_topic  #: an update's steps: sent as stored (no ``historical``, nothing to trim)
        self.max_packet: int | None = None      # the broker's Maximum Packet Size, from the CONNACK
        self.trimmed = 0
        self._strikes: tuple[int | None, int] = (None, 0)

    def connected(self, properties) -> None:
        """Read the broker's Maximum Packet Size from the CONNACK properties (MQTT 5; None for 3.1.1)."""
        size = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
        self.max_packet = size if isinstance(size, int) and size > 0 else None

    def payload(self, msg: Message, historical: bool) -> bytes | None:
        """The bytes to publish for ``msg``, trimmed to the broker's packet size; None if it was set aside."""
        if msg.topic == self.update_topic and self.update_topic:
            return msg.payload
        if msg.topic != self.topic:
            return self.set_aside(msg.id, f"its topic {msg.topic!r} is not this device's drift topic {self.topic}")
        try:
            message = json.loads(msg.payload)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            return self.set_aside(msg.id, "its payload is not a JSON object")
        stored = msg.payload if msg.payload.endswith(b"}") else dumps(message)
        payload = with_historical(stored, historical)
        limit = self.max_packet
        if limit is None or publish_size(msg.topic, len(payload), self.mqtt5) <= limit:
            return payload
        trimmed = trim_errors(payload, lambda b: publish_size(msg.topic, len(b), self.mqtt5) <= limit)
        if trimmed is None:
            size = publish_size(msg.topic, len(payload), self.mqtt5)
            return self.set_aside(msg.id, f"a {size}-byte packet is over the broker's maximum packet size ({limit} "
                                          "bytes), even without its error messages; raise max_packet_size on the "
                                          "broker")
        self.trimmed += 1
        self.log.warning("MQTT: drift window %d was %d bytes, over the broker's maximum packet size (%d); sent "
                         "with its error messages trimmed (its counts are whole)", msg.id, len(payload), limit)
        return trimmed

    def refused(self, msg_id: int, reason_code) -> bool:
        """A PUBACK with a failure: True if it was set aside (hopeless), False if it should be sent again."""
        if reason_code.value not in HOPELESS:
            return False
        self.set_aside(msg_id, f"the broker refused it ({reason_code})")
        return True

    def lost(self, inflight: dict[int, int], acked: int) -> None:
        """The connection was lost with ``inflight`` (paho mid -> outbox id) unacknowledged, ``acked`` acked on it."""
        if not inflight or acked:
            self._strikes = (None, 0)
            return
        oldest = min(inflight.values())
        strikes = self._strikes[1] + 1 if self._strikes[0] == oldest else 1
        self._strikes = (oldest, strikes)
        if strikes >= STRIKES:
            self._strikes = (None, 0)
            self.set_aside(oldest, f"the broker closed the connection each of the {strikes} times it was sent and "
                                   "acknowledged nothing (over its maximum packet size?)")

    def set_aside(self, msg_id: int, reason: str) -> None:
        """Quarantine ``msg_id`` (logged by the outbox); if even that fails, it is only skipped on this connection."""
        try:
            self.outbox.quarantine(msg_id, reason)
        except OutboxError as exc:
            self.log.error("MQTT: window %d cannot be sent (%s) nor moved aside (%s); skipped on this connection",
                           msg_id, reason, exc)
        return None


def with_historical(payload: bytes, historical: bool) -> bytes:
    """The stored envelope (a JSON object) with ``historical`` appended as its last key."""
    return payload[:-1] + (b',"historical":true}' if historical else b',"historical":false}')
