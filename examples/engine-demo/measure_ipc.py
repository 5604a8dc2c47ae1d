"""Round-trip time of the IPC options for the engine's front-end <-> worker link.

Each option sends a pickled batch (a list of small query inputs) to a child process,
which unpickles it and sends a pickled list of results back; the parent times the
round trip. Run: ``python measure_ipc.py [--iterations N]``. pyzmq is measured
only when it is installed (it is not an InferLine dependency).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import socket
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct("!I")


def _batch(size: int) -> list[Any]:
    return [{"x": ("FP32", [1], [0.5])} for _ in range(size)]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _socket_child(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    while True:
        try:
            (n,) = _HEADER.unpack(_recv_exact(sock, 4))
        except EOFError:
            return
        if n == 0:  # stop
            return
        items = pickle.loads(_recv_exact(sock, n))
        body = pickle.dumps([(i, None) for i in range(len(items))], protocol=5)
        sock.sendall(_HEADER.pack(len(body)) + body)


def _pipe_child(conn: Any) -> None:
    while True:
        items = conn.recv()
        if items is None:
            return
        conn.send([(i, None) for i in range(len(items))])


def _zmq_child(address: str) -> None:
    import zmq

    sock = zmq.Context().socket(zmq.PAIR)
    sock.connect(address)
    while True:
        items = pickle.loads(sock.recv())
        if items is None:
            return
        sock.send(pickle.dumps([(i, None) for i in range(len(items))], protocol=5))


def _time(round_trip: Callable[[], None], iterations: int) -> tuple[float, float]:
    for _ in range(200):
        round_trip()
    samples = []
    for _ in range(iterations):
        t = time.perf_counter()
        round_trip()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * len(samples))]


def measure(iterations: int, batch: int) -> dict[str, tuple[float, float]]:
    ctx = mp.get_context("fork")  # the start method does not change the link's cost
    out: dict[str, tuple[float, float]] = {}
    items = _batch(batch)

    parent, child = socket.socketpair()
    proc = ctx.Process(target=_socket_child, args=(child.fileno(),))
    proc.start()
    child.close()

    def socket_rt() -> None:
        body = pickle.dumps(items, protocol=5)
        parent.sendall(_HEADER.pack(len(body)) + body)
        (n,) = _HEADER.unpack(_recv_exact(parent, 4))
        pickle.loads(_recv_exact(parent, n))

    out["socketpair+pickle"] = _time(socket_rt, iterations)
    parent.sendall(_HEADER.pack(0))
    parent.close()
    proc.join()

    a, b = ctx.Pipe()
    proc = ctx.Process(target=_pipe_child, args=(b,))
    proc.start()

    def pipe_rt() -> None:
        a.send(items)
        a.recv()

    out["multiprocessing.Pipe"] = _time(pipe_rt, iterations)
    a.send(None)
    proc.join()

    try:
        import zmq
    except ImportError:
        return out
    address = f"ipc:///tmp/inferline-ipc-{os.getpid()}"
    zsock = zmq.Context().socket(zmq.PAIR)
    zsock.bind(address)
    proc = ctx.Process(target=_zmq_child, args=(address,))
    proc.start()

    def zmq_rt() -> None:
        zsock.send(pickle.dumps(items, protocol=5))
        pickle.loads(zsock.recv())

    out["pyzmq PAIR ipc://"] = _time(zmq_rt, iterations)
    zsock.send(pickle.dumps(None))
    proc.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20_000)
    args = parser.parse_args()
    for batch in (1, 32):
        for name, (p50, p99) in measure(args.iterations, batch).items():
            print(f"batch {batch:3d}  {name:22s} p50 {p50 * 1e6:7.1f} us  p99 {p99 * 1e6:7.1f} us")


if __name__ == "__main__":
    main()
