"""Open-loop replay of a trace against a running engine (``inferline replay``).

Send times follow the trace and never wait for replies: each query goes out on an idle
keep-alive connection, or on a new one when all are busy. A small HTTP/1.1 client on
asyncio protocols keeps the sender's own cost per query to tens of microseconds, so
that on a 2-core machine the load generator does not become the bottleneck it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from inferline.engine._errors import EngineError, UnreachableError
from inferline.engine._stage import DATATYPES
from inferline.errors import ConfigError

__all__ = [
    "ReplayResult",
    "answered_path",
    "default_body",
    "discover_model",
    "parse_input_option",
    "replay",
    "replay_summary",
]

#: Status recorded for a query that got no HTTP answer.
NO_ANSWER = 0
TIMED_OUT = -1


@dataclass(frozen=True)
class ReplayResult:
    """Per-query records of one replay (times in seconds from the replay's start)."""

    scheduled_s: npt.NDArray[np.float64]
    sent_s: npt.NDArray[np.float64]
    latency_s: npt.NDArray[np.float64]  # NaN when no answer came
    status: npt.NDArray[np.int64]  # HTTP status; 0 = connection failed, -1 = timed out
    errors: dict[int, str] = field(default_factory=dict)  # query -> error message
    slo_s: float = 1.0
    #: per query, the stages it visited as the engine answered (``parameters.path``,
    #: names joined by ``+`` in visit order); None without an answer that says
    paths: list[str | None] = field(default_factory=list)

    @property
    def outcome(self) -> list[str]:
        out = []
        for code, latency in zip(self.status.tolist(), self.latency_s.tolist(), strict=True):
            if code == 200:
                out.append("ok" if latency <= self.slo_s else "late")
            elif code == 503:
                out.append("shed")
            elif code == TIMED_OUT:
                out.append("timeout")
            elif code == NO_ANSWER:
                out.append("failed")
            else:
                out.append("error")
        return out

    def write_csv(self, path: str | Path) -> None:
        with Path(path).open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["query", "scheduled_s", "sent_s", "latency_s", "status", "outcome", "error"]
            )
            for i, outcome in enumerate(self.outcome):
                latency = self.latency_s[i]
                writer.writerow(
                    [
                        i,
                        f"{self.scheduled_s[i]:.6f}",
                        f"{self.sent_s[i]:.6f}",
                        "" if math.isnan(latency) else f"{latency:.6f}",
                        int(self.status[i]),
                        outcome,
                        self.errors.get(i, ""),
                    ]
                )


def replay_summary(result: ReplayResult) -> dict[str, Any]:
    """P50/P99 of successful queries, miss rate (late or failed), errors, achieved rate."""
    status = result.status
    sent = int(status.size)
    ok = status == 200
    n_ok = int(ok.sum())
    lat_ok = result.latency_s[ok]
    done_s = result.sent_s + np.nan_to_num(result.latency_s, nan=-np.inf)
    span_s = float(done_s[ok].max() - result.sent_s.min()) if n_ok else 0.0
    send_span_s = float(result.sent_s.max() - result.sent_s.min()) if sent > 1 else 0.0
    misses = sent - int((lat_ok <= result.slo_s).sum())
    codes, counts = np.unique(status, return_counts=True)
    return {
        "sent": sent,
        "ok": n_ok,
        "errors": sent - n_ok,
        "shed": int((status == 503).sum()),
        "timeouts": int((status == TIMED_OUT).sum()),
        "p50_s": float(np.percentile(lat_ok, 50)) if n_ok else None,
        "p99_s": float(np.percentile(lat_ok, 99)) if n_ok else None,
        "max_s": float(lat_ok.max()) if n_ok else None,
        "miss_rate": misses / sent if sent else 0.0,
        "slo_s": result.slo_s,
        "achieved_rate": n_ok / span_s if span_s > 0 else 0.0,
        "offered_rate": (sent - 1) / send_span_s if send_span_s > 0 else 0.0,
        "send_lag_p99_s": float(np.percentile(result.sent_s - result.scheduled_s, 99))
        if sent
        else 0.0,
        "status_counts": {str(int(c)): int(n) for c, n in zip(codes, counts, strict=True)},
    }


# --- request bodies --------------------------------------------------------------------------


def default_body() -> bytes:
    """A one-number request, for pipelines that accept any input (the no-op demo)."""
    return b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[0.0]}]}'


