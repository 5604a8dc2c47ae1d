"""Reading and writing traces: InferLine trace files, real timestamp logs, bundled traces.

This is the only module of the workload package that touches the file system.
Every user mistake becomes a TraceError naming the file, the field and the
line, so the command line can print it without a traceback.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.resources
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inferline.errors import TraceError
from inferline.workload._trace import PATH_SEPARATOR, Trace, arrival_problem, normalise_path

__all__ = ["bundled_trace_path", "load_timestamp_csv", "load_trace", "save_trace"]

_TRACE_HEADERS = ("arrival_s", "arrival_s,path")
_FORMAT_HINT = (
    "an InferLine trace file is a CSV whose header is 'arrival_s' or 'arrival_s,path', "
    "then one arrival time in seconds per line (docs/traces.md)"
)
# Columns load_timestamp_csv accepts, in order of preference (matched case-insensitively).
_NUMERIC_COLUMNS = ("arrival_s", "timestamp_s")
_DATETIME_COLUMNS = ("timestamp",)
_DATETIME_EXAMPLE = "2023-11-16 18:17:03.9799600"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TraceError("file not found; check the path", source=path) from None
    except IsADirectoryError:
        raise TraceError(
            "is a folder, not a file; give the path of a CSV file", source=path
        ) from None
    except UnicodeDecodeError as exc:
        raise TraceError(
            f"is not UTF-8 text (byte {exc.start}); a trace must be a text CSV file", source=path
        ) from None
    except OSError as exc:
        raise TraceError(f"cannot read the file ({exc.strerror})", source=path) from None


def _skip_preamble(lines: list[str]) -> int:
    """Index of the first line that is neither blank nor a '#' comment."""
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return index
    return len(lines)


def _parse_seconds(
    values: list[str], line_numbers: Sequence[int], path: Path, column: str
) -> npt.NDArray[np.float64]:
    """Parse decimal strings with numpy in bulk; on failure, name the first bad line."""
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(values), dtype=np.float64)
    for index, value in enumerate(values):
        try:
            out[index] = float(value)
        except ValueError:
            shown = value.strip()
            problem = "the value is empty" if not shown else f"{shown!r} is not a number of seconds"
            if "," in value:
                problem += " (the line has more columns than the header)"
            raise TraceError(
                f"line {line_numbers[index]}: {problem}; fix or delete that line",
                source=path,
                field=column,
            ) from None
    return out


def _check_arrivals(
    arrival_s: npt.NDArray[np.float64], line_numbers: Sequence[int], path: Path
) -> None:
    problem = arrival_problem(arrival_s)
    if problem is not None:
        index, text = problem
        raise TraceError(f"line {line_numbers[index]}: {text}", source=path, field="arrival_s")


def load_trace(path: str | Path) -> Trace:
    """Read an InferLine trace file (see :func:`save_trace`); it must already be sorted."""
    path = Path(path)
    lines = _read_text(path).splitlines()
    start = _skip_preamble(lines)
    if start == len(lines):
        raise TraceError(f"the file is empty; {_FORMAT_HINT}", source=path, field="header")
    header = ",".join(cell.strip() for cell in lines[start].split(","))
    if header not in _TRACE_HEADERS:
        raise TraceError(
            f"line {start + 1}: header is {lines[start].strip()!r}; {_FORMAT_HINT}",
            source=path,
            field="header",
        )
    body = lines[start + 1 :]
    while body and not body[-1].strip():
        body.pop()
    if not body:
        raise TraceError(
            f"no arrivals after the header; {_FORMAT_HINT}", source=path, field="arrival_s"
        )
    first_line = start + 2  # 1-based number of the first line of the body
    line_numbers = range(first_line, first_line + len(body))
    if header == "arrival_s":
        arrival_s = _parse_seconds(body, line_numbers, path, "arrival_s")
        _check_arrivals(arrival_s, line_numbers, path)
        return Trace(arrival_s, source=str(path))
    # Paths repeat: parse each distinct path text once and map it to an id.
    times: list[str] = []
    ids = np.empty(len(body), dtype=np.int32)
    id_of_text: dict[str, int] = {}
    table: dict[tuple[str, ...], int] = {}
    for offset, line in enumerate(body):
        time_text, comma, path_text = line.partition(",")
        path_id = id_of_text.get(path_text) if comma else None
        if path_id is None:
            path_id = _path_id(path_text, comma, table, path, first_line + offset)
            id_of_text[path_text] = path_id
        times.append(time_text)
        ids[offset] = path_id
    arrival_s = _parse_seconds(times, line_numbers, path, "arrival_s")
    _check_arrivals(arrival_s, line_numbers, path)
    return Trace(arrival_s, ids, tuple(table), str(path))


def _path_id(
    path_text: str, comma: str, table: dict[tuple[str, ...], int], path: Path, line: int
) -> int:
    """Parse a path cell ('a+b') into an id of ``table``, adding a new entry if needed."""
    if not comma or "," in path_text:
        found = 1 if not comma else path_text.count(",") + 2
        raise TraceError(
            f"line {line}: expected 2 columns (arrival_s,path), found {found}",
            source=path,
            field="path",
        )
    stages = [name.strip() for name in path_text.split(PATH_SEPARATOR)]
    try:
        key = normalise_path([] if stages == [""] else stages, source=str(path), field="path")
    except TraceError as exc:
        raise TraceError(f"line {line}: {exc.problem}", source=path, field="path") from None
    return table.setdefault(key, len(table))


def save_trace(trace: Trace, path: str | Path) -> None:
    """Write ``trace`` as an InferLine trace file that :func:`load_trace` reads back exactly.

    Times are written with ``repr``, the shortest text that round-trips a
    float64. With recorded paths, each line also holds the visited stages
    joined by '+'.
    """
    path = Path(path)
    times = map(repr, trace.arrival_s.tolist())
    if trace.path_ids is None:
        text = "arrival_s\n" + "\n".join(times) + "\n"
    else:
        names = [PATH_SEPARATOR.join(entry) for entry in trace.path_table]
        rows = (f"{t},{names[k]}" for t, k in zip(times, trace.path_ids.tolist(), strict=True))
        text = "arrival_s,path\n" + "\n".join(rows) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise TraceError(
            f"cannot write the file ({exc.strerror}); check that the folder exists and is writable",
            source=path,
        ) from None


def _datetime_ns(value: str) -> int | None:
    """One timestamp in ns since the epoch (UTC if it carries an offset), None if unreadable."""
    text = value.strip()
    if not text:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parsed = np.datetime64(text, "ns")
        return None if np.isnat(parsed) else int(parsed.astype(np.int64))
    except (ValueError, UserWarning, OverflowError):
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return int(np.datetime64(moment, "ns").astype(np.int64))


def _parse_datetimes(
    values: list[str], line_numbers: list[int], path: Path, column: str
) -> npt.NDArray[np.int64]:
    """Timestamps in ns; numpy parses the common case in bulk, the rest one by one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            stamps = np.array(values, dtype="datetime64[ns]")
        if not np.isnat(stamps).any():
            return stamps.astype(np.int64)
    except (ValueError, UserWarning, OverflowError):
        pass
    out = np.empty(len(values), dtype=np.int64)
    for index, value in enumerate(values):
        parsed = _datetime_ns(value)
        if parsed is None:
            raise TraceError(
                f"line {line_numbers[index]}: cannot read {value.strip()!r} as a date-time "
                f"like {_DATETIME_EXAMPLE!r}; fix or delete that line",
                source=path,
                field=column,
            )
        out[index] = parsed
    return out


