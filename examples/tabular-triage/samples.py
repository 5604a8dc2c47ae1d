"""Sample queries of the tabular triage pipeline: OIP V2 request bodies with test-split rows.

pipeline.yaml names ``samples:sample_requests`` so that the Profiler and ``inferline
validate`` send real payloads. Run as a script to write them as JSON lines for
``inferline replay --requests``::

    python examples/tabular-triage/samples.py -n 500 -o requests.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # imported by file path: the stages module lives next to this one
    sys.path.insert(0, _HERE)

from tabular_triage import SAMPLE_SEED, request_body, samples  # noqa: E402


def sample_requests(n: int, seed: int = SAMPLE_SEED) -> list[dict[str, Any]]:
    """``n`` request bodies, the same for the same seed (rows the models never saw)."""
    return [request_body(s.row) for s in samples(n, seed)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="number of requests")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSON-lines file")
    args = parser.parse_args(argv)
    lines = (json.dumps(body, ensure_ascii=False) for body in sample_requests(args.n, args.seed))
    args.output.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


if __name__ == "__main__":
    main()
