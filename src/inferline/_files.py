"""Reading YAML files and turning schema violations into actionable ConfigErrors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from inferline.errors import ConfigError

__all__ = ["load_yaml_mapping", "parse_model"]

M = TypeVar("M", bound=BaseModel)


def load_yaml_mapping(path: str | Path, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error("file not found; check the path", source=path) from None
    except OSError as exc:
        raise error(f"cannot read the file ({exc.strerror})", source=path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"not valid YAML{where}: {problem}", source=path) from None
    if not isinstance(data, dict):
        raise error(
            f"expected a mapping at the top level, found {type(data).__name__}", source=path
        )
    return data


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_model(
    model: type[M],
    data: Any,
    *,
    source: str | Path,
    error: type[ConfigError] = ConfigError,
    prefix: str = "",
) -> M:
    """Validate ``data`` against ``model``; report the first problem with its field path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _dotted(tuple(first["loc"]))
        if prefix:
            field = f"{prefix}.{field}" if field else prefix
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field (check its spelling against docs/bundles.md)"
        elif first["type"] == "missing":
            message = "required field is missing"
        else:
            message = f"{message} (got {first.get('input')!r})"
        count = exc.error_count()
        if count > 1:
            message += f"; and {count - 1} more problem(s)"
        raise error(message, source=source, field=field or None) from None
