"""``validate``'s per-stage speed check and ``profile --in-place``: options, capacity,
readable and JSON output (no engine; tests/integration/test_live_calibration.py serves one)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from inferline._bundle import Bundle
from inferline.errors import ConfigError
from inferline.pipeline import Pipeline, PipelineConfig, StageConfig
from inferline.profiler import ValidationReport, ValidationRun
from inferline.profiles import BatchProfile, HardwareCatalogue, HardwareType, ProfilePoint, Profiles

HW = "cpu-1"
CHAIN = Pipeline.chain("ab", ["a", "b"])
CONFIG = PipelineConfig(
    stages={
        "a": StageConfig(hardware=HW, batch_size=4, replicas=1),
        "b": StageConfig(hardware=HW, batch_size=4, replicas=1),
    }
)


def chain_profiles() -> Profiles:
    table = {"a": {1: 0.004, 2: 0.006, 4: 0.009}, "b": {1: 0.002, 2: 0.003, 4: 0.004}}
    entries = {
        (s, HW): BatchProfile(s, HW, tuple(ProfilePoint(b, t, 1.5 * t) for b, t in pts.items()))
        for s, pts in table.items()
    }
    return Profiles(HardwareCatalogue((HardwareType(HW, 0.0425),)), entries)


def _run(label: str, estimated: float, measured: float, lag_s: float) -> ValidationRun:
    return ValidationRun(
        label=label,
        target_utilisation=0.5,
        rate_qps=10.0,
        queries=100,
        duration_s=10.0,
        estimated={"p50_s": 0.01, "p99_s": estimated, "miss_rate": 0.0},
        estimated_without_overhead_p99_s=estimated,
        utilisation={"a": 0.5},
        cpu_demand=0.5,
        measured={"p99_s": measured, "send_lag_p99_s": lag_s},
        load_average=(1.0, 1.0),
    )


def test_validate_prints_every_stages_speed() -> None:
    from rich.console import Console

    from inferline.cli._validate import _stage_speeds

    def service(ratio: float, profiled_s: float) -> dict[str, float | None]:
        return {
            "ratio": ratio,
            "engine_predict_s": ratio * profiled_s,
            "profiled_predict_s": profiled_s,
        }

    run = dataclasses.replace(
        _run("U=0.50", 0.100, 0.110, 0.001),
        utilisation={"a": 0.5, "b": 0.1},
        service={"a": service(1.01, 0.010), "b": service(1.69, 0.004)},
    )
    report = ValidationReport(
        bundle=Path("."),
        pipeline="p",
        config=CONFIG,
        config_source="x",
        cost_per_hour=0.1,
        slo_s=0.3,
        planning_queries=10,
        runs=(run,),
        wall_s=1.0,
    )
    console = Console(width=200, record=True)
    console.print(_stage_speeds(report))
    text = console.export_text()
    assert "10.1 / 10.0 (1.01)" in text
    assert "6.76 / 4.00 (1.69) !" in text  # the light stage that ran slow is flagged
    assert run.drifted_stages == ["b"]
    assert report.summary()["runs"][0]["drifted_stages"] == ["b"]


def test_in_place_options_capacity_and_flags(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from inferline.cli import app
    from inferline.profiler import InPlaceOptions
    from inferline.profiler._inplace import capacity_qps

    with pytest.raises(ConfigError, match="--rates"):
        InPlaceOptions(rates=(0.5, 2.0))
    with pytest.raises(ConfigError, match="--rates-qps"):
        InPlaceOptions(rates_qps=(10.0, -1.0))
    with pytest.raises(ConfigError, match="--duration-s"):
        InPlaceOptions(duration_s=0.0)
    assert InPlaceOptions(rates_qps=(5.0,)).rates_qps == (5.0,)
    # a: 1 replica x 4 queries / 9 ms; b the same at 4 ms, but reached by all queries too
    bundle = Bundle(root=tmp_path, pipeline=CHAIN, profiles=chain_profiles())
    assert capacity_qps(bundle, CONFIG) == pytest.approx(4 / 0.009)
    runner = CliRunner()
    result = runner.invoke(app, ["profile", str(tmp_path), "--rates", "0.5"])
    assert result.exit_code == 2 and "only with --in-place" in result.output
    result = runner.invoke(app, ["profile", str(tmp_path), "--in-place", "--rates", "0.5,x"])
    assert result.exit_code == 2 and "separated by commas" in result.output
    result = runner.invoke(
        app, ["profile", str(tmp_path), "--in-place", "--rates", "0.5", "--rates-qps", "3"]
    )
    assert result.exit_code == 2 and "not both" in result.output


def test_in_place_report_prints_readably_and_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    from inferline.cli._profile import print_in_place
    from inferline.profiler import InPlaceReport

    stages = {
        "a": {
            "hardware": HW,
            "ratio": 1.42,
            "predict_s": 0.0071,
            "profiled_s": 0.005,
            "batch_sizes": [{"batch_size": 1, "count": 30}, {"batch_size": 3, "count": 12}],
        },
        "b": {"hardware": HW, "ratio": None, "batch_sizes": []},
    }
    report = InPlaceReport(
        bundle=Path("."),
        pipeline="ab",
        config=CONFIG,
        capacity_qps=120.0,
        rates_qps=(36.0, 72.0),
        runs=(
            {"rate_qps": 36.0, "queries": 360, "errors": 0, "p50_s": 0.01, "p99_s": 0.03},
            {"rate_qps": 72.0, "queries": 720, "errors": 1, "p50_s": 0.02, "p99_s": 0.05},
        ),
        stages=stages,
        profiles=chain_profiles(),
        profiles_file=Path("profiles.yaml"),
        wall_s=12.0,
    )
    print_in_place(report)
    text = capsys.readouterr().out
    assert "capacity ~120.0 q/s" in text and "72.0" in text and "50.000" in text
    assert "1(30) 3(12)" in text and "5.000" in text and "7.100" in text and "1.42" in text
    assert "wrote profiles.yaml" in text
    assert "b ran too few batches to measure" in text
    summary = report.summary()
    assert summary["in_place"] and summary["rates_qps"] == [36.0, 72.0]
    assert summary["stages"]["a"]["ratio"] == 1.42 and summary["config"]["a"]["batch_size"] == 4
