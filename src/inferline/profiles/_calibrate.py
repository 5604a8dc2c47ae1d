"""Profiles corrected by what the stages really take while served (docs/engine.md).

Isolated profiles are not serving conditions: stages served side by side run slower than
alone. The engine measures every batch's ``predict`` time; this module turns those samples
into profiles. It is pure (samples in, Profiles out), so the engine, ``inferline
calibrate`` and the in-place Profiler share it.

A profiled point's latency is its ``predict`` part plus the rest of the round trip (IPC,
(de)serialisation, waiting to be read). Per batch size:

- measured at least ``min_samples`` times: the measured median and P99 ``predict`` time,
  and, when the batches' round trips were measured too (``turns``: the engine's time from
  handing a batch to a replica to taking its answers), the measured median and P99 round
  trip as the point's latency: served side by side, the rest of the round trip grows
  too (a replica waits for a core to wake up, the engine to read its answer);
- with ``rests`` (calibrating CPU work: the samples are each batch's CPU time, which
  leaves out the waits for a core that an Estimator sharing the cores adds itself):
  the work plus the measured median rest of the round trip (round trip − ``predict``)
  of that size, where the profile's rest was timed by the Profiler's harness, not the
  engine (one MC-dropout stage: 2.6 ms profiled, 0.6 ms served);
- otherwise: the profiled ``predict`` part scaled by the stage's speed ratio (measured /
  profiled ``predict`` time over every batch the stage ran; None until it ran
  ``min_samples`` batches, then the profile is kept as it is), the rest of the round
  trip as profiled, scaled like the measured sizes' rest when there are round trips, and
  the profiled spread (P99 − median) scaled like the measured sizes' spread (the speed
  ratio when no size was measured often enough).

A calibrated curve never falls as the batch grows (a running maximum), so the profiles'
conservative lookup between sizes (SPEC §2.3) still holds.

The engine's per-query overhead (HTTP, parsing, answering) is calibrated too, when the
front-end measured it on at least ``MIN_FRONTEND_QUERIES`` queries (``frontend_s``: per
query, the time in the HTTP handler less the time inside the engine): its distribution
replaces the profiled one, which was measured with no-op stages at fixed rates and is
not what a front-end sharing the cores with busy replicas spends.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from inferline._hardware_names import resources_for
from inferline.errors import ConfigError
from inferline.profiles._model import (
    OVERHEAD_PERCENTILES,
    BatchProfile,
    EngineOverhead,
    ProfilePoint,
    Profiles,
)

__all__ = [
    "MIN_FRONTEND_QUERIES",
    "Calibration",
    "SizeSpeed",
    "StageSpeed",
    "calibrate_profiles",
    "calibrated_overhead",
    "carry_speeds",
    "nearest_rank",
    "speed_of_sizes",
    "stage_speed",
]

#: Samples per (stage, hardware): batch size -> measured ``predict`` times in seconds.
Samples = Mapping[int, Sequence[float]]


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values by nearest rank (the engine's stats use it)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass(frozen=True)
class SizeSpeed:
    """One batch size's measured ``predict`` time against the profile's (seconds)."""

    batch_size: int
    count: int
    median_s: float
    p99_s: float
    profiled_s: float

    @property
    def ratio(self) -> float:
        return self.median_s / self.profiled_s if self.profiled_s > 0 else math.inf


@dataclass(frozen=True)
class StageSpeed:
    """A stage's measured speed on one hardware type: ``ratio`` = measured / profiled
    ``predict`` time over the batches it ran (None: fewer than ``min_samples`` batches)."""

    stage: str
    hardware: str
    samples: int
    ratio: float | None
    sizes: tuple[SizeSpeed, ...]

    @property
    def predict_s(self) -> float | None:
        """Mean measured ``predict`` time per batch (None without batches)."""
        if not self.samples:
            return None
        return sum(s.count * s.median_s for s in self.sizes) / self.samples

    @property
    def profiled_s(self) -> float | None:
        """The profile's ``predict`` time for the same batches, per batch."""
        if not self.samples:
            return None
        return sum(s.count * s.profiled_s for s in self.sizes) / self.samples

    def as_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "hardware": self.hardware,
            "samples": self.samples,
            "ratio": self.ratio,
            "predict_s": self.predict_s,
            "profiled_s": self.profiled_s,
            "batch_sizes": [dataclasses.asdict(s) for s in self.sizes],
        }


