"""The Estimator against queueing theory (SPEC §4): long runs, fixed seeds.

The Estimator's service time is the profiled latency of the batch, a constant
for batch size 1, so the exact comparisons here are with deterministic service:
M/D/1 (Pollaczek–Khinchine) and M/D/c, whose mean wait is exact through the
roots of z^c = exp(λD(z - 1)) (Crommelin's embedded chain, see ``md_c_mean_wait``).
Exponential service (M/M/1, and M/M/c through Erlang C) uses the Estimator's
``service_time="exponential"``, which multiplies the profiled latency by an
Exp(1) draw per (query, stage): with batch size 1 that is exactly M/M/c.

Poisson arrivals are Gamma arrivals with cv = 1. Runs hold 4 million queries:
the standard error of the mean wait is then about 0.5 % at ρ = 0.9 and much
less below, against a 2 % tolerance.
"""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest

from inferline.estimator import Estimator, ServiceTime, SimulationResult
from inferline.pipeline import Pipeline, PipelineConfig, StageConfig
from inferline.profiles import BatchProfile, HardwareCatalogue, HardwareType, ProfilePoint, Profiles
from inferline.workload import Trace, gamma_trace

QUERIES = 4_000_000
#: Tests simulating QUERIES queries: a few seconds each, most of this tier's time.
SLOW = pytest.mark.slow
SERVICE_S = 1.0
HARDWARE = HardwareCatalogue((HardwareType("unit", price_per_hour=1.0),))


def md_c_mean_wait(lam: float, service_s: float, servers: int) -> float:
    """Exact mean wait in queue of the M/D/c FIFO queue.

    With deterministic service D the number in system obeys, for every t,
    N(t + D) = max(N(t) - c, 0) + A(t, t + D] with A ~ Poisson(a = λD); its
    generating function gives E[N] = a + (a² - c(c - 1)) / (2(c - a)) +
    Σ_k 1 / (1 - z_k) over the c - 1 roots z_k ≠ 1 of z^c = exp(a(z - 1)) in the
    unit disc (z_k = ω_k exp(a(z_k - 1)/c), ω_k = exp(2πik/c), found by fixed-point
    iteration). Then Wq = E[N]/λ - D by Little's law. For c = 1 this is the
    Pollaczek–Khinchine ρD / (2(1 - ρ)).
    """
    a = lam * service_s
    assert a < servers, "the queue must be stable"
    roots_term = 0.0
    for k in range(1, servers):
        omega = cmath.exp(2j * math.pi * k / servers)
        z = 0j
        for _ in range(100_000):
            z_next = omega * cmath.exp(a * (z - 1) / servers)
            if abs(z_next - z) < 1e-15:
                z = z_next
                break
            z = z_next
        else:
            raise AssertionError("root iteration did not converge")
        roots_term += (1 / (1 - z)).real
    mean_in_system = a + (a * a - servers * (servers - 1)) / (2 * (servers - a)) + roots_term
    return mean_in_system / lam - service_s


def single_stage(service_s: float) -> tuple[Pipeline, Profiles]:
    pipeline = Pipeline.chain("queue", ["server"])
    point = ProfilePoint(1, service_s, service_s)
    profile = BatchProfile("server", "unit", (point,))
    return pipeline, Profiles(HARDWARE, {("server", "unit"): profile})


def run_queue(
    rho: float, servers: int, seed: int, service_time: ServiceTime = "fixed"
) -> tuple[Trace, SimulationResult]:
    lam = rho * servers / SERVICE_S
    trace = gamma_trace(lam, 1.0, QUERIES / lam, seed)
    pipeline, profiles = single_stage(SERVICE_S)
    config = PipelineConfig(
        stages={"server": StageConfig(hardware="unit", batch_size=1, replicas=servers)}
    )
    estimator = Estimator(pipeline, profiles, trace, seed=seed, service_time=service_time)
    return trace, estimator.run(config)


def erlang_c_mean_wait(lam: float, service_s: float, servers: int) -> float:
    """Mean wait in queue of M/M/c: Wq = C(c, a) / (cμ − λ), C the Erlang C probability."""
    a = lam * service_s
    rho = a / servers
    head = sum(a**k / math.factorial(k) for k in range(servers))
    tail = a**servers / math.factorial(servers) / (1 - rho)
    wait_probability = tail / (head + tail)
    return wait_probability / (servers / service_s - lam)


