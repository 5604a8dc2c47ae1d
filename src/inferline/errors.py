"""The exceptions InferLine raises, in one tree.

Every error a user can cause is an :class:`InferLineError`; its message says
what to change. The command line prints the message (no traceback) and exits
with the code in :attr:`InferLineError.exit_code`.

::

    InferLineError                 root; catch this to handle any InferLine failure
    ├── ConfigError (ValueError)   a file or argument is wrong (exit 2); the message names
    │                              the file, the field and the problem
    │   ├── PipelineError          the pipeline graph is invalid (cycle, unknown stage, …)
    │   ├── ProfileError           a profile or hardware catalogue is invalid or lacks an entry
    │   └── TraceError             a trace is unsorted, empty, unreadable or malformed
    ├── InfeasibleError            no configuration can meet the SLO (exit 3)
    │   └── MachineInfeasibleError no configuration meets it on the machine planned for;
    │                              carries the cheapest plan without the machine bound
    ├── CapacityError              a plan does not fit the machine (exit 2; the control API
    │                              answers 409); names the stage and the resource
    └── EngineError                the serving engine cannot start or run as asked
        ├── StageLoadError         a stage class cannot be imported or set up (exit 2)
        ├── RequestError           one HTTP request is rejected (carries its status)
        └── UnreachableError       nothing answers at a server's address (exit 2)

The engine's branch lives in :mod:`inferline.engine` (``inferline.engine._errors``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CapacityError",
    "ConfigError",
    "InfeasibleError",
    "InferLineError",
    "MachineInfeasibleError",
    "PipelineError",
    "ProfileError",
    "TraceError",
]


class InferLineError(Exception):
    """Root of every error InferLine raises on purpose."""

    exit_code: int = 1


class ConfigError(InferLineError, ValueError):
    """A file or argument is invalid.

    ``source`` is the file (or ``"<argument>"``), ``field`` a dotted path to the
    offending entry; both appear in the message so the user knows where to look.
    """

    exit_code = 2

    def __init__(
        self, problem: str, *, source: str | Path | None = None, field: str | None = None
    ) -> None:
        self.problem = problem
        self.source = str(source) if source is not None else None
        self.field = field
        where = []
        if self.source is not None:
            where.append(self.source)
        if field:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


class PipelineError(ConfigError):
    """The pipeline graph is invalid."""


class ProfileError(ConfigError):
    """A hardware catalogue or profile is invalid, or lacks a needed entry."""


class TraceError(ConfigError):
    """A trace cannot be used."""


class InfeasibleError(InferLineError):
    """No configuration can meet the requested SLO."""

    exit_code = 3


class MachineInfeasibleError(InfeasibleError):
    """Plans meet the SLO, but none fits the machine planned for.

    ``needs_cores``/``has_cores`` (and ``needs_gpus``/``has_gpus``) compare the cheapest
    plan without the machine bound, ``unbounded`` (an :class:`inferline.planner.Plan`),
    with the machine, so the user knows what bigger machine or cluster to get.
    """

    def __init__(
        self,
        problem: str,
        *,
        needs_cores: int,
        has_cores: int,
        needs_gpus: int = 0,
        has_gpus: int = 0,
        unbounded: object = None,
    ) -> None:
        self.needs_cores = needs_cores
        self.has_cores = has_cores
        self.needs_gpus = needs_gpus
        self.has_gpus = has_gpus
        self.unbounded = unbounded
        super().__init__(problem)


class CapacityError(InferLineError):
    """A plan asks for more than the machine (or pool) it would run on offers.

    ``stage`` is the stage named in the message, ``resource`` what ran out
    (``"cpu threads"``, ``"memory"``, ``"batch_size"``). ``serve`` exits 2; the
    control API answers 409 and starts nothing.
    """

    exit_code = 2

    def __init__(self, problem: str, *, stage: str, resource: str) -> None:
        self.stage = stage
        self.resource = resource
        super().__init__(problem)
