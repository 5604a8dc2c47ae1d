#!/usr/bin/env python
"""Measure a real image-preprocessing stage on one CPU thread (numpy only).

The InferLine paper's Image Processing pipeline starts with a CPU
preprocessing stage (crop/resize) in front of AlexNet. No published
latency-vs-batch curve exists for it, so this script measures an
equivalent here: the standard ImageNet evaluation transform that AlexNet
expects,

    1. bilinear resize of the whole image so the shorter side is 256 px
       (uint8 -> float32; like torchvision ``Resize(256)``, without antialiasing),
    2. centre crop 224 x 224 (``CenterCrop(224)``),
    3. scale to [0, 1] and normalise each channel with the ImageNet
       mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225),

applied to a batch of random uint8 images (default 3 x 375 x 500, the most
common ImageNet image size; ``--height/--width`` change it). The batch is
processed with vectorised numpy over the whole batch, so any gain from
batching would show up; there is essentially none (the work is per pixel).

Each batch size (1, 2, 4, ..., 32) is warmed up, then timed ``--reps`` times
with ``time.perf_counter``; the median and the 99th percentile of the
per-batch wall time are reported in seconds. Threading is pinned to one
thread (OMP/OpenBLAS/MKL variables set before numpy is imported) because the
stage is priced per vCPU (hardware ``c5-1vcpu``).

Usage::

    python measure_preprocess.py                      # print table + YAML block
    python measure_preprocess.py --update profiles.yaml   # also rewrite the block in the file

``--update`` replaces the text between the lines ``# BEGIN measured preprocess``
and ``# END measured preprocess`` in the given file.
"""

from __future__ import annotations

import os

# Single thread: must be set before numpy is imported.
for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
SHORT_SIDE = 256
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
BEGIN = "# BEGIN measured preprocess"
END = "# END measured preprocess"


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights for bilinear resampling along one axis (half-pixel centres)."""
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (pos - i0).astype(np.float32)
    return i0, i1, w1


class Preprocessor:
    """ImageNet eval transform for uint8[N, 3, H, W] batches of one fixed shape.

    All intermediate arrays are allocated once, as a long-running serving
    worker would keep them. Allocating fresh multi-megabyte temporaries on
    every call instead makes the timing depend on the C allocator's state
    (page faults when glibc returns memory to the OS between calls): on the
    machine used here that alone changed batch-1 time by up to 4x between
    otherwise identical runs.
    """

    def __init__(self, shape: tuple[int, int, int, int]) -> None:
        n, c, h, w = shape
        scale = SHORT_SIDE / min(h, w)
        out_h, out_w = max(SHORT_SIDE, round(h * scale)), max(SHORT_SIDE, round(w * scale))
        self.shape = shape
        self.y0, self.y1, wy = _axis_weights(h, out_h)
        self.x0, self.x1, self.wx = _axis_weights(w, out_w)
        self.wy = wy[:, None]
        self.top, self.left = (out_h - CROP) // 2, (out_w - CROP) // 2
        f32 = np.float32
        self.src = np.empty((n, c, h, w), f32)
        self.rows_a = np.empty((n, c, out_h, w), f32)
        self.rows_b = np.empty((n, c, out_h, w), f32)
        self.res_a = np.empty((n, c, out_h, out_w), f32)
        self.res_b = np.empty((n, c, out_h, out_w), f32)
        self.out = np.empty((n, c, CROP, CROP), f32)
        self.scale_c = (1.0 / (255.0 * STD)).astype(f32)[None, :, None, None]
        self.shift_c = (MEAN / STD).astype(f32)[None, :, None, None]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if images.shape != self.shape:
            raise ValueError(f"expected a batch of shape {self.shape}, got {images.shape}")
        np.copyto(self.src, images)  # uint8 -> float32
        # 1. bilinear resize of the whole image: rows, then columns
        np.take(self.src, self.y0, axis=2, out=self.rows_a)
        np.take(self.src, self.y1, axis=2, out=self.rows_b)
        self.rows_a *= 1.0 - self.wy
        self.rows_b *= self.wy
        self.rows_a += self.rows_b
        np.take(self.rows_a, self.x0, axis=3, out=self.res_a)
        np.take(self.rows_a, self.x1, axis=3, out=self.res_b)
        self.res_a *= 1.0 - self.wx
        self.res_b *= self.wx
        self.res_a += self.res_b
        # 2. centre crop, 3. scale to [0, 1] and normalise per channel
        crop = self.res_a[:, :, self.top : self.top + CROP, self.left : self.left + CROP]
        np.multiply(crop, self.scale_c, out=self.out)
        self.out -= self.shift_c
        return self.out


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8[N, 3, H, W] -> float32[N, 3, 224, 224] (a fresh array), ImageNet eval transform."""
    return Preprocessor(images.shape).__call__(images).copy()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    today = _dt.date.today().isoformat()
    return (
        f"{_cpu_model()} ({platform.machine()}), os.cpu_count()={os.cpu_count()}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}, 1 thread; measured {today} by measure_preprocess.py"
    )


