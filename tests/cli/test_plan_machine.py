"""``inferline plan --machine``: the machine line, the plan file's record, exit 3 with the
cores needed and the plan that would fit a bigger machine, and the catalogue's section.

The text pipeline's four stages at about 100 q/s need five single-thread replicas without
a machine bound (langid, 2 × embed, topic, lang_stats): six cores with the front-end by the
literal rule (fit=threads), three by the cores they keep busy (fit=busy, the default).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from inferline.cli import app
from inferline.workload import gamma_trace, save_trace

ROOT = Path(__file__).resolve().parents[2]
TEXT = ROOT / "examples" / "text-pipeline"
runner = CliRunner()


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("machine") / "t100.csv"
    save_trace(gamma_trace(100.0, 1.0, 30.0, seed=0), path)
    return path


def plan(bundle: Path, trace: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(
        app, ["plan", str(bundle), "--trace", str(trace), "--slo-s", "0.1", *args]
    )
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


def test_a_machine_that_fits_is_shown_and_recorded_in_the_plan_file(
    trace: Path, tmp_path: Path
) -> None:
    out_file = tmp_path / "plan.yaml"
    code, out, err = plan(TEXT, trace, "--machine", "cores=8,fit=threads", "-o", str(out_file))
    assert code == 0, err
    line = " ".join(out.split())
    assert re.search(
        r"machine: 8 cores, front-end share 0\.1\d core \(\d+ q/s × 0\.80 ms CPU/query, "
        r"default, \+ floor\), replicas use 5 of 7\.8\d cores",
        line,
    ), line
    record = yaml.safe_load(out_file.read_text())["machine"]
    assert record["cores"] == 8 and record["replica_threads"] == 5
    assert record["threads_per_core"] == 1.0 and 0.1 < record["frontend_share_cores"] < 0.2
    assert record["fit"] == "threads"

    code, out, err = plan(TEXT, trace, "--machine", "cores=8,fit=busy", "-o", str(out_file))
    assert code == 0, err
    line = " ".join(out.split())
    match = re.search(
        r"replicas busy (\d\.\d\d) of 6\.2\d cores \(target 80 % of 8, less the front-end's "
        r"share\), 5 threads of 56",
        line,
    )
    assert match, line
    record = yaml.safe_load(out_file.read_text())["machine"]
    assert record["fit"] == "busy" and record["max_busy_fraction"] == 0.8
    assert record["replica_busy_cores"] == pytest.approx(float(match[1]), abs=0.006)
    # ~100 q/s through four stages of a few ms each: about two cores busy, not five
    assert 1.0 < record["replica_busy_cores"] < 3.0
    assert record["busy_cores_allowed"] == pytest.approx(6.4 - record["frontend_share_cores"])


def test_a_machine_too_small_exits_3_with_the_cores_needed_and_the_unbounded_plan(
    trace: Path,
) -> None:
    code, out, err = plan(TEXT, trace, "--machine", "cores=2,fit=threads")
    assert code == 3
    assert "error: inferline: infeasible on this machine: needs 6 cores, has 2" in err
    assert "runs 5 replica thread(s) plus 0.13 core for the front-end" in err
    assert "without the machine bound (needs 6 cores, has 2)" in out
    assert re.search(r"embed │\s+cpu-1 │\s+\d+ │\s+2 │", out), out  # the plan that would fit

    code, out, err = plan(TEXT, trace, "--machine", "cores=2,fit=busy")
    assert code == 3
    assert re.search(
        r"error: inferline: infeasible on this machine: needs 2\.\d\d busy cores, has 1\.60 "
        r"\(80 % of 2 cores; 3 cores would do\)",
        err,
    ), err
    assert "without the machine bound (needs 3 cores, has 2)" in out

    code, out, err = plan(TEXT, trace, "--machine", "cores=2,fit=threads", "--json")
    assert code == 3 and "needs 6 cores, has 2" in err
    body = json.loads(out)
    assert body["feasible"] is False
    assert (body["needs_cores"], body["has_cores"]) == (6, 2)
    assert body["unbounded"]["stages"]["embed"]["replicas"] == 2
    assert body["unbounded"]["machine"] is None


def test_the_catalogues_machine_applies_unless_the_flag_overrides_it(
    trace: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "text-pipeline"
    shutil.copytree(TEXT, bundle)
    hardware = bundle / "hardware.yaml"
    hardware.write_text(hardware.read_text() + "\nmachine: {cores: 2, memory_gb: 8}\n")
    code, _, err = plan(bundle, trace)
    assert code == 3 and "busy cores, has 1.60 (80 % of 2 cores; 3 cores would do)" in err
    code, out, err = plan(bundle, trace, "--machine", "cores=6", "--json")
    assert code == 0, err
    assert json.loads(out)["machine"]["cores"] == 6
    code, out, err = plan(bundle, trace, "--machine", "none", "--json")
    assert code == 0, err
    assert json.loads(out)["machine"] is None

    hardware.write_text(hardware.read_text().replace("memory_gb: 8", "memory_gb: -8"))
    code, _, err = plan(bundle, trace)
    assert code == 2 and "hardware.yaml" in err and "machine.memory_gb" in err


def test_a_bad_machine_flag_exits_2_naming_it(trace: Path) -> None:
    code, _, err = plan(TEXT, trace, "--machine", "cores=2,disk=1T")
    assert code == 2
    assert "<argument>, field '--machine': 'disk=1T' is not one of" in err
    code, out, err = plan(TEXT, trace, "--machine", "local,fit=cores")
    assert code == 2 and out == ""
    assert "field '--machine': fit must be one of busy, shared, threads, got 'cores'" in err
    code, _, err = plan(TEXT, trace, "--machine", "cores=2,threads-per-core=2", "--json")
    assert code == 2 and "threads-per-core is the fit=threads rule's figure; add fit=threads" in err


def test_fit_shared_says_contention_is_simulated_and_refuses_what_contention_breaks(
    trace: Path, tmp_path: Path
) -> None:
    out_file = tmp_path / "plan.yaml"
    code, out, err = plan(TEXT, trace, "--machine", "cores=4,fit=shared", "-o", str(out_file))
    assert code == 0, err
    line = " ".join(out.split())
    assert "contention simulated on shared cores" in line, line
    assert yaml.safe_load(out_file.read_text())["machine"]["fit"] == "shared"
    # on 2 cores the 100-q/s, 0.1-s plan needs more than contention leaves
    code, out, err = plan(TEXT, trace, "--machine", "cores=2,fit=shared")
    assert code == 3, err
    assert "infeasible on this machine" in err


def test_a_tail_bias_plans_the_estimate_times_it_within_the_margin(trace: Path) -> None:
    """``--tail-bias 1.3 --margin 0.1``: the plan's estimate × 1.3 within SLO × 0.9, said in
    the title and the JSON; a bias that is no ratio is refused naming the option."""
    code, out, err = plan(TEXT, trace, "--margin", "0.1", "--tail-bias", "1.3", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["tail_bias"] == 1.3
    assert summary["estimated_p99_s"] * 1.3 <= 0.1 * 0.9 + 1e-12
    code, out, err = plan(TEXT, trace, "--margin", "0.1", "--tail-bias", "1.3")
    assert code == 0, err
    assert "margin 0.1, estimate × tail bias 1.30" in " ".join(out.split())
    code, _, err = plan(TEXT, trace, "--tail-bias", "0")
    assert code == 2 and "--tail-bias" in err and "positive ratio" in err


def test_batch_headroom_raises_batches_at_the_same_cost(trace: Path) -> None:
    """``--batch-headroom`` (for ``serve --tune``): no batch smaller, none replica more, the
    same cost, the estimate still within the SLO; the same through ``il.plan``."""
    code, out, err = plan(TEXT, trace, "--json")
    assert code == 0, err
    plain = json.loads(out)
    code, out, err = plan(TEXT, trace, "--batch-headroom", "--json")
    assert code == 0, err
    raised = json.loads(out)
    assert raised["cost_per_hour"] == plain["cost_per_hour"]
    assert raised["estimated_p99_s"] <= 0.1
    before, after = plain["stages"], raised["stages"]
    assert all(after[n]["batch_size"] >= before[n]["batch_size"] for n in before)
    assert all(after[n]["replicas"] == before[n]["replicas"] for n in before)
    assert any(after[n]["batch_size"] > before[n]["batch_size"] for n in before)

    import inferline as il
    from inferline.workload import load_trace

    bundle = il.load_bundle(TEXT)
    api = il.plan(bundle.pipeline, bundle.profiles, load_trace(trace), 0.1, batch_headroom=True)
    assert api.stages() == after and any("headroom:" in line for line in raised["log"])


def test_on_two_cores_the_readable_plan_says_which_wide_hardware_it_left_out(
    trace: Path, tmp_path: Path
) -> None:
    tabular = ROOT / "examples" / "tabular-triage"  # profiled on cpu-1 and cpu-2
    out_file = tmp_path / "plan.yaml"
    code, out, err = plan(tabular, trace, "--machine", "cores=2", "-o", str(out_file))
    assert code == 0, err
    line = " ".join(out.split())
    assert "machine: a CPU replica has at most 1 thread(s) here" in line
    assert "threads-per-replica=N changes it), so these were left out: features: cpu-2" in line
    stages = yaml.safe_load(out_file.read_text())["stages"]
    assert {s["hardware"] for s in stages.values()} == {"cpu-1"}
    assert yaml.safe_load(out_file.read_text())["machine"]["max_threads_per_replica"] == 1
    code, out, err = plan(tabular, trace, "--machine", "cores=2,threads-per-replica=2")
    assert code == 0, err
    assert "left out" not in " ".join(out.split())