@dataclass(frozen=True)
class Calibration:
    """Calibrated profiles and the per-(stage, hardware) speeds they were made from."""

    profiles: Profiles
    speeds: Mapping[tuple[str, str], StageSpeed]

    def __post_init__(self) -> None:
        object.__setattr__(self, "speeds", MappingProxyType(dict(self.speeds)))


def _profiled_at(profile: BatchProfile, batch_size: int) -> tuple[float, float, float]:
    """(median, P99, predict part) of a batch of this size, linear between profiled sizes
    (the fit's reference: a lookup would charge a batch of 3 a batch of 4's time)."""

    def parts(p: ProfilePoint) -> tuple[float, float, float]:
        predict = p.predict_median_s if p.predict_median_s is not None else p.median_s
        return p.median_s, p.p99_s, min(predict, p.median_s)

    points = profile.points
    if batch_size <= points[0].batch_size:
        return parts(points[0])
    for low, high in itertools.pairwise(points):
        if low.batch_size <= batch_size <= high.batch_size:
            w = (batch_size - low.batch_size) / (high.batch_size - low.batch_size)
            a, b = parts(low), parts(high)
            med, p99, pred = ((1 - w) * x + w * y for x, y in zip(a, b, strict=True))
            return med, p99, pred
    return parts(points[-1])


def stage_speed(profile: BatchProfile, samples: Samples, min_samples: int = 20) -> StageSpeed:
    """How fast the stage ran against ``profile``: per batch size and overall."""
    sizes = []
    for b in sorted(samples):
        ordered = sorted(samples[b])
        if ordered:
            sizes.append((b, len(ordered), _median(ordered), nearest_rank(ordered, 0.99)))
    return speed_of_sizes(profile, sizes, min_samples)


def speed_of_sizes(
    profile: BatchProfile,
    sizes: Sequence[tuple[int, int, float, float]],
    min_samples: int = 20,
) -> StageSpeed:
    """:func:`stage_speed` from per-size summaries: (batch size, batches, median, P99)."""
    out: list[SizeSpeed] = []
    measured_s = profiled_s = 0.0
    total = 0
    for b, count, median_s, p99_s in sorted(sizes):
        if count < 1 or not 1 <= b <= profile.max_batch_size:
            continue
        pred = _profiled_at(profile, b)[2]
        out.append(SizeSpeed(b, count, median_s, p99_s, pred))
        measured_s += count * median_s
        profiled_s += count * pred
        total += count
    ratio = measured_s / profiled_s if total >= min_samples and profiled_s > 0 else None
    return StageSpeed(profile.stage, profile.hardware, total, ratio, tuple(out))


def _round_trips(
    profile: BatchProfile, speed: StageSpeed, turns: Samples, min_samples: int
) -> tuple[dict[int, tuple[float, float]], float]:
    """Per measured size, the round trip's (median, P99); and the ratio of the measured
    rest of the round trip (round trip − ``predict``, medians) to the profiled rest."""
    out: dict[int, tuple[float, float]] = {}
    measured_rest = profiled_rest = 0.0
    for s in speed.sizes:
        ordered = sorted(turns.get(s.batch_size, ()))
        if len(ordered) < min_samples or s.count < min_samples:
            continue
        median = max(_median(ordered), s.median_s)
        out[s.batch_size] = (median, max(nearest_rank(ordered, 0.99), s.p99_s, median))
        med, _, pred = _profiled_at(profile, s.batch_size)
        measured_rest += s.count * (median - s.median_s)
        profiled_rest += s.count * (med - pred)
    ratio = measured_rest / profiled_rest if out and profiled_rest > 0 else 1.0
    return out, ratio


def _measured_rests(
    profile: BatchProfile, rests: Samples, min_samples: int
) -> tuple[dict[int, float], float]:
    """Per size measured ``min_samples`` times, the median rest of the round trip; and the
    ratio of the measured rests to the profiled ones (1 without measured sizes)."""
    out: dict[int, float] = {}
    measured_rest = profiled_rest = 0.0
    for b in sorted(rests):
        ordered = sorted(rests[b])
        if len(ordered) < min_samples or not 1 <= b <= profile.max_batch_size:
            continue
        out[b] = _median(ordered)
        med, _, pred = _profiled_at(profile, b)
        measured_rest += len(ordered) * out[b]
        profiled_rest += len(ordered) * (med - pred)
    ratio = measured_rest / profiled_rest if out and profiled_rest > 0 else 1.0
    return out, ratio