def load_timestamp_csv(path: str | Path) -> Trace:
    """Read a real request log: a CSV with a header and a column of arrival timestamps.

    The column is ``arrival_s`` or ``timestamp_s`` (seconds) or ``TIMESTAMP``
    (date-times like ``2023-11-16 18:17:03.9799600``, as in the Azure LLM
    traces); names match case-insensitively and other columns are ignored.
    Times become seconds after the earliest one. Real logs can be slightly out
    of order, so rows are sorted (stably); :func:`load_trace` instead rejects
    unsorted files, because a trace file is meant to be exact.
    """
    path = Path(path)
    lines = _read_text(path).splitlines()
    start = _skip_preamble(lines)
    if start == len(lines):
        raise TraceError(
            "the file is empty; expected a CSV header naming a TIMESTAMP, arrival_s or "
            "timestamp_s column, then one row per request",
            source=path,
            field="header",
        )
    reader = csv.reader(io.StringIO("\n".join(lines[start:])))
    header = [cell.strip().lower() for cell in next(reader)]
    wanted = [name for name in (*_NUMERIC_COLUMNS, *_DATETIME_COLUMNS) if name in header]
    if not wanted:
        found = ", ".join(repr(cell) for cell in header)
        raise TraceError(
            f"no arrival-time column; found columns {found}, expected one named TIMESTAMP "
            "(date-times), arrival_s or timestamp_s (seconds)",
            source=path,
            field="header",
        )
    column_name = wanted[0]
    column = header.index(column_name)
    values: list[str] = []
    line_numbers: list[int] = []
    for row in reader:
        if not row or not any(cell.strip() for cell in row):
            continue
        line = start + reader.line_num
        if len(row) <= column:
            raise TraceError(
                f"line {line}: has {len(row)} column(s), too few to reach column "
                f"{column + 1} ({column_name}); fix or delete that line",
                source=path,
                field=column_name,
            )
        values.append(row[column])
        line_numbers.append(line)
    if not values:
        raise TraceError(
            "no data rows after the header; the log holds no requests",
            source=path,
            field=column_name,
        )
    arrival_s: npt.NDArray[np.float64]
    if column_name in _NUMERIC_COLUMNS:
        arrival_s = _parse_seconds(values, line_numbers, path, column_name)
        bad = ~np.isfinite(arrival_s)
        if bad.any():
            index = int(np.argmax(bad))
            raise TraceError(
                f"line {line_numbers[index]}: {values[index].strip()!r} is not a finite number "
                "of seconds; fix or delete that line",
                source=path,
                field=column_name,
            )
        arrival_s = np.sort(arrival_s, kind="stable")
        arrival_s = arrival_s - arrival_s[0]
    else:
        stamps_ns = np.sort(
            _parse_datetimes(values, line_numbers, path, column_name), kind="stable"
        )
        arrival_s = (stamps_ns - stamps_ns[0]).astype(np.float64) / 1e9
    return Trace(arrival_s, source=str(path))


def bundled_trace_path(name: str = "azure_llm_2023_code") -> Path:
    """Path of a trace shipped inside the package (``data/traces/<name>.csv``)."""
    folder = importlib.resources.files("inferline") / "data" / "traces"
    available = sorted(
        entry.name.removesuffix(".csv") for entry in folder.iterdir() if entry.name.endswith(".csv")
    )
    stem = name.removesuffix(".csv")
    if stem not in available:
        raise TraceError(
            f"no bundled trace named {name!r}; available: {', '.join(available) or 'none'}",
            source="<argument>",
            field="name",
        )
    return Path(str(folder / f"{stem}.csv"))
