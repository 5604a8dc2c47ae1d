"""The simulating Tuner, driven with a fake clock: it scales the stage that needs it only.

Pipeline used throughout: "busy" (100 ms a query, μ = 10 qps) then "idle" (5 ms,
μ = 200 qps), batch 1, both on cpu-1 at 1 $/h; SLO 1 s. Arrivals are evenly spaced, so
the estimates are exact queueing of a deterministic stream: at r qps "busy" needs
k > r/10 replicas and "idle" one up to 200 qps.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferline.errors import ConfigError
from inferline.pipeline import Edge, Pipeline, PipelineConfig, Stage, StageConfig
from inferline.profiles import (
    BatchProfile,
    HardwareCatalogue,
    HardwareType,
    MachinePool,
    ProfilePoint,
    Profiles,
    check_plan_fits,
)
from inferline.tuner import (
    Observation,
    SimulateState,
    SimulatingTuner,
    make_policy,
    policy_options,
    tune_simulate,
)
from inferline.workload import Trace, gamma_trace, ramp_trace

REFERENCE = Path(__file__).resolve().parents[2] / "examples" / "reference"
HW = "cpu-1"
SLO_S = 1.0
PIPE = Pipeline(name="two", stages=(Stage("busy"), Stage("idle")), edges=(Edge("busy", "idle"),))


def profiles(busy_s: float = 0.1) -> Profiles:
    return Profiles(
        HardwareCatalogue((HardwareType(HW, price_per_hour=1.0),)),
        {
            ("busy", HW): BatchProfile("busy", HW, (ProfilePoint(1, busy_s, busy_s),)),
            ("idle", HW): BatchProfile("idle", HW, (ProfilePoint(1, 0.005, 0.005),)),
        },
    )


def plan(busy: int = 1, idle: int = 1) -> PipelineConfig:
    return PipelineConfig(
        stages={
            "busy": StageConfig(hardware=HW, batch_size=1, replicas=busy),
            "idle": StageConfig(hardware=HW, batch_size=1, replicas=idle),
        }
    )


def tuner(**options: object) -> SimulatingTuner:
    fields: dict[str, object] = {"max_replicas": {"busy": 50, "idle": 50}}
    fields.update(options)
    return SimulatingTuner(PIPE, profiles(), plan(), SLO_S, **fields)  # type: ignore[arg-type]


def drive(
    policy: SimulatingTuner,
    rate_qps: float,
    seconds: int,
    counts: dict[str, int],
    state: SimulateState | None = None,
    start_s: float = 0.0,
) -> tuple[list[dict[str, int]], SimulateState]:
    """One decision a second over ``seconds`` of evenly spaced arrivals at ``rate_qps``;
    the targets are applied at once. Returns every decision's targets."""
    state = state if state is not None else policy.initial_state(start_s)
    out = []
    for k in range(seconds):
        lo, hi = start_s + k, start_s + k + 1
        n = round(rate_qps)
        arrivals = lo + (np.arange(n) + 0.5) / max(rate_qps, 1e-9) if n else np.zeros(0)
        targets, state = policy.decide(state, Observation(arrivals, dict(counts)), hi)
        assert set(targets) == {"busy", "idle"}
        counts = dict(targets)
        out.append(counts)
    return out, state


def test_a_saturated_stage_is_scaled_up_and_the_idle_one_is_left_alone() -> None:
    decisions, state = drive(tuner(), 35.0, 12, {"busy": 1, "idle": 1})
    assert all(d["idle"] == 1 for d in decisions)
    assert decisions[-1]["busy"] == 4  # the fewest that keep 35 qps at 100 ms each below 1
    assert state.estimate_p99_s is not None and state.estimate_p99_s <= 0.9 * SLO_S
    assert "scale up" in state.last_reason


def test_steady_load_within_the_slo_changes_nothing() -> None:
    decisions, _ = drive(tuner(), 5.0, 12, {"busy": 1, "idle": 1})
    assert decisions == [{"busy": 1, "idle": 1}] * 12


def test_never_above_the_machine_and_a_capped_stage_is_flagged() -> None:
    # 1 core left for replicas × 3 threads per core: 3 single-thread replicas in all
    pool = MachinePool(cores=2, memory_bytes=1 << 34, max_threads_per_core=3.0, fit="threads")
    decisions, state = drive(tuner(machine=pool), 35.0, 12, {"busy": 1, "idle": 1})
    assert max(d["busy"] + d["idle"] for d in decisions) == 3
    assert decisions[-1] == {"busy": 2, "idle": 1}
    assert state.capacity_limited.get("busy", 0) > 2
    assert "capped at the machine" in state.last_reason


