"""A replica process: import the stage class, run setup(), then serve batches until told to stop.

Once set up, the objects it holds are frozen out of the garbage collector (``gc.freeze``),
so a full collection does not walk the model while queries wait (docs/engine.md).

Started by the front-end (``_launcher``: ``python -c BOOTSTRAP SPEC_JSON``, a bootstrap that
imports this module without the whole package) with one end
of a socketpair inherited as file descriptor ``SPEC_JSON["fd"]``, or forked from a stage
template (``_launcher``) that has already imported the stage, which then calls ``serve``.
The stage work itself (load, describe, run a batch) is :mod:`inferline.engine.batching`'s.
It ignores SIGINT (a Ctrl-C in the terminal reaches the whole process group; the
front-end decides when replicas stop) and exits on ``("stop",)`` or when the front-end's end closes.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from inferline.engine._wire import SocketReader, pack
from inferline.engine.batching import (
    add_import_path,
    declared_outputs,
    load_stage,
    run_batch,
    stage_specs,
)

__all__ = ["main", "serve"]


def main(argv: Sequence[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = json.loads(argv[0])
    add_import_path(spec.get("sys_path", []))
    return serve(spec)


def serve(spec: dict[str, Any]) -> int:
    """Load the stage and answer batches on the socket ``spec["fd"]`` until told to stop."""
    sock = socket.socket(fileno=spec["fd"])
    if spec.get("nice"):
        try:  # raising one's own niceness needs no privilege; a sandbox may still refuse
            os.nice(int(spec["nice"]))
        except OSError as exc:
            print(f"replica: could not lower its priority ({exc})", file=sys.stderr)
    stage: str = spec["stage"]
    successors: tuple[str, ...] = tuple(spec["successors"])
    try:
        model = load_stage(spec)
    except BaseException as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        sock.sendall(pack(("fatal", f"{detail} (while loading {spec['model']})")))
        return 2
    # the model's objects leave the collector's view: a full collection over them (475,000
    # for the MiniLM stage) took 0.2 s alone and stalled every batch queued behind it for
    # 0.4–0.5 s while serving; what serving allocates stays collected as before
    gc.collect()
    gc.freeze()
    declared_out = declared_outputs(model)
    info = {
        "pid": os.getpid(),
        "inputs": stage_specs(getattr(model, "inputs", ())),
        "outputs": stage_specs(declared_out),
    }
    sock.sendall(pack(("ready", info)))
    reader = SocketReader(sock)
    while True:
        message = reader.next()
        if message is None or message[0] == "stop":
            return 0
        _, batch_id, items = message
        try:
            results, predict_s, cpu_s = run_batch(model, stage, items, successors, declared_out)
            reply = pack(("done", batch_id, results, predict_s, cpu_s))
        except Exception as exc:
            reply = pack(("failed", batch_id, f"{type(exc).__name__}: {exc}"))
        sock.sendall(reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
