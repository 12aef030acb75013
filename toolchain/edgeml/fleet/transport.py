"""paho's MQTT client as the controller uses it: fewer system calls and objects per message.

:class:`Client` is paho's ``Client`` with two changes, both measured on a
controller draining thousands of windows a second: its socket is a
:class:`ReadAhead`, and the PUBLISHes it takes go straight to a ``take``
callback (figures in ``bench/results/ingest.md``). Everything else (connecting,
sessions, keep-alive, TLS, acknowledgements) is paho's.
"""

from __future__ import annotations

import select

import paho.mqtt.client as mqtt

#: How long a run of held packets may wait for the socket to take them before the connection counts as lost.
WRITE_TIMEOUT = 10.0


class Client(mqtt.Client):
    """paho's client on a :class:`ReadAhead` socket, handing the PUBLISHes the controller takes straight to ``take``.

    paho turns each PUBLISH into an :class:`~paho.mqtt.client.MQTTMessage`
    (with a Properties object, a message-info object and its Condition) and
    looks up the callbacks under two locks: ~40 % of its network thread's time
    here (py-spy). An MQTT 5 QoS 1 PUBLISH without properties (what Mosquitto delivers
    to the controller) is parsed here and handed to ``take(topic, payload,
    mid, qos)``; any other packet (QoS 0 or 2, properties, a topic that is not
    UTF-8, a malformed one) takes paho's own path to ``on_message``.
    """

    take = None

    def _create_socket(self):
        return ReadAhead(super()._create_socket(), self)

    def _handle_publish(self):
        take, packet, header = self.take, self._in_packet["packet"], self._in_packet["command"]
        if take is not None and (header & 0x06) == 0x02 and self._protocol == mqtt.MQTTv5 and self._manual_ack:
            try:
                end = 2 + (packet[0] << 8 | packet[1])
                if len(packet) > end + 2 and packet[end + 2] == 0:  # the property length: no properties
                    topic = packet[2:end].decode("utf-8")
                    take(topic, bytes(packet[end + 3:]), packet[end] << 8 | packet[end + 1], 1)
                    return mqtt.MQTT_ERR_SUCCESS
            except (IndexError, UnicodeDecodeError):
                pass  # paho's own path says what is wrong
        return super()._handle_publish()


class ReadAhead:
    """A socket that reads ahead and writes a run of packets at once.

    paho reads each packet with three or more ``recv`` calls (its first
    byte, its length a byte at a time, the rest) and writes each PUBACK with
    a ``send`` of its own: at thousands of messages a second, the system
    calls cost more than the messages. This reads up to 64 KiB at a time and
    hands paho what it asks for from that; ``pending()`` tells paho's loop
    that bytes are waiting without a ``select`` (as paho does for TLS). A
    ``send`` while more packets are queued behind it is held and written with
    the last of the run.
    """

    READ = 65536

    def __init__(self, sock, client: mqtt.Client):
        self._sock, self._client = sock, client
        self._data, self._at = b"", 0
        self._held: list[bytes] = []

    def recv(self, size: int) -> bytes:
        if self._at >= len(self._data):
            data = self._sock.recv(max(size, self.READ))
            if len(data) <= size:
                return data
            self._data, self._at = data, 0
        start, self._at = self._at, min(self._at + size, len(self._data))
        return self._data[start:self._at]

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._data) - self._at + inner

    def send(self, data) -> int:
        if self._client._out_packet:  # more packets follow this one in the same write
            self._held.append(bytes(data))
            return len(data)
        if self._held:
            self._held.append(bytes(data))
            self._write_all(b"".join(self._held))
            self._held = []
            return len(data)
        return self._sock.send(data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self._sock.send(view):]
            except BlockingIOError:
                if not select.select([], [self._sock], [], WRITE_TIMEOUT)[1]:
                    raise TimeoutError("the broker took no data for 10 s") from None

    def __getattr__(self, name):
        return getattr(self._sock, name)