def test_on_a_busy_bounded_machine_no_replica_beyond_the_cores_it_can_keep_busy() -> None:
    """35 q/s × 100 ms needs 3.5 busy cores. 4 cores at 80 % less the front-end's share
    (0.05 + 35 × 0.8 ms) allow 3.12: three busy replicas, not a fourth, whatever the
    estimate wants; on 2 cores (1.52 allowed) the one replica stays alone."""
    four = MachinePool(cores=4, memory_bytes=1 << 34)
    decisions, state = drive(tuner(machine=four), 35.0, 12, {"busy": 1, "idle": 1})
    assert max(d["busy"] for d in decisions) == 3 and decisions[-1]["idle"] == 1
    assert state.capacity_limited.get("busy", 0) > 3
    assert "capped at the machine" in state.last_reason
    two = MachinePool(cores=2, memory_bytes=1 << 34)
    decisions, state = drive(tuner(machine=two), 35.0, 12, {"busy": 1, "idle": 1})
    assert all(d == {"busy": 1, "idle": 1} for d in decisions)
    assert state.capacity_limited.get("busy", 0) > 1


def test_on_shared_cores_no_stage_gets_more_replica_threads_than_cores() -> None:
    """35 q/s × 100 ms wants 4 replicas of "busy"; on 2 shared cores 2 at most (the plan's
    own count stands even when above)."""
    shared = MachinePool(cores=2, memory_bytes=1 << 34, max_busy_fraction=1.0)
    assert shared.shares_cores
    decisions, state = drive(tuner(machine=shared), 35.0, 12, {"busy": 1, "idle": 1})
    assert max(d["busy"] for d in decisions) == 2 and decisions[-1]["idle"] == 1
    assert state.capacity_limited.get("busy", 0) > 2
    planned = SimulatingTuner(
        PIPE, profiles(), plan(busy=3), SLO_S, max_replicas={"busy": 50, "idle": 50},
        machine=shared,
    )  # fmt: skip
    decisions, _ = drive(planned, 35.0, 12, {"busy": 3, "idle": 1})
    assert max(d["busy"] for d in decisions) == 3


def test_scale_down_waits_for_the_holdoff_after_any_change() -> None:
    policy = tuner(scale_down_holdoff_s=15.0)
    decisions, state = drive(policy, 5.0, 40, {"busy": 6, "idle": 3})
    before = [{"busy": 6, "idle": 3}, *decisions[:-1]]
    changes = [t + 1 for t, (a, b) in enumerate(zip(before, decisions, strict=True)) if a != b]
    assert changes and changes[0] >= 15  # not within 15 s of the start
    assert all(b - a >= 15 for a, b in itertools.pairwise(changes))
    assert decisions[-1]["busy"] < 6 and decisions[-1]["idle"] < 3
    assert "scale down" in state.last_reason


def test_floor_at_plan_keeps_the_planned_counts() -> None:
    policy = SimulatingTuner(
        PIPE, profiles(), plan(busy=3), SLO_S, max_replicas={"busy": 9, "idle": 9},
        floor_at_plan=True, scale_down_holdoff_s=0.0,
    )  # fmt: skip
    decisions, _ = drive(policy, 1.0, 30, {"busy": 5, "idle": 1})
    assert decisions[-1] == {"busy": 3, "idle": 1}


def test_calibrated_profiles_replace_the_planned_ones() -> None:
    base = tuner()
    slower = base.with_profiles(profiles(busy_s=0.2))  # the stage runs twice as slow here
    assert slower.profiles.get("busy", HW).latency_s(1) == 0.2
    fast, _ = drive(base, 15.0, 12, {"busy": 1, "idle": 1})
    slow, _ = drive(slower, 15.0, 12, {"busy": 1, "idle": 1})
    assert fast[-1]["busy"] == 2 and slow[-1]["busy"] == 4
    assert fast[-1]["idle"] == slow[-1]["idle"] == 1


def test_forecast_follows_a_step_up_seen_in_the_last_second() -> None:
    policy = tuner()
    state = policy.initial_state(0.0)
    quiet = (np.arange(50) + 0.5) / 5.0  # 5 qps for 10 s
    step = 10.0 + (np.arange(40) + 0.5) / 40.0  # then 40 qps for 1 s
    policy.decide(state, Observation(quiet, {"busy": 1, "idle": 1}), 10.0)
    forecast = policy.forecast(state, 10.0)
    assert forecast is not None and not forecast.growing and forecast.rate_qps == 5.0
    policy.decide(state, Observation(step, {"busy": 1, "idle": 1}), 11.0)
    forecast = policy.forecast(state, 11.0)
    assert forecast is not None and forecast.growing
    assert forecast.rate_qps == pytest.approx(40 - 2 * np.sqrt(40))


