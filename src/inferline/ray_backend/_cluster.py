"""Connecting the front-end (a Ray driver) to a cluster, or starting a local one.

``ray.init(address=...)`` on an address where no Ray cluster answers retries for
minutes (measured: still retrying after 70 s with Ray 2.60), so before calling it the
address is probed: a TCP connect (refused or timing out → :class:`ClusterUnreachableError`
at once), then a GCS client call in a helper thread, bounded by ``connect_timeout_s``
(something listens there but does not answer as Ray → the same error).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from inferline.ray_backend._errors import (
    ClusterUnreachableError,
    RayBackendError,
    RayNotInstalledError,
)
from inferline.ray_backend._resources import ClusterResources

__all__ = ["RayConnection", "connect", "import_ray", "split_address"]

log = logging.getLogger("inferline.ray")

#: Namespace of InferLine's actors on a shared cluster.
NAMESPACE = "inferline"


def import_ray() -> Any:
    """``import ray``, or a clear error naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalledError(
            f"the Ray backend needs the 'ray' package ({exc}); install it with "
            "pip install 'inferline[ray]'"
        ) from None
    return ray


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (optionally ``ray://`` or ``http://``-less) → (host, port); 6379 when the
    port is left out, as ``ray start`` does."""
    text = address.strip()
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme != "ray":
            raise ClusterUnreachableError(
                address, f"unsupported scheme '{scheme}://'; give the head's HOST:PORT"
            )
        raise ClusterUnreachableError(
            address,
            "Ray Client addresses (ray://) are not supported: the front-end must run as a "
            "driver on a cluster node; give the head's GCS address HOST:PORT instead",
        )
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, "6379"
    host = host.strip("[]")
    if not host:
        raise ClusterUnreachableError(address, "no host in the address; give HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ClusterUnreachableError(address, f"'{port_text}' is not a port number") from None
    if not 0 < port < 65536:
        raise ClusterUnreachableError(address, f"{port} is not a TCP port")
    return host, port


def probe(address: str, timeout_s: float) -> None:
    """Raise :class:`ClusterUnreachableError` unless a Ray GCS answers at ``address``."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=min(timeout_s, 5.0)):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ClusterUnreachableError(
            address,
            f"{reason} (is `ray start --head --port={port}` running on {host}?)",
        ) from None
    ray = import_ray()
    outcome: dict[str, Any] = {}

    def ask() -> None:
        try:
            client = ray._raylet.GcsClient(address=f"{host}:{port}")
            client.internal_kv_get(b"inferline-probe", None, timeout=timeout_s)
            outcome["ok"] = True
        except Exception as exc:  # any failure means: not a usable GCS
            outcome["error"] = exc

    thread = threading.Thread(target=ask, name="inferline-ray-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "ok" in outcome:
        return
    detail = outcome.get("error")
    if detail is not None and "Authentication" in f"{type(detail).__name__} {detail}":
        raise ClusterUnreachableError(
            address,
            "the cluster requires token authentication: run with RAY_AUTH_MODE=token and "
            "the cluster's token in RAY_AUTH_TOKEN (or ~/.ray/auth_token)",
        )
    raise ClusterUnreachableError(
        address,
        f"port {port} is open but no Ray cluster answered within {timeout_s:g} s"
        + (f" ({type(detail).__name__}: {detail})" if detail is not None else "")
        + "; is it the head's GCS port (ray start --head --port)?",
    )


@dataclass
class RayConnection:
    """The driver's link to a cluster; ``started_local`` when ``ray.init`` started it."""

    address: str
    started_local: bool
    cluster: ClusterResources
    info: Mapping[str, Any] = field(default_factory=dict)

    def refresh(self) -> ClusterResources:
        self.cluster = ClusterResources.from_ray()
        return self.cluster


@contextlib.contextmanager
def connect(
    address: str | None,
    *,
    num_cpus: int | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    connect_timeout_s: float = 15.0,
    log_to_driver: bool = True,
) -> Iterator[RayConnection]:
    """Connect to the cluster at ``address`` (``auto``: the one started on this machine with
    ``ray start``), or start a local one (``address=None``; ``num_cpus`` logical CPUs,
    default this machine's cores). ``ray.shutdown()`` on exit, which also stops a local
    cluster this call started; the driver's actors die with it."""
    ray = import_ray()
    if ray.is_initialized():
        raise RayBackendError("this process is already connected to a Ray cluster")
    kwargs: dict[str, Any] = {
        "namespace": NAMESPACE,
        "logging_level": logging.WARNING,
        "log_to_driver": log_to_driver,
        "runtime_env": dict(runtime_env or {}),
        "configure_logging": True,
    }
    if address is None:
        if num_cpus is not None and num_cpus < 1:
            raise RayBackendError(f"a local cluster needs at least 1 CPU, got {num_cpus}")
        kwargs.update(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
        )
        target = "a new local cluster"
    else:
        if address != "auto":
            probe(address, connect_timeout_s)
        kwargs["address"] = address
        target = address
    try:
        context = ray.init(**kwargs)
    except ConnectionError as exc:
        raise ClusterUnreachableError(target, str(exc)) from None
    except (RuntimeError, ValueError) as exc:  # version mismatch, bad runtime_env, ...
        raise RayBackendError(f"cannot connect to {target}: {exc}") from None
    try:
        gcs = getattr(context, "address_info", {}).get("gcs_address") or address or "local"
        connection = RayConnection(
            address=str(gcs),
            started_local=address is None,
            cluster=ClusterResources.from_ray(),
            info={"ray_version": ray.__version__, "namespace": NAMESPACE},
        )
        yield connection
    finally:
        ray.shutdown()
