"""Front-end ↔ replica messages: 4-byte big-endian length, then a pickle (protocol 5).

Measured (examples/engine-demo/measure_ipc.py, docs/engine.md): an AF_UNIX socketpair
with this framing has the lowest round trip of socketpair, multiprocessing.Pipe and
pyzmq PAIR, and the asyncio side reads it without blocking the event loop.

Messages are tuples whose first item is the kind:

front-end → replica: ``("batch", batch_id, inputs)``, ``("stop",)``
replica → front-end: ``("ready", info)``, ``("fatal", message)``,
``("done", batch_id, results, predict_s, predict_cpu_s)``, ``("failed", batch_id, message)``;
each result is ``(value, routes, tensors, error)``.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

__all__ = ["FrameReader", "SocketReader", "pack"]

_HEADER = struct.Struct("!I")


def pack(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=5)
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Incremental decoder for a byte stream of frames (the asyncio side)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        end = len(buffer)
        with memoryview(buffer) as view:
            while end - start >= 4:
                (size,) = _HEADER.unpack_from(view, start)
                if end - start - 4 < size:
                    break
                messages.append(pickle.loads(view[start + 4 : start + 4 + size]))
                start += 4 + size
        if start:
            del buffer[:start]
        return messages


class SocketReader:
    """Blocking frame reader for the replica side: usually one ``recv`` per message."""

    __slots__ = ("_frames", "_pending", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._frames = FrameReader()
        self._pending: list[Any] = []

    def next(self) -> Any:
        """The next message; None once the other end has closed."""
        while not self._pending:
            data = self._sock.recv(1 << 16)
            if not data:
                return None
            self._pending = self._frames.feed(data)
            self._pending.reverse()
        return self._pending.pop()
