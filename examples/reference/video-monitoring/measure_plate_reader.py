#!/usr/bin/env python
"""Measure a real licence-plate-reading stage on one CPU thread (numpy + scikit-learn).

The InferLine paper's Video Monitoring pipeline reads number plates of the
vehicles the detector finds (OpenALPR in the paper). No published
latency-vs-batch curve exists for OpenALPR, so this script builds and
measures a small but complete CPU plate reader as a stand-in:

    input   a grayscale vehicle crop, uint8 96 x 176 px, holding a 7-digit
            plate (dark 16 x 16 px glyphs on a light plate, 22 x 130 px) at an
            unknown position in its lower part, plus background texture and
            sensor noise;
    1. localise the plate: horizontal-gradient magnitude, box-summed over every
       plate-sized window with an integral image; take the window with the
       most edge energy (text is dense in vertical strokes);
    2. crop it and segment it into 7 fixed-pitch character cells (the plate
       format is fixed, as for most national plates);
    3. normalise each cell to the 8 x 8, 0..16 format of scikit-learn's
       bundled handwritten-digits set (2 x 2 block mean, ink = dark);
    4. classify all cells of the batch in one call with an RBF support-vector
       classifier trained on half of that set (``sklearn.datasets.load_digits``,
       shipped with scikit-learn, no download).

The glyphs on the generated plates come from the *other* half of the digits
set, so the printed accuracy is a held-out check that the reader works. A
batch of b crops is processed as one vectorised call (localisation over the
stacked batch, one ``predict`` for all 7b cells), so any gain from batching
shows up.

Each batch size (1, 2, 4, ..., 32) is warmed up, then timed ``--reps`` times
on a different batch of crops each time (generated beforehand, never timed).
Each repetition records both the wall time (``time.perf_counter``) and this
thread's CPU time (``time.thread_time``); the table prints the median and
99th percentile of both, in seconds per batch. The YAML block reports the
wall time by default; ``--clock cpu`` reports the CPU time instead, which
leaves out the time a shared machine spent running other processes (the
service time a dedicated vCPU would give). Threading is pinned to one thread
(OMP/OpenBLAS/MKL variables set before numpy is imported) because the stage
is priced per vCPU (hardware ``c5-1vcpu``).

Usage::

    python measure_plate_reader.py                        # print table + YAML block
    python measure_plate_reader.py --update profiles.yaml # also rewrite the block
    python measure_plate_reader.py --clock cpu --update profiles.yaml   # CPU time in the block

``--update`` replaces the text between the lines ``# BEGIN measured plate_reader``
and ``# END measured plate_reader`` in the given file.
"""

from __future__ import annotations

import os

# Single thread: must be set before numpy / scikit-learn are imported.
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

try:
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC
except ImportError:  # pragma: no cover - a message, not a traceback
    sys.exit("this script needs scikit-learn: pip install scikit-learn")

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
CLOCK_TEXT = {
    "wall": "wall time (time.perf_counter)",
    "cpu": "thread CPU time (time.thread_time; excludes time the shared VM ran other "
    "processes, i.e. the service time of a dedicated vCPU)",
}
BEGIN = "# BEGIN measured plate_reader"
END = "# END measured plate_reader"

CROP_H, CROP_W = 96, 176  # vehicle crop handed over by the detector
N_CHARS = 7
GLYPH = 16  # 8 x 8 digit upscaled 2x
GAP = 2
MARGIN = 3
PLATE_H = GLYPH + 2 * MARGIN  # 22
PLATE_W = N_CHARS * GLYPH + (N_CHARS - 1) * GAP + 2 * MARGIN  # 130
PLATE_BG = 215.0
INK = 12.0  # grey levels per digits-set unit (0..16)
REFINE = 8  # px searched around the coarse plate position


def _digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.images.astype(np.float32), data.target.astype(np.int64)


def train_classifier(images: np.ndarray, labels: np.ndarray) -> SVC:
    """RBF SVC on 8 x 8 digits (values 0..16), the classic scikit-learn digits setting."""
    clf = SVC(kernel="rbf", gamma=0.001, C=10.0)
    clf.fit(images.reshape(len(images), -1), labels)
    return clf


