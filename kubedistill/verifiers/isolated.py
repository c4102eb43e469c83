"""Deterministic checks: run a check in a worker process whose state cannot depend on other items.

math-verify (through sympy) gives different verdicts for the same pair depending on the process's hash
seed and on what was parsed before (sympy's caches, its dummy-symbol counter): ``\\boxed{4 0/0}``
against ``0`` was True or False by seed and by order. So checks that use it run here:

* in worker processes started with ``PYTHONHASHSEED=0`` (the caller's seed does not matter);
* each worker warms up the same way, then before **every** item resets sympy's cache, math-verify's and
  latex2sympy's LRU caches and sympy's ``Dummy`` counter to the state right after warm-up — so an item
  sees the same state whatever came before it, whichever worker takes it;
* each item gets a **CPU-time** budget (not wall-clock: a verdict must not depend on how busy the
  machine is), enforced with ``ITIMER_PROF`` and raised as a ``BaseException`` that math-verify cannot
  swallow; the item then gets ``correct=None``. A worker that does not answer within a generous
  wall-clock limit (a computation in C that no signal interrupts) is killed and replaced, also
  ``correct=None``: a runaway computation cannot stall the caller or leak into the next item.

:func:`check` is thread-safe; the pool grows to the number of threads calling it at once (at most
:data:`MAX_WORKERS`) and lives until the interpreter exits. Only checks registered in :data:`CHECKS`
run here.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from typing import IO, Any

from kubedistill.verifiers.verdict import Verdict

__all__ = ["CHECKS", "MAX_WORKERS", "check", "shutdown"]

#: name -> (module, function, method, CPU seconds one item may use, wall seconds a caller waits)
CHECKS: dict[str, tuple[str, str, str, float, float]] = {
    "math": ("kubedistill.verifiers.math", "check_math", "math-verify", 10.0, 120.0),
}
MAX_WORKERS = 16
_START_TIMEOUT_S = 120.0

log = logging.getLogger(__name__)


def check(name: str, *args: str) -> Verdict:
    """Run the registered check ``name`` on ``args`` in a fixed-seed worker; its :class:`Verdict`.

    A worker that fails or runs past the check's limit gives ``Verdict(None, method, why)``."""
    _, _, method, _, limit = CHECKS[name]
    worker = _POOL.acquire()
    try:
        reply = worker.call({"check": name, "args": list(args)}, limit)
    except _WorkerFailed as exc:
        worker.kill()
        log.warning("verifier worker failed on %s: %s", name, exc)
        return Verdict(None, method, str(exc)[:300])
    finally:
        _POOL.release(worker)
    return Verdict(reply.get("correct"), str(reply.get("method", method)), str(reply.get("detail", "")))


def shutdown() -> None:
    """Stop every worker (they also stop by themselves when this process exits)."""
    _POOL.close()


class _WorkerFailed(Exception):
    pass


