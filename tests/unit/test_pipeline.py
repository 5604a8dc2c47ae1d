"""The pipeline graph: validation, flow semantics and scale factors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from inferline.errors import PipelineError
from inferline.pipeline import Edge, Pipeline, Stage, load_pipeline


def social_media() -> Pipeline:
    return Pipeline(
        name="social",
        stages=(Stage("langid"), Stage("de"), Stage("es"), Stage("resnet"), Stage("nsfw")),
        edges=(
            Edge("langid", "de", 0.3),
            Edge("langid", "es", 0.2),
            Edge("resnet", "nsfw", 1.0),
        ),
    )


def test_sources_and_topological_order() -> None:
    p = social_media()
    assert p.sources == ("langid", "resnet")
    order = p.topological_order
    assert order.index("langid") < order.index("de")
    assert order.index("resnet") < order.index("nsfw")


def test_scale_factors_are_exact_for_independent_edges() -> None:
    p = Pipeline(
        name="join",
        stages=(Stage("a"), Stage("b"), Stage("c"), Stage("d")),
        edges=(Edge("a", "b", 0.5), Edge("a", "c", 0.4), Edge("b", "d"), Edge("c", "d")),
    )
    s = p.scale_factors
    assert s["a"] == 1.0
    assert s["b"] == pytest.approx(0.5)
    assert s["c"] == pytest.approx(0.4)
    # d is reached unless both b and c are skipped
    assert s["d"] == pytest.approx(1 - 0.5 * 0.6)


def test_sampled_paths_match_scale_factors() -> None:
    p = social_media()
    visited = p.sample_visited(200_000, np.random.default_rng(3))
    means = visited.mean(axis=0)
    for i, name in enumerate(p.stage_names):
        assert means[i] == pytest.approx(p.scale_factors[name], abs=0.005)


def test_longest_path_and_critical_path() -> None:
    p = Pipeline(
        name="diamond",
        stages=(Stage("a"), Stage("b"), Stage("c"), Stage("d")),
        edges=(Edge("a", "b"), Edge("a", "c"), Edge("b", "d"), Edge("c", "d")),
    )
    times = {"a": 1.0, "b": 5.0, "c": 2.0, "d": 1.0}
    assert p.longest_path_s(times) == 7.0
    assert p.critical_path(times) == ("a", "b", "d")
    assert p.longest_path_s(times, visited=("a", "c", "d")) == 4.0


@pytest.mark.parametrize(
    ("stages", "edges", "needle"),
    [
        (("a", "b"), (("a", "b", 1.0), ("b", "a", 1.0)), "cycle (a -> b -> a)"),
        (("a",), (("a", "zz", 1.0),), "unknown stage 'zz'"),
        (("a", "b"), (("a", "b", 1.3),), "probability 1.3 is outside [0, 1]"),
        (("a", "a"), (), "defined twice"),
        (("a", "b"), (("a", "b", 0.0),), "can never be reached"),
        (("a",), (("a", "a", 1.0),), "edge to itself"),
        ((), (), "no stages"),
        (("bad name",), (), "must be letters"),
    ],
)
def test_invalid_pipelines_are_rejected(
    stages: tuple[str, ...], edges: tuple[tuple[str, str, float], ...], needle: str
) -> None:
    with pytest.raises(PipelineError) as info:
        Pipeline(
            name="p",
            stages=tuple(Stage(s) for s in stages),
            edges=tuple(Edge(*e) for e in edges),
        )
    assert needle in str(info.value)


def test_recorded_paths_are_checked() -> None:
    p = social_media()
    masks = p.paths_to_masks([("langid", "resnet", "nsfw"), ("langid", "de", "resnet", "nsfw")])
    assert masks.tolist() == [0b11001, 0b11011]
    with pytest.raises(PipelineError, match="skips source stage 'resnet'"):
        p.paths_to_masks([("langid",)])
    with pytest.raises(PipelineError, match="'nope'"):
        p.paths_to_masks([("langid", "resnet", "nope")])


def write(tmp_path: Path, body: object) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_pipeline_file_round_trip(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "name": "two",
            "stages": [{"name": "a"}, {"name": "b", "model": "pkg.mod:Model"}],
            "edges": [{"from": "a", "to": "b", "probability": 0.5}],
        },
    )
    p = load_pipeline(path)
    assert p.stage_names == ("a", "b")
    assert p.stages[1].model == "pkg.mod:Model"
    assert p.edges[0] == Edge("a", "b", 0.5)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {"name": "x", "stages": [{"name": "a"}], "edges": [{"from": "a", "to": "b"}]},
            "field 'edges[0].to': unknown stage 'b'",
        ),
        (
            {
                "name": "x",
                "stages": [{"name": "a"}, {"name": "b"}],
                "edges": [{"from": "a", "to": "b", "probability": 1.3}],
            },
            "field 'edges[0].probability': probability 1.3",
        ),
        ({"name": "x", "stages": [{"name": "a", "colour": "red"}]}, "field 'stages[0].colour'"),
        ({"stages": [{"name": "a"}]}, "field 'name': required field is missing"),
        ({"name": "x", "stages": "a"}, "field 'stages'"),
    ],
)
def test_bad_pipeline_files_name_file_and_field(
    tmp_path: Path, body: dict[str, object], needle: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_unparsable_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "pipeline.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML at line"):
        load_pipeline(bad)
    with pytest.raises(PipelineError, match="file not found"):
        load_pipeline(tmp_path / "missing.yaml")
