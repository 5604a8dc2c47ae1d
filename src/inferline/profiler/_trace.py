"""Run the sample queries through the real stages: each query's path, and every stage's inputs.

The DAG is walked in topological order with the engine's semantics (a source gets the
request's tensors; a stage with one predecessor that routed the query to it gets that
output; a join gets ``{predecessor: output}`` of those that routed it), each stage's
queries going to its replica worker in batches. The result is the routing the real
outputs chose (edge counts, scale factors, the path of every sample) and the inputs
each stage saw, which the Profiler then times the stage on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inferline.pipeline import MeasuredPaths, Pipeline
from inferline.profiler._errors import ProfilerError
from inferline.profiler._harness import StageWorker
from inferline.profiler._stats import edge_counts

__all__ = ["SampleRun", "run_samples", "summarise_paths"]


@dataclass(frozen=True)
class SampleRun:
    """What running the samples produced: per-query visited stages, edge counts, inputs."""

    visited: list[frozenset[str]]
    routed: dict[tuple[str, str], int]
    inputs: dict[str, list[Any]]


async def run_samples(
    pipeline: Pipeline,
    workers: Mapping[str, StageWorker],
    requests: Sequence[Any],
    *,
    chunk: int = 16,
    on_batch: Callable[[str, int], None] | None = None,
) -> SampleRun:
    """Route every request through the DAG on ``workers`` (one per stage)."""
    n = len(requests)
    outputs: dict[str, dict[int, Any]] = {s: {} for s in pipeline.stage_names}
    senders: dict[str, dict[int, list[str]]] = {s: {} for s in pipeline.stage_names}
    visited: list[set[str]] = [set() for _ in range(n)]
    routed: dict[tuple[str, str], int] = {}
    inputs: dict[str, list[Any]] = {s: [] for s in pipeline.stage_names}
    sources = set(pipeline.sources)
    for stage in pipeline.topological_order:
        preds = pipeline.predecessors(stage)
        if stage in sources:
            queries = list(range(n))
            values = list(requests)
        else:
            queries = sorted(senders[stage])
            values = []
            for q in queries:
                routed_by = [p for p in preds if p in senders[stage][q]]
                if len(preds) > 1:
                    values.append({p: outputs[p][q] for p in routed_by})
                else:
                    values.append(outputs[routed_by[0]][q])
        inputs[stage] = values
        worker = workers[stage]
        for start in range(0, len(queries), chunk):
            batch_q = queries[start : start + chunk]
            run = await worker.run(values[start : start + chunk])
            for q, (value, routes, _tensors, error) in zip(batch_q, run.results, strict=True):
                if error is not None:
                    raise ProfilerError(
                        f"stage '{stage}' ({worker.model}) failed on sample query {q}: {error}",
                        stage=stage,
                    )
                visited[q].add(stage)
                for successor in routes:
                    routed[(stage, successor)] = routed.get((stage, successor), 0) + 1
                    senders[successor].setdefault(q, []).append(stage)
                if routes:
                    outputs[stage][q] = value
            if on_batch is not None:
                on_batch(stage, len(batch_q))
    return SampleRun([frozenset(v) for v in visited], routed, inputs)


def summarise_paths(
    pipeline: Pipeline,
    run: SampleRun,
    *,
    seed: int,
    samples_function: str,
    code_hash: str,
    samples_hash: str,
    measured_on: str,
) -> MeasuredPaths:
    """Edge probabilities (taken / visits), scale factors and the path table of a run."""
    n = len(run.visited)
    counts = edge_counts([(e.source, e.target) for e in pipeline.edges], run.visited, run.routed)
    probability = {k: (taken / visits if visits else 0.0) for k, (taken, visits) in counts.items()}
    stage_visits = {s: sum(1 for v in run.visited if s in v) for s in pipeline.stage_names}
    table: dict[tuple[str, ...], int] = {}
    sample_path = []
    for v in run.visited:
        key = tuple(sorted(v))
        sample_path.append(table.setdefault(key, len(table)))
    return MeasuredPaths(
        samples=n,
        seed=seed,
        edge_probability=probability,
        edge_counts=counts,
        scale_factors={s: c / n for s, c in stage_visits.items()},
        stage_visits=stage_visits,
        path_table=tuple(table),
        sample_path=tuple(sample_path),
        samples_function=samples_function,
        code_hash=code_hash,
        samples_hash=samples_hash,
        measured_on=measured_on,
    )
