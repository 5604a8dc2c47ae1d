"""Errors of the serving engine (a branch of :mod:`inferline.errors`).

::

    InferLineError
    └── EngineError                the engine cannot start or run as asked (exit 1)
        ├── StageLoadError         a stage class cannot be imported or its setup() failed (exit 2)
        ├── RequestError           one HTTP request is rejected; ``status`` is its HTTP code
        └── UnreachableError       nothing answers at a server's address (exit 2)
"""

from __future__ import annotations

from inferline.errors import InferLineError

__all__ = ["EngineError", "RequestError", "StageLoadError", "UnreachableError"]


class EngineError(InferLineError):
    """The engine cannot start, or cannot carry out a control action."""


class StageLoadError(EngineError):
    """A stage's class cannot be imported, built or set up: a user mistake, so exit 2."""

    exit_code = 2


class RequestError(EngineError):
    """An inference or control request is rejected with an HTTP ``status`` and a message
    (and extra response ``headers``, e.g. ``WWW-Authenticate`` with a 401)."""

    def __init__(
        self, status: int, message: str, *, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        self.status = status
        self.headers = headers
        super().__init__(message)


class UnreachableError(EngineError):
    """No server answers at the address a client was given (not running, wrong URL): a
    usage or connection error, so exit 2."""

    exit_code = 2

    def __init__(self, url: str, reason: object) -> None:
        self.url = url
        super().__init__(
            f"the server at {url} is not reachable ({reason}); start it (inferline serve …) "
            "or check the URL"
        )
