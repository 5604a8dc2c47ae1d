"""Triton's statistics extension: ``GET /v2/models/{name}[/versions/{v}]/stats``.

One model (the pipeline), in Triton's shape: counts and cumulative nanoseconds.
``success``/``fail`` and ``compute_input`` (reading and parsing the request) and
``compute_output`` (building and encoding the response) are measured by the HTTP
front-end; ``compute_infer`` (``predict`` time, summed over every stage's batches)
and ``execution_count`` (batches) come from the engine's Prometheus histograms;
``queue`` (time waiting in stage queues) from the engine's per-stage samples
(:meth:`Engine.stats`, the last 100,000 visits per stage since the last reset).
"""

from __future__ import annotations

import time
from typing import Any

from inferline.engine._engine import Engine

__all__ = ["ModelStats"]


def _pair(count: int, ns: float) -> dict[str, int]:
    return {"count": int(count), "ns": int(ns)}


class ModelStats:
    """Counters the front-end keeps per answered inference request."""

    __slots__ = ("fail", "fail_ns", "input_ns", "last_ms", "output_ns", "success", "success_ns")

    def __init__(self) -> None:
        self.success = self.fail = 0
        self.success_ns = self.fail_ns = self.input_ns = self.output_ns = 0
        self.last_ms = 0

    def record(self, ok: bool, total_ns: int, input_ns: int, output_ns: int) -> None:
        """One request answered (``ok``: 200) after ``total_ns`` in the front-end."""
        if ok:
            self.success += 1
            self.success_ns += total_ns
            self.input_ns += input_ns
            self.output_ns += output_ns
            self.last_ms = time.time_ns() // 1_000_000
        else:
            self.fail += 1
            self.fail_ns += total_ns

    def render(self, engine: Engine, name: str, version: str) -> dict[str, Any]:
        registry = engine.metrics.registry
        executions = 0.0
        infer_s = 0.0
        for stage in engine.pipeline.stage_names:
            labels = {"stage": stage}
            executions += (
                registry.get_sample_value("inferline_stage_service_seconds_count", labels) or 0.0
            )
            infer_s += (
                registry.get_sample_value("inferline_stage_service_seconds_sum", labels) or 0.0
            )
        queue_s = 0.0
        visits = 0
        for stage in engine.stats()["stages"].values():
            mean = stage["queue_wait_s"]["mean"]
            if mean is not None:
                queue_s += mean * stage["visits"]
                visits += stage["visits"]
        n = self.success
        return {
            "model_stats": [
                {
                    "name": name,
                    "version": version,
                    "last_inference": self.last_ms,
                    "inference_count": n,
                    "execution_count": int(executions),
                    "inference_stats": {
                        "success": _pair(n, self.success_ns),
                        "fail": _pair(self.fail, self.fail_ns),
                        "queue": _pair(visits, queue_s * 1e9),
                        "compute_input": _pair(n, self.input_ns),
                        "compute_infer": _pair(int(executions), infer_s * 1e9),
                        "compute_output": _pair(n, self.output_ns),
                        "cache_hit": _pair(0, 0),
                        "cache_miss": _pair(0, 0),
                    },
                    "batch_stats": [],
                }
            ]
        }
