"""Test and benchmark support: a multi-node Ray cluster on this machine, and sleeping stages.

:class:`LocalRayCluster` starts a head and worker nodes with ``ray start`` (each its own
CPU count, all on this machine, every port chosen free so that it coexists with other
clusters), and stops *only its own* processes: each ``ray start`` runs in a session of
its own, every daemon and worker it spawns stays in that process group, and
:meth:`LocalRayCluster.stop` signals those groups (never ``ray stop``, which would stop
every Ray process of every user on the machine).

Ray resolves ``--node-ip-address=127.0.0.1`` to the machine's own address (so that
other machines could join); all nodes still run here.

The stages sleep for a batch's service time, ``base_s + per_item_s × batch`` — CPU-free,
so that on a 2-core machine scaling replicas behaves as on real hardware.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from inferline.engine import StageModel

__all__ = [
    "LocalRayCluster",
    "NodeSpec",
    "SleepModel",
    "SleepPrep",
    "SleepStage",
    "ray_executable",
]


def ray_executable() -> str:
    """The ``ray`` command of this interpreter's environment."""
    candidate = Path(sys.executable).with_name("ray")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if found is None:
        raise FileNotFoundError("no 'ray' command; install the 'ray' extra")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class NodeSpec:
    """One node: its logical CPUs and GPUs (Ray's resources, not this machine's)."""

    num_cpus: int
    num_gpus: int = 0


class LocalRayCluster:
    """A head plus worker nodes started with ``ray start`` on this machine.

    ``nodes[0]`` is the head. Use as a context manager, or ``start()``/``stop()``;
    ``stop()`` is safe to call twice and after a failed start.
    """

    def __init__(
        self,
        nodes: Sequence[int | NodeSpec] = (2, 2),
        *,
        object_store_bytes: int = 200_000_000,
        startup_timeout_s: float = 120.0,
    ) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least a head node")
        self.nodes = tuple(n if isinstance(n, NodeSpec) else NodeSpec(int(n)) for n in nodes)
        self.object_store_bytes = object_store_bytes
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self.temp_dir: Path | None = None
        self._groups: list[int] = []
        self._logs: list[Path] = []

    @property
    def address(self) -> str:
        """The head's GCS address, for ``--address`` / ``ray.init``."""
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # Explicit: with the mode unset, `ray start --head` turns token authentication on
        # whenever ~/.ray/auth_token exists (a local ray.init() writes one), and drivers
        # that connect without the mode set are then refused.
        env["RAY_AUTH_MODE"] = "disabled"
        env.pop("RAY_ADDRESS", None)
        return env

    def _launch(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        assert self.temp_dir is not None
        log_path = self.temp_dir / log_name
        self._logs.append(log_path)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [ray_executable(), "start", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
                start_new_session=True,  # its daemons stay in this process group
            )
        self._groups.append(process.pid)
        return process

    def _node_args(self, spec: NodeSpec) -> list[str]:
        args = [
            f"--num-cpus={spec.num_cpus}",
            "--node-ip-address=127.0.0.1",
            f"--object-store-memory={self.object_store_bytes}",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ]
        if spec.num_gpus:
            args.append(f"--num-gpus={spec.num_gpus}")
        return args

    def start(self) -> LocalRayCluster:
        # a short path: Ray's Unix socket names live under it (limit ~107 characters)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ilray-", dir="/tmp"))
        self.port = _free_port()
        try:
            head = self._launch(
                [
                    "--head",
                    f"--port={self.port}",
                    "--include-dashboard=false",
                    f"--dashboard-port={_free_port()}",
                    f"--ray-client-server-port={_free_port()}",
                    f"--temp-dir={self.temp_dir}",
                    *self._node_args(self.nodes[0]),
                ],
                "head.log",
            )
            self._wait_port(head)
            # workers join as soon as the GCS listens; they retry until it answers
            workers = [
                self._launch(
                    [f"--address={self.address}", *self._node_args(spec)], f"worker{i}.log"
                )
                for i, spec in enumerate(self.nodes[1:], start=1)
            ]
            for process in (head, *workers):
                self._wait_exit(process)
            self._wait_nodes()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_port(self, head: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0),
            ):
                return
            if head.poll() not in (None, 0):
                raise RuntimeError(f"ray start --head failed:\n{self.logs()}")
            time.sleep(0.2)
        raise TimeoutError(f"the head's GCS did not listen within the timeout:\n{self.logs()}")

    def _wait_exit(self, process: subprocess.Popen[bytes]) -> None:
        try:
            code = process.wait(self.startup_timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"ray start did not finish:\n{self.logs()}") from None
        if code != 0:
            raise RuntimeError(f"ray start exited with {code}:\n{self.logs()}")

    def _wait_nodes(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            info = self.query()
            if len(info["nodes"]) >= len(self.nodes):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(info['nodes'])} nodes joined:\n{self.logs()}")
            time.sleep(0.5)

    def query(self) -> dict[str, Any]:
        """Alive nodes, total and available resources and the alive actors of the cluster,
        asked by a short-lived driver process (this process stays out of Ray)."""
        script = "\n".join(
            [
                "import json, sys, ray",
                "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)",
                "from ray._private import state",
                "actors = [a for a in state.actors().values() if a.get('State') == 'ALIVE']",
                "print(json.dumps({'nodes': [n['NodeID'] for n in ray.nodes() if n['Alive']],",
                "  'total': ray.cluster_resources(), 'available': ray.available_resources(),",
                "  'alive_actors': [a.get('ActorClassName', '') for a in actors]}))",
            ]
        )
        out = subprocess.run(
            [sys.executable, "-c", script, self.address],
            capture_output=True,
            text=True,
            timeout=120,
            env=self._env(),
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"cannot query the cluster: {out.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    def logs(self) -> str:
        parts = []
        for path in self._logs:
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def alive_groups(self) -> list[int]:
        """Process groups of this cluster that still have a process."""
        alive = []
        for group in self._groups:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                continue
            except PermissionError:  # pragma: no cover - not ours
                continue
            alive.append(group)
        return alive

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM this cluster's process groups, SIGKILL what is left after ``grace_s``."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            groups = self.alive_groups()
            if not groups:
                break
            for group in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, sig)
            deadline = time.monotonic() + wait_s
            while self.alive_groups() and time.monotonic() < deadline:
                time.sleep(0.1)
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def local_ray_cluster(nodes: Sequence[int | NodeSpec] = (2, 2)) -> Iterator[LocalRayCluster]:
    """``with local_ray_cluster((3, 4)) as cluster: ... cluster.address ...``"""
    cluster = LocalRayCluster(nodes)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# --- stages whose service time is a sleep ----------------------------------------------------


class SleepStage(StageModel):
    """Passes its inputs on after sleeping ``base_s + per_item_s × batch size``."""

    base_s: ClassVar[float] = 0.005
    per_item_s: ClassVar[float] = 0.001

    @classmethod
    def service_s(cls, batch_size: int) -> float:
        return cls.base_s + cls.per_item_s * batch_size

    def predict(self, inputs: list[Any]) -> list[Any]:
        time.sleep(self.service_s(len(inputs)))
        return inputs


class SleepPrep(SleepStage):
    """A cheap first stage: 10 ms + 2.5 ms per query."""

    base_s: ClassVar[float] = 0.010
    per_item_s: ClassVar[float] = 0.0025


class SleepModel(SleepStage):
    """A model-like stage: 100 ms + 25 ms per query (batching pays off)."""

    base_s: ClassVar[float] = 0.100
    per_item_s: ClassVar[float] = 0.025
