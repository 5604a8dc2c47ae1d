"""Who may change the deployment: the control listener and the bearer token.

The control endpoints that change the deployment or its state (:data:`CHANGES`:
``POST /v2/control/plan``, ``DELETE /v2/control/stats``) are guarded; the read-only
ones (``GET`` status, plan and stats), health and ``/metrics`` are not.

- With a control listener (``serve --control-port``, on ``--control-host``, loopback
  by default) the guarded endpoints are served there only; the data listener answers
  them 404. The control listener serves ``/v2/control/*``, health and ``/metrics``,
  not inference.
- With a token (``serve --control-token`` or ``INFERLINE_CONTROL_TOKEN``) a guarded
  endpoint needs ``Authorization: Bearer <token>`` on whichever listener serves it:
  401 without one, 403 with a wrong one (compared with :func:`hmac.compare_digest`).
- :func:`check_exposure`: ``serve`` refuses to start (ConfigError, exit 2) when a
  listener that serves the guarded endpoints binds a non-loopback address and there
  is no token. Design and examples: docs/engine.md ("Control plane").
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from inferline.engine._errors import RequestError
from inferline.errors import ConfigError

__all__ = [
    "CHANGES",
    "MIN_TOKEN_CHARS",
    "TOKEN_ENV",
    "ControlAccess",
    "ControlOptions",
    "check_exposure",
    "is_loopback",
    "resolve_token",
]

#: Environment variable read for the control token when no ``--control-token`` is given.
TOKEN_ENV = "INFERLINE_CONTROL_TOKEN"
#: Shortest token accepted (``secrets.token_urlsafe(32)`` gives 43 characters).
MIN_TOKEN_CHARS = 16
#: (method, path under /v2/control/) of the endpoints that change the deployment or its
#: state; everything else under /v2/control/ only reads.
CHANGES = frozenset({("POST", "plan"), ("DELETE", "stats")})
#: What the control listener serves besides /v2/control/*.
_CONTROL_LISTENER_PATHS = frozenset({"/metrics", "/v2/health/live", "/v2/health/ready"})
_BEARER = "bearer "


@dataclass(frozen=True, slots=True)
class ControlOptions:
    """Where the control endpoints are served and the token they need.

    ``port``: the control listener's TCP port (0 picks a free one), or ``None`` to serve
    control on the data listener; ``host``: the address it binds (loopback by default);
    ``token``: the bearer token the guarded endpoints need (``None``: none).
    """

    token: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ConfigError(
                f"not a TCP port: {self.port}", source="<argument>", field="--control-port"
            )

    @classmethod
    def from_environment(cls) -> ControlOptions:
        """Control on the data listener, with the token from :data:`TOKEN_ENV` if set."""
        return cls(token=resolve_token(None))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def resolve_token(given: str | None, environ: MutableMapping[str, str] | None = None) -> str | None:
    """The control token: ``given`` (``--control-token``), else :data:`TOKEN_ENV`, else None.

    Raises ConfigError for a token shorter than :data:`MIN_TOKEN_CHARS` or with
    characters a header cannot carry.
    """
    env = os.environ if environ is None else environ
    source = "--control-token"
    token = given
    if token is None:
        token = env.get(TOKEN_ENV) or None
        source = TOKEN_ENV
    if token is None:
        return None
    if (
        len(token) < MIN_TOKEN_CHARS
        or not token.isascii()
        or not token.isprintable()
        or " " in token
    ):
        raise ConfigError(
            f"the control token must be at least {MIN_TOKEN_CHARS} printable ASCII "
            "characters without spaces (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')",
            source="<argument>",
            field=source,
        )
    return token


def check_exposure(
    host: str, control_host: str, control_port: int | None, token: str | None
) -> None:
    """Refuse (ConfigError) to serve the guarded endpoints to a network without a token.

    Control is reachable from the network when the data listener binds a non-loopback
    ``host`` and serves control (no ``control_port``), or when the control listener
    binds a non-loopback ``control_host``.
    """
    if token is not None:
        return
    if control_port is None and not is_loopback(host):
        raise ConfigError(
            f"--host {host} would open the control API (POST /v2/control/plan changes the "
            "deployment) to the network; give a token (--control-token or "
            f"{TOKEN_ENV}) or serve control on its own loopback listener (--control-port)",
            source="<argument>",
            field="--host",
        )
    if control_port is not None and not is_loopback(control_host):
        raise ConfigError(
            f"--control-host {control_host} is not a loopback address; a control listener "
            f"reachable from the network needs a token (--control-token or {TOKEN_ENV})",
            source="<argument>",
            field="--control-host",
        )


def _authorization(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    for key, value in headers:
        if key == b"authorization":
            return bytes(value)
    return None


@dataclass(frozen=True, slots=True)
class ControlAccess:
    """The guard of the control endpoints for one served engine (see the module doc).

    ``control_port``: the control listener's port once bound (requests that arrived
    on it are control requests), or ``None`` when control is on the data listener.
    """

    token: str | None = None
    control_port: int | None = None

    def on_control_listener(self, scope: MutableMapping[str, Any]) -> bool:
        server = scope.get("server")
        return (
            self.control_port is not None
            and server is not None
            and (server[1] == self.control_port)
        )

    def check_listener(self, path: str, scope: MutableMapping[str, Any]) -> None:
        """The control listener serves control, health and metrics only (404 otherwise)."""
        if (
            self.on_control_listener(scope)
            and not path.startswith("/v2/control/")
            and path not in _CONTROL_LISTENER_PATHS
        ):
            raise RequestError(
                404,
                f"no such endpoint on the control listener: {path} (inference goes to the "
                "data port)",
            )

    def check(self, method: str, action: str, scope: MutableMapping[str, Any]) -> None:
        """Raise RequestError if ``method /v2/control/<action>`` may not go through here."""
        if (method, action) not in CHANGES:
            return
        if self.control_port is not None and not self.on_control_listener(scope):
            raise RequestError(
                404,
                f"{method} /v2/control/{action} is served on the control listener only "
                "(serve --control-port), not on the data port",
            )
        if self.token is None:
            return
        header = _authorization(scope.get("headers", ()))
        if header is None or not header[: len(_BEARER)].lower() == _BEARER.encode():
            raise RequestError(
                401,
                f"{method} /v2/control/{action} changes the deployment and needs "
                "'Authorization: Bearer <token>' (the token serve was given)",
                headers=((b"www-authenticate", b'Bearer realm="inferline-control"'),),
            )
        given = header[len(_BEARER) :].strip()
        if not hmac.compare_digest(given, self.token.encode()):
            raise RequestError(403, "the control token is not the one this server was given")
