"""The Profiler's error: a stage or the samples function misbehaves (a user mistake, exit 2)."""

from __future__ import annotations

from inferline.errors import InferLineError

__all__ = ["ProfilerError"]


class ProfilerError(InferLineError):
    """A stage cannot be imported, set up or run on the sample queries, or the samples
    function is missing or returns something unusable. The message names the stage (or
    the samples function) and what to fix; the command line exits with code 2."""

    exit_code = 2

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        self.stage = stage
        super().__init__(message)