def _spread_ratio(
    profile: BatchProfile,
    measured: Mapping[int, SizeSpeed],
    fitted: Mapping[int, tuple[float, float, float]],
    *,
    default: float,
) -> float:
    """How the measured sizes' spread (P99 − median) compares with the profiled one, for
    the sizes not measured: an isolated profile's tail (a batch timed after idling) is
    not the served one. ``default`` (the speed ratio) without measured sizes."""
    measured_spread = profiled_spread = 0.0
    for b, s in measured.items():
        median, p99, _ = _profiled_at(profile, b)
        measured_spread += s.count * (fitted[b][2] - fitted[b][1])
        profiled_spread += s.count * (p99 - median)
    if not measured or profiled_spread <= 0:
        return default
    return measured_spread / profiled_spread


def _calibrated_profile(
    profile: BatchProfile,
    speed: StageSpeed,
    min_samples: int,
    source: str,
    turns: Samples | None = None,
    rests: Samples | None = None,
) -> BatchProfile:
    measured = {s.batch_size: s for s in speed.sizes if s.count >= min_samples}
    if speed.ratio is None and not measured:
        return profile
    ratio = speed.ratio if speed.ratio is not None else 1.0
    trips, rest_ratio = _round_trips(profile, speed, turns or {}, min_samples)
    rest_of: dict[int, float] = {}
    if rests:
        rest_of, rest_ratio = _measured_rests(profile, rests, min_samples)
    reps = {p.batch_size: p.reps for p in profile.points}
    fitted: dict[int, tuple[float, float, float]] = {}  # size -> (predict, median, P99)
    for b, size in measured.items():
        median, p99, predict = _profiled_at(profile, b)
        # IPC, (de)serialisation, waiting to be read
        rest = rest_of.get(b, rest_ratio * (median - predict))
        fitted[b] = (
            (size.median_s, *trips[b])
            if b in trips
            else (size.median_s, rest + size.median_s, rest + size.p99_s)
        )
    spread = _spread_ratio(profile, measured, fitted, default=ratio)
    points: list[ProfilePoint] = []
    top_median = top_p99 = 0.0
    for b in sorted({p.batch_size for p in profile.points} | set(measured)):
        if b in fitted:
            new_predict, new_median, new_p99 = fitted[b]
        else:
            median, p99, predict = _profiled_at(profile, b)
            rest = rest_ratio * (median - predict)
            new_predict, new_median = ratio * predict, rest + ratio * predict
            new_p99 = new_median + spread * (p99 - median)
        seen = measured.get(b)
        top_median = max(top_median, new_median)
        top_p99 = max(top_p99, new_p99, top_median)
        points.append(
            ProfilePoint(
                b,
                top_median,
                top_p99,
                predict_median_s=new_predict,
                reps=seen.count if seen is not None else reps.get(b),
            )
        )
    return dataclasses.replace(profile, points=tuple(points), source=source)


def calibrate_profiles(
    profiles: Profiles,
    samples: Mapping[tuple[str, str], Samples],
    *,
    min_samples: int = 20,
    source: str = "calibrated",
    turns: Mapping[tuple[str, str], Samples] | None = None,
    rests: Mapping[tuple[str, str], Samples] | None = None,
    frontend_s: Sequence[float] | None = None,
) -> Calibration:
    """``profiles`` with every (stage, hardware) that has samples calibrated to them.

    ``samples``: per (stage, hardware), batch size -> measured ``predict`` times (s);
    ``turns``: the same batches' round trips (s), when measured; ``rests``: the batches'
    round trips less their ``predict`` times (s), with CPU-work samples; ``frontend_s``: the
    front-end's time per answered query outside the engine (s), when measured. Entries
    without samples, and samples of a stage or hardware without a profile, are left as
    they are. ``source`` names where the calibrated entries came from.
    """
    if min_samples < 1:
        raise ConfigError(f"must be ≥ 1, got {min_samples}", field="min_samples")
    entries = dict(profiles.entries)
    speeds: dict[tuple[str, str], StageSpeed] = {}
    for key, by_size in samples.items():
        profile = profiles.entries.get(key)
        if profile is None:
            continue
        speed = stage_speed(profile, by_size, min_samples)
        if not speed.samples:
            continue
        speeds[key] = speed
        entries[key] = _calibrated_profile(
            profile, speed, min_samples, source, (turns or {}).get(key), (rests or {}).get(key)
        )
    overhead = calibrated_overhead(profiles.overhead, frontend_s or (), source)
    calibrated = Profiles(profiles.hardware, entries, profiles.source).with_overhead(overhead)
    return Calibration(calibrated, speeds)