def test_erlang_c_known_values() -> None:
    # M/M/1: Wq = ρ/(μ − λ); M/M/2 at a = 1: C = 1/3, Wq = (1/3)/(2 − 1)
    assert erlang_c_mean_wait(0.5, 1.0, 1) == pytest.approx(1.0)
    assert erlang_c_mean_wait(1.0, 1.0, 2) == pytest.approx(1 / 3)


@SLOW
@pytest.mark.parametrize("servers", [1, 2, 4])
@pytest.mark.parametrize("rho", [0.5, 0.7, 0.9])
def test_mmc_mean_wait_matches_erlang_c(servers: int, rho: float) -> None:
    lam = rho * servers / SERVICE_S
    _, result = run_queue(rho, servers, seed=11 + servers, service_time="exponential")
    expected = erlang_c_mean_wait(lam, SERVICE_S, servers)
    assert result.stages["server"].mean_queue_s == pytest.approx(expected, rel=0.02)


def test_md_c_formula_reduces_to_pollaczek_khinchine() -> None:
    for rho in (0.1, 0.5, 0.9, 0.99):
        expected = rho * SERVICE_S / (2 * (1 - rho))
        assert md_c_mean_wait(rho / SERVICE_S, SERVICE_S, 1) == pytest.approx(expected, rel=1e-12)


def test_md_c_formula_known_values() -> None:
    # Wq falls with more servers at equal utilisation and vanishes at light load
    waits = [md_c_mean_wait(0.7 * c, SERVICE_S, c) for c in (1, 2, 4, 8)]
    assert waits == sorted(waits, reverse=True)
    assert md_c_mean_wait(0.01 * 4, SERVICE_S, 4) < 1e-6


@SLOW
@pytest.mark.parametrize("rho", [0.5, 0.7, 0.9])
def test_md1_mean_wait_matches_pollaczek_khinchine(rho: float) -> None:
    _, result = run_queue(rho, 1, seed=11)
    theory = rho * SERVICE_S / (2 * (1 - rho))
    assert result.stages["server"].mean_queue_s == pytest.approx(theory, rel=0.02)


@SLOW
@pytest.mark.parametrize("servers", [2, 4])
@pytest.mark.parametrize("rho", [0.5, 0.7, 0.9])
def test_mdc_mean_wait_matches_exact_theory(servers: int, rho: float) -> None:
    _, result = run_queue(rho, servers, seed=23 + servers)
    theory = md_c_mean_wait(rho * servers / SERVICE_S, SERVICE_S, servers)
    assert result.stages["server"].mean_queue_s == pytest.approx(theory, rel=0.02)


@SLOW
@pytest.mark.parametrize("servers", [1, 4])
def test_littles_law_for_servers(servers: int) -> None:
    """Busy servers on average = λ·S (Little's law applied to the servers)."""
    rho = 0.8
    trace, result = run_queue(rho, servers, seed=5)
    stats = result.stages["server"]
    assert stats.utilization == pytest.approx(rho, rel=0.01)
    assert stats.utilization == pytest.approx(trace.mean_rate_qps * SERVICE_S / servers, rel=1e-3)


@SLOW
def test_littles_law_for_the_system() -> None:
    """Time-average number in system, sampled at random instants, = λ·W."""
    trace, result = run_queue(0.8, 2, seed=7)
    arrival = trace.arrival_s
    finish = np.sort(arrival + result.latency_s)
    horizon = finish[-1]
    samples = np.sort(np.random.default_rng(0).uniform(0.0, horizon, 1_000_000))
    in_system = np.searchsorted(arrival, samples, side="right") - np.searchsorted(
        finish, samples, side="right"
    )
    little = trace.n_queries / horizon * float(np.mean(result.latency_s))
    assert float(np.mean(in_system)) == pytest.approx(little, rel=0.01)


def test_tandem_latency_is_the_sum_of_stage_waits_and_services() -> None:
    """In a chain with batch 1, mean latency = Σ over stages of (mean wait + service)."""
    services = {"a": 0.3, "b": 0.5, "c": 0.2}
    pipeline = Pipeline.chain("tandem", list(services))
    profiles = Profiles(
        HARDWARE,
        {
            (name, "unit"): BatchProfile(name, "unit", (ProfilePoint(1, s, s),))
            for name, s in services.items()
        },
    )
    config = PipelineConfig(
        stages={name: StageConfig(hardware="unit", batch_size=1, replicas=1) for name in services}
    )
    trace = gamma_trace(1.5, 2.0, 200_000 / 1.5, 3)
    result = Estimator(pipeline, profiles, trace).run(config)
    expected = sum(result.stages[n].mean_queue_s + s for n, s in services.items())
    assert result.mean_s == pytest.approx(expected, rel=1e-9)
    # deterministic service: b (slower than a) queues, c (faster than b) never does
    assert result.stages["b"].mean_queue_s > 0.0
    assert result.stages["c"].mean_queue_s == 0.0


