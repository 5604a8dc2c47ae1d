"""Live calibration in the engine: rolling predict times, drift warnings, the live
estimate, GET /v2/control/calibration and the /metrics gauges (no processes, no sleeps)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from inferline.cli import app
from inferline.engine import (
    CalibrationOptions,
    Engine,
    EngineApp,
    UnreachableError,
    fetch_calibration,
    free_port,
)
from inferline.engine._calibration import MIN_TAIL_BIAS_QUERIES, Calibrator
from inferline.engine.testing import InMemoryReplicaFactory, write_bundle
from inferline.errors import ConfigError
from inferline.pipeline import Pipeline, PipelineConfig, load_config, load_pipeline
from inferline.profiles import (
    BatchProfile,
    HardwareCatalogue,
    HardwareType,
    ProfilePoint,
    Profiles,
    hardware_from_mapping,
    profiles_from_mapping,
)

HW = HardwareCatalogue((HardwareType("cpu-1", 0.05),))


def _bundle(tmp_path: Path) -> tuple[Pipeline, PipelineConfig]:
    pipeline_file, plan_file = write_bundle(
        tmp_path,
        "calib",
        {"a": "inferline.engine.testing:NoOp", "b": "inferline.engine.testing:NoOp"},
        [("a", "b")],
        {
            "a": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1},
            "b": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1},
        },
    )
    return load_pipeline(pipeline_file), load_config(plan_file)


def _profiles(predict_s: float = 0.002) -> Profiles:
    def entry(stage: str) -> BatchProfile:
        points = tuple(
            ProfilePoint(b, b * predict_s + 0.0002, b * predict_s * 1.5 + 0.0002, b * predict_s)
            for b in (1, 2, 4, 8)
        )
        return BatchProfile(stage, "cpu-1", points)

    return Profiles(HW, {("a", "cpu-1"): entry("a"), ("b", "cpu-1"): entry("b")})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_calibrator_ratio_drift_and_estimate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline, config = _bundle(tmp_path)
    clock = Clock()
    options = CalibrationOptions(window_s=30.0, min_samples=10, drift_sustain_s=10.0)
    cal = Calibrator(pipeline, _profiles(), options, clock=clock)

    def traffic(a_factor: float) -> None:
        """One second: 50 queries, stage a at ``a_factor`` x its profile, b as profiled."""
        for k in range(50):
            arrival = clock.now + k * 0.02
            cal.record_batch("a", "cpu-1", 1, 0.002 * a_factor)
            cal.record_batch("b", "cpu-1", 1, 0.002)
            cal.record_query(arrival, 0.004 + 0.001 * (k % 10), ("a", "b"))
        clock.now += 1.0

    for _ in range(5):
        traffic(2.0)
    caplog.set_level(logging.WARNING, logger="inferline.engine")
    cal.refresh(config, slo_s=0.1)
    status = cal.status()
    assert status["stages"]["a"]["speed_ratio"] == pytest.approx(2.0)
    assert status["stages"]["b"]["speed_ratio"] == pytest.approx(1.0)
    assert status["stages"]["a"]["drift_since_s"] == clock.now
    assert not status["stages"]["a"]["drifted"] and not caplog.records  # not sustained yet
    pipe = status["pipeline"]
    assert pipe["queries"] == 250
    assert pipe["measured_p99_s"] == pytest.approx(0.013)
    assert pipe["rate_qps"] == pytest.approx(50.0, rel=0.05)
    # the calibrated estimate charges a's batches 4 ms instead of 2: it is the larger one
    assert pipe["estimated_p99_s"] > pipe["estimated_uncalibrated_p99_s"] > 0

    for _ in range(11):
        traffic(2.0)
    cal.refresh(config, slo_s=0.1)
    cal.refresh(config, slo_s=0.1)  # still drifted: no second warning
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "stage 'a'" in warnings[0] and "2.00x" in warnings[0]
    assert cal.status()["stages"]["a"]["drifted"]
    assert cal.status()["stages"]["a"]["drift_warnings"] == 1
    assert cal.status()["stages"]["b"]["drift_warnings"] == 0

    # back to profiled speed: the window forgets the slow batches, the episode ends
    for _ in range(31):
        traffic(1.0)
    cal.refresh(config, slo_s=0.1)
    a = cal.status()["stages"]["a"]
    assert a["speed_ratio"] == pytest.approx(1.0)
    assert not a["drifted"] and a["drift_since_s"] is None and a["drift_warnings"] == 1


def test_calibrator_without_profiles_only_measures(tmp_path: Path) -> None:
    pipeline, config = _bundle(tmp_path)
    clock = Clock()
    cal = Calibrator(pipeline, None, clock=clock)
    cal.record_batch("a", "cpu-1", 2, 0.003)
    cal.record_query(clock.now, 0.01, ("a", "b"))
    cal.refresh(config, slo_s=1.0)
    assert cal.status()["stages"]["a"]["speed_ratio"] is None
    assert cal.status()["pipeline"]["estimated_p99_s"] is None
    report = cal.report(config)
    assert report["profiles"] is None
    assert report["stages"]["a"]["batch_sizes"][0]["count"] == 1


def test_calibration_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="drift_ratio"):
        CalibrationOptions(drift_ratio=1.0)
    with pytest.raises(ConfigError, match="window_s"):
        CalibrationOptions(window_s=0.0)
    with pytest.raises(ConfigError, match="min_samples"):
        CalibrationOptions(min_samples=0)


async def _get(
    app: EngineApp, path: str, method: str = "GET", body: bytes = b""
) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-length", str(len(body)).encode())],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_engine_serves_calibration_and_gauges(tmp_path: Path) -> None:
    pipeline, config = _bundle(tmp_path)
    from inferline.engine._tensor import parse_infer_request

    async def main() -> tuple[dict[str, Any], str, dict[str, Any]]:
        engine = Engine(
            pipeline,
            config,
            replica_factory=InMemoryReplicaFactory(),
            profiles=_profiles(),
            calibration=CalibrationOptions(min_samples=5, drift_sustain_s=0.0),
        )
        await engine.start()
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
        ).encode()
        for _ in range(4):
            futures = [engine.submit(parse_infer_request(body, {})) for _ in range(20)]
            answers = await asyncio.gather(*futures)
            assert all(a.status == 200 for a in answers)
        engine.calibrator.refresh(engine.config, engine.options.slo_s)
        app = EngineApp(engine)
        code, raw = await _get(app, "/v2/control/calibration")
        assert code == 200
        mcode, metrics = await _get(app, "/metrics")
        assert mcode == 200
        status = engine.status()
        await engine.stop()
        return json.loads(raw), metrics.decode(), status

    report, metrics, status = asyncio.run(main())
    assert report["model"] == "calib"
    for stage in ("a", "b"):
        speed = report["stages"][stage]
        assert speed["samples"] >= 4 and speed["ratio"] is not None
        # a no-op runs in microseconds against 2 ms profiled: far faster than profiled
        assert speed["ratio"] < 0.5
    hardware = hardware_from_mapping({"hardware": report["hardware"]})
    calibrated = profiles_from_mapping(report["profiles"], hardware, ("a", "b"))
    assert calibrated.get("a", "cpu-1").latency_s(1) < _profiles().get("a", "cpu-1").latency_s(1)
    assert status["calibration"]["stages"]["a"]["drifted"]  # far beyond 1/1.25, at once
    assert status["calibration"]["pipeline"]["queries"] == 80
    assert 'inferline_stage_speed_ratio{stage="a"}' in metrics
    assert 'inferline_stage_speed_drift_warnings_total{stage="a"} 1.0' in metrics
    for gauge in (
        "inferline_estimated_p99_seconds ",
        "inferline_estimated_uncalibrated_p99_seconds ",
        "inferline_measured_p99_seconds ",
    ):
        assert gauge in metrics


def test_fetch_calibration_refuses_bad_urls_and_dead_servers() -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        fetch_calibration("ftp://example")
    with pytest.raises(ConfigError, match="port"):
        fetch_calibration("http://127.0.0.1:notaport")
    with pytest.raises(UnreachableError, match="not reachable"):
        fetch_calibration(f"http://127.0.0.1:{free_port()}", timeout_s=2.0)


def test_calibrate_command_exits_2_when_nothing_answers() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(app, ["calibrate", url, *extra])
        assert result.exit_code == 2, result.output
        assert "not reachable" in result.output


def test_the_estimate_covers_at_most_the_latest_queries(tmp_path: Path) -> None:
    pipeline, config = _bundle(tmp_path)
    clock = Clock()
    options = CalibrationOptions(estimate_max_queries=100, min_samples=5)
    cal = Calibrator(pipeline, _profiles(), options, clock=clock)
    for k in range(250):  # the first 150 were slow; the latest 100 are fast
        cal.record_batch("a", "cpu-1", 1, 0.002)
        cal.record_batch("b", "cpu-1", 1, 0.002)
        cal.record_query(clock.now + 0.01 * k, 0.5 if k < 150 else 0.005, ("a", "b"))
    clock.now += 3.0
    cal.refresh(config, slo_s=1.0)
    pipe = cal.status()["pipeline"]
    assert pipe["queries"] == 100 and pipe["measured_p99_s"] == 0.005
    assert pipe["rate_qps"] == pytest.approx(100.0)


def test_the_uncalibrated_estimate_shares_the_hosts_cores_and_the_calibrated_not(
    tmp_path: Path,
) -> None:
    from inferline.profiles import MachinePool

    pipeline, config = _bundle(tmp_path)
    one_core = MachinePool(cores=1, memory_bytes=None)

    def estimates(machine: MachinePool | None) -> dict[str, Any]:
        clock = Clock()
        cal = Calibrator(pipeline, _profiles(0.02), clock=clock, machine=machine)
        for k in range(400):  # 40 q/s, a and b at their profiled 20 ms: 1.6 cores asked
            cal.record_batch("a", "cpu-1", 1, 0.02)
            cal.record_batch("b", "cpu-1", 1, 0.02)
            cal.record_query(clock.now + k * 0.025, 0.05, ("a", "b"))
        clock.now += 10.0
        cal.refresh(config, slo_s=1.0)
        return cal.status()["pipeline"]

    alone, shared = estimates(None), estimates(one_core)
    assert shared["estimated_uncalibrated_p99_s"] > alone["estimated_uncalibrated_p99_s"]
    assert shared["estimated_p99_s"] == pytest.approx(alone["estimated_p99_s"])
    busy_rule = estimates(MachinePool(cores=1, memory_bytes=None, fit="busy"))
    assert busy_rule["estimated_uncalibrated_p99_s"] == alone["estimated_uncalibrated_p99_s"]


def test_cpu_work_is_calibrated_apart_for_an_estimate_on_shared_cores(tmp_path: Path) -> None:
    from inferline.profiles import MachinePool

    pipeline, config = _bundle(tmp_path)

    def calibrate(machine: MachinePool | None, cpu_s: float | None) -> Calibrator:
        clock = Clock()
        cal = Calibrator(pipeline, _profiles(0.01), clock=clock, machine=machine)
        for k in range(200):  # batches waited for a core: 30 ms served, 10 ms of CPU
            cal.record_batch("a", "cpu-1", 1, 0.03, cpu_s)
            cal.record_batch("b", "cpu-1", 1, 0.01, cpu_s)
            cal.record_query(clock.now + k * 0.05, 0.05, ("a", "b"))
        clock.now += 10.0
        cal.refresh(config, slo_s=1.0)
        return cal

    shared = calibrate(MachinePool(cores=2, memory_bytes=None), 0.01)
    served, work = shared.latest_calibration(), shared.latest_work_calibration()
    assert served is not None and work is not None
    assert served.speeds[("a", "cpu-1")].ratio == pytest.approx(3.0)
    assert work.speeds[("a", "cpu-1")].ratio == pytest.approx(1.0)  # the CPU it took
    assert work.profiles.get("a", "cpu-1").latency_s(1) < served.profiles.get(
        "a", "cpu-1"
    ).latency_s(1)
    # no CPU times reported, or a machine that does not share its cores: none
    assert (
        calibrate(MachinePool(cores=2, memory_bytes=None), None).latest_work_calibration() is None
    )
    busy = MachinePool(cores=2, memory_bytes=None, fit="busy")
    assert calibrate(busy, 0.01).latest_work_calibration() is None
    assert calibrate(None, 0.01).latest_work_calibration() is None


def test_cpu_work_takes_the_round_trip_outside_predict_the_engine_measured(
    tmp_path: Path,
) -> None:
    from inferline.profiles import MachinePool

    pipeline, config = _bundle(tmp_path)
    clock = Clock()
    cal = Calibrator(
        pipeline, _profiles(0.01), clock=clock, machine=MachinePool(cores=2, memory_bytes=None)
    )
    for k in range(200):  # 10 ms of CPU in 30 ms of predict, 2 ms more to take the answer
        cal.record_batch("a", "cpu-1", 1, 0.03, 0.01, turn_s=0.032)
        cal.record_batch("b", "cpu-1", 1, 0.01, 0.01)
        cal.record_query(clock.now + k * 0.05, 0.05, ("a", "b"))
    clock.now += 10.0
    cal.refresh(config, slo_s=1.0)
    work = cal.latest_work_calibration()
    assert work is not None
    assert work.profiles.get("a", "cpu-1").latency_s(1) == pytest.approx(0.012)
    direct = cal.work_calibration()  # the endpoint's path: the same rests
    assert direct is not None and direct.profiles == work.profiles


def test_round_trips_calibrate_the_served_profiles_and_are_reported(tmp_path: Path) -> None:
    """The engine's calibration takes each batch's round trip as the point's latency,
    and the report carries the CPU-work profiles when the host's cores are shared."""
    from inferline.profiles import MachinePool

    pipeline, config = _bundle(tmp_path)
    clock = Clock()
    machine = MachinePool(cores=2, memory_bytes=None)
    cal = Calibrator(pipeline, _profiles(0.002), clock=clock, machine=machine)
    for _ in range(100):
        cal.record_batch("a", "cpu-1", 1, 0.002, 0.002, 0.005)
        cal.record_batch("b", "cpu-1", 1, 0.002, 0.002)
    cal.refresh(config, slo_s=1.0)
    latest = cal.latest_calibration()
    assert latest is not None
    assert latest.profiles.get("a", "cpu-1").latency_s(1) == pytest.approx(0.005)
    assert latest.profiles.get("b", "cpu-1").latency_s(1) < 0.005
    report = cal.report(config)
    served = report["profiles"]
    work = report["work_profiles"]
    assert served is not None and work is not None
    assert json.dumps(report)  # the endpoint's body
    cal.reset()
    assert cal.report(config)["work_profiles"] is None


