"""Planning for a machine whose cores the replicas share (``fit=shared``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import inferline as il
from inferline.errors import MachineInfeasibleError
from inferline.estimator import Estimator

BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "text-pipeline"


@pytest.fixture(scope="module")
def bundle() -> il.Bundle:
    return il.load_bundle(BUNDLE)


def trace(rate_qps: float) -> il.Trace:
    return il.gamma_trace(rate_qps, 1.0, 60.0, 0)


def test_a_shared_cores_plan_meets_the_slo_with_contention_simulated(bundle: il.Bundle) -> None:
    machine = il.parse_machine("cores=2,fit=shared")
    t = trace(84.0)
    plan = il.plan(bundle.pipeline, bundle.profiles, t, 0.2, machine=machine)
    assert plan.feasible and plan.machine is not None
    assert plan.machine.pool.fit == "shared"
    assert plan.machine.replica_busy_cores is not None
    assert plan.machine.replica_busy_cores <= plan.machine.pool.busy_cores_allowed + 1e-9
    shared = Estimator(bundle.pipeline, bundle.profiles, t, machine=machine).run(plan.config)
    assert shared.p99_s <= 0.2
    assert plan.estimated_p99_s == pytest.approx(shared.p99_s)


def test_a_tight_slo_the_busy_rule_accepts_is_refused_once_contention_counts(
    bundle: il.Bundle,
) -> None:
    # 7 mostly idle single-thread replicas on 2 cores: average CPU fits, bursts do not
    t = trace(53.0)
    busy = il.plan(
        bundle.pipeline, bundle.profiles, t, 0.046, machine=il.parse_machine("cores=2,fit=busy")
    )
    assert busy.feasible
    shared = Estimator(
        bundle.pipeline, bundle.profiles, t, machine=il.parse_machine("cores=2,fit=shared")
    ).run(busy.config)
    assert shared.p99_s > 0.046
    with pytest.raises(MachineInfeasibleError) as caught:
        il.plan(
            bundle.pipeline,
            bundle.profiles,
            t,
            0.046,
            machine=il.parse_machine("cores=2,fit=shared"),
        )
    assert "infeasible on this machine" in str(caught.value)
    assert caught.value.unbounded is not None


def test_on_a_machine_with_cores_to_spare_sharing_changes_nothing(bundle: il.Bundle) -> None:
    t = trace(84.0)
    alone = il.plan(bundle.pipeline, bundle.profiles, t, 0.2)
    big = il.plan(
        bundle.pipeline, bundle.profiles, t, 0.2, machine=il.parse_machine("cores=64,fit=shared")
    )
    assert big.config == alone.config
    assert big.estimated_p99_s == pytest.approx(alone.estimated_p99_s)