def make_crops(
    n: int, glyphs: np.ndarray, glyph_labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 vehicle crops with a 7-digit plate each, and the true digits (n, 7)."""
    crops = np.empty((n, CROP_H, CROP_W), dtype=np.uint8)
    truth = np.empty((n, N_CHARS), dtype=np.int64)
    yy, xx = np.mgrid[0:CROP_H, 0:CROP_W].astype(np.float32)
    for i in range(n):
        # background: a smooth body-colour gradient plus coarse texture and noise
        base = rng.uniform(40, 160)
        img = base + rng.uniform(-30, 30) * (yy / CROP_H) + rng.uniform(-30, 30) * (xx / CROP_W)
        texture = rng.normal(0, 12, size=(CROP_H // 8 + 1, CROP_W // 8 + 1))
        img += np.kron(texture, np.ones((8, 8)))[:CROP_H, :CROP_W]
        # the plate, somewhere in the lower 60 % of the crop
        top = int(rng.integers(int(CROP_H * 0.4), CROP_H - PLATE_H))
        left = int(rng.integers(0, CROP_W - PLATE_W + 1))
        img[top : top + PLATE_H, left : left + PLATE_W] = PLATE_BG
        idx = rng.integers(0, len(glyphs), size=N_CHARS)
        truth[i] = glyph_labels[idx]
        for k, g in enumerate(idx):
            big = np.kron(glyphs[g], np.ones((2, 2), dtype=np.float32))
            y0 = top + MARGIN
            x0 = left + MARGIN + k * (GLYPH + GAP)
            img[y0 : y0 + GLYPH, x0 : x0 + GLYPH] = PLATE_BG - INK * big
        img += rng.normal(0, 6, size=img.shape)
        crops[i] = np.clip(img, 0, 255).astype(np.uint8)
    return crops, truth


def _integral(img: np.ndarray) -> np.ndarray:
    """Summed-area table of a (n, h, w) stack, zero-padded to (n, h + 1, w + 1)."""
    n, h, w = img.shape
    out = np.zeros((n, h + 1, w + 1), dtype=np.float32)
    np.cumsum(np.cumsum(img, axis=1), axis=2, out=out[:, 1:, 1:])
    return out


def _box_sums(integral: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """Sum of every bh x bw box; entry [i, y, x] is the box with top-left corner (y, x)."""
    return (
        integral[:, bh:, bw:]
        - integral[:, :-bh, bw:]
        - integral[:, bh:, :-bw]
        + integral[:, :-bh, :-bw]
    )


class PlateReader:
    """Localise, segment and read 7-digit plates in a batch of uint8 vehicle crops."""

    def __init__(self, classifier: SVC) -> None:
        self.clf = classifier
        # cell k starts at this x offset inside the plate window
        self.cell_x = MARGIN + np.arange(N_CHARS) * (GLYPH + GAP)
        self.cell_x0 = [int(x) - MARGIN for x in self.cell_x]

    def localise(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-left corner (rows, cols) of the plate in each crop.

        Coarse: the plate-sized window with the most horizontal-gradient energy
        (text is dense in vertical strokes). Fine, within +-REFINE px of it: the
        offset where the plate layout fits best, i.e. where the frame and the gaps
        between cells are brightest relative to the cells (which hold the ink).
        Both are box sums over an integral image, for every position at once.
        """
        img = crops.astype(np.float32)
        n = len(img)
        edges = np.abs(np.diff(img, axis=2))
        ph, pw = PLATE_H, PLATE_W
        energy = _box_sums(_integral(edges), ph, pw - 1)  # (n, H-ph+1, W-pw+1)
        flat = energy.reshape(n, -1).argmax(axis=1)
        rows, cols = np.divmod(flat, energy.shape[2])

        integral = _integral(img)
        window = _box_sums(integral, ph, pw)
        cell = _box_sums(integral, GLYPH, GLYPH)  # every GLYPH x GLYPH box
        h_pos, w_pos = window.shape[1:]
        ink = sum(
            cell[:, MARGIN : MARGIN + h_pos, MARGIN + x : MARGIN + x + w_pos] for x in self.cell_x0
        )
        ink_area = N_CHARS * GLYPH * GLYPH
        contrast = (window - ink) / (ph * pw - ink_area) - ink / ink_area
        dy = np.arange(-REFINE, REFINE + 1)
        ys = np.clip(rows[:, None, None] + dy[None, :, None], 0, h_pos - 1)
        xs = np.clip(cols[:, None, None] + dy[None, None, :], 0, w_pos - 1)
        ys, xs = np.broadcast_arrays(ys, xs)
        local = contrast[np.arange(n)[:, None, None], ys, xs].reshape(n, -1)
        best = local.argmax(axis=1)
        return ys.reshape(n, -1)[np.arange(n), best], xs.reshape(n, -1)[np.arange(n), best]

    def cells(self, crops: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(n * 7, 64) feature rows in the digits-set format (ink high, 0..16)."""
        n = len(crops)
        ys = rows[:, None] + MARGIN + np.arange(GLYPH)[None, :]  # (n, 16)
        xs = cols[:, None, None] + self.cell_x[None, :, None] + np.arange(GLYPH)[None, None, :]
        patch = crops[
            np.arange(n)[:, None, None, None], ys[:, None, :, None], xs[:, :, None, :]
        ].astype(np.float32)  # (n, 7, 16, 16)
        # background level per plate: the brightest pixels of its cells
        bg = np.percentile(patch.reshape(n, -1), 90, axis=1)[:, None, None, None]
        ink = np.clip((bg - patch) / INK, 0.0, 16.0)
        small = ink.reshape(n, N_CHARS, 8, 2, 8, 2).mean(axis=(3, 5))  # 2 x 2 block mean
        return small.reshape(n * N_CHARS, 64)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        rows, cols = self.localise(crops)
        digits = self.clf.predict(self.cells(crops, rows, cols))
        return digits.reshape(len(crops), N_CHARS)


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
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, 1 thread; "
        f"measured {today} by measure_plate_reader.py"
    )


def measure(
    reader: PlateReader,
    batch_sizes: tuple[int, ...],
    reps: int,
    warmup: int,
    pool: np.ndarray,
    seed: int,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Return (batch, wall times, thread CPU times) per batch size, seconds per batch."""
    rng = np.random.default_rng(seed)
    results = []
    for b in batch_sizes:
        batches = [pool[rng.integers(0, len(pool), size=b)] for _ in range(warmup + reps)]
        for batch in batches[:warmup]:
            reader(batch)
        wall = np.empty(reps)
        cpu = np.empty(reps)
        for k, batch in enumerate(batches[warmup:]):
            c0 = time.thread_time()
            t0 = time.perf_counter()
            reader(batch)
            wall[k] = time.perf_counter() - t0
            cpu[k] = time.thread_time() - c0
        results.append((b, wall, cpu))
    return results


def yaml_block(
    results: list[tuple[int, np.ndarray, np.ndarray]],
    clock: str,
    reps: int,
    n_sv: int,
    char_acc: float,
) -> str:
    lines = [
        BEGIN,
        "  - stage: plate_reader",
        "    hardware: c5-1vcpu",
        '    source: "measured here by measure_plate_reader.py (CPU stand-in for OpenALPR: '
        f"numpy plate localisation (edge energy, then plate-layout fit) on generated uint8 "
        f"{CROP_H}x{CROP_W} vehicle crops, fixed-pitch segmentation into {N_CHARS} cells, "
        f"scikit-learn RBF SVC ({n_sv} support vectors) on 8x8 digits, held-out character "
        f"accuracy {char_acc:.3f}; one vectorised call per batch; "
        f"{reps} timed reps per batch after warm-up; median and p99 of the per-batch "
        f'{CLOCK_TEXT[clock]})"',
        f'    measured_on: "{machine_description()}"',
        "    points:",
    ]
    for b, wall, cpu in results:
        times = wall if clock == "wall" else cpu
        med, p99 = float(np.median(times)), float(np.percentile(times, 99))
        lines.append(
            f"      - {{batch_size: {b}, median_s: {med:.6f}, p99_s: {p99:.6f}}}"
            f"   # {b / med:.0f} plates/s at the median"
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
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches per batch size")
    parser.add_argument("--pool", type=int, default=1000, help="generated crops to draw from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what the YAML block reports: wall time (default) or this thread's CPU time",
    )
    parser.add_argument("--update", type=Path, help="profiles.yaml whose marked block to rewrite")
    args = parser.parse_args(argv)
    if args.reps < 30:
        parser.error("--reps must be at least 30")

    rng = np.random.default_rng(args.seed)
    images, labels = _digits()
    order = rng.permutation(len(images))
    train, held_out = order[: len(order) // 2], order[len(order) // 2 :]
    reader = PlateReader(train_classifier(images[train], labels[train]))
    n_sv = int(reader.clf.support_vectors_.shape[0])
    crops, truth = make_crops(args.pool, images[held_out], labels[held_out], rng)

    read = reader(crops)
    char_acc = float((read == truth).mean())
    plate_acc = float((read == truth).all(axis=1).mean())
    print(f"# {machine_description()}")
    print(
        f"# {len(crops)} generated crops; held-out accuracy: characters {char_acc:.3f}, "
        f"whole plates {plate_acc:.3f}; SVC support vectors {n_sv}"
    )
    results = measure(reader, BATCH_SIZES, args.reps, args.warmup, crops, args.seed + 1)
    print(
        f"# {'batch':>5} {'wall med':>10} {'wall p99':>10} {'wall mean':>10} "
        f"{'cpu med':>10} {'cpu p99':>10}   (seconds per batch)"
    )
    for b, wall, cpu in results:
        print(
            f"# {b:>5} {np.median(wall):>10.6f} {np.percentile(wall, 99):>10.6f} "
            f"{wall.mean():>10.6f} {np.median(cpu):>10.6f} {np.percentile(cpu, 99):>10.6f}"
        )
    block = yaml_block(results, args.clock, args.reps, n_sv, char_acc)
    print(block, end="")
    if args.update is not None:
        update_file(args.update, block)
        print(f"# wrote the block into {args.update}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
