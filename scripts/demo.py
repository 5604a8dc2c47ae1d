"""`make demo`: generate a workload, simulate the reference image-processing pipeline
under two configurations with the Estimator, and print their P99 and cost side by side.

Each step is the `inferline` command a user would type; the commands are printed first.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "examples" / "reference" / "image-processing"
CONFIGS = {
    "balanced": BUNDLE / "configs" / "balanced.yaml",
    "gpu-heavy": BUNDLE / "configs" / "gpu-heavy.yaml",
}
SLO_S = 0.15
console = Console()


def inferline(*args: str) -> dict[str, object]:
    command = ["inferline", *args]
    console.print(f"[dim]$ {shlex.join(command)}[/]")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "inferline"), *args, "--json"],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        console.print(done.stderr)
        raise SystemExit(done.returncode)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> None:
    console.rule("InferLine demo: the Estimator on the image-processing reference pipeline")
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "gamma-200qps-cv2.csv"
        info = inferline(
            "trace",
            "gamma",
            "--rate",
            "200",
            "--cv",
            "2",
            "--duration-s",
            "300",
            "--seed",
            "1",
            "-o",
            str(trace),
        )
        console.print(
            f"workload: {info['queries']} queries over {float(info['duration_s']):.0f} s, "
            f"mean {float(info['mean_rate_qps']):.1f} q/s, gap cv {float(info['gap_cv']):.2f} "
            "(the paper's CV 4)"
        )
        real = Path(tmp) / "azure-200qps.csv"
        from inferline.workload import bundled_trace_path

        info_real = inferline(
            "trace", "load", str(bundled_trace_path()), "--rate", "200", "-o", str(real)
        )
        console.print(
            f"real trace (Azure LLM code, rescaled): {info_real['queries']} queries, "
            f"peak 1 s rate {float(info_real['peak_rate_1s_qps']):.0f} q/s"
        )
        table = Table(
            title=f"image-processing, SLO {SLO_S * 1000:.0f} ms: estimated by the simulator"
        )
        for col in ("configuration", "workload", "P50 ms", "P99 ms", "miss rate", "$/hour"):
            table.add_column(col, justify="right")
        for name, config in CONFIGS.items():
            for label, path in (("gamma cv 2", trace), ("Azure real", real)):
                out = inferline(
                    "simulate",
                    str(BUNDLE),
                    "--config",
                    str(config),
                    "--trace",
                    str(path),
                    "--slo-s",
                    str(SLO_S),
                )
                table.add_row(
                    name,
                    label,
                    f"{float(out['p50_s']) * 1000:.1f}",  # type: ignore[arg-type]
                    f"{float(out['p99_s']) * 1000:.1f}",  # type: ignore[arg-type]
                    f"{float(out['miss_rate']):.2%}",  # type: ignore[arg-type]
                    f"{float(out['cost_per_hour']):.2f}",  # type: ignore[arg-type]
                )
        console.print(table)


if __name__ == "__main__":
    main()
