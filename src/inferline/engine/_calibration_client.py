"""Reading a running engine's calibrated profiles: ``inferline calibrate`` and
``il.calibrate`` (``GET /v2/control/calibration``; docs/engine.md)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from inferline.engine._errors import EngineError, UnreachableError
from inferline.errors import ConfigError, InferLineError
from inferline.profiles import Profiles, hardware_from_mapping, profiles_from_mapping

__all__ = ["CalibrationReport", "fetch_calibration"]


@dataclass(frozen=True)
class CalibrationReport:
    """What a running engine measured: its calibrated profiles, per stage the measured
    against the profiled ``predict`` times (``stages``, as the endpoint answers), and the
    pipeline's estimated and measured P99 (``pipeline``) of its latest refresh.
    ``work_profiles``: calibrated on each batch's CPU time ÷ threads (the engine's
    machine fit rule is ``shared``), for an Estimator that shares the host's cores;
    None otherwise."""

    url: str
    model: str
    window_s: float
    profiles: Profiles
    stages: dict[str, Any]
    pipeline: dict[str, Any]
    raw: dict[str, Any]
    work_profiles: Profiles | None = None

    def chosen_profiles(self, cpu_work: bool = False) -> Profiles:
        """The served times, or with ``cpu_work`` the CPU work per batch (what a Planner
        that simulates shared cores adds each plan's contention to; ConfigError when the
        engine calibrated none)."""
        if not cpu_work:
            return self.profiles
        if self.work_profiles is None:
            raise ConfigError(
                f"the engine at {self.url} calibrated no CPU work (it does where its "
                "machine's fit rule is shared, with the bundle's profiles); ask for the "
                "served times instead",
                field="cpu_work",
            )
        return self.work_profiles


def _base_url(url: str) -> str:
    full = url if "://" in url else f"http://{url}"
    parts = urlsplit(full)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"expected http://HOST:PORT of a running engine, got {url!r}",
            source="<argument>",
            field="URL",
        )
    try:
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise ConfigError(f"{url!r} has no valid port", source="<argument>", field="URL") from None
    return full.rstrip("/")


def fetch_calibration(url: str, timeout_s: float = 10.0) -> CalibrationReport:
    """Ask the engine at ``url`` for its calibrated profiles.

    Raises :class:`UnreachableError` when nothing answers there, ConfigError when what
    answers is no InferLine engine or it serves without profiles (exit 2 both).
    """
    base = _base_url(url)
    endpoint = f"{base}/v2/control/calibration"
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout_s) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise ConfigError(
            f"{endpoint} answered {exc.code}: is this an InferLine engine (inferline serve) "
            "of this version?",
            source=url,
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise UnreachableError(base, getattr(exc, "reason", None) or exc) from None
    except ValueError as exc:
        raise ConfigError(f"{endpoint} did not answer JSON ({exc})", source=url) from None
    if not isinstance(body, dict) or "stages" not in body:
        raise ConfigError(f"{endpoint} did not answer a calibration report", source=url)
    if body.get("profiles") is None:
        raise ConfigError(
            "the engine serves without profiles, so there is nothing to calibrate; serve a "
            "bundle that has hardware.yaml and profiles.yaml",
            source=url,
        )
    try:
        hardware = hardware_from_mapping({"hardware": body["hardware"]}, endpoint)
        profiles = profiles_from_mapping(body["profiles"], hardware, None, endpoint)
        work = body.get("work_profiles")
        work_profiles = (
            None if work is None else profiles_from_mapping(work, hardware, None, endpoint)
        )
    except InferLineError as exc:
        raise EngineError(f"the engine's calibration report is malformed: {exc}") from None
    return CalibrationReport(
        url=base,
        model=str(body.get("model", "")),
        window_s=float(body.get("window_s", 0.0)),
        profiles=profiles,
        stages=dict(body["stages"]),
        pipeline=dict(body.get("pipeline") or {}),
        raw=body,
        work_profiles=work_profiles,
    )
