"""The event stream: every journal record and every worker heartbeat, on a PUB socket.

Two frames a message: the topic (the record's kind, or "heartbeat") and the JSON. A slow subscriber
loses messages at its high-water mark; it never slows nsup down.
"""

from __future__ import annotations

import msgspec
import zmq
import zmq.asyncio

from supervisor.control.server.security import Binding

_encoder = msgspec.json.Encoder()


class EventPublisher:
    def __init__(self, bindings: list[Binding]):
        self._sockets = [binding.bind(zmq.PUB) for binding in bindings]
        self.endpoints = [binding.endpoint for binding in bindings]

    def publish(self, topic: str, payload) -> None:
        frames = [topic.encode(), _encoder.encode(payload)]
        for socket in self._sockets:
            try:
                socket.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # nobody keeping up, or closed: events are best effort, the journal is the record

    def close(self) -> None:
        sockets, self._sockets = self._sockets, []  # a record journaled after this publishes nothing
        for socket in sockets:
            socket.close(linger=500)  # time for the last events (STOPPED) to reach their subscribers
