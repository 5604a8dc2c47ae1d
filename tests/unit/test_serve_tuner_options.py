"""``serve --tune`` builds its policy through the registry, with the SLO, and the opt-in rules
only on request; tuning options without --tune, and option errors, exit 2 naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferline.cli import app
from inferline.tuner import InferLineTuner, policy_for_bundle

TEXT = Path(__file__).resolve().parents[2] / "examples" / "text-pipeline"
PLAN = TEXT / "plan.yaml"


def test_the_live_tuner_follows_spec_rules_unless_opted_in() -> None:
    plain = policy_for_bundle("inferline", TEXT, PLAN, planning_rate=20.0, slo_s=0.25)
    assert isinstance(plain, InferLineTuner) and plain.name == "inferline"
    assert plain.config.slo_s == 0.25
    assert not plain.config.anticipate_growth and not plain.config.floor_at_plan
    opted = policy_for_bundle("inferline+opt-in", TEXT, PLAN, planning_rate=20.0, slo_s=0.25)
    assert isinstance(opted, InferLineTuner) and opted.name == "inferline+opt-in"
    assert opted.config.anticipate_growth and opted.config.floor_at_plan


def serve(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["serve", str(TEXT), "--config", str(PLAN), *args])
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--tuner-opt-in"], "--tuner-opt-in only applies with --tune"),
        (["--holdoff-s", "3", "--policy", "none"], "--policy, --holdoff-s only apply with --tune"),
        (["--tune", "--planning-rate", "5", "--policy", "magic"], "unknown policy 'magic'"),
        (["--tune", "--planning-rate", "5", "--holdoff-s", "-1"], "field '--holdoff-s'"),
        (["--tune", "--planning-rate", "0"], "field '--planning-rate'"),
        (["--tune"], "field '--planning-trace'"),
        (
            ["--tune", "--planning-rate", "5", "--policy", "queue-length", "--lookback-s", "9"],
            "field '--lookback-s': policy 'queue-length' has no option 'lookback_s'",
        ),
        (["--tune", "--tuner-opt-in", "--policy", "none"], "field '--tuner-opt-in'"),
        (["--slo-s", "0"], "field '--slo-s': must be positive"),
        (["--drain-timeout-s", "0"], "field '--drain-timeout-s'"),
        (["--max-queue", "0"], "field '--max-queue'"),
        (["--replica-nice", "20"], "field '--replica-nice': must be in [0, 19]"),
        (["--replica-nice", "-1"], "field '--replica-nice'"),
        (["--max-body-bytes", "0"], "field '--max-body-bytes'"),
        (["--port", "70000"], "field '--port'"),
    ],
)
def test_bad_tuning_and_option_values_exit_2_naming_the_option(args: list[str], words: str) -> None:
    code, message = serve(*args)
    assert code == 2, message
    assert words in message, message
    assert "Traceback" not in message