def test_forecast_replays_the_recorded_paths() -> None:
    policy = tuner()
    state = policy.initial_state(0.0)
    arrivals = (np.arange(50) + 0.5) / 10.0  # one 5-s bucket at 10 qps
    visits = np.where(np.arange(50) % 3 == 0, 0b11, 0b01).astype(np.int64)
    policy.decide(state, Observation(arrivals, {"busy": 1, "idle": 1}, visits=visits), 5.0)
    forecast = policy.forecast(state, 5.0)
    assert forecast is not None
    paths = forecast.trace.paths()
    assert paths is not None and paths.count(("busy", "idle")) == 17
    assert paths.count(("busy",)) == 33


def test_noise_in_steady_arrivals_seldom_reads_as_growth() -> None:
    """Poisson arrivals at a steady 40 q/s for 3 minutes: a trend that noise made, followed
    seconds ahead, once forecast up to 2× the rate in one tick of ten (the live Tuner then
    bought replicas for a rate that never came). The forecast takes the trend less its
    standard error now."""
    policy = tuner()
    state = policy.initial_state(0.0)
    arrivals = gamma_trace(40.0, 1.0, 180.0, seed=3).arrival_s
    high = 0
    for tick in range(1, 181):
        chunk = arrivals[(arrivals > tick - 1) & (arrivals <= tick)]
        policy.decide(state, Observation(chunk, {"busy": 9, "idle": 1}), float(tick))
        forecast = policy.forecast(state, float(tick))
        if forecast is not None and forecast.rate_qps > 1.3 * 40.0:
            high += 1
    assert high <= 3  # of 180 ticks


def test_a_steep_ramp_still_reads_as_growth() -> None:
    policy = tuner()
    state = policy.initial_state(0.0)
    arrivals = ramp_trace(10.0, 60.0, 10.0, before_s=10.0, after_s=0.0, cv=0.0, seed=0).arrival_s
    for tick in range(1, 16):
        chunk = arrivals[(arrivals > tick - 1) & (arrivals <= tick)]
        policy.decide(state, Observation(chunk, {"busy": 9, "idle": 1}), float(tick))
    forecast = policy.forecast(state, 15.0)
    assert forecast is not None and forecast.growing
    assert forecast.rate_qps > 36.0  # above the rate now (35 q/s): it follows the ramp


def _greedy(
    estimate: dict[tuple[int, int], float],
    waits: dict[str, float] | None = None,
    busy_room: int = 50,
) -> dict[str, int]:
    """``_scale_up`` from one replica each on made-up estimates (by (busy, idle) counts,
    others far above the SLO), waits per stage and a machine whose cores can keep
    ``busy_room`` replicas of "busy" busy."""
    policy = tuner()
    counts, _ = policy._scale_up(
        {"busy": 1, "idle": 1},
        {"busy": 1, "idle": 1},
        lambda c: estimate.get((c["busy"], c["idle"]), 10.0),
        0.9 * SLO_S,
        lambda c: c["busy"] <= busy_room,
        None if waits is None else (lambda c: waits),
    )
    return counts


def test_a_stage_whose_queries_do_not_wait_gets_no_replica_whatever_the_estimate() -> None:
    """On shared cores the Estimator can credit a replica of an idle stage with a cut (a
    bigger share of the cores); only a stage whose queries wait for a replica gets one."""
    estimate = {(1, 1): 3.0, (1, 2): 2.0, (2, 1): 2.5, (2, 2): 1.5, (3, 1): 0.5}
    assert _greedy(estimate)["idle"] == 2  # without the waits: the idle stage's "cut"
    assert _greedy(estimate, {"busy": 0.4, "idle": 0.0}) == {"busy": 3, "idle": 1}


def test_once_the_machine_refuses_a_replica_none_is_added_elsewhere() -> None:
    estimate = {(1, 1): 3.0, (2, 1): 2.0, (2, 2): 1.9, (3, 1): 0.5}
    assert _greedy(estimate, busy_room=2) == {"busy": 2, "idle": 1}