def parse_input_option(text: str) -> dict[str, Any]:
    """``NAME:DATATYPE:JSON`` → an OIP input tensor; the JSON value's nesting is its shape."""
    name, sep1, rest = text.partition(":")
    datatype, sep2, raw = rest.partition(":")
    if not (sep1 and sep2 and name):
        raise ConfigError(
            f"expected NAME:DATATYPE:JSON (e.g. 'text:BYTES:[\"hello\"]'), got {text!r}",
            source="<argument>",
            field="--input",
        )
    if datatype not in DATATYPES:
        raise ConfigError(
            f"unknown datatype {datatype!r}; use one of {', '.join(sorted(DATATYPES))}",
            source="<argument>",
            field="--input",
        )
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{raw!r} is not JSON ({exc})", source="<argument>", field="--input"
        ) from None
    data = value if isinstance(value, list) else [value]
    shape: list[int] = []
    node: Any = data
    while isinstance(node, list):
        shape.append(len(node))
        node = node[0] if node else None
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def discover_model(url: str, timeout_s: float = 5.0) -> str:
    """The model an InferLine engine at ``url`` serves (from its control status)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/v2/control/status", timeout=timeout_s) as r:
            return str(json.load(r)["model"])
    except urllib.error.HTTPError as exc:  # it answered, but not as an InferLine engine
        raise EngineError(
            f"cannot ask {url} which model it serves ({exc}); pass --model NAME"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise UnreachableError(url, getattr(exc, "reason", None) or exc) from None
    except (ValueError, KeyError) as exc:
        raise EngineError(
            f"cannot ask {url} which model it serves ({exc!r}); pass --model NAME"
        ) from None


# --- the client ---------------------------------------------------------------------------------


def answered_path(body: bytes) -> str | None:
    """The ``parameters.path`` of an InferLine answer, without parsing the whole body
    (the engine writes ``parameters`` before ``outputs``)."""
    start = body.find(_PATH_MARK)
    if start < 0:
        return None
    start += len(_PATH_MARK)
    end = body.find(b'"', start)
    return body[start:end].decode() if end >= 0 else None


_PATH_MARK = b'"parameters":{"path":"'


class _Recorder:
    __slots__ = (
        "errors",
        "finished",
        "latency_s",
        "outstanding",
        "paths",
        "sent_s",
        "status",
        "t0",
    )

    def __init__(self, n: int, t0: float) -> None:
        self.t0 = t0
        self.sent_s = np.full(n, np.nan)
        self.latency_s = np.full(n, np.nan)
        self.status = np.full(n, TIMED_OUT, dtype=np.int64)
        self.errors: dict[int, str] = {}
        self.paths: list[str | None] = [None] * n
        self.outstanding = 0
        self.finished: asyncio.Future[None] | None = None

    def answered(self, i: int, status: int, now: float, error: str | None) -> None:
        self.latency_s[i] = now - self.t0 - self.sent_s[i]
        self.status[i] = status
        if error:
            self.errors[i] = error
        self.outstanding -= 1
        if self.outstanding == 0 and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.current = -1
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, i: int) -> None:
        assert self.transport is not None
        self.current = i
        self.client.recorder.sent_s[i] = time.perf_counter() - self.client.recorder.t0
        self.transport.write(self.client.request_for(i))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        start = head.find(b"content-length:")
        length = 0
        if start >= 0:
            stop = head.find(b"\r\n", start)
            length = int(head[start + 15 : stop if stop >= 0 else len(head)])
        if len(buffer) < end + 4 + length:
            return
        now = time.perf_counter()
        status = int(head[9:12])
        body = bytes(buffer[end + 4 : end + 4 + length])
        del buffer[: end + 4 + length]
        i, self.current = self.current, -1
        error = None
        if status == 200 and i >= 0:
            self.client.recorder.paths[i] = answered_path(body)
        if status != 200:
            try:
                error = str(json.loads(body).get("error", body[:200].decode(errors="replace")))
            except (ValueError, AttributeError):
                error = body[:200].decode(errors="replace")
        if i >= 0:
            self.client.recorder.answered(i, status, now, error)
        if b"connection: close" in head:
            if self.transport is not None:
                self.transport.close()
        else:
            self.client.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self in self.client.idle:
            self.client.idle.remove(self)
        if self.current >= 0:
            i, self.current = self.current, -1
            message = f"connection lost: {exc}" if exc else "connection closed before the answer"
            self.client.recorder.answered(i, NO_ANSWER, time.perf_counter(), message)


class _Client:
    def __init__(
        self, host: str, port: int, path: str, bodies: Sequence[bytes], recorder: _Recorder
    ) -> None:
        self.host = host
        self.port = port
        self.recorder = recorder
        self.idle: list[_Connection] = []
        self.opened: list[_Connection] = []
        self.connecting = 0
        self._requests = [
            (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n"
            ).encode()
            + b
            for b in bodies
        ]
        self._tasks: set[asyncio.Task[None]] = set()

    def request_for(self, i: int) -> bytes:
        return self._requests[i % len(self._requests)]

    async def open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        self.opened.append(conn)
        return conn

    def send(self, i: int) -> None:
        self.recorder.outstanding += 1
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.send(i)
                return
        task = asyncio.get_running_loop().create_task(self._send_on_new(i))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_on_new(self, i: int) -> None:
        try:
            conn = await self.open()
        except OSError as exc:
            now = time.perf_counter()
            self.recorder.sent_s[i] = now - self.recorder.t0
            self.recorder.answered(i, NO_ANSWER, now, f"cannot connect: {exc}")
            return
        conn.send(i)

    def close(self) -> None:
        """Close every connection, busy ones too (their queries stay timed out)."""
        for conn in self.opened:
            conn.current = -1
            if conn.transport is not None:
                conn.transport.close()
        self.opened.clear()
        self.idle.clear()
        for task in self._tasks:
            task.cancel()


def _split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            f"expected http://HOST:PORT, got {url!r}", source="<argument>", field="URL"
        )
    return parts.hostname, parts.port or 80


async def replay_async(
    url: str,
    arrival_s: Sequence[float] | npt.NDArray[np.float64],
    bodies: Sequence[bytes],
    *,
    model: str,
    slo_s: float,
    timeout_s: float = 30.0,
    warm_connections: int = 32,
) -> ReplayResult:
    """Send query ``i`` at ``arrival_s[i] - arrival_s[0]`` seconds from now (open loop)."""
    host, port = _split_url(url)
    arrivals = np.asarray(arrival_s, dtype=np.float64)
    if arrivals.size == 0:
        raise ConfigError("the trace holds no arrivals", source="<trace>")
    if not bodies:
        bodies = [default_body()]
    offsets = arrivals - arrivals[0]
    recorder = _Recorder(arrivals.size, 0.0)
    client = _Client(host, port, f"/v2/models/{model}/infer", bodies, recorder)
    loop = asyncio.get_running_loop()
    try:
        for _ in range(min(warm_connections, arrivals.size)):
            client.idle.append(await client.open())
    except OSError as exc:
        client.close()
        raise UnreachableError(url, exc.strerror or exc) from None
    t0 = time.perf_counter() + 0.01
    recorder.t0 = t0
    n = offsets.size
    i = 0
    try:
        while i < n:
            now = time.perf_counter() - t0
            while i < n and offsets[i] <= now:
                client.send(i)
                i += 1
            if i < n:
                await asyncio.sleep(max(0.0, offsets[i] - (time.perf_counter() - t0)))
        if recorder.outstanding:  # only now: between sends it may touch zero
            recorder.finished = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(recorder.finished), timeout_s)
    finally:
        client.close()
    timed_out = recorder.status == TIMED_OUT
    for k in np.flatnonzero(timed_out).tolist():
        recorder.errors[k] = f"no answer within {timeout_s:g} s of the last send"
    return ReplayResult(
        scheduled_s=offsets,
        sent_s=recorder.sent_s,
        latency_s=np.where(timed_out, np.nan, recorder.latency_s),
        status=recorder.status,
        errors=recorder.errors,
        slo_s=slo_s,
        paths=recorder.paths,
    )


def replay(
    url: str,
    arrival_s: Sequence[float] | npt.NDArray[np.float64],
    bodies: Sequence[bytes] = (),
    *,
    slo_s: float,
    model: str | None = None,
    timeout_s: float = 30.0,
) -> ReplayResult:
    """Blocking :func:`replay_async` on its own event loop (uvloop when installed)."""
    from inferline.engine._server import run_loop

    name = model or discover_model(url)
    result: ReplayResult = run_loop(
        replay_async(url, arrival_s, bodies, model=name, slo_s=slo_s, timeout_s=timeout_s)
    )
    return result
