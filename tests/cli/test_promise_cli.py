"""``inferline bench promise`` refuses what it cannot measure before it plans or serves:
exit 2 naming the option."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from inferline.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--loads", "0.5,1.5"], "--loads"),
        (["--loads", "half"], "--loads"),
        (["--repeats", "0"], "--repeats"),
        (["--machine", "cores=0"], "--machine"),
        (["--machine", "local,fit=cores"], "--machine"),
        (["--policy", "no-such-policy"], "--policy"),
        (["--margin", "1"], "--margin"),
        (["--margin", "-0.1"], "--margin"),
        (["--priming-s", "-1"], "--priming-s"),
    ],
)
def test_bad_options_exit_2_and_name_the_option(args: list[str], option: str) -> None:
    result = runner.invoke(app, ["bench", "promise", "examples/engine-demo/text", *args])
    assert result.exit_code == 2, result.output
    assert option in result.stderr and "Traceback" not in result.stderr


def test_a_bundle_that_is_not_there_exits_2() -> None:
    result = runner.invoke(app, ["bench", "promise", "no/such/bundle", "--no-ramp"])
    assert result.exit_code == 2, result.output
    assert "no/such/bundle" in result.stderr
