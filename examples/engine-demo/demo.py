"""Serve the text demo with its plan and replay a slice of the real Azure trace against it.

Run from the repository root: ``.venv/bin/python examples/engine-demo/demo.py``
(what ``make demo`` is meant to run for the engine). Each step is the command a user
would type; they are printed first.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from inferline.engine import start_engine
from inferline.workload import bundled_trace_path

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "text"
RATE_QPS = 100
QUERIES = 1500
SLO_S = 0.1
TEXTS = [
    "a good day",
    "the service was slow and the food was bad but the staff were nice",
    "great",
    "I love how fast and excellent this wonderful little tool is today",
    "terrible",
    "fine thanks",
]


def inferline(*args: str) -> None:
    print(f"$ inferline {shlex.join(args)}", flush=True)
    binary = Path(sys.executable).parent / "inferline"
    subprocess.run([str(binary), *args], check=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="inferline-demo-") as tmp:
        trace = Path(tmp) / "azure-100qps.csv"
        inferline(
            "trace", "load", str(bundled_trace_path()), "--rate", str(RATE_QPS), "-o", str(trace)
        )
        requests = Path(tmp) / "requests.jsonl"
        requests.write_text(
            "".join(
                json.dumps(
                    {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t]}]}
                )
                + "\n"
                for t in TEXTS
            )
        )
        print(
            f"$ inferline serve {BUNDLE} --config {BUNDLE / 'plan.yaml'} --port <free>", flush=True
        )
        with start_engine(BUNDLE, BUNDLE / "plan.yaml", "--slo-s", str(SLO_S)) as engine:
            inferline(
                "replay",
                engine.url,
                "--trace",
                str(trace),
                "--limit",
                str(QUERIES),
                "--slo-s",
                str(SLO_S),
                "--requests",
                str(requests),
                "-o",
                str(Path(tmp) / "results.csv"),
            )
            status = engine.status()
        for name, stage in status["stages"].items():
            print(f"  {name:10s} replicas {stage['ready']}  batch_size {stage['batch_size']}")


if __name__ == "__main__":
    main()
