"""``inferline bench wire``: one 224×224×3 FP32 image as JSON against binary tensor data.

Serves a one-stage no-op pipeline (it answers the image back), sends ``queries``
requests one after another on a kept-alive connection in each encoding, and reports
bytes on the wire per request and response, the median latency, and the server's CPU
seconds per query (front-end plus replica processes, from /proc).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from inferline.bench.fuzz import FUZZ_MODEL, fuzz_bundle

__all__ = ["run_wire_benchmark", "tables"]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SHAPE = (224, 224, 3)


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS_PER_S


def _bodies(image: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    tensor = {"name": "image", "shape": list(image.shape), "datatype": "FP32"}
    as_json = json.dumps(
        {"inputs": [{**tensor, "data": image.reshape(-1).tolist()}]}, separators=(",", ":")
    ).encode()
    raw = image.astype("<f4").tobytes()
    head = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        },
        separators=(",", ":"),
    ).encode()
    return {
        "json": (as_json, {"Content-Type": "application/json"}),
        "binary": (
            head + raw,
            {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(head)),
            },
        ),
    }


def run_wire_benchmark(queries: int = 50, *, seed: int = 0) -> dict[str, Any]:
    """Serve the no-op model and time ``queries`` image requests per encoding."""
    from inferline.engine.process import start_engine

    image = np.random.default_rng(seed).random(SHAPE, dtype=np.float32)
    modes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="inferline-wire-") as tmp:
        pipeline, plan = fuzz_bundle(Path(tmp))
        with start_engine(pipeline, plan, "--max-body-bytes", str(16 << 20)) as served:
            pids = [served.process.pid, *served.replica_pids("echo")]
            conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
            path = f"/v2/models/{FUZZ_MODEL}/infer"
            for mode, (body, headers) in _bodies(image).items():
                for _ in range(3):  # warm-up
                    conn.request("POST", path, body, headers)
                    conn.getresponse().read()
                latencies: list[float] = []
                cpu_before = _cpu_s(pids)
                answer = b""
                for _ in range(queries):
                    t0 = time.perf_counter()
                    conn.request("POST", path, body, headers)
                    response = conn.getresponse()
                    answer = response.read()
                    latencies.append(time.perf_counter() - t0)
                    if response.status != 200:
                        raise RuntimeError(f"{mode}: {response.status} {answer[:200]!r}")
                cpu_s = _cpu_s(pids) - cpu_before
                modes[mode] = {
                    "request_bytes": len(body),
                    "response_bytes": len(answer),
                    "latency_p50_ms": round(statistics.median(latencies) * 1e3, 2),
                    "server_cpu_ms_per_query": round(cpu_s / queries * 1e3, 2),
                }
            conn.close()
    return {"shape": list(SHAPE), "datatype": "FP32", "queries": queries, "modes": modes}


def tables(figures: dict[str, Any]) -> list[Table]:
    """The readable rendering: one row per encoding."""
    table = Table(
        title=f"wire: one {'×'.join(map(str, figures['shape']))} FP32 tensor, "
        f"{figures['queries']} queries per encoding"
    )
    for column in ("encoding", "request bytes", "response bytes", "P50 ms", "server CPU ms/query"):
        table.add_column(column, justify="left" if column == "encoding" else "right")
    for mode, row in figures["modes"].items():
        table.add_row(
            mode,
            f"{row['request_bytes']:,}",
            f"{row['response_bytes']:,}",
            f"{row['latency_p50_ms']:.1f}",
            f"{row['server_cpu_ms_per_query']:.1f}",
        )
    return [table]