def test_dd1_below_capacity_never_waits() -> None:
    """D/D/1 with the gap longer than the service: every latency is the service time."""
    service = 0.375  # dyadic, so every sum below is exact
    pipeline, profiles = single_stage(service)
    arrival = np.arange(1000) * 0.5
    trace = Trace.from_arrivals(arrival)
    config = PipelineConfig(
        stages={"server": StageConfig(hardware="unit", batch_size=1, replicas=1)}
    )
    result = Estimator(pipeline, profiles, trace).run(config)
    assert np.array_equal(result.latency_s, np.full(1000, service))
    assert result.stages["server"].mean_queue_s == 0.0
    assert result.stages["server"].utilization == pytest.approx(service / 0.5, rel=1e-3)


def test_dd1_overload_waits_grow_linearly() -> None:
    """D/D/1 overloaded: query k waits k·(S - T) exactly."""
    service, gap = 0.75, 0.5
    pipeline, profiles = single_stage(service)
    k = np.arange(1000)
    trace = Trace.from_arrivals(k * gap)
    config = PipelineConfig(
        stages={"server": StageConfig(hardware="unit", batch_size=1, replicas=1)}
    )
    result = Estimator(pipeline, profiles, trace).run(config)
    assert np.array_equal(result.latency_s, service + k * (service - gap))
    assert result.stages["server"].utilization == 1.0


# --- shared cores: processor sharing -----------------------------------------------------------
# Replicas that share a machine's cores form a processor-sharing (PS) queue once there are
# more replicas than jobs: with one core, many single-thread replicas and batch size 1 it
# is M/G/1-PS, whose mean sojourn E[S] / (1 − ρ) does not depend on the service
# distribution (insensitivity) and whose sojourn given a job of size x is x / (1 − ρ).
PS_QUERIES = 1_000_000


def run_shared_core(
    rho: float, service_time: ServiceTime, seed: int
) -> tuple[Estimator, SimulationResult, float]:
    from inferline.profiles import EngineOverhead, MachinePool

    pipeline, profiles = single_stage(SERVICE_S)
    profiles = profiles.with_overhead(EngineOverhead(frontend_cpu_s_per_query=0.0))
    machine = MachinePool(cores=1, memory_bytes=None)
    speed = machine.shared_cores_at(0.0, 0.0)  # 0.95: the front-end's idle floor kept out
    lam = rho * speed / SERVICE_S
    trace = gamma_trace(lam, 1.0, PS_QUERIES / lam, seed)
    config = PipelineConfig(
        stages={"server": StageConfig(hardware="unit", batch_size=1, replicas=256)}
    )
    est = Estimator(
        pipeline, profiles, trace, seed=seed, service_time=service_time, machine=machine
    )
    return est, est.run(config), speed


@SLOW
@pytest.mark.parametrize("service_time", ["fixed", "exponential"])
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_shared_core_mean_sojourn_is_insensitive(service_time: ServiceTime, rho: float) -> None:
    est, result, speed = run_shared_core(rho, service_time, seed=5)
    lam = est.trace.mean_rate_qps
    expected = (SERVICE_S / speed) / (1 - lam * SERVICE_S / speed)
    assert result.mean_s == pytest.approx(expected, rel=0.03)


@SLOW
def test_shared_core_sojourn_grows_linearly_with_job_size() -> None:
    est, result, speed = run_shared_core(0.7, "exponential", seed=9)
    size_s = SERVICE_S * np.exp(est.prepared.log_scale)
    rho = est.trace.mean_rate_qps * SERVICE_S / speed
    for lo, hi in ((0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0)):
        chosen = (size_s >= lo) & (size_s < hi)
        expected = float(np.mean(size_s[chosen])) / speed / (1 - rho)
        assert float(np.mean(result.latency_s[chosen])) == pytest.approx(expected, rel=0.04)
