"""README's Python section, run: profile → plan → simulate → serve → replay in Python on a
small bundle (tests/data/sleepy: its "models" sleep, so timings hold on a busy machine), then
the served handle's apply, status and stop, and a live tuner started from Python."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import inferline as il
from inferline.profiler import OverheadOptions, RepetitionPolicy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DATA = Path(__file__).resolve().parents[1] / "data"
REQUEST = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0.9]}]}'
QUICK = il.ProfileOptions(
    samples=100,
    max_batch=4,
    hardware=("cpu-1",),
    repetitions=RepetitionPolicy(min_reps=10, max_reps=30, min_time_s=0.1),
    overhead_options=OverheadOptions(rates_qps=(20.0,), duration_s=2.0, warmup_s=0.5),
)


def test_profile_plan_serve_replay_in_python(tmp_path: Path) -> None:
    folder = tmp_path / "sleepy"
    shutil.copytree(DATA / "sleepy", folder)

    # --- as in README.md, "Python API" (quick profiling options, a short trace) ---
    il.profile_bundle(folder, QUICK)  # measures every stage, writes profiles.yaml
    bundle = il.load_bundle(folder)
    trace = il.gamma_trace(rate_qps=10, cv=1.0, duration_s=20, seed=1)
    planning, evaluation = il.split_trace(trace, 0.5)
    plan = il.plan(bundle.pipeline, bundle.profiles, planning, slo_s=0.3)
    plan.save(folder / "plan.yaml")
    estimate = il.simulate(bundle.pipeline, bundle.profiles, plan.config, evaluation, slo_s=0.3)
    tuned = il.tune_simulate(
        bundle.pipeline, bundle.profiles, plan.config, evaluation, 0.3, policy="inferline"
    )
    with il.serve(bundle, plan, slo_s=0.3) as served:
        result = il.replay(served.url, evaluation, slo_s=0.3, bodies=[REQUEST])
        summary = il.replay_summary(result)

        # --- the handle beyond the README ---
        assert served.url.startswith("http://127.0.0.1:")
        status = served.status()
        assert {n: s["replicas"] for n, s in status["stages"].items()} == {
            n: c.replicas for n, c in plan.config.stages.items()
        }
        more = il.PipelineConfig(
            stages={
                n: c.model_copy(update={"replicas": c.replicas + (n == "model")})
                for n, c in plan.config.stages.items()
            }
        )
        after = served.apply(more)
        assert after["stages"]["model"]["replicas"] == plan.config.stages["model"].replicas + 1
        assert served.plan() == more
        wrong = il.PipelineConfig(stages={"nope": plan.config.stages["model"]})
        with pytest.raises(il.EngineError) as refused:
            served.apply(wrong)
        assert getattr(refused.value, "status", None) == 400, refused.value
    assert served.stop() == 0  # already stopped by the block; the exit code stays
    with pytest.raises(il.EngineError, match="stopped"):
        served.status()

    assert plan.feasible and estimate.p99_s <= 0.3 and tuned.queries == evaluation.n_queries
    assert summary["sent"] == evaluation.n_queries
    assert summary["ok"] == summary["sent"], summary
    assert "serving 'sleepy'" in served.log()


def test_serve_with_a_live_tuner_from_python(tmp_path: Path) -> None:
    folder = tmp_path / "sleepy"
    shutil.copytree(DATA / "sleepy", folder)
    il.profile_bundle(folder, QUICK)
    bundle = il.load_bundle(folder)
    planning = il.gamma_trace(rate_qps=10, cv=1.0, duration_s=20, seed=1)
    plan = il.plan(bundle.pipeline, bundle.profiles, planning, slo_s=0.3)
    with il.serve(
        folder, plan.config, slo_s=0.3, tune="inferline+opt-in", planning_trace=planning
    ) as served:
        tuner = served.status()["tuner"]
    assert tuner["policy"] == "inferline+opt-in"
    assert "tuner 'inferline+opt-in' on" in served.log()