def measure(
    batch_sizes: tuple[int, ...], reps: int, warmup: int, height: int, width: int, seed: int
) -> list[tuple[int, float, float, float]]:
    """Return (batch, median_s, p99_s, mean_s) per batch size."""
    rng = np.random.default_rng(seed)
    results = []
    for b in batch_sizes:
        images = rng.integers(0, 256, size=(b, 3, height, width), dtype=np.uint8)
        stage = Preprocessor(images.shape)
        for _ in range(warmup):
            stage(images)
        times = np.empty(reps)
        for k in range(reps):
            t0 = time.perf_counter()
            stage(images)
            times[k] = time.perf_counter() - t0
        results.append(
            (b, float(np.median(times)), float(np.percentile(times, 99)), float(times.mean()))
        )
    return results


def yaml_block(
    results: list[tuple[int, float, float, float]], reps: int, height: int, width: int
) -> str:
    lines = [
        BEGIN,
        "  - stage: preprocess",
        "    hardware: c5-1vcpu",
        '    source: "measured here by measure_preprocess.py (numpy bilinear resize to shorter '
        f"side 256 + centre crop 224 + per-channel normalise, float32; random uint8 3x{height}x"
        f"{width} images; {reps} timed reps per batch after warm-up; median and p99 of the "
        'per-batch wall time)"',
        f'    measured_on: "{machine_description()}"',
        "    points:",
    ]
    for b, med, p99, _ in results:
        lines.append(
            f"      - {{batch_size: {b}, median_s: {med:.6f}, p99_s: {p99:.6f}}}"
            f"   # {b / med:.0f} img/s at the median"
        )
    lines.append(END)
    return "\n".join(lines) + "\n"


def update_file(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8")
    start = text.find(BEGIN)
    stop = text.find(END)
    if start < 0 or stop < start:
        sys.exit(f"{path}: markers '{BEGIN}' / '{END}' not found; paste the block by hand")
    stop = text.index("\n", stop) + 1
    path.write_text(text[:start] + block + text[stop:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=200, help="timed repetitions per batch (>= 30)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per batch size")
    parser.add_argument("--height", type=int, default=375, help="input image height (px)")
    parser.add_argument("--width", type=int, default=500, help="input image width (px)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--update", type=Path, help="profiles.yaml whose marked block to rewrite")
    args = parser.parse_args(argv)
    if args.reps < 30:
        parser.error("--reps must be at least 30")
    if min(args.height, args.width) < CROP:
        parser.error(f"images must be at least {CROP} px on each side")

    results = measure(BATCH_SIZES, args.reps, args.warmup, args.height, args.width, args.seed)
    print(f"# {machine_description()}")
    print(f"# {'batch':>5} {'median_s':>10} {'p99_s':>10} {'mean_s':>10} {'per_image_s':>12}")
    for b, med, p99, mean in results:
        print(f"# {b:>5} {med:>10.6f} {p99:>10.6f} {mean:>10.6f} {med / b:>12.6f}")
    block = yaml_block(results, args.reps, args.height, args.width)
    print(block, end="")
    if args.update is not None:
        update_file(args.update, block)
        print(f"# wrote the block into {args.update}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
