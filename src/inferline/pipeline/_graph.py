"""The pipeline DAG: stages, (conditional) edges, and what follows from them.

Semantics (SPEC §2.1): every source stage is visited; a stage is visited when at
least one of its visited predecessors takes the edge into it (edges are taken
independently with their probability); a visited stage starts once all its
visited predecessors have finished (join = max); a query completes when every
stage it visited has finished.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from inferline.errors import PipelineError

__all__ = ["Edge", "Pipeline", "Stage"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_STAGES = 62  # a query's visited stages are packed into one int64 bitmask
_EXACT_ENUMERATION_EDGES = 16


@dataclass(frozen=True)
class Stage:
    """A model or transform. ``model`` is an import path used by the serving engine."""

    name: str
    description: str = ""
    model: str | None = None


@dataclass(frozen=True)
class Edge:
    """Data flows from ``source`` to ``target`` with ``probability`` (1.0 = always)."""

    source: str
    target: str
    probability: float = 1.0

    @property
    def conditional(self) -> bool:
        return 0.0 < self.probability < 1.0


@dataclass(frozen=True)
class Pipeline:
    """A validated DAG of stages. Construction fails with a PipelineError on any defect."""

    name: str
    stages: tuple[Stage, ...]
    edges: tuple[Edge, ...] = ()
    description: str = ""
    source: str = field(default="<python>", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "edges", tuple(self.edges))
        _validate(self)

    @classmethod
    def chain(cls, name: str, stage_names: Sequence[str]) -> Pipeline:
        """A linear pipeline, the common case."""
        stages = tuple(Stage(n) for n in stage_names)
        edges = tuple(Edge(a, b) for a, b in itertools.pairwise(stage_names))
        return cls(name=name, stages=stages, edges=edges)

    # --- structure -------------------------------------------------------------------------
    @cached_property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def index(self, stage: str) -> int:
        try:
            return self.stage_names.index(stage)
        except ValueError:
            raise PipelineError(
                f"unknown stage '{stage}'; the pipeline has {', '.join(self.stage_names)}",
                source=self.source,
            ) from None

    def predecessors(self, stage: str) -> tuple[str, ...]:
        return tuple(e.source for e in self.edges if e.target == stage)

    def successors(self, stage: str) -> tuple[str, ...]:
        return tuple(e.target for e in self.edges if e.source == stage)

    @cached_property
    def sources(self) -> tuple[str, ...]:
        targets = {e.target for e in self.edges}
        return tuple(n for n in self.stage_names if n not in targets)

    @cached_property
    def topological_order(self) -> tuple[str, ...]:
        order = _topological_order(self.stage_names, self.edges)
        assert order is not None  # validated at construction
        return order

    # --- flow --------------------------------------------------------------------------
    def visited_from_taken(self, taken: np.ndarray) -> np.ndarray:
        """Which stages each query visits, given which edges it took.

        ``taken`` is bool[n, n_edges] (column j = ``edges[j]``); returns bool[n, n_stages].
        """
        taken = np.asarray(taken, dtype=bool)
        n = taken.shape[0]
        visited = np.zeros((n, len(self.stages)), dtype=bool)
        position = {name: i for i, name in enumerate(self.stage_names)}
        for name in self.sources:
            visited[:, position[name]] = True
        for name in self.topological_order:
            i = position[name]
            for j, edge in enumerate(self.edges):
                if edge.target == name:
                    visited[:, i] |= visited[:, position[edge.source]] & taken[:, j]
        return visited

    def sample_visited(self, n_queries: int, rng: np.random.Generator) -> np.ndarray:
        """Draw each query's path from the edge probabilities (bool[n, n_stages])."""
        probs = np.array([e.probability for e in self.edges], dtype=np.float64)
        taken = (
            rng.random((n_queries, len(self.edges))) < probs
            if len(probs)
            else np.zeros((n_queries, 0), dtype=bool)
        )
        return self.visited_from_taken(taken)

    @cached_property
    def scale_factors(self) -> dict[str, float]:
        """Fraction of pipeline queries that reach each stage (SPEC §2.1)."""
        cond = [j for j, e in enumerate(self.edges) if e.conditional]
        fixed = np.array([e.probability >= 1.0 for e in self.edges], dtype=bool)
        if len(cond) <= _EXACT_ENUMERATION_EDGES:
            outcomes = np.arange(2 ** len(cond), dtype=np.int64)
            taken = np.tile(fixed, (len(outcomes), 1))
            weight = np.ones(len(outcomes))
            for bit, j in enumerate(cond):
                took = ((outcomes >> bit) & 1).astype(bool)
                taken[:, j] = took
                p = self.edges[j].probability
                weight *= np.where(took, p, 1.0 - p)
            visited = self.visited_from_taken(taken)
            probs = weight @ visited
        else:  # too many conditional edges to enumerate: a fixed-seed estimate
            visited = self.sample_visited(400_000, np.random.default_rng(0))
            probs = visited.mean(axis=0)
        return {name: float(probs[i]) for i, name in enumerate(self.stage_names)}

    def paths_to_masks(self, paths: Iterable[Sequence[str]], source: str = "<trace>") -> np.ndarray:
        """Convert recorded paths (visited stage names) to int64 bitmasks, checking each."""
        position = {name: i for i, name in enumerate(self.stage_names)}
        masks = []
        for k, path in enumerate(paths):
            mask = 0
            for name in path:
                if name not in position:
                    raise PipelineError(
                        f"recorded path #{k} names stage '{name}', which pipeline "
                        f"'{self.name}' does not have ({', '.join(self.stage_names)})",
                        source=source,
                        field="path",
                    )
                mask |= 1 << position[name]
            self._check_path(mask, k, source)
            masks.append(mask)
        return np.array(masks, dtype=np.int64)

    def _check_path(self, mask: int, k: int, source: str) -> None:
        position = {name: i for i, name in enumerate(self.stage_names)}
        for name in self.sources:
            if not mask >> position[name] & 1:
                raise PipelineError(
                    f"recorded path #{k} skips source stage '{name}'; every query visits it",
                    source=source,
                    field="path",
                )
        for name in self.stage_names:
            preds = self.predecessors(name)
            if (
                preds
                and mask >> position[name] & 1
                and not any(mask >> position[p] & 1 for p in preds)
            ):
                raise PipelineError(
                    f"recorded path #{k} visits '{name}' without any of its predecessors "
                    f"({', '.join(preds)})",
                    source=source,
                    field="path",
                )

    def longest_path_s(
        self, stage_time_s: dict[str, float], visited: Iterable[str] | None = None
    ) -> float:
        """Critical-path time through the visited stages, e.g. batch-1 service time."""
        keep = set(self.stage_names if visited is None else visited)
        finish: dict[str, float] = {}
        for name in self.topological_order:
            if name not in keep:
                continue
            start = max((finish[p] for p in self.predecessors(name) if p in finish), default=0.0)
            finish[name] = start + stage_time_s[name]
        return max(finish.values(), default=0.0)

    def critical_path(self, stage_time_s: dict[str, float]) -> tuple[str, ...]:
        """The stage sequence that attains :meth:`longest_path_s` over all stages."""
        finish: dict[str, float] = {}
        via: dict[str, str | None] = {}
        for name in self.topological_order:
            preds = self.predecessors(name)
            best = max(preds, key=lambda p: finish[p], default=None)
            via[name] = best
            finish[name] = (finish[best] if best else 0.0) + stage_time_s[name]
        node: str | None = max(finish, key=lambda n: finish[n])
        path: list[str] = []
        while node is not None:
            path.append(node)
            node = via[node]
        return tuple(reversed(path))