@settings(max_examples=25, deadline=None)
@given(
    rate=st.floats(0.0, 80.0),
    busy=st.integers(1, 6),
    idle=st.integers(1, 4),
    threads_per_core=st.sampled_from([2.0, 4.0, 8.0]),
    seconds=st.integers(1, 20),
)
def test_decisions_fit_the_pool_and_change_only_replica_counts(
    rate: float, busy: int, idle: int, threads_per_core: float, seconds: int
) -> None:
    pool = MachinePool(cores=2, memory_bytes=1 << 34, max_threads_per_core=threads_per_core)
    current = {"busy": busy, "idle": idle}
    policy = tuner(machine=pool, scale_down_holdoff_s=3.0)
    fits_at_start = busy + idle <= pool.max_threads
    decisions, _ = drive(policy, rate, seconds, current)
    for d in decisions:
        assert all(isinstance(k, int) and k >= 1 for k in d.values())
        config = PipelineConfig(
            stages={n: c.model_copy(update={"replicas": d[n]}) for n, c in plan().stages.items()}
        )
        if fits_at_start:
            check_plan_fits(config, pool)  # raises CapacityError if not
        assert all(d[n] <= max(current[n], 50) for n in d)


def test_through_tune_simulate_it_absorbs_a_ramp_without_touching_the_idle_stage() -> None:
    trace = ramp_trace(5.0, 30.0, 60.0, before_s=20.0, after_s=60.0, cv=1.0, seed=1)
    planning = Trace(trace.arrival_s[trace.arrival_s < 20.0])
    fixed = tune_simulate(PIPE, profiles(), plan(), trace, SLO_S, policy="none")
    tuned = tune_simulate(
        PIPE, profiles(), plan(), trace, SLO_S, policy="simulate", planning_trace=planning,
        activation_s=2.0,
    )  # fmt: skip
    assert tuned.policy == "simulate"
    assert tuned.miss_rate < 0.05 and tuned.miss_rate * 10 < fixed.miss_rate
    idle = tuned.stage_names.index("idle")
    assert tuned.replicas[:, idle].max() == 1
    assert tuned.replicas[:, tuned.stage_names.index("busy")].max() >= 4


def test_the_policy_needs_the_slo_and_valid_options() -> None:
    with pytest.raises(ConfigError, match="SLO"):
        make_policy("simulate", PIPE, profiles(), plan(), Trace(np.array([0.0, 1.0])))
    with pytest.raises(ConfigError) as err:
        policy_options("simulate", margin=0.5, scale_down_margin=0.2)
    assert err.value.field == "scale_down_margin"
    with pytest.raises(ConfigError) as err:
        tuner(max_replicas={"busy": 3})
    assert err.value.field == "max_replicas"


def test_default_check_applies_the_spec_rule_per_case() -> None:
    from inferline.bench.tuner import default_check, default_check_markdown

    def row(seed: int, scenario: str, pol: str, miss: float, cost: float) -> dict[str, object]:
        return {
            "seed": seed, "pipeline": "p", "scenario": scenario, "policy": pol,
            "miss_rate": miss, "cost_dollars": cost,
        }  # fmt: skip

    rows = [
        row(seed, sc, pol, miss, cost)
        for seed in (0, 1)
        for sc in ("a", "b")
        for pol, miss, cost in (
            ("cg-autoscale", 0.0, 2.0),
            ("cheap", 0.02 if (seed, sc) == (1, "b") else 0.0, 1.0),  # one case over 1 %
            ("safe", 0.001, 1.5),
            ("dear", 0.0, 2.5 if sc == "a" else 1.0),  # dearer than CG in one scenario
        )
    ]
    check = default_check(rows)
    assert set(check["policies"]) == {"cheap", "safe", "dear"}  # CG is the reference
    cheap, safe, dear = (check["policies"][p] for p in ("cheap", "safe", "dear"))
    assert not cheap["meets"] and cheap["cases_over_1pct"] == 1
    assert cheap["scenarios"]["p b"]["max_miss_rate"] == 0.02
    assert safe["meets"] and safe["cost_vs_cg_geomean"] == pytest.approx(0.75)
    assert not dear["meets"] and dear["cases_not_cheaper_than_cg"] == 2
    assert dear["cost_vs_cg_max"] == pytest.approx(1.25)
    text = default_check_markdown(check)
    assert "| safe | 4 | 0.10% | 0 | 0 | 0.75 / 0.75 | yes | - |" in text
    assert "| p b | 2.00% / 1.000 |" in text