class _Worker:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        boot = (
            "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
            "from kubedistill.verifiers.isolated import _serve; _serve()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", boot, json.dumps([p for p in sys.path if p])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self.ready = False

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, request: dict[str, Any], limit: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if not self.ready:
            hello = self._read_line(time.monotonic() + _START_TIMEOUT_S)
            if hello.get("ready") is not True:
                raise _WorkerFailed(f"verifier worker did not start: {hello.get('fatal', hello)}")
            self.ready = True
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
            self.proc.stdin.flush()
        except OSError as exc:
            raise _WorkerFailed(f"verifier worker is gone: {exc}") from exc
        reply = self._read_line(time.monotonic() + limit, what=f"did not finish within {limit:g} s")
        if "fatal" in reply:
            raise _WorkerFailed(f"verifier worker error: {reply['fatal']}")
        return reply

    def _read_line(self, deadline: float, what: str = "did not answer") -> dict[str, Any]:
        out: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        fd = out.fileno()
        buf = bytearray()
        while not buf.endswith(b"\n"):
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise _WorkerFailed(f"the check {what}")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _WorkerFailed(f"verifier worker exited (status {self.proc.wait()})")
            buf += chunk
        try:
            reply = json.loads(buf)
        except ValueError as exc:
            raise _WorkerFailed(f"verifier worker sent garbage: {exc}") from exc
        return reply if isinstance(reply, dict) else {"fatal": "not an object"}

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class _Pool:
    def __init__(self) -> None:
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._count = 0
        self._slots = threading.BoundedSemaphore(MAX_WORKERS)
        self._pid = os.getpid()

    def acquire(self) -> _Worker:
        if os.getpid() != self._pid:  # a forked child: the workers (and their pipes) are the parent's
            self.__init__()  # type: ignore[misc]
        self._slots.acquire()
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                with self._lock:
                    self._count += 1
                return _Worker()
            if worker.alive:
                return worker
            worker.kill()
            with self._lock:
                self._count -= 1

    def release(self, worker: _Worker) -> None:
        if worker.alive:
            self._idle.put(worker)
        else:
            with self._lock:
                self._count -= 1
        self._slots.release()

    def close(self) -> None:
        if os.getpid() != self._pid:
            return  # (a forked child: those workers are the parent's, not ours to stop)
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            worker.kill()
            with self._lock:
                self._count -= 1


_POOL = _Pool()
atexit.register(shutdown)


# --------------------------------------------------------------------------------- in the worker


class _OverBudget(BaseException):
    """Raised by the CPU-time alarm; a BaseException so that no ``except Exception`` inside a check
    (math-verify has several) can turn it into a verdict."""


def _serve() -> None:  # pragma: no cover - runs in the worker process
    """The worker: warm up, then answer one JSON request per line on stdin, resetting state before each."""
    import importlib
    import signal

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to stderr (discarded), never into the replies
    logging.disable(logging.CRITICAL)

    def over_budget(_signum: int, _frame: object) -> None:
        raise _OverBudget()

    signal.signal(signal.SIGPROF, over_budget)
    try:
        functions = {}
        for name, (module_name, attr, _, _, _) in CHECKS.items():
            module = importlib.import_module(module_name)
            if hasattr(module, "CALL_TIMEOUT_S"):
                module.CALL_TIMEOUT_S = None  # no wall-clock timeouts here: the CPU budget bounds a check
            functions[name] = getattr(module, attr)
        functions["math"]("1", "\\boxed{1}")  # warm up: compile the regexes, load the lazy modules
        functions["math"]("\\frac{1}{2}", "The answer is 0.5")
        reset = _state_reset()
    except BaseException as exc:
        out.write(json.dumps({"fatal": f"{type(exc).__name__}: {exc}"}) + "\n")
        return
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        name = "?"
        try:
            request = json.loads(line)
            name = request["check"]
            reset()
            signal.setitimer(signal.ITIMER_PROF, CHECKS[name][3])
            try:
                verdict = functions[name](*request["args"])
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
            reply = {"correct": verdict.correct, "method": verdict.method, "detail": verdict.detail}
        except _OverBudget:
            method = CHECKS[name][2] if name in CHECKS else "none"
            reply = {"correct": None, "method": method, "detail": f"the check used more than {CHECKS[name][3]:g} CPU s"}
        except Exception as exc:
            reply = {"correct": None, "method": "none", "detail": f"verifier error: {type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")


def _state_reset() -> Any:  # pragma: no cover - runs in the worker process
    """A function that puts sympy, math-verify and latex2sympy back into the state they are in now."""
    import functools

    import latex2sympy2_extended
    import math_verify
    import sympy
    from sympy.core.cache import clear_cache

    caches = []
    for package in (math_verify, latex2sympy2_extended):
        prefix = package.__name__ + "."
        for module_name, module in list(sys.modules.items()):
            if module is None or not (module_name == package.__name__ or module_name.startswith(prefix)):
                continue
            for value in list(vars(module).values()):
                if isinstance(value, functools._lru_cache_wrapper) and getattr(value, "__module__", "") == module_name:
                    caches.append(value)
    dummy_count = sympy.Dummy._count

    def reset() -> None:
        clear_cache()
        for cache in caches:
            cache.cache_clear()
        sympy.Dummy._count = dummy_count

    return reset