def _topological_order(names: Sequence[str], edges: Sequence[Edge]) -> tuple[str, ...] | None:
    indegree = dict.fromkeys(names, 0)
    for e in edges:
        indegree[e.target] += 1
    ready = [n for n in names if indegree[n] == 0]
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for e in edges:
            if e.source == n:
                indegree[e.target] -= 1
                if indegree[e.target] == 0:
                    ready.append(e.target)
    return tuple(order) if len(order) == len(names) else None


def _find_cycle(names: Sequence[str], edges: Sequence[Edge]) -> list[str]:
    adjacency: dict[str, list[str]] = {n: [] for n in names}
    for e in edges:
        adjacency[e.source].append(e.target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in adjacency[n]:
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in names:
        if n not in state and (found := visit(n)):
            return found
    return []


def _validate(p: Pipeline) -> None:
    src = p.source
    if not p.name or not _NAME.match(p.name):
        raise PipelineError(
            f"pipeline name {p.name!r} must be non-empty letters, digits, '_', '.', '-'",
            source=src,
            field="name",
        )
    if not p.stages:
        raise PipelineError(
            "the pipeline has no stages; add at least one", source=src, field="stages"
        )
    if len(p.stages) > _MAX_STAGES:
        raise PipelineError(
            f"{len(p.stages)} stages; at most {_MAX_STAGES} are supported",
            source=src,
            field="stages",
        )
    seen: set[str] = set()
    for i, stage in enumerate(p.stages):
        if not _NAME.match(stage.name):
            raise PipelineError(
                f"stage name {stage.name!r} must be letters, digits, '_', '.', '-'",
                source=src,
                field=f"stages[{i}].name",
            )
        if stage.name in seen:
            raise PipelineError(
                f"stage '{stage.name}' is defined twice; stage names must be unique",
                source=src,
                field=f"stages[{i}].name",
            )
        seen.add(stage.name)
    pairs: set[tuple[str, str]] = set()
    for i, edge in enumerate(p.edges):
        for attr, key in (("source", "from"), ("target", "to")):
            name = getattr(edge, attr)
            if name not in seen:
                raise PipelineError(
                    f"unknown stage '{name}'; defined stages are {', '.join(sorted(seen))}",
                    source=src,
                    field=f"edges[{i}].{key}",
                )
        if edge.source == edge.target:
            raise PipelineError(
                f"stage '{edge.source}' has an edge to itself; pipelines must be acyclic",
                source=src,
                field=f"edges[{i}]",
            )
        if not (0.0 <= edge.probability <= 1.0) or edge.probability != edge.probability:
            raise PipelineError(
                f"probability {edge.probability} is outside [0, 1]",
                source=src,
                field=f"edges[{i}].probability",
            )
        if (edge.source, edge.target) in pairs:
            raise PipelineError(
                f"edge {edge.source} -> {edge.target} appears twice",
                source=src,
                field=f"edges[{i}]",
            )
        pairs.add((edge.source, edge.target))
    if _topological_order(p.stage_names, p.edges) is None:
        cycle = _find_cycle(p.stage_names, p.edges)
        raise PipelineError(
            f"the edges form a cycle ({' -> '.join(cycle)}); pipelines must be acyclic",
            source=src,
            field="edges",
        )
    live = [e for e in p.edges if e.probability > 0.0]
    targets = {e.target for e in p.edges}
    reachable = {n for n in p.stage_names if n not in targets}
    changed = True
    while changed:
        changed = False
        for e in live:
            if e.source in reachable and e.target not in reachable:
                reachable.add(e.target)
                changed = True
    unreachable = [n for n in p.stage_names if n not in reachable]
    if unreachable:
        raise PipelineError(
            f"stage(s) {', '.join(unreachable)} can never be reached (only edges with "
            "probability 0 lead there); remove them or raise a probability",
            source=src,
            field="edges",
        )
