"""The HTTP API as a bare ASGI callable: Open Inference Protocol V2, control, /metrics.

A bare callable rather than a framework router: the routes are few and fixed, and it
keeps per-request overhead minimal (docs/engine.md has the measurement). Every error
body is ``{"error": "..."}`` with the protocol's status codes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from inferline import __version__ as _version
from inferline.engine._binary import HEADER as _BINARY_HEADER
from inferline.engine._binary import encode_response
from inferline.engine._control import ControlAccess
from inferline.engine._engine import Answer, Engine, plan_from_mapping
from inferline.engine._errors import EngineError, RequestError
from inferline.engine._statistics import ModelStats
from inferline.engine._tensor import parse_infer_request

__all__ = ["EngineApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_VERSION = "1"
#: Protocol extensions served (listed in the server metadata, GET /v2).
EXTENSIONS = ("binary_tensor_data", "statistics")


class _DisconnectedError(Exception):
    """The client went away before sending its whole body."""


class EngineApp:
    """ASGI app serving one engine's pipeline as one OIP model named after the pipeline."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_body_bytes: int = 8 << 20,
        access: ControlAccess | None = None,
    ) -> None:
        self.engine = engine
        self.model = engine.pipeline.name
        self.max_body_bytes = max_body_bytes
        #: Guards the control endpoints (listener, token); see engine/_control.py.
        self.access = access or ControlAccess()
        self.model_stats = ModelStats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is handled by serve(), which owns the engine
        try:
            await self._route(scope, receive, send)
        except RequestError as exc:
            self.engine.metrics.answered(exc.status)
            # No "Connection: close" after a 413: uvicorn's parser then reads and drops the
            # rest of the body and the connection stays in step; closing with unread data
            # would reset it and could destroy the answer before the client reads it.
            await _send_json(send, exc.status, {"error": str(exc)}, exc.headers)
        except _DisconnectedError:
            return

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        self.access.check_listener(path, scope)
        if path.startswith("/v2/models/"):
            await self._model_route(path[len("/v2/models/") :], method, scope, receive, send)
        elif path in ("/v2", "/v2/"):
            _allow(method, "GET")
            await _send_json(
                send,
                200,
                {"name": "inferline", "version": _version, "extensions": list(EXTENSIONS)},
            )
        elif path == "/v2/health/live":
            _allow(method, "GET")
            await _send_json(send, 200, {"live": True})
        elif path == "/v2/health/ready":
            _allow(method, "GET")
            ready = self.engine.ready
            await _send_json(send, 200 if ready else 503, {"ready": ready})
        elif path == "/metrics":
            _allow(method, "GET")
            await _send(send, 200, self.engine.metrics.render(), b"text/plain; version=0.0.4")
        elif path.startswith("/v2/control/"):
            await self._control(path[len("/v2/control/") :], method, scope, receive, send)
        else:
            raise RequestError(404, f"no such endpoint: {method} {path}")

    async def _model_route(
        self, rest: str, method: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if rest == "stats":  # every model's statistics: this server has one
            _allow(method, "GET")
            await self._stats(send)
            return
        parts = rest.split("/")
        name = parts[0]
        if len(parts) >= 3 and parts[1] == "versions":
            if parts[2] != _VERSION:
                raise RequestError(
                    404, f"model '{name}' has no version '{parts[2]}' (its version is '1')"
                )
            parts = [name, *parts[3:]]
        if name != self.model:
            raise RequestError(404, f"unknown model '{name}'; this server serves '{self.model}'")
        action = "/".join(parts[1:])
        if action == "infer":
            _allow(method, "POST")
            await self._infer(scope, receive, send)
        elif action == "":
            _allow(method, "GET")
            await _send_json(send, 200, self._metadata())
        elif action == "stats":
            _allow(method, "GET")
            await self._stats(send)
        elif action == "ready":
            _allow(method, "GET")
            ready = self.engine.ready
            await _send_json(send, 200 if ready else 503, {"name": name, "ready": ready})
        else:
            raise RequestError(404, f"no such endpoint: {method} /v2/models/{rest}")

    def _metadata(self) -> dict[str, Any]:
        return {
            "name": self.model,
            "versions": [_VERSION],
            "platform": "inferline_pipeline",
            "inputs": [s.to_json() for s in self.engine.input_specs.values()],
            "outputs": [s.to_json() for s in self.engine.output_specs],
            "parameters": {"stages": "+".join(self.engine.pipeline.stage_names)},
        }

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        start_ns = time.perf_counter_ns()
        try:
            body = await _read_body(scope, receive, self.max_body_bytes)
            request = parse_infer_request(body, self.engine.input_specs, _json_length(scope))
        except RequestError:
            self.model_stats.record(False, time.perf_counter_ns() - start_ns, 0, 0)
            raise
        parsed_ns = time.perf_counter_ns()
        answer: Answer = await self.engine.submit(request)
        if answer.status != 200:
            self.model_stats.record(False, time.perf_counter_ns() - start_ns, 0, 0)
            await _send_json(send, answer.status, {"error": answer.error})
            return
        answered_ns = time.perf_counter_ns()
        response: dict[str, Any] = {"model_name": self.model, "model_version": _VERSION}
        if request.id is not None:
            response["id"] = request.id
        response["parameters"] = {"path": "+".join(answer.path)}
        response["outputs"] = answer.outputs
        binary = request.binary_outputs
        body, json_length = encode_response(response, None if binary == () else binary or ())
        if json_length is None:
            await _send(send, 200, body, _JSON[1])
        else:
            header = (_BINARY_HEADER, str(json_length).encode())
            await _send(send, 200, body, b"application/octet-stream", (header,))
        end_ns = time.perf_counter_ns()
        self.model_stats.record(True, end_ns - start_ns, parsed_ns - start_ns, end_ns - answered_ns)
        # the per-query overhead the Estimator adds, as served (live calibration)
        self.engine.calibrator.record_frontend((end_ns - start_ns) * 1e-9 - answer.latency_s)

    async def _stats(self, send: Send) -> None:
        await _send_json(send, 200, self.model_stats.render(self.engine, self.model, _VERSION))

    async def _control(
        self, action: str, method: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        engine = self.engine
        self.access.check(method, action, scope)
        if action == "status":
            _allow(method, "GET")
            await _send_json(send, 200, engine.status())
        elif action == "plan":
            if method == "GET":
                plan = {k: v.model_dump() for k, v in engine.config.stages.items()}
                await _send_json(send, 200, {"stages": plan})
                return
            _allow(method, "POST")
            body = await _read_body(scope, receive, self.max_body_bytes)
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise RequestError(400, f"malformed JSON in the plan: {exc}") from None
            if not isinstance(data, dict):
                raise RequestError(400, 'the plan must be a JSON object {"stages": {...}}')
            config = plan_from_mapping(data)
            try:
                await engine.apply(config)
            except RequestError:
                raise
            except EngineError as exc:
                raise RequestError(500, f"the plan could not be applied: {exc}") from None
            await _send_json(send, 200, engine.status())
        elif action == "calibration":
            _allow(method, "GET")
            report = engine.calibrator.report(engine.config)
            await _send_json(send, 200, {"model": self.model, **report})
        elif action == "stats":
            if method == "DELETE":
                engine.reset_stats()
                await _send_json(send, 200, {"reset": True})
                return
            _allow(method, "GET")
            await _send_json(send, 200, engine.stats())
        else:
            raise RequestError(404, f"no such endpoint: {method} /v2/control/{action}")


def _json_length(scope: Scope) -> int | None:
    """The Inference-Header-Content-Length header (binary tensor data extension), if sent."""
    for key, value in scope["headers"]:
        if key == _BINARY_HEADER:
            try:
                return int(value)
            except ValueError:
                raise RequestError(
                    400, "the Inference-Header-Content-Length header is not a number"
                ) from None
    return None


def _allow(method: str, expected: str) -> None:
    if method != expected:
        raise RequestError(405, f"method {method} not allowed here; use {expected}")


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise RequestError(400, "the Content-Length header is not a number") from None
            if declared > limit:
                raise RequestError(
                    413, f"request body of {declared} bytes exceeds the limit of {limit} bytes"
                )
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _DisconnectedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send_json(
    send: Send, status: int, obj: Any, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = json.dumps(obj, separators=(",", ":")).encode()
    await _send(send, status, body, _JSON[1], extra)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