def test_the_live_autoscaler_hands_it_the_machine_and_the_measured_activation() -> None:
    import asyncio

    from inferline.engine._autoscale import Autoscaler

    class Engine:
        config = plan()

        def __init__(self) -> None:
            self.arrivals: list[float] = []

        def take_arrivals(self) -> list[float]:
            out, self.arrivals = self.arrivals, []
            return out

        def outstanding(self) -> dict[str, int]:
            return {"busy": 0, "idle": 0}

        def activation_median_s(self) -> float | None:
            return 2.5

        async def apply(
            self, config: PipelineConfig, timeout_s: float | None = None, *, wait: bool = True
        ) -> None:
            self.config = config

    pool = MachinePool(cores=2, memory_bytes=1 << 34, max_threads_per_core=3.0, fit="threads")
    engine, clock = Engine(), [0.0]
    scaler = Autoscaler(engine, tuner(), clock=lambda: clock[0], machine=pool)
    assert isinstance(scaler.policy, SimulatingTuner) and scaler.policy.machine == pool
    scaler.warm_up()  # runs the Estimator once; applies nothing
    assert engine.config == plan()
    scaler.start_recording()
    for k in range(12):  # 35 qps: the policy wants 4 "busy" replicas; the machine holds 3
        engine.arrivals = list(k + (np.arange(35) + 0.5) / 35)
        clock[0] = k + 1.0
        asyncio.run(scaler.step())
    assert isinstance(scaler.policy, SimulatingTuner) and scaler.policy.activation_s == 2.5
    assert {n: c.replicas for n, c in engine.config.stages.items()} == {"busy": 2, "idle": 1}
    status = scaler.status()
    assert status["policy"] == "simulate" and status["activation_s"] == 2.5
    assert status["estimated_p99_s"] is not None


def test_the_live_autoscaler_estimates_with_the_engine_s_calibrated_profiles() -> None:
    import asyncio

    from inferline.engine._autoscale import PROFILES_REFRESH_S, Autoscaler
    from inferline.profiles import Calibration

    policy = tuner()
    slower = Profiles(policy.profiles.hardware, dict(policy.profiles.entries), "calibrated")

    work_profiles = Profiles(policy.profiles.hardware, dict(policy.profiles.entries), "work")

    class Calibrator:
        calls = 0
        work: Calibration | None = None

        def latest_calibration(self) -> Calibration:
            Calibrator.calls += 1
            return Calibration(profiles=slower, speeds={})

        def latest_work_calibration(self) -> Calibration | None:
            return Calibrator.work

    class Engine:
        config = plan()
        calibrator = Calibrator()

        def take_arrivals(self) -> list[float]:
            return []

        def outstanding(self) -> dict[str, int]:
            return {"busy": 0, "idle": 0}

        def activation_median_s(self) -> float | None:
            return None

        async def apply(
            self, config: PipelineConfig, timeout_s: float | None = None, *, wait: bool = True
        ) -> None:
            self.config = config

    clock = [0.0]
    scaler = Autoscaler(Engine(), policy, clock=lambda: clock[0])
    scaler.start_recording()
    for k in range(3):  # three ticks within one refresh interval: one calibration read
        clock[0] = 1.0 + k * PROFILES_REFRESH_S / 4
        asyncio.run(scaler.step())
    assert isinstance(scaler.policy, SimulatingTuner)
    assert scaler.policy.profiles is slower and Calibrator.calls == 1
    assert scaler.policy.profiles_carry_contention  # served times: no shared cores on top
    clock[0] += PROFILES_REFRESH_S
    asyncio.run(scaler.step())
    assert Calibrator.calls == 2
    # CPU work calibrated (a machine with shared cores): the policy shares the cores itself
    Calibrator.work = Calibration(profiles=work_profiles, speeds={})
    clock[0] += PROFILES_REFRESH_S
    asyncio.run(scaler.step())
    assert isinstance(scaler.policy, SimulatingTuner)
    assert scaler.policy.profiles is work_profiles
    assert not scaler.policy.profiles_carry_contention


def test_tune_sim_without_a_policy_runs_the_default(tmp_path: Path) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from inferline.cli._tune import tune_sim_command
    from inferline.tuner import DEFAULT_POLICY, available_policies
    from inferline.workload import save_trace

    assert DEFAULT_POLICY in available_policies()
    app = typer.Typer()
    app.command("tune-sim")(tune_sim_command)
    app.command("unused")(lambda: None)
    trace_path = tmp_path / "t.csv"
    save_trace(
        ramp_trace(150.0, 250.0, 10.0, before_s=10.0, after_s=10.0, cv=1.0, seed=2), trace_path
    )
    bundle = REFERENCE / "image-processing"
    args = [
        "tune-sim", str(bundle), "--plan", str(bundle / "configs" / "balanced.yaml"),
        "--trace", str(trace_path), "--slo-s", "0.15",
    ]  # fmt: skip
    readable = CliRunner().invoke(app, args)
    assert readable.exit_code == 0, readable.output
    assert f"policy {DEFAULT_POLICY}" in readable.stdout
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert json.loads(as_json.stdout)["policy"] == DEFAULT_POLICY
