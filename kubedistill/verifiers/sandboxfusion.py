"""The cluster executor: a SandboxFusion service (``POST {url}/run_code``), e.g. ``manifests/sandbox/``.

SandboxFusion (github.com/bytedance/SandboxFusion) runs one program per request: the request body is
``{"code", "language", "stdin", "run_timeout", "compile_timeout", "memory_limit_MB", "files",
"fetch_files"}``; the reply ``{"status": "Success"|"Failed"|"SandboxError", "message", "compile_result",
"run_result": {"status": "Finished"|"Error"|"TimeLimitExceeded", "execution_time", "return_code",
"stdout", "stderr"}, "executor_pod_name", "files"}``, stdout and stderr capped at 1 MiB each. The code we
send is always the harness (:mod:`kubedistill.verifiers.harness`) and the job goes on stdin, so the
verdict is still the harness's signed report: the service isolates the run, it does not decide it.

A reply that does not follow that schema, an HTTP error, a connection failure, ``status: SandboxError``
or ``run_result.status: Error`` raise :class:`SandboxError` (verdict ``None``); a connection reset is
retried once on a fresh connection. One keep-alive connection per calling thread.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from kubedistill.verifiers.executors import Job, RunResult, SandboxError

__all__ = ["MAX_CAPTURED_BYTES", "SandboxFusionExecutor"]

#: What SandboxFusion keeps of each of stdout and stderr.
MAX_CAPTURED_BYTES = 1024 * 1024
_RUN_STATUSES = {"Success", "Failed", "SandboxError"}
_COMMAND_STATUSES = {"Finished", "Error", "TimeLimitExceeded"}


@dataclass(eq=False)
class SandboxFusionExecutor:
    """Runs jobs on the SandboxFusion service at ``url`` (``http://host:port``); ``request_timeout_s``
    is added to each run's own time limit for the HTTP round trip."""

    url: str
    request_timeout_s: float = 30.0
    name: str = "sandboxfusion"
    sys_path: tuple[str, ...] = ()
    max_report_bytes: int | None = MAX_CAPTURED_BYTES
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SandboxError(f"sandboxfusion url must be http(s)://host[:port], got {self.url!r}")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._path = parts.path.rstrip("/") + "/run_code"

    def run(self, job: Job) -> RunResult:
        """Run ``job`` on the service; raises :class:`SandboxError` when the service could not run it."""
        body = {
            "code": job.code,
            "language": "python",
            "stdin": job.stdin.decode("utf-8"),
            "run_timeout": job.timeout_s,
            "compile_timeout": 10.0,
            "memory_limit_MB": job.memory_mb,
            "files": {},
            "fetch_files": [],
        }
        started = time.monotonic()
        reply = self._post(json.dumps(body).encode("utf-8"), job.timeout_s + self.request_timeout_s)
        return _result(reply, time.monotonic() - started)

    def _post(self, payload: bytes, timeout: float) -> dict[str, Any]:
        for attempt in (1, 2):
            conn = self._connection(timeout)
            try:
                conn.request(
                    "POST",
                    self._path,
                    body=payload,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                )
                response = conn.getresponse()
                data = response.read()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
                self._drop_connection()
                if attempt == 2:
                    raise SandboxError(f"sandboxfusion at {self.url}: connection lost: {exc}") from exc
                continue
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                raise SandboxError(f"sandboxfusion at {self.url}: {type(exc).__name__}: {exc}") from exc
            if response.status != 200:
                raise SandboxError(f"sandboxfusion at {self.url}: HTTP {response.status}: {data[:300]!r}")
            try:
                reply = json.loads(data)
            except ValueError as exc:
                raise SandboxError(f"sandboxfusion at {self.url}: the reply is not JSON") from exc
            if not isinstance(reply, dict):
                raise SandboxError(f"sandboxfusion at {self.url}: the reply is not a JSON object")
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=timeout)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None


def _result(reply: dict[str, Any], elapsed: float) -> RunResult:
    """A RunResult from a reply, checked against SandboxFusion's schema."""
    status = reply.get("status")
    if status not in _RUN_STATUSES or not isinstance(reply.get("message"), str):
        raise SandboxError(f"sandboxfusion: malformed reply (status {status!r})")
    if status == "SandboxError":
        raise SandboxError(f"sandboxfusion: SandboxError: {reply['message'][:300]}")
    run = reply.get("run_result")
    if not isinstance(run, dict):
        raise SandboxError(f"sandboxfusion: no run result ({status}: {reply['message'][:300]})")
    run_status = run.get("status")
    stdout, stderr = run.get("stdout"), run.get("stderr")
    code, seconds = run.get("return_code"), run.get("execution_time")
    if (
        run_status not in _COMMAND_STATUSES
        or not isinstance(stdout, str | None)
        or not isinstance(stderr, str | None)
        or not (code is None or (isinstance(code, int) and not isinstance(code, bool)))
        or not (seconds is None or isinstance(seconds, int | float))
    ):
        raise SandboxError("sandboxfusion: malformed run_result")
    if run_status == "Error":
        raise SandboxError(f"sandboxfusion could not run the program: {(stderr or '')[:300]}")
    timed_out = run_status == "TimeLimitExceeded"
    return RunResult(
        returncode=None if timed_out else code,
        stdout=stdout or "",
        stderr=stderr or "",
        killed_reason="timeout" if timed_out else None,
        elapsed_s=float(seconds) if seconds is not None else elapsed,
    )
