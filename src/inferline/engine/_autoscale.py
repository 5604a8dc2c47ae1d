"""The live tuner: a replica-count policy driven by the engine's real arrivals.

Every ``tick_s`` the :class:`Autoscaler` takes the arrivals the engine admitted
since the previous tick (seconds since the engine's start, on its monotonic
clock), the current replica counts (the plan in force, starting replicas
included) and the outstanding queries per stage (queued plus in flight), asks
the policy's ``decide`` for targets, and applies changed counts through
:meth:`Engine.apply` — the code path of ``POST /v2/control/plan`` — with batch
sizes and hardware unchanged and without waiting for new replicas to load.

With a machine pool (the engine's host), a decision that would not fit is capped at
what fits (:func:`~inferline.profiles.fit_plan`: decreases kept, increases granted in
turn while the plan fits) and recorded as capacity-limited: the status's
``capacity_limited`` section and the ``inferline_tuner_capacity_limited`` metrics.

The engine measures each replica's activation (start request → ready message);
when the policy has a :class:`~inferline.tuner.TunerConfig` (or a ``with_activation``
method, as the simulating Tuner) the median measured activation replaces its assumed
``activation_s``. A policy with a ``with_machine`` method (the simulating Tuner) is
given the machine pool, so its own search stays within it, and one with a
``with_profiles`` method the profiles the engine's live calibration made from what it
served (every :data:`PROFILES_REFRESH_S`), so it estimates with the machine's real speed.

Each applied change is reported once, to ``on_change`` (``inferline serve`` prints it)
or, without one, as an INFO line of the ``inferline.engine`` logger.

The clock and the apply function are injected so the loop is testable without
sleeps or processes: :meth:`Autoscaler.step` is one tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from inferline.pipeline import PipelineConfig
from inferline.profiles import MachinePool, fit_plan
from inferline.tuner import Observation, Policy, TunerConfig

__all__ = ["Autoscaler", "ScaleChange", "TunedEngine"]

log = logging.getLogger("inferline.engine")

#: The most recent changes kept for the status report.
MAX_CHANGES = 200
#: How often a policy that estimates gets the engine's calibrated profiles, seconds.
PROFILES_REFRESH_S = 5.0


class TunedEngine(Protocol):
    """What the autoscaler needs from the engine (the real one or a test double)."""

    @property
    def config(self) -> PipelineConfig: ...

    def take_arrivals(self) -> list[float]: ...

    def outstanding(self) -> dict[str, int]: ...

    def activation_median_s(self) -> float | None: ...

    async def apply(
        self, config: PipelineConfig, timeout_s: float | None = None, *, wait: bool = True
    ) -> None: ...


@dataclass(frozen=True)
class ScaleChange:
    """One replica-count change the tuner applied."""

    time_s: float  # seconds since the engine's start
    stage: str
    before: int
    after: int
    reason: str

    def describe(self) -> str:
        return (
            f"t={self.time_s:.1f}s stage '{self.stage}' {self.before} -> {self.after} "
            f"replicas ({self.reason})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "time_s": round(self.time_s, 3),
            "stage": self.stage,
            "from": self.before,
            "to": self.after,
            "reason": self.reason,
        }


def _log_change(change: ScaleChange) -> None:
    log.info("tuner: %s", change.describe())


class Autoscaler:
    """Runs ``policy`` against ``engine`` every ``tick_s`` seconds; see the module doc."""

    def __init__(
        self,
        engine: TunedEngine,
        policy: Policy,
        *,
        clock: Callable[[], float],
        tick_s: float = 1.0,
        apply: Callable[[PipelineConfig], Awaitable[None]] | None = None,
        on_change: Callable[[ScaleChange], None] | None = None,
        machine: MachinePool | None = None,
    ) -> None:
        if not tick_s > 0:
            raise ValueError(f"tick_s must be positive, got {tick_s}")
        self.engine = engine
        self.policy = policy
        self.tick_s = tick_s
        self._clock = clock  # seconds since the engine's start
        self._apply = apply or (lambda config: engine.apply(config, wait=False))
        self._on_change = on_change or _log_change  # one report per change, one channel
        self.machine = machine
        with_machine = getattr(policy, "with_machine", None)
        if machine is not None and callable(with_machine):  # a policy that plans within it
            self.policy = with_machine(machine)
        #: Per stage: decisions capped at what fits the machine (count), and the latest
        #: capped one ({"time_s", "wanted", "allowed"}) while the stage's last decision was.
        self.capacity_limited: dict[str, int] = {}
        self.capacity_limited_now: dict[str, dict[str, Any]] = {}
        self.changes: list[ScaleChange] = []
        self.n_changes = 0
        self.errors = 0
        self._state: Any = None
        self._task: asyncio.Task[None] | None = None
        self._profiles_at: float | None = None

    def warm_up(self) -> None:
        """One decision on a throwaway state and made-up arrivals, before serving.

        A policy's first call may compile or import: the envelope's numba kernel takes
        about 0.5 s to load here, and on the event loop that stalls the first queries
        (the text demo's first second had a 675-ms P100 with the tuner on, 210 ms
        without). A policy with a ``warm_up`` method (the simulating tuner: the Estimator's
        kernel) is also asked to warm up. Nothing is applied, recorded or kept.
        """
        current = {name: c.replicas for name, c in self.engine.config.stages.items()}
        observation = Observation(np.array([0.0, 1e-3]), dict(current), dict.fromkeys(current, 0))
        self.policy.decide(self.policy.initial_state(0.0), observation, 1.0)
        hook = getattr(self.policy, "warm_up", None)
        if callable(hook):  # e.g. the simulating tuner loads the Estimator's kernel
            hook()

    def start_recording(self) -> None:
        """Start the policy's state and the engine's arrival recording (now = time zero)."""
        self.engine.take_arrivals()
        self._state = self.policy.initial_state(self._clock())

    def _refresh_activation(self) -> None:
        measured = self.engine.activation_median_s()
        if measured is None:
            return
        with_activation = getattr(self.policy, "with_activation", None)
        if callable(with_activation):
            if getattr(self.policy, "activation_s", None) != measured:
                self.policy = with_activation(measured)
            return
        config = getattr(self.policy, "config", None)
        if not isinstance(config, TunerConfig):
            return
        if config.activation_s != measured:
            with contextlib.suppress(TypeError):  # not a dataclass policy: keep it as it is
                self.policy = dataclasses.replace(
                    self.policy,  # type: ignore[type-var]
                    config=dataclasses.replace(config, activation_s=measured),
                )

    def _refresh_profiles(self, now: float) -> None:
        """Give a policy that estimates (``with_profiles``: the simulating Tuner) the
        profiles the engine's latest calibration refresh made from what it served, every
        :data:`PROFILES_REFRESH_S`."""
        with_profiles = getattr(self.policy, "with_profiles", None)
        calibrator = getattr(self.engine, "calibrator", None)
        if not callable(with_profiles) or calibrator is None:
            return
        if self._profiles_at is not None and now - self._profiles_at < PROFILES_REFRESH_S:
            return
        self._profiles_at = now
        try:
            work = calibrator.latest_work_calibration()
            calibration = calibrator.latest_calibration()
        except Exception:  # calibration is advisory: the policy keeps the profiles it has
            log.exception("tuner: calibrated profiles unavailable; keeping the last")
            return
        if work is not None:  # CPU work: the policy simulates the shared cores on top
            self.policy = with_profiles(work.profiles, carry_contention=False)
        elif calibration is not None:
            self.policy = with_profiles(calibration.profiles)

    async def step(self) -> list[ScaleChange]:
        """One tick: observe, decide, apply what changed; returns the changes."""
        if self._state is None:
            self.start_recording()
        now = self._clock()
        arrivals = np.asarray(sorted(self.engine.take_arrivals()), dtype=np.float64)
        config = self.engine.config
        current = {name: c.replicas for name, c in config.stages.items()}
        self._refresh_activation()
        self._refresh_profiles(now)
        observation = Observation(arrivals, current, self.engine.outstanding())
        targets, self._state = self.policy.decide(self._state, observation, now)
        changed = {s: int(k) for s, k in targets.items() if s in current and int(k) != current[s]}
        if self.machine is not None and changed:
            changed = self._fit(config, changed, now)
        elif not changed:
            self.capacity_limited_now.clear()
        if not changed:
            return []
        reason = str(getattr(self._state, "last_reason", "") or self.policy.name)
        if any(s in self.capacity_limited_now for s in changed):
            reason += "; capped at the machine's capacity"
        new = _with_replicas(config, changed)
        try:
            await self._apply(new)
        except Exception as exc:  # a failed change is logged; the next tick tries again
            self.errors += 1
            log.error("tuner: could not apply %s: %s", changed, exc)
            return []
        out = [ScaleChange(now, s, current[s], k, reason) for s, k in changed.items()]
        for change in out:
            self._on_change(change)
        self.changes.extend(out)
        self.n_changes += len(out)
        del self.changes[:-MAX_CHANGES]
        return out

    def _fit(self, config: PipelineConfig, changed: dict[str, int], now: float) -> dict[str, int]:
        """The changed counts cut back to what fits the machine; records what was capped."""
        assert self.machine is not None
        fitted, limited = fit_plan(_with_replicas(config, changed), self.machine, config)
        self.capacity_limited_now = {}
        for stage, wanted in limited.items():
            allowed = fitted.stages[stage].replicas
            self.capacity_limited[stage] = self.capacity_limited.get(stage, 0) + 1
            self.capacity_limited_now[stage] = {
                "time_s": round(now, 3),
                "wanted": wanted,
                "allowed": allowed,
            }
            log.warning(
                "tuner: stage '%s' wants %d replicas; the machine has room for %d",
                stage,
                wanted,
                allowed,
            )
        current = {name: c.replicas for name, c in config.stages.items()}
        return {
            s: fitted.stages[s].replicas for s in changed if fitted.stages[s].replicas != current[s]
        }

    async def run(self) -> None:
        """Tick until cancelled."""
        self.start_recording()
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.step()
            except Exception:  # never let one bad tick stop the tuner
                self.errors += 1
                log.exception("tuner: tick failed")

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def status(self) -> dict[str, Any]:
        """The ``tuner`` section of ``/v2/control/status``."""
        config = getattr(self.policy, "config", self.policy)
        return {
            "policy": self.policy.name,
            "tick_s": self.tick_s,
            "activation_s": getattr(config, "activation_s", None),
            "scale_down_holdoff_s": getattr(config, "scale_down_holdoff_s", None),
            "estimated_p99_s": getattr(self._state, "estimate_p99_s", None),
            "n_changes": self.n_changes,
            "errors": self.errors,
            "changes": [c.as_dict() for c in self.changes],
            "capacity_limited": {
                "decisions": dict(self.capacity_limited),
                "now": dict(self.capacity_limited_now),
            },
        }


def _with_replicas(config: PipelineConfig, counts: dict[str, int]) -> PipelineConfig:
    return PipelineConfig(
        stages={
            name: c.model_copy(update={"replicas": counts[name]}) if name in counts else c
            for name, c in config.stages.items()
        }
    )
