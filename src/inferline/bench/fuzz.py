"""``inferline bench fuzz``: malformed requests against a served engine get 4xx, never 5xx.

Serves a one-stage no-op pipeline in a child process (``inferline serve`` on 127.0.0.1),
sends it ``requests`` malformed HTTP requests, each on its own connection and written
byte for byte (mutated valid bodies, wrong JSON types, absurd shapes, deep nesting,
invalid UTF-8, truncated bodies, bad Content-Length, bad methods and paths, binary
tensor data with wrong lengths), counts the answers by status class and the connections
dropped without an answer, then checks that valid requests are still answered 200.

:func:`malformed_case` is the generator; the unit tier's property test feeds it
Hypothesis-controlled randomness.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

__all__ = [
    "FUZZ_MODEL",
    "FuzzCase",
    "fuzz_bundle",
    "malformed_case",
    "run_fuzz_benchmark",
    "tables",
    "valid_body",
]

#: The name of the one-stage no-op pipeline the benchmark serves.
FUZZ_MODEL = "fuzz"


@dataclass(frozen=True, slots=True)
class FuzzCase:
    """One HTTP request: ``headers`` exclude Host; Content-Length is added unless present."""

    kind: str
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def valid_body(rng: random.Random) -> dict[str, Any]:
    """A valid infer request for the no-op model (any named inputs are accepted)."""
    n = rng.randint(1, 4)
    return {
        "id": str(rng.randint(0, 999)),
        "inputs": [
            {
                "name": "x",
                "shape": [n],
                "datatype": "FP32",
                "data": [rng.random() for _ in range(n)],
            },
            {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["hello"]},
        ],
        "outputs": [{"name": "x"}],
    }


_WEIRD: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**64,
    1e308,
    "",
    "x" * 300,
    [],
    [None],
    {},
    {"a": []},
    [[1, 2], [3]],
    "FP32 ",
    ["FP32"],
)


def _weird(rng: random.Random) -> Any:
    choice = rng.randrange(4)
    if choice == 0:
        return _nest(rng.randint(2, 200), rng.random() < 0.5)
    if choice == 1:
        return rng.choice([rng.randint(-(2**70), 2**70), rng.random() * 1e300, -0.0])
    return rng.choice(_WEIRD)


def _nest(depth: int, as_list: bool) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


def _mutate(rng: random.Random, doc: dict[str, Any]) -> dict[str, Any]:
    """Replace one field at some level with a value of the wrong type or an absurd one."""
    target = rng.randrange(9)
    entry = doc["inputs"][rng.randrange(len(doc["inputs"]))]
    if target == 0:
        doc["inputs"] = _weird(rng)
    elif target == 1:
        entry["datatype"] = _weird(rng) if rng.random() < 0.7 else rng.choice(["fp32", "BF16"])
    elif target == 2:
        entry["shape"] = rng.choice(
            [
                [10**12],
                [-1],
                [1] * 40,
                [2**63],
                ["a"],
                [1.5],
                [0, 10**30],
                [2**31, 2**31],
                _weird(rng),
            ]
        )
    elif target == 3:
        entry["data"] = _weird(rng)
    elif target == 4:
        entry["name"] = _weird(rng)
    elif target == 5:
        entry.pop(rng.choice(["name", "shape", "datatype", "data"]))
    elif target == 6:
        doc[rng.choice(["id", "outputs", "parameters"])] = _weird(rng)
    elif target == 7:
        entry["parameters"] = rng.choice(
            [_weird(rng), {"binary_data_size": _weird(rng)}, {"binary_data_size": 10**15}]
        )
    else:
        doc["outputs"] = [{"name": "x", "parameters": {"binary_data": _weird(rng)}}]
    return doc


_INFER = f"/v2/models/{FUZZ_MODEL}/infer"


def _binary_case(rng: random.Random) -> FuzzCase:
    n = rng.randint(1, 8)
    payload = struct.pack(f"<{n}f", *(rng.random() for _ in range(n)))
    claimed = rng.choice([len(payload) - 4, len(payload) + 4, 0, len(payload) * 1000, -4])
    datatype = rng.choice(["FP32", "BYTES", "BOOL", "INT64"])
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [n],
                    "datatype": datatype,
                    "parameters": {
                        "binary_data_size": claimed if rng.random() < 0.7 else len(payload)
                    },
                }
            ]
        }
    ).encode()
    header = rng.choice(
        [len(head), len(head) - 3, len(head) + 5, -1, 10**9, "abc", len(head) + len(payload) + 1]
    )
    extra = rng.choice([b"", b"\x00\x01", payload])
    return FuzzCase(
        "binary lengths",
        "POST",
        _INFER,
        head + payload + extra,
        (("Inference-Header-Content-Length", str(header)),),
    )


def _bytes_case(rng: random.Random) -> FuzzCase:
    raw = json.dumps(valid_body(rng)).encode()
    choice = rng.randrange(4)
    if choice == 0:
        raw = raw[: rng.randrange(len(raw))]  # truncated JSON
    elif choice == 1:  # invalid UTF-8 spliced in
        k = rng.randrange(len(raw))
        raw = raw[:k] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"]) + raw[k:]
    elif choice == 2:
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    else:
        raw = b"[" * rng.randint(65, 100_000) + b"]" * rng.randint(0, 3)
    return FuzzCase("bytes", "POST", _INFER, raw)


def _http_case(rng: random.Random) -> FuzzCase:
    body = json.dumps(valid_body(rng)).encode()
    choice = rng.randrange(4)
    if choice == 0:
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"])
        return FuzzCase("method", method, _INFER, body)
    if choice == 1:
        path = rng.choice(
            [
                "/",
                "/v2/models/",
                "/v2/models//infer",
                f"/v2/models/{FUZZ_MODEL}/versions/2/infer",
                f"/v2/models/{FUZZ_MODEL}/versions//infer",
                f"/v2/models/{FUZZ_MODEL}/infer/extra",
                "/v2/models/%00/infer",
                "/v2/" + "a/" * 500,
                "/v2/models/\u00e9/stats",
                "/v3",
                "/metrics/x",
            ]
        )
        return FuzzCase("path", rng.choice(["GET", "POST"]), path, body)
    if choice == 2:
        length = rng.choice(["abc", "-5", "1e3", str(len(body) - 7), "99999999999"])
        return FuzzCase("content-length", "POST", _INFER, body, (("Content-Length", length),))
    return FuzzCase("oversize", "POST", _INFER, b'{"inputs": [' + b" " * (9 << 20) + b"]}")


def malformed_case(rng: random.Random) -> FuzzCase:
    """One malformed request, drawn with ``rng``."""
    choice = rng.randrange(10)
    if choice < 5:
        doc = _mutate(rng, valid_body(rng))
        try:
            body = json.dumps(doc).encode()
        except (ValueError, RecursionError):
            body = b"{}"
        return FuzzCase("mutated body", "POST", _INFER, body)
    if choice < 7:
        return _bytes_case(rng)
    if choice < 8:
        return _binary_case(rng)
    return _http_case(rng)


# --- over real HTTP -------------------------------------------------------------------------


def _raw_request(port: int, case: FuzzCase, timeout_s: float) -> int | None:
    """Send ``case`` byte for byte on a new connection; its status, or None if dropped."""
    names = {k.lower() for k, _ in case.headers}
    lines = [f"{case.method} {case.path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in case.headers]
    if "content-length" not in names:
        lines.append(f"Content-Length: {len(case.body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        with contextlib.suppress(OSError):  # it may answer (413) and close before reading all
            sock.sendall(head + case.body)
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            response.read()
        except (OSError, http.client.HTTPException):
            return None
        return response.status


def fuzz_bundle(folder: Path) -> tuple[Path, Path]:
    """Write the one-stage no-op pipeline (model ``fuzz``) and its plan into ``folder``."""
    from inferline.engine.testing import write_bundle

    return write_bundle(
        folder,
        FUZZ_MODEL,
        {"echo": "inferline.engine.testing:NoOp"},
        [],
        {"echo": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1}},
    )


def run_fuzz_benchmark(
    requests: int = 2000,
    *,
    valid_after: int = 50,
    seed: int = 0,
    timeout_s: float = 10.0,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Serve the no-op model, send ``requests`` malformed requests, then valid ones."""
    from inferline.engine.process import start_engine

    rng = random.Random(seed)
    statuses: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    five_xx: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="inferline-fuzz-") as tmp:
        pipeline, plan = fuzz_bundle(Path(tmp))
        with start_engine(pipeline, plan) as served:
            started = time.perf_counter()
            for i in range(requests):
                case = malformed_case(rng)
                status = _raw_request(served.port, case, timeout_s)
                key = "dropped" if status is None else f"{status // 100}xx"
                statuses[key] += 1
                by_kind.setdefault(case.kind, Counter())[key] += 1
                if status is not None and status >= 500 and len(five_xx) < 10:
                    five_xx.append(
                        {
                            "kind": case.kind,
                            "status": status,
                            "body": case.body[:200].decode(errors="replace"),
                        }
                    )
                if on_progress is not None:
                    on_progress(i + 1)
            elapsed_s = time.perf_counter() - started
            ok = 0
            for _ in range(valid_after):
                body = json.dumps(valid_body(rng))
                code, _ = served.request("POST", _INFER, body)
                ok += code == 200
            alive = served.process.poll() is None
    return {
        "requests": requests,
        "seed": seed,
        "elapsed_s": round(elapsed_s, 3),
        "status_classes": {k: statuses.get(k, 0) for k in ("2xx", "4xx", "5xx", "dropped")},
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "examples_5xx": five_xx,
        "valid_after": {"sent": valid_after, "answered_200": ok},
        "server_alive": alive,
        "passed": statuses.get("5xx", 0) == 0
        and statuses.get("dropped", 0) == 0
        and ok == valid_after
        and alive,
    }


def tables(figures: dict[str, Any]) -> list[Table]:
    """The readable rendering: status classes per kind of malformed request."""
    table = Table(
        title=f"fuzz: {figures['requests']} malformed requests in {figures['elapsed_s']:.1f} s "
        f"(seed {figures['seed']})"
    )
    table.add_column("kind")
    for key in ("2xx", "4xx", "5xx", "dropped"):
        table.add_column(key, justify="right")
    for kind, counts in figures["by_kind"].items():
        table.add_row(kind, *(str(counts.get(k, 0)) for k in ("2xx", "4xx", "5xx", "dropped")))
    totals = figures["status_classes"]
    table.add_row("all", *(str(totals[k]) for k in ("2xx", "4xx", "5xx", "dropped")), style="bold")
    after = figures["valid_after"]
    table.caption = (
        f"valid requests after: {after['answered_200']}/{after['sent']} answered 200; "
        f"server alive: {figures['server_alive']}; {'PASS' if figures['passed'] else 'FAIL'}"
    )
    return [table]
