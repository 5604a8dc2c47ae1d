"""One plan served with its replicas at different priorities below the front-end.

The front-end's one event loop dispatches every batch and answers every query; on a
machine whose cores the replicas keep busy it waits for a core like they do. This serves
the same plan with ``inferline serve --replica-nice N`` for each N, alternating, and
replays the same Poisson arrivals with the bundle's sample payloads each time (a 3-s
warm-up first). Run:

    python measure_replica_nice.py BUNDLE PLAN.yaml --rate 316 --slo-s 0.0173 \
        [--nice 0,5] [--repeats 2] [--duration-s 60]

It prints one line per run and the medians per niceness (docs/engine.md, "Replica
priority").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from inferline import load_bundle
from inferline.engine import replay, replay_summary
from inferline.engine.process import start_engine
from inferline.profiler import load_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("plan", type=Path)
    parser.add_argument("--rate", type=float, required=True, help="queries per second")
    parser.add_argument("--slo-s", type=float, required=True)
    parser.add_argument("--nice", default="0,5", help="niceness values, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=60.0)
    args = parser.parse_args()

    bundle = load_bundle(args.bundle)
    if bundle.samples is None:
        raise SystemExit(f"{args.bundle}: pipeline.yaml gives no `samples:` to send")
    payloads = load_samples(bundle.root, bundle.samples, 64, 0)
    bodies = [json.dumps(p, separators=(",", ":")).encode() for p in payloads]
    nices = [int(n) for n in args.nice.split(",")]
    results: dict[int, list[dict[str, float]]] = {n: [] for n in nices}
    for repeat in range(args.repeats):
        for nice in nices:
            rng = np.random.default_rng(repeat)  # the same arrivals for every niceness
            n = int(args.rate * args.duration_s)
            arrivals = np.cumsum(rng.exponential(1.0 / args.rate, n))
            sent = [bodies[i] for i in rng.integers(0, len(bodies), n)]
            warm = np.cumsum(rng.exponential(1.0 / args.rate, int(args.rate * 3)))
            with start_engine(
                bundle.root,
                args.plan,
                *("--slo-s", repr(args.slo_s), "--max-queue", "1000000"),
                *("--replica-nice", str(nice)),
                start_timeout_s=300,
            ) as engine:
                name = bundle.pipeline.name
                replay(engine.url, warm, sent[: warm.size], slo_s=args.slo_s, model=name)
                cpu = time.process_time()
                result = replay(engine.url, arrivals, sent, slo_s=args.slo_s, model=name)
                cpu = time.process_time() - cpu
            m = replay_summary(result)
            row = {
                "p50_ms": m["p50_s"] * 1e3,
                "p99_ms": m["p99_s"] * 1e3,
                "miss": m["miss_rate"],
                "client_ms_per_query": cpu / max(1, m["sent"]) * 1e3,
            }
            results[nice].append(row)
            print(json.dumps({"repeat": repeat, "nice": nice, **row}), flush=True)
    print(f"medians of {args.repeats} at {args.rate:g} q/s, SLO {args.slo_s * 1e3:g} ms:")
    for nice, rows in results.items():
        p99 = statistics.median(r["p99_ms"] for r in rows)
        miss = statistics.median(r["miss"] for r in rows)
        print(f"  replica nice {nice:>2}: P99 {p99:6.1f} ms, misses {miss:6.2%}")


if __name__ == "__main__":
    main()
