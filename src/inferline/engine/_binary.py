"""Triton's binary tensor data extension: raw tensor bytes after the JSON part of a body.

A request or response whose ``Inference-Header-Content-Length`` header is N has its JSON
in the first N bytes of the body and, after it, the data of each tensor whose
``parameters.binary_data_size`` is set, in order: little-endian, row-major, BOOL one
byte per element, each BYTES element a 4-byte little-endian length then its bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Collection, Sequence
from typing import Any

from inferline.engine._errors import RequestError

__all__ = ["HEADER", "decode_tensor", "encode_response"]

#: The header giving the JSON part's length (lower case, as ASGI passes header names).
HEADER = b"inference-header-content-length"

_DTYPES = {
    "BOOL": "<b1",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_LENGTH = struct.Struct("<I")


def decode_tensor(raw: bytes, datatype: str, count: int, where: str) -> list[Any]:
    """The ``count`` elements in ``raw`` as a flat list (BYTES elements as str)."""
    import numpy as np

    if datatype == "BYTES":
        return _decode_bytes(raw, count, where)
    dtype = np.dtype(_DTYPES[datatype])
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            400,
            f"{where}.parameters.binary_data_size is {len(raw)} bytes but the shape holds "
            f"{count} {datatype} element(s) of {dtype.itemsize} byte(s) = "
            f"{count * dtype.itemsize} bytes",
        )
    values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
    return values


def _decode_bytes(raw: bytes, count: int, where: str) -> list[Any]:
    out: list[Any] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if len(out) == count:
            break
        if offset + 4 > len(raw):
            raise RequestError(400, f"{where}: BYTES element {len(out)} has a cut length prefix")
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise RequestError(
                400,
                f"{where}: BYTES element {len(out)} says {size} bytes but only "
                f"{len(raw) - offset} remain",
            )
        try:
            out.append(str(view[offset : offset + size], "utf-8"))
        except UnicodeDecodeError:
            raise RequestError(
                400, f"{where}: BYTES element {len(out)} is not UTF-8 text"
            ) from None
        offset += size
    if len(out) != count or offset != len(raw):
        raise RequestError(
            400,
            f"{where}: the shape holds {count} BYTES element(s) but the binary data "
            f"({len(raw)} bytes) holds {len(out)}" + (" and more" if offset != len(raw) else ""),
        )
    return out


def _encode(output: dict[str, Any]) -> bytes:
    import numpy as np

    datatype = output["datatype"]
    data = output["data"]
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in data:
            # JSON may carry lone surrogates ("\ud800"): pass them through as bytes
            blob = item if isinstance(item, bytes) else str(item).encode("utf-8", "surrogatepass")
            parts.append(_LENGTH.pack(len(blob)))
            parts.append(blob)
        return b"".join(parts)
    with np.errstate(over="ignore"):  # 1e308 as FP32 is inf, as Triton casts it
        return bytes(np.asarray(data, dtype=_DTYPES[datatype]).tobytes())


def encode_response(
    response: dict[str, Any], binary: Collection[str] | None
) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when any output went binary.

    ``binary`` names the outputs to send as binary data (``None``: all of them).
    """
    outputs: Sequence[dict[str, Any]] = response.get("outputs") or ()
    chosen = [binary is None or o["name"] in binary for o in outputs]
    if not any(chosen):
        return json.dumps(response, separators=(",", ":")).encode(), None
    blobs: list[bytes] = []
    shown: list[dict[str, Any]] = []
    for output, as_binary in zip(outputs, chosen, strict=True):
        if not as_binary:
            shown.append(output)
            continue
        blob = _encode(output)
        blobs.append(blob)
        meta = {k: v for k, v in output.items() if k != "data"}
        meta["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(blob)}
        shown.append(meta)
    head = json.dumps({**response, "outputs": shown}, separators=(",", ":")).encode()
    return b"".join([head, *blobs]), len(head)
