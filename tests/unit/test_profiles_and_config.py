"""Hardware catalogue, profiles (conservative lookup) and configurations."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inferline import load_bundle
from inferline._bundle import check_config_for
from inferline.errors import ConfigError, ProfileError
from inferline.pipeline import Pipeline, PipelineConfig, StageConfig, load_config, save_config
from inferline.profiles import (
    BatchProfile,
    HardwareCatalogue,
    HardwareType,
    ProfilePoint,
    Profiles,
    load_hardware,
    load_profiles,
)


def profile(*points: tuple[int, float, float]) -> BatchProfile:
    return BatchProfile("s", "cpu", tuple(ProfilePoint(*p) for p in points))


def test_lookup_between_profiled_sizes_takes_the_higher_neighbour() -> None:
    p = profile((1, 0.010, 0.012), (4, 0.020, 0.030), (8, 0.025, 0.040))
    assert p.latency_s(1) == 0.010
    assert p.latency_s(2) == 0.020  # between 1 and 4 → the higher one
    assert p.latency_s(3, "p99") == 0.030
    assert p.latency_s(5) == 0.025
    assert p.throughput_qps(8) == pytest.approx(320.0)
    assert p.latency_table(4).tolist() == [0.0, 0.010, 0.020, 0.020, 0.020]


def test_lookup_is_conservative_for_non_monotone_profiles() -> None:
    p = profile((1, 0.030, 0.030), (4, 0.020, 0.020))
    assert p.latency_s(2) == 0.030


def test_lookup_outside_the_profiled_range_is_an_error() -> None:
    p = profile((1, 0.01, 0.01), (4, 0.02, 0.02))
    with pytest.raises(ProfileError, match=r"outside the profiled range 1\.\.4"):
        p.latency_s(5)


def catalogue() -> HardwareCatalogue:
    return HardwareCatalogue(
        (HardwareType("cpu", 0.1), HardwareType("gpu", 1.0, accelerator=True, max_units=2))
    )


def small_profiles() -> Profiles:
    one = (ProfilePoint(1, 0.01, 0.01), ProfilePoint(2, 0.015, 0.015))
    return Profiles(
        catalogue(),
        {
            ("a", "cpu"): BatchProfile("a", "cpu", one),
            ("b", "cpu"): BatchProfile("b", "cpu", one),
            ("b", "gpu"): BatchProfile("b", "gpu", one),
        },
    )


def config(**stages: tuple[str, int, int]) -> PipelineConfig:
    return PipelineConfig(
        stages={
            k: StageConfig(hardware=h, batch_size=b, replicas=r) for k, (h, b, r) in stages.items()
        }
    )


def test_cost_is_replicas_times_unit_price() -> None:
    cfg = config(a=("cpu", 1, 3), b=("gpu", 2, 2))
    assert cfg.cost_per_hour(catalogue().price_per_hour) == pytest.approx(2.3)


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        (config(a=("cpu", 1, 1)), "stage 'b' is not configured"),
        (config(a=("gpu", 1, 1), b=("cpu", 1, 1)), "no profile for stage 'a' on hardware 'gpu'"),
        (config(a=("tpu", 1, 1), b=("cpu", 1, 1)), "unknown hardware 'tpu'"),
        (config(a=("cpu", 4, 1), b=("cpu", 1, 1)), "batch_size 4 exceeds the largest profiled"),
        (config(a=("cpu", 1, 1), b=("gpu", 1, 3)), "uses 3 units of 'gpu' but only 2 exist"),
        (config(a=("cpu", 1, 1), b=("cpu", 1, 1), c=("cpu", 1, 1)), "unknown stage 'c'"),
    ],
)
def test_config_checks(cfg: PipelineConfig, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        check_config_for(cfg, Pipeline.chain("ab", ["a", "b"]), small_profiles(), "plan.yaml")


def test_a_misspelt_stage_is_named_before_the_one_it_leaves_unconfigured() -> None:
    with pytest.raises(ConfigError) as info:
        check_config_for(
            config(a=("cpu", 1, 1), bb=("cpu", 1, 1)),
            Pipeline.chain("ab", ["a", "b"]),
            small_profiles(),
            "plans/p.yaml",
        )
    message = str(info.value)
    assert message.startswith("plans/p.yaml, field 'stages.bb': unknown stage 'bb'")
    assert "did you mean 'b'?" in message and "the pipeline has a, b" in message


def test_config_file_round_trip_ignores_plan_metadata(tmp_path: Path) -> None:
    cfg = config(a=("cpu", 1, 3), b=("gpu", 2, 2))
    path = tmp_path / "plan.yaml"
    save_config(cfg, path, extra={"cost_per_hour": 2.3, "log": ["initialised"]})
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {"stages": {"a": {"hardware": "cpu", "batch_size": 0, "replicas": 1}}},
            "stages.a.batch_size",
        ),
        ({"stages": {"a": {"hardware": "cpu", "batch_size": 1}}}, "stages.a.replicas"),
        ({"cost": 1}, "field 'stages': required field is missing"),
        (
            {"stages": {"a": {"hardware": "cpu", "batch_size": 1, "replicas": 1, "x": 1}}},
            "stages.a.x",
        ),
    ],
)
def test_bad_config_files(tmp_path: Path, body: object, needle: str) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_hardware_and_profile_files(tmp_path: Path) -> None:
    hw = tmp_path / "hardware.yaml"
    hw.write_text(
        yaml.safe_dump(
            {
                "hardware": [
                    {"name": "cpu", "price_per_hour": 0.1},
                    {"name": "gpu", "price_per_hour": 1},
                ]
            }
        )
    )
    pr = tmp_path / "profiles.yaml"
    pr.write_text(
        yaml.safe_dump(
            {
                "profiles": [
                    {
                        "stage": "a",
                        "hardware": "cpu",
                        "points": [{"batch_size": 1, "median_s": 0.01}],
                    }
                ]
            }
        )
    )
    profiles = load_profiles(pr, load_hardware(hw), ("a",))
    assert profiles.get("a", "cpu").latency_s(1, "p99") == 0.01  # p99 defaults to the median
    assert profiles.hardware_for("a") == ("cpu",)
    with pytest.raises(ProfileError, match="no profile for stage 'a' on hardware 'gpu'"):
        profiles.get("a", "gpu")


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (
            {"stage": "zz", "hardware": "cpu", "points": [{"batch_size": 1, "median_s": 0.01}]},
            "unknown stage 'zz'",
        ),
        (
            {"stage": "a", "hardware": "tpu", "points": [{"batch_size": 1, "median_s": 0.01}]},
            "unknown hardware 'tpu'",
        ),
        (
            {
                "stage": "a",
                "hardware": "cpu",
                "points": [
                    {"batch_size": 2, "median_s": 0.01},
                    {"batch_size": 1, "median_s": 0.01},
                ],
            },
            "profiles[0].points[1].batch_size': batch sizes must ascend",
        ),
        (
            {"stage": "a", "hardware": "cpu", "points": [{"batch_size": 1, "median_s": -1}]},
            "points[0].median_s",
        ),
        (
            {
                "stage": "a",
                "hardware": "cpu",
                "points": [{"batch_size": 1, "median_s": 0.02, "p99_s": 0.01}],
            },
            "below median_s",
        ),
    ],
)
def test_bad_profile_files(tmp_path: Path, entry: dict[str, object], needle: str) -> None:
    hw = tmp_path / "hardware.yaml"
    hw.write_text(yaml.safe_dump({"hardware": [{"name": "cpu", "price_per_hour": 0.1}]}))
    pr = tmp_path / "profiles.yaml"
    pr.write_text(yaml.safe_dump({"profiles": [entry]}))
    with pytest.raises(ProfileError) as info:
        load_profiles(pr, load_hardware(hw), ("a",))
    assert needle in str(info.value) and str(pr) in str(info.value)


def test_negative_price_is_rejected(tmp_path: Path) -> None:
    hw = tmp_path / "hardware.yaml"
    hw.write_text(yaml.safe_dump({"hardware": [{"name": "cpu", "price_per_hour": -1}]}))
    with pytest.raises(ProfileError, match=r"hardware\[0\].price_per_hour"):
        load_hardware(hw)


def test_reference_bundle_loads(reference_bundle: Path) -> None:
    bundle = load_bundle(reference_bundle)
    assert bundle.pipeline.stage_names == ("preprocess", "alexnet")
    assert set(bundle.profiles.hardware_for("alexnet")) >= {"k80", "v100"}
    for key, prof in bundle.profiles.entries.items():
        assert prof.source, f"profile {key} has no source"
    for hw in bundle.profiles.hardware:
        assert hw.source, f"hardware {hw.name} has no source"
