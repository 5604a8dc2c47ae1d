"""Starting replica worker processes, fast enough for a scale-up to help in time.

A fresh interpreter per replica pays the stage's imports every time. On a 2-core machine
``import torch, sentence_transformers`` alone is about 10 s of CPU, taken from the
replicas that are already serving exactly when the Tuner has asked for more capacity.

So on Linux the engine keeps one *template* process per (stage model, threads, device,
import path). The template imports the stage's module once, runs the stage class's
optional ``preload()`` (heavy imports, nothing that starts threads or touches a device),
and then only forks: each replica is a child that runs ``setup()`` and serves. Its parent
is the template, which reaps it and reports its exit status to the front-end.

If the template cannot import the stage, or forking fails, the replica is started as a
fresh interpreter instead, which reports the stage's error the usual way.

Front-end ↔ template messages are JSON lists on an ``AF_UNIX`` ``SOCK_SEQPACKET`` pair
(one message per packet; the replica's socket travels with ``["fork", ...]`` as
``SCM_RIGHTS``): template → front-end ``["ready", pid]``, ``["fatal", text]``,
``["forked", request_id, pid]``, ``["fork-failed", request_id, text]``,
``["exited", pid, exit_code]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from inferline.engine._hardware import thread_environment

__all__ = ["WorkerLauncher", "WorkerProcess", "proc_stat", "spawn_worker"]

log = logging.getLogger("inferline.engine")

# Runs an entry point without executing inferline/__init__.py, which imports the estimator
# (numba) and costs ~1 s and ~100 MB per process. The stub package runs the real
# __init__ on the first attribute a stage asks of it, so `import inferline` still works.
_BOOTSTRAP = """\
import sys, types
root = {root!r}
pkg = types.ModuleType("inferline")
pkg.__path__ = [root]
pkg.__file__ = root + "/__init__.py"
def _full(name):
    del pkg.__getattr__
    with open(pkg.__file__, encoding="utf-8") as f:
        exec(compile(f.read(), pkg.__file__, "exec"), pkg.__dict__)
    return getattr(pkg, name)
