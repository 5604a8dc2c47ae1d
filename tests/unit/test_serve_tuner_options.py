"""``serve --tune`` builds the Tuner with the SLO, and the opt-in rules only on request."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from inferline.cli import app
from inferline.cli._serve import live_tuner

TEXT = Path(__file__).resolve().parents[2] / "examples" / "text-pipeline"
PLAN = TEXT / "plan.yaml"


def test_the_live_tuner_follows_spec_rules_unless_opted_in() -> None:
    plain = live_tuner(TEXT, PLAN, None, 20.0, slo_s=0.25)
    assert plain.name == "inferline"
    assert plain.config.slo_s == 0.25
    assert not plain.config.anticipate_growth and not plain.config.floor_at_plan
    opted = live_tuner(TEXT, PLAN, None, 20.0, slo_s=0.25, opt_in=True)
    assert opted.name == "inferline+opt-in"
    assert opted.config.anticipate_growth and opted.config.floor_at_plan


def test_tuner_opt_in_without_tune_exits_2_naming_the_option() -> None:
    result = CliRunner().invoke(app, ["serve", str(TEXT), "--config", str(PLAN), "--tuner-opt-in"])
    assert result.exit_code == 2
    assert "--tuner-opt-in" in result.output and "--tune" in result.output