def test_the_front_ends_time_per_query_replaces_the_profiled_overhead(tmp_path: Path) -> None:
    """Every answered query's time in the HTTP front-end outside the engine is recorded;
    from MIN_FRONTEND_QUERIES of them on, the calibrated profiles carry their distribution
    as the per-query overhead, and the report shows it beside the profiled one."""
    from inferline.profiles import MIN_FRONTEND_QUERIES, EngineOverhead

    pipeline, config = _bundle(tmp_path)
    clock = Clock()
    profiled = EngineOverhead(per_batch_s=1e-4, per_query_s=0.004, per_query_p99_s=0.02)
    cal = Calibrator(pipeline, _profiles().with_overhead(profiled), clock=clock)
    for _ in range(50):
        cal.record_batch("a", "cpu-1", 1, 0.002)
    for k in range(MIN_FRONTEND_QUERIES - 1):
        cal.record_frontend(0.0005 + 1e-6 * k)
    cal.refresh(config, slo_s=1.0)
    latest = cal.latest_calibration()
    assert latest is not None and latest.profiles.overhead == profiled  # too few yet
    assert cal.report(config)["frontend"]["calibrated"] is False
    cal.record_frontend(0.003)
    cal.refresh(config, slo_s=1.0)
    latest = cal.latest_calibration()
    assert latest is not None and latest.profiles.overhead is not None
    overhead = latest.profiles.overhead
    assert overhead.per_batch_s == profiled.per_batch_s  # the per-batch part is kept
    assert 0.0005 < overhead.per_query_s < 0.0007
    assert overhead.per_query_percentiles_s[-1] == pytest.approx(0.003)
    frontend = cal.report(config)["frontend"]
    assert frontend["calibrated"] is True and frontend["queries"] == MIN_FRONTEND_QUERIES
    assert frontend["profiled_median_s"] == 0.004
    assert 0.0005 < frontend["median_s"] < 0.0007
    clock.now += 61.0  # past the window: forgotten
    assert cal.report(config)["frontend"]["queries"] == 0