pkg.__getattr__ = _full
sys.modules["inferline"] = pkg
from {module} import {function} as entry
sys.exit(entry(sys.argv[1:]))
"""
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
_MAX_PACKET = 1 << 20
_FORK_REPLY_TIMEOUT_S = 10.0
_EXIT_POLL_S = 0.05


def _command(module: str, function: str, body: dict[str, Any]) -> list[str]:
    code = _BOOTSTRAP.format(root=_PACKAGE_ROOT, module=module, function=function)
    return [sys.executable, "-c", code, json.dumps(body)]


def _environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(thread_environment(threads))
    return env


class WorkerProcess(Protocol):
    """What a replica needs of its process, however it was started."""

    pid: int

    def kill(self) -> None: ...

    async def wait(self, timeout_s: float) -> int | None:
        """Wait for the exit (kill after ``timeout_s``); the exit code when known."""
        ...


class _SpawnedWorker:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self.pid = process.pid

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()

    async def wait(self, timeout_s: float) -> int | None:
        try:
            return await asyncio.to_thread(self._process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return await asyncio.to_thread(self._process.wait)


def spawn_worker(spec: dict[str, Any], threads: int, fd: int) -> WorkerProcess:
    """A fresh interpreter that inherits ``fd`` and serves the stage on it."""
    process = subprocess.Popen(
        _command("inferline.engine._worker", "main", dict(spec, fd=fd)),
        pass_fds=(fd,),
        env=_environment(threads),
        stdin=subprocess.DEVNULL,
    )
    return _SpawnedWorker(process)


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for a careless init counts as gone)."""
    fields = proc_stat(pid)
    if fields is not None:
        return fields[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _ForkedWorker:
    def __init__(self, pid: int, template: _Template) -> None:
        self.pid = pid
        self.exited: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._template = template

    def kill(self) -> None:
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def _exit(self) -> int | None:
        while not self.exited.done():
            # the template reports the exit; once it is gone, nobody does: watch the pid
            if not self._template.alive and not _alive(self.pid):
                self.exited.set_result(None)
                break
            await asyncio.wait([self.exited], timeout=_EXIT_POLL_S)
        return self.exited.result()

    async def wait(self, timeout_s: float) -> int | None:
        try:
            return await asyncio.wait_for(self._exit(), timeout_s)
        except TimeoutError:
            self.kill()
            try:
                return await asyncio.wait_for(self._exit(), 5.0)
            except TimeoutError:
                return None


class _Template:
    """The front-end's end of one template process."""

    def __init__(self, model: str, threads: int) -> None:
        self.model = model
        self.threads = threads
        self.alive = False
        self.failure: str | None = None
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[bool] = self._loop.create_future()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._requests = itertools.count()
        self._pending: dict[int, asyncio.Future[_ForkedWorker]] = {}
        self._workers: dict[int, _ForkedWorker] = {}

    async def start(self, spec: dict[str, Any], timeout_s: float) -> bool:
        control, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        body = {
            "model": spec["model"],
            "sys_path": spec.get("sys_path", []),
            "fd": child.fileno(),
        }
        try:
            self._process = subprocess.Popen(
                _command("inferline.engine._launcher", "template_main", body),
                pass_fds=(child.fileno(),),
                env=_environment(self.threads),
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            control.close()
            self.failure = str(exc)
            return False
        finally:
            child.close()
        control.setblocking(False)
        self._control = control
        self.alive = True
        self._loop.add_reader(control.fileno(), self._on_readable)
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), timeout_s)
        except TimeoutError:
            self.failure = f"not ready within {timeout_s:g} s"
            await self.close()
            return False

    def _on_readable(self) -> None:
        control = self._control
        while control is not None:
            try:
                data = control.recv(_MAX_PACKET)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            self._handle(json.loads(data))

    def _handle(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == "ready":
            if not self._ready.done():
                self._ready.set_result(True)
        elif kind == "fatal":
            self.failure = str(message[1])
            if not self._ready.done():
                self._ready.set_result(False)
        elif kind == "forked":
            worker = _ForkedWorker(int(message[2]), self)
            self._workers[worker.pid] = worker
            pending = self._pending.pop(int(message[1]), None)
            if pending is not None and not pending.done():
                pending.set_result(worker)
        elif kind == "fork-failed":
            pending = self._pending.pop(int(message[1]), None)
            if pending is not None and not pending.done():
                pending.set_exception(OSError(str(message[2])))
        elif kind == "exited":
            exited = self._workers.pop(int(message[1]), None)
            if exited is not None and not exited.exited.done():
                exited.exited.set_result(int(message[2]))

    def _lost(self) -> None:
        self.alive = False
        if self._control is not None:
            self._loop.remove_reader(self._control.fileno())
            self._control.close()
            self._control = None
        if not self._ready.done():
            self._ready.set_result(False)
        for pending in self._pending.values():
            if not pending.done():
                pending.set_exception(OSError("the stage's template process exited"))
        self._pending.clear()

    async def fork(self, spec: dict[str, Any], fd: int) -> _ForkedWorker:
        if self._control is None or not self.alive:
            raise OSError("the stage's template process is not running")
        request = next(self._requests)
        reply: asyncio.Future[_ForkedWorker] = self._loop.create_future()
        self._pending[request] = reply
        packet = json.dumps(["fork", request, spec]).encode()
        try:
            socket.send_fds(self._control, [packet], [fd])
            return await asyncio.wait_for(reply, _FORK_REPLY_TIMEOUT_S)
        finally:
            self._pending.pop(request, None)

    async def close(self) -> None:
        """Close the control socket (the template exits on it) and reap the template."""
        self._lost()
        process = self._process
        if process is None:
            return
        try:
            await asyncio.to_thread(process.wait, 5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


class WorkerLauncher:
    """Starts replica processes for one engine, forking from per-stage templates."""

    def __init__(self, *, fork: bool = True, template_timeout_s: float = 120.0) -> None:
        self.fork = fork and sys.platform.startswith("linux") and hasattr(socket, "send_fds")
        self._template_timeout_s = template_timeout_s
        self._templates: dict[tuple[Any, ...], asyncio.Task[_Template]] = {}

    async def launch(self, spec: dict[str, Any], threads: int, fd: int) -> WorkerProcess:
        """A process serving ``spec``'s stage on ``fd``: forked when possible, else fresh."""
        if self.fork:
            template = await self._template(spec, threads)
            if template.alive:
                try:
                    return await template.fork(spec, fd)
                except (OSError, TimeoutError) as exc:
                    log.warning(
                        "forking a %s replica failed (%s); starting it fresh", spec["model"], exc
                    )
        return spawn_worker(spec, threads, fd)

    async def _template(self, spec: dict[str, Any], threads: int) -> _Template:
        key = (spec["model"], threads, spec.get("device"), tuple(spec.get("sys_path", ())))
        task = self._templates.get(key)
        if (
            task is not None
            and task.done()
            and not task.result().alive
            and not task.result().failure
        ):
            task = None  # it ran and exited since: start another
        if task is None:
            task = asyncio.create_task(self._start_template(spec, threads))
            self._templates[key] = task
        return await asyncio.shield(task)

    async def _start_template(self, spec: dict[str, Any], threads: int) -> _Template:
        template = _Template(spec["model"], threads)
        if not await template.start(spec, self._template_timeout_s):
            log.info(
                "no template for %s (%s); its replicas start as fresh processes",
                spec["model"],
                template.failure,
            )
        return template

    async def close(self) -> None:
        tasks = list(self._templates.values())
        self._templates.clear()
        for task in tasks:
            if not task.done():
                task.cancel()
        templates = [t.result() for t in tasks if t.done() and not t.cancelled()]
        await asyncio.gather(*(t.close() for t in templates), return_exceptions=True)


# --- the template process -------------------------------------------------------------------


def _send(control: socket.socket, message: list[Any]) -> None:
    control.sendall(json.dumps(message).encode())


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        with contextlib.suppress(OSError):
            _send(control, ["exited", pid, os.waitstatus_to_exitcode(status)])


def _become_worker(
    spec: dict[str, Any], fd: int, control: socket.socket, close: Sequence[int]
) -> None:
    """In the forked child: drop the template's plumbing and serve; never returns."""
    from inferline.engine._worker import serve

    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        control.close()
        for other in close:
            with contextlib.suppress(OSError):
                os.close(other)
        code = serve(dict(spec, fd=fd))
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def template_main(argv: Sequence[str]) -> int:
    """Import the stage (and its ``preload()``), then fork a replica per request."""
    from inferline.engine.batching import add_import_path, import_stage

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    body = json.loads(argv[0])
    control = socket.socket(fileno=body["fd"])
    add_import_path(body.get("sys_path", []))
    try:
        cls = import_stage(body["model"])
        preload = getattr(cls, "preload", None)
        if callable(preload):
            preload()
    except BaseException as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        with contextlib.suppress(OSError):
            _send(control, ["fatal", detail])
        return 2
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    _send(control, ["ready", os.getpid()])
    while True:
        readable, _, _ = select.select([control.fileno(), wake_read], [], [])
        if wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_read, 512):
                    pass
            _reap(control)
        if control.fileno() not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(control, _MAX_PACKET, 1)
        except OSError:
            return 0
        if not data:  # the front-end closed the pair (or died): stop forking
            for fd in fds:
                os.close(fd)
            return 0
        _, request, spec = json.loads(data)
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            _send(control, ["fork-failed", request, "no socket came with the request"])
            continue
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(fds[0])
            _send(control, ["fork-failed", request, str(exc)])
            continue
        if pid == 0:
            _become_worker(spec, fds[0], control, (wake_read, wake_write))
        os.close(fds[0])
        _send(control, ["forked", request, pid])