#: Answered queries the front-end must have timed before its measured per-query
#: overhead replaces the profiled one (a P99 needs a few hundred).
MIN_FRONTEND_QUERIES = 200


def calibrated_overhead(
    overhead: EngineOverhead | None, frontend_s: Sequence[float], source: str = "calibrated"
) -> EngineOverhead | None:
    """``overhead`` with its per-query distribution replaced by the measured one (its
    per-batch part and the front-end's CPU per query kept); unchanged with fewer than
    ``MIN_FRONTEND_QUERIES`` measured queries."""
    if len(frontend_s) < MIN_FRONTEND_QUERIES:
        return overhead
    values = np.percentile(
        np.maximum(np.asarray(frontend_s, dtype=np.float64), 0.0), OVERHEAD_PERCENTILES
    )
    values = np.maximum.accumulate(values)
    base = overhead if overhead is not None else EngineOverhead()
    return dataclasses.replace(
        base,
        per_query_s=float(np.interp(50.0, OVERHEAD_PERCENTILES, values)),
        per_query_p99_s=float(np.interp(99.0, OVERHEAD_PERCENTILES, values)),
        per_query_percentiles=OVERHEAD_PERCENTILES,
        per_query_percentiles_s=tuple(float(v) for v in values),
        per_query_by_rate=(),
        source=source,
    )


def carry_speeds(calibrated: Profiles, isolated: Profiles) -> Profiles:
    """``calibrated`` with the entries the engine did not serve (a stage's other hardware
    on the same device) scaled by the speed their stage showed where it was served: per
    stage, the median over the served entries' common batch sizes of calibrated ÷
    isolated latency (median and P99 apart). Planning again from a calibration would
    otherwise prefer the hardware nobody measured, for its isolated times.

    More threads than served are not assumed to help: an entry with more threads than a
    served one of its stage is never faster than that one's calibrated curve (its
    isolated speed-up came from cores it had to itself; served beside the other stages
    it gets less, and its threads' CPU time grows). A stage served nowhere, and entries
    on another device (a GPU for a stage served on CPU), are left as they are."""
    entries = dict(calibrated.entries)
    for stage in {stage for stage, _ in calibrated.entries}:
        medians: list[float] = []
        p99s: list[float] = []
        unserved: list[tuple[str, str]] = []
        served: list[BatchProfile] = []
        for key, profile in calibrated.entries.items():
            if key[0] != stage:
                continue
            before = isolated.entries.get(key)
            if before is None or before == profile:
                unserved.append(key)
                continue
            served.append(profile)
            ours = {p.batch_size: p for p in before.points}
            for point in profile.points:
                old = ours.get(point.batch_size)
                if old is not None and old.median_s > 0 and old.p99_s > 0:
                    medians.append(point.median_s / old.median_s)
                    p99s.append(point.p99_s / old.p99_s)
        if not medians:
            continue
        median_ratio, p99_ratio = float(np.median(medians)), float(np.median(p99s))
        for key in unserved:
            profile = entries[key]
            mine = resources_for(key[1])
            same_device = [s for s in served if resources_for(s.hardware).device == mine.device]
            if not same_device:
                continue
            fewer = [s for s in same_device if resources_for(s.hardware).threads < mine.threads]
            points = tuple(_carried(p, median_ratio, p99_ratio, fewer) for p in profile.points)
            entries[key] = dataclasses.replace(
                profile,
                points=points,
                source=f"{profile.source}; × {median_ratio:.2f} (median), {p99_ratio:.2f} "
                f"(P99): its stage's calibrated speed where served",
            )
    return Profiles(calibrated.hardware, entries, calibrated.source, calibrated.overhead)


def _carried(
    point: ProfilePoint, median_ratio: float, p99_ratio: float, floors: Sequence[BatchProfile]
) -> ProfilePoint:
    """``point`` scaled by its stage's calibrated speed, no faster than ``floors`` (served
    entries with fewer threads) at its batch size."""
    median = point.median_s * median_ratio
    p99 = point.p99_s * p99_ratio
    for floor in floors:
        if point.batch_size <= floor.max_batch_size:
            median = max(median, floor.latency_s(point.batch_size) - floor.overhead_s)
            p99 = max(p99, floor.latency_s(point.batch_size, "p99") - floor.overhead_s)
    scale = median / point.median_s if point.median_s > 0 else median_ratio
    return dataclasses.replace(
        point,
        median_s=median,
        p99_s=max(p99, median),
        predict_median_s=None if point.predict_median_s is None else point.predict_median_s * scale,
        mean_s=None if point.mean_s is None else point.mean_s * scale,
    )