def test_the_http_front_end_records_its_time_per_answered_query(tmp_path: Path) -> None:
    pipeline, config = _bundle(tmp_path)

    async def main() -> tuple[list[int], list[float]]:
        engine = Engine(
            pipeline, config, replica_factory=InMemoryReplicaFactory(), profiles=_profiles()
        )
        await engine.start()
        app = EngineApp(engine)
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
        ).encode()
        codes = [(await _get(app, "/v2/models/calib/infer", "POST", body))[0] for _ in range(3)]
        await _get(app, "/v2/models/calib/infer", "POST", b"{not json")
        recorded = [v for _, v in engine.calibrator._frontend]
        await engine.stop()
        return codes, recorded

    codes, recorded = asyncio.run(main())
    assert codes == [200, 200, 200]
    assert len(recorded) == 3  # answered queries only, not the malformed one
    assert all(0.0 <= v < 1.0 for v in recorded)


def test_the_tail_bias_is_measured_over_the_shared_cores_estimate(tmp_path: Path) -> None:
    """With CPU work on shared cores the refresh also estimates the window the way plans
    are made, and says how far the measured P99 is above it (clamped to at least 1)."""
    from inferline.planner import MAX_TAIL_BIAS
    from inferline.profiles import MachinePool

    pipeline, config = _bundle(tmp_path)

    def pipeline_status(
        latency_s: float, machine: MachinePool | None, queries: int = MIN_TAIL_BIAS_QUERIES
    ) -> dict[str, Any]:
        clock = Clock()
        cal = Calibrator(pipeline, _profiles(0.01), clock=clock, machine=machine)
        for k in range(queries):  # 20 q/s, 10 ms of CPU a batch at each stage
            cal.record_batch("a", "cpu-1", 1, 0.01, 0.01)
            cal.record_batch("b", "cpu-1", 1, 0.01, 0.01)
            cal.record_query(clock.now + k * 0.05, latency_s, ("a", "b"))
        clock.now += queries * 0.05
        cal.refresh(config, slo_s=1.0)
        return dict(cal.status()["pipeline"])

    two_cores = MachinePool(cores=2, memory_bytes=None)
    slow = pipeline_status(0.030, two_cores)
    shared = slow["estimated_shared_p99_s"]
    assert shared is not None and 0.015 < shared < 0.030
    assert slow["tail_bias"] == pytest.approx(min(0.030 / shared, MAX_TAIL_BIAS))
    assert pipeline_status(0.001, two_cores)["tail_bias"] == 1.0  # measured under: kept at 1
    none = pipeline_status(0.030, None)  # no shared cores: no such estimate, no bias
    assert none["estimated_shared_p99_s"] is None and none["tail_bias"] is None
    few = pipeline_status(0.030, two_cores, MIN_TAIL_BIAS_QUERIES - 1)  # P99s of a few
    assert few["estimated_shared_p99_s"] is not None and few["tail_bias"] is None
    # the readable line of `inferline calibrate` gives it with the command to plan with
    from inferline.cli._calibrate import _pipeline_line

    line = _pipeline_line(slow, 60.0)
    assert f"tail bias {slow['tail_bias']:.2f}" in line and "--tail-bias" in line
    assert "too few queries for a tail bias" in _pipeline_line(few, 60.0)
