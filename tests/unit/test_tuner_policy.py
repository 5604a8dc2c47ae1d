"""The Tuner's policies driven with a fake clock: every decision checked by hand.

Config used throughout (no profiles needed): stages a, b with μ = 10 and 5 qps,
ρ = 0.5 and 0.8, scale factors 1 and 0.5, planned 1 replica each, envelope
windows 1, 2, 4 s with planned rates 10, 8, 6 qps. So the scale-up count for a
rate r is k_a = ceil(r/5), k_b = ceil(r/8), and the scale-down count for λ is
k_a = ceil(λ/5), k_b = ceil(λ/5) (ρ_min = 0.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferline._bundle import load_bundle
from inferline.errors import ConfigError
from inferline.pipeline import load_config
from inferline.tuner import (
    CoarseGrainedAutoscaler,
    InferLineTuner,
    NoTuner,
    Observation,
    QueueLengthPolicy,
    TrafficEnvelope,
    TunerConfig,
    envelope_windows,
    planned_envelope,
)
from inferline.workload import gamma_trace

REFERENCE = Path(__file__).resolve().parents[2] / "examples" / "reference"


def config(**changes: object) -> TunerConfig:
    fields: dict[str, object] = {
        "stages": ("a", "b"),
        "mu_qps": {"a": 10.0, "b": 5.0},
        "rho": {"a": 0.5, "b": 0.8},
        "scale_factor": {"a": 1.0, "b": 0.5},
        "windows": (1.0, 2.0, 4.0),
        "envelope_qps": (10.0, 8.0, 6.0),
        "max_replicas": {"a": 50, "b": 50},
        "planned_replicas": {"a": 1, "b": 1},
    }
    fields.update(changes)
    return TunerConfig(**fields)  # type: ignore[arg-type]


def obs(arrivals: list[float] | np.ndarray, a: int, b: int) -> Observation:
    return Observation(np.asarray(arrivals, dtype=float), {"a": a, "b": b})


# --- envelopes ---------------------------------------------------------------------------


def test_envelope_windows_double_up_to_60_s_and_floor_ts() -> None:
    assert envelope_windows(10.0) == (10.0, 20.0, 40.0)
    assert envelope_windows(0.001)[0] == 0.01  # T_s floored at 10 ms
    assert envelope_windows(0.001)[-1] == 0.01 * 2**12  # 40.96 s ≤ 60 < 81.92
    with pytest.raises(ConfigError):
        envelope_windows(0.0)


def test_envelope_by_hand() -> None:
    arrivals = [0.0, 0.125, 0.25, 1.0]
    windows = (0.25, 0.5, 1.0)
    # (t − 0.25, t]: at 0.25 → {0.125, 0.25} = 2 → 8 qps; (t − 0.5, t]: at 0.25 → 3 → 6 qps;
    # (t − 1, t]: at 0.25 → 3, at 1.0 → {0.125, 0.25, 1.0} = 3 → 3 qps
    assert planned_envelope(np.array(arrivals), windows).tolist() == [8.0, 6.0, 3.0]
    live = TrafficEnvelope(windows)
    assert live.observe(arrivals[:2]).tolist() == [8.0, 4.0, 2.0]
    assert live.observe(arrivals[2:]).tolist() == [8.0, 6.0, 3.0]
    assert live.observe([]).tolist() == [0.0, 0.0, 0.0]
    assert live.rates.tolist() == [8.0, 6.0, 3.0]


def test_incremental_envelope_equals_whole_trace_envelope() -> None:
    trace = gamma_trace(200.0, 2.0, 120.0, seed=3)
    windows = envelope_windows(0.02)
    live = TrafficEnvelope(windows)
    a = trace.arrival_s
    for chunk in np.array_split(a, 97):
        live.observe(chunk)
    np.testing.assert_allclose(live.rates, planned_envelope(trace, windows), rtol=0, atol=0)
    assert live._buf.size < a.size  # old arrivals were dropped
    with pytest.raises(ConfigError):
        live.observe([0.0])  # out of time order


# --- the InferLine Tuner -----------------------------------------------------------------


def test_tuner_quiet_burst_hold_quiet_scale_down_then_ramp() -> None:
    tuner = InferLineTuner(config())
    state = tuner.initial_state(0.0)

    # quiet: one arrival; live rates 1, 0.5, 0.25 qps are all below 10, 8, 6
    targets, state = tuner.decide(state, obs([0.5], 1, 1), 1.0)
    assert targets == {"a": 1, "b": 1}

    # burst: 12 arrivals in 0.69 s. (t−1, t] at 1.6875 holds 12 → 12 qps > 10;
    # 2 s: 13/2 = 6.5 ≤ 8; 4 s: 13/4 = 3.25 ≤ 6. The 1-s window exceeds its planned rate by
    # 12/10 = 1.2, so every stage gets ceil(planned × 1.2) = ceil(1.2) = 2 replicas
    burst = [1.0 + i / 16 for i in range(12)]
    targets, state = tuner.decide(state, obs(burst, 1, 1), 2.0)
    assert targets == {"a": 2, "b": 2}
    assert state.last_change_s == 2.0

    # more load: 1 s max = 12 at t = 2.0 ((1, 2] holds 11 + 1), 2 s: 22/2 = 11, 4 s: 23/4 = 5.75.
    # With 2 and 2 replicas the envelope compared against is scaled by min(2/1, 2/1) = 2
    # (20, 16, 12), so nothing exceeds it and nothing changes (no scale-down: 1 s since change)
    more = [2.0 + i / 10 for i in range(10)]
    targets, state = tuner.decide(state, obs(more, 2, 2), 3.0)
    assert targets == {"a": 2, "b": 2}

    # quiet until the hold-off: no change 14 s after the last one …
    targets, state = tuner.decide(state, obs([], 2, 2), 16.0)
    assert targets == {"a": 2, "b": 2}
    # … then 15 s after it: the busiest 5-s bucket of the last 30 s is [0, 5) with 23 arrivals,
    # λ = 4.6 qps: a wants ceil(4.6/(10·0.5)) = 1, b wants ceil(4.6·0.5/(5·0.5)) = 1; each
    # stage above its target loses one replica
    targets, state = tuner.decide(state, obs([], 2, 2), 17.0)
    assert targets == {"a": 1, "b": 1}
    assert state.last_change_s == 17.0

    # ramp to a steady 8 qps from t = 17: 1 s rate 8 ≤ 10 and 2 s rate 8 ≤ 8 never trip; the
    # 4-s window holds 8, 16, 24 (= 6 qps, not above) after 1, 2, 3 s and 32 (8 qps) after 4 s
    ramp = np.array([17.0 + j / 8 for j in range(1, 33)])
    expected = {18.0: (1, 1), 19.0: (1, 1), 20.0: (1, 1), 21.0: (2, 2)}
    a, b = 1, 1
    for now, (ka, kb) in expected.items():
        chunk = ramp[(ramp > now - 1) & (ramp <= now)]
        targets, state = tuner.decide(state, obs(chunk, a, b), now)
        assert targets == {"a": ka, "b": kb}, now
        a, b = targets["a"], targets["b"]
    # the 4-s window exceeds its planned 6 qps by 8/6: ceil(1 × 4/3) = 2 for both stages
    assert state.last_change_s == 21.0


def test_tuner_scales_down_one_replica_per_hold_off() -> None:
    tuner = InferLineTuner(config())
    state = tuner.initial_state(0.0)
    # no load at all: every 15 s each stage above its target loses exactly one replica
    steps = [(10.0, (4, 3)), (15.0, (3, 2)), (20.0, (3, 2)), (30.0, (2, 1)), (45.0, (1, 1))]
    a, b = 4, 3
    for now, (ka, kb) in steps:
        targets, state = tuner.decide(state, obs([], a, b), now)
        assert targets == {"a": ka, "b": kb}, now
        a, b = ka, kb


def test_tuner_never_exceeds_limits_nor_goes_below_one() -> None:
    tuner = InferLineTuner(config(max_replicas={"a": 2, "b": 50}))
    state = tuner.initial_state(0.0)
    burst = [1.0 + i / 16 for i in range(12)]
    targets, state = tuner.decide(state, obs(burst, 1, 1), 2.0)
    assert targets == {"a": 2, "b": 2}  # a wanted 3
    targets, state = tuner.decide(state, obs([], 2, 2), 100.0)
    assert targets == {"a": 1, "b": 1}  # no load at all: one replica each, not zero


def obs_q(arrivals: list[float], a: int, b: int, qa: int, qb: int) -> Observation:
    return Observation(np.asarray(arrivals, dtype=float), {"a": a, "b": b}, {"a": qa, "b": qb})


def test_tuner_adds_a_replica_to_a_stage_whose_queue_exceeds_half_the_slo() -> None:
    # SLO 1 s, budget 0.5 s: a (μ 10) is over it with more than 5 queued per replica,
    # b (μ 5) with more than 2.5. Activation 5 s.
    tuner = InferLineTuner(config(slo_s=1.0))
    state = tuner.initial_state(0.0)
    # one quiet arrival: the envelope asks for nothing. a: 6/(1·10) = 0.6 s > 0.5 → 2;
    # b: 2/(1·5) = 0.4 s ≤ 0.5 → stays
    targets, state = tuner.decide(state, obs_q([0.5], 1, 1, 6, 2), 1.0)
    assert targets == {"a": 2, "b": 1}
    assert state.last_change_s == 1.0 and "a: 6 queued" in state.last_reason
    # a's new replica is still starting (added 1 s ago, activation 5 s): its deeper queue
    # (20/(2·10) = 1 s) asks for nothing more
    targets, state = tuner.decide(state, obs_q([], 2, 1, 20, 2), 2.0)
    assert targets == {"a": 2, "b": 1}
    targets, state = tuner.decide(state, obs_q([], 2, 1, 20, 2), 5.5)
    assert targets == {"a": 2, "b": 1}
    # 5 s after the addition the queue is still over the budget (11/(2·10) = 0.55 s): one more
    targets, state = tuner.decide(state, obs_q([], 2, 1, 11, 2), 6.0)
    assert targets == {"a": 3, "b": 1}
    # b over its budget (3/(1·5) = 0.6 s) while a is not (10/(3·10) = 0.33 s)
    targets, state = tuner.decide(state, obs_q([], 3, 1, 10, 3), 7.0)
    assert targets == {"a": 3, "b": 2}


def test_tuner_without_an_slo_ignores_queues() -> None:
    tuner = InferLineTuner(config())
    state = tuner.initial_state(0.0)
    targets, state = tuner.decide(state, obs_q([0.5], 1, 1, 1000, 1000), 1.0)
    assert targets == {"a": 1, "b": 1}


def test_tuner_keeps_the_replicas_of_a_stage_with_a_deep_queue() -> None:
    # activation 30 s > hold-off 15 s: replicas added at t = 1 are still starting at t = 20,
    # when the hold-off allows a scale-down. No load: both stages want 1 replica.
    tuner = InferLineTuner(config(slo_s=1.0, activation_s=30.0))
    state = tuner.initial_state(0.0)
    targets, state = tuner.decide(state, obs_q([0.5], 2, 2, 20, 20), 1.0)
    assert targets == {"a": 3, "b": 3}  # both over the budget
    # a: 20/(3·10) = 0.67 s, over the budget: kept (and not added to: still starting);
    # b: 1/(3·5) = 0.07 s: loses one
    targets, state = tuner.decide(state, obs_q([], 3, 3, 20, 1), 20.0)
    assert targets == {"a": 3, "b": 2}


def test_tuner_scales_down_no_lower_than_the_live_envelope_asks() -> None:
    tuner = InferLineTuner(config())
    state = tuner.initial_state(0.0)
    # 12 arrivals in [19, 19.46]: 1-s window 12 qps = 1.2 × planned 10 → ceil(1 × 1.2) = 2 per
    # stage, which the 2 + 2 running cover (no scale-up). The 30-s lookback's busiest 5-s
    # bucket holds the same 12 (2.4 qps): a wants ceil(2.4/(10·0.5)) = 1, b
    # ceil(2.4·0.5/(5·0.5)) = 1. Scaling to 1 + 1 would re-trigger at once; it stays at 2 + 2
    burst = [19.0 + i / 24 for i in range(12)]
    targets, state = tuner.decide(state, obs(burst, 2, 2), 20.0)
    assert targets == {"a": 2, "b": 2}
    # once the arrivals are sparse again the envelope asks for 1: one replica each goes
    targets, state = tuner.decide(state, obs([20.5], 2, 2), 21.0)
    assert targets == {"a": 1, "b": 1}


def test_tuner_anticipated_growth_is_opt_in() -> None:
    # activation 2 s: the window nearest 2 s is the 2-s one (planned 8 qps). 1 arrival per
    # second in (0, 2], 8 per second in (2, 4]. At t = 4: n1 = 16 arrivals in (2, 4], n0 = 2
    # in (0, 2]; 16 − 2 = 14 > 2·sqrt(18) = 8.5, so it is growth, not noise. Rates r1 = 8,
    # r0 = 1 qps; anticipated at t + 2: 8 + 1.5·(8 − 1) = 18.5 qps = 2.3125 × 8 →
    # ceil(1 × 2.3125) = 3 per stage. The live envelope is within the plan's (1 s: 8 ≤ 10,
    # 2 s: 16/2 = 8 ≤ 8, 4 s: 18/4 = 4.5 ≤ 6).
    def arrivals(t: float, before: int, after: int) -> list[float]:
        n = before if t <= 2.0 else after
        return [t - 1 + (j + 0.5) / n for j in range(n)]

    for anticipate, expected in ((False, 1), (True, 3)):
        tuner = InferLineTuner(config(activation_s=2.0, anticipate_growth=anticipate))
        state = tuner.initial_state(0.0)
        for now in (1.0, 2.0, 3.0):  # before t = 4 there are not two periods of history
            targets, state = tuner.decide(state, obs(arrivals(now, 1, 8), 1, 1), now)
            assert targets == {"a": 1, "b": 1}, now
        targets, state = tuner.decide(state, obs(arrivals(4.0, 1, 8), 1, 1), 4.0)
        assert targets == {"a": expected, "b": expected}
        if anticipate:
            assert "anticipated 18.5 qps" in state.last_reason
    # 2 then 6 per second: 12 − 4 = 8 is not above 2·sqrt(16) = 8, within Poisson noise
    tuner = InferLineTuner(config(activation_s=2.0, anticipate_growth=True))
    state = tuner.initial_state(0.0)
    for now in (1.0, 2.0, 3.0, 4.0):
        targets, state = tuner.decide(state, obs(arrivals(now, 2, 6), 1, 1), now)
    assert targets == {"a": 1, "b": 1}
    assert tuner.anticipated_rate(state, 4.0) is None


def test_tuner_floor_at_plan_is_opt_in() -> None:
    planned = {"a": 2, "b": 1}
    for floor, expected in ((False, (1, 1)), (True, (2, 1))):
        tuner = InferLineTuner(config(planned_replicas=planned, floor_at_plan=floor))
        state = tuner.initial_state(0.0)
        a, b = 3, 2
        for now in (15.0, 30.0, 45.0):  # no load: one replica per stage per hold-off
            targets, state = tuner.decide(state, obs([], a, b), now)
            a, b = targets["a"], targets["b"]
        assert (a, b) == expected


def test_tuner_config_rejects_bad_options() -> None:
    with pytest.raises(ConfigError):
        config(slo_s=0.0)
    with pytest.raises(ConfigError):
        config(slo_s=1.0, queue_budget=1.5)
    with pytest.raises(ConfigError):
        config(planned_replicas={}, floor_at_plan=True)


def test_tuner_config_from_plan_reproduces_the_plan_at_the_planning_rate() -> None:
    bundle = load_bundle(REFERENCE / "image-processing")
    plan = load_config(REFERENCE / "image-processing" / "configs" / "balanced.yaml")
    trace = gamma_trace(200.0, 1.0, 30.0, seed=1)
    cfg = TunerConfig.from_plan(bundle.pipeline, bundle.profiles, plan, trace, slo_s=0.15)
    assert cfg.slo_s == 0.15 and not cfg.anticipate_growth and not cfg.floor_at_plan
    rate = trace.n_queries / trace.duration_s
    assert cfg.replicas_for(rate, cfg.rho) == {n: c.replicas for n, c in plan.stages.items()}
    assert cfg.windows[-1] <= 60.0 and cfg.windows[0] >= 0.01
    assert cfg.envelope_qps[-1] < cfg.envelope_qps[0]  # short windows are burstier
    assert cfg.mu_qps["alexnet"] == pytest.approx(8 / 0.011704, rel=1e-3)


# --- baselines ---------------------------------------------------------------------------


def test_no_tuner_keeps_the_counts() -> None:
    policy = NoTuner()
    state = policy.initial_state(0.0)
    targets, _ = policy.decide(state, obs(np.arange(1000) / 1000, 3, 2), 1.0)
    assert targets == {"a": 3, "b": 2}


def test_coarse_grained_scales_whole_units_and_waits_to_scale_down() -> None:
    # unit = (1, 2), 40 qps per unit at threshold 0.5 → 20 qps per unit; 10-s load window
    cg = CoarseGrainedAutoscaler(
        stages=("a", "b"), unit={"a": 1, "b": 2}, unit_qps=40.0, threshold=0.5, max_units=10,
        measure_s=10.0, wait_s=30.0,
    )  # fmt: skip
    state = cg.initial_state(0.0)
    t = 0.0
    # 10 s at 30 qps: load 30 → ceil(30/20) = 2 units at once
    for _ in range(10):
        t += 1.0
        targets, state = cg.decide(state, obs(t - 1 + np.arange(30) / 30, 1, 2), t)
    assert targets == {"a": 2, "b": 4}
    # load falls to 10 qps: at t = 10 + k the 10-s mean is (30·(10 − k) + 10·k)/10 = 30 − 2k qps,
    # ≤ 20 (one unit) from k = 5, i.e. t = 15; the unit goes only after 30 s of that
    history = []
    for _ in range(45):
        t += 1.0
        targets, state = cg.decide(state, obs(t - 1 + np.arange(10) / 10, 2, 4), t)
        history.append((t, targets["a"]))
    first_down = next(time for time, a in history if a == 1)
    assert first_down == 15.0 + 30.0


def test_queue_length_policy_needs_queues_and_applies_delays() -> None:
    policy = QueueLengthPolicy(
        stages=("a", "b"), max_replicas={"a": 8, "b": 8},
        target_ongoing_requests={"a": 2.0, "b": 4.0}, upscale_delay_s=2.0, downscale_delay_s=5.0,
    )  # fmt: skip
    state = policy.initial_state(0.0)
    with pytest.raises(ConfigError):
        policy.decide(state, obs([], 1, 1), 1.0)

    def see(a_out: int, b_out: int, now: float, ra: int, rb: int) -> dict[str, int]:
        nonlocal state
        o = Observation(np.zeros(0), {"a": ra, "b": rb}, {"a": a_out, "b": b_out})
        targets, state = policy.decide(state, o, now)
        return targets

    # a: 7 outstanding / 2 → 4 wanted; b: 4 / 4 → 1 = current
    assert see(7, 4, 1.0, 1, 1) == {"a": 1, "b": 1}  # wanted since 1.0
    assert see(7, 4, 2.0, 1, 1) == {"a": 1, "b": 1}
    assert see(20, 4, 3.0, 1, 1) == {"a": 8, "b": 1}  # 2 s of wanting more: ceil(20/2) capped at 8
    assert see(0, 0, 4.0, 8, 1) == {"a": 8, "b": 1}  # down wanted since 4.0
    assert see(0, 0, 8.0, 8, 1) == {"a": 8, "b": 1}
    assert see(0, 0, 9.0, 8, 1) == {"a": 1, "b": 1}  # 5 s later, and never below 1
