"""A local stand-in for a SandboxFusion service, for tests: a real HTTP server on 127.0.0.1.

It answers ``POST /run_code`` the way SandboxFusion's server does (sandbox/server/sandbox_api.py,
sandbox/runners/base.py, sandbox/runners/major.py in github.com/bytedance/SandboxFusion), and is at
least as strict:

* the body must be JSON matching ``RunCodeRequest`` (``code`` and ``language`` required; the types and
  defaults of ``compile_timeout``, ``run_timeout``, ``memory_limit_MB``, ``stdin``, ``files``,
  ``fetch_files``, ``args``); a body that does not validate gets FastAPI's ``422 {"detail": [...]}``.
  Unknown fields are refused too (the real server ignores them: a client relying on one is wrong).
* the reply is ``RunCodeResponse``: ``status`` (``Success`` when the run finished with status 0,
  ``Failed`` for a non-zero status or a timeout, ``SandboxError`` when it could not run), ``message``,
  ``compile_result`` (null for Python), ``run_result`` (``status`` ``Finished`` / ``TimeLimitExceeded``
  / ``Error``, ``execution_time``, ``return_code`` — null on a timeout —, ``stdout``, ``stderr``, each
  capped at 1 MiB), ``executor_pod_name``, ``files``.
* ``language`` ``python`` only; ``files`` are written into the run's directory (base64, as the real
  service does); ``fetch_files`` is not supported (``SandboxError``).

The program runs as ``python <random name>.py`` in a fresh directory holding the files, like the real
runner, inside the local bubblewrap sandbox (:meth:`BwrapExecutor.run_once`), so a test can send it
hostile code. ``faults`` makes it answer some requests wrongly on purpose (HTTP 500, a reply that is not
JSON, a reply missing ``run_result``, a dropped connection) to test the client's error handling.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubedistill.verifiers.bwrap import BwrapExecutor
from kubedistill.verifiers.executors import Job, SandboxError

__all__ = ["RunCodeRequest", "SandboxFusionStub"]

MAX_CAPTURED_BYTES = 1024 * 1024
Language = Literal[
    "python", "cpp", "nodejs", "go", "go_test", "java", "php", "csharp", "bash", "typescript", "sql", "rust",
    "cuda", "lua", "R", "perl", "D_ut", "ruby", "scala", "julia", "pytest", "junit", "kotlin_script", "jest",
    "verilog", "python_gpu", "lean", "swift", "racket",
]  # fmt: skip
Fault = Literal["http_500", "not_json", "no_run_result", "drop_connection"]


class RunCodeRequest(BaseModel):
    """SandboxFusion's request schema (its fields, types and defaults), closed to unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=False)
    compile_timeout: float = 10
    run_timeout: float = 10
    memory_limit_MB: int = -1
    code: str
    stdin: str | None = None
    language: Language
    files: dict[str, str | None] = Field(default_factory=dict)
    fetch_files: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)


class SandboxFusionStub:
    """``with SandboxFusionStub() as stub: ... stub.url ...``; ``stub.requests`` holds every request
    body received, ``faults`` the answers to get wrong on purpose, in order (one per request)."""

    def __init__(self, faults: list[Fault] | None = None, executor: BwrapExecutor | None = None) -> None:
        self.faults: list[Fault] = list(faults or [])
        self.requests: list[dict[str, Any]] = []
        self.executor = executor or BwrapExecutor()
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def do_POST(self) -> None:
                stub._handle(self)

            def do_GET(self) -> None:
                self._send(404, {"detail": "Not Found"})

            def _send(self, status: int, body: Any, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._handler = Handler
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandboxfusion-stub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> SandboxFusionStub:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.executor.close()

    # ------------------------------------------------------------------------------------------------

    def _handle(self, h: Any) -> None:
        if h.path != "/run_code":
            h._send(404, {"detail": "Not Found"})
            return
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        with self._lock:
            fault = self.faults.pop(0) if self.faults else None
        if fault == "drop_connection":
            h.close_connection = True
            h.connection.close()
            return
        if fault == "http_500":
            h._send(500, None, raw=b"Internal Server Error")
            return
        if fault == "not_json":
            h._send(200, None, raw=b"<html>gateway</html>")
            return
        if h.headers.get_content_type() != "application/json":
            h._send(422, {"detail": [{"type": "model_attributes_type", "msg": "body must be JSON", "loc": ["body"]}]})
            return
        try:
            body = json.loads(raw)
            request = RunCodeRequest.model_validate(body)
        except ValueError as exc:
            detail = exc.errors(include_url=False) if isinstance(exc, ValidationError) else [{"msg": str(exc)}]
            h._send(422, {"detail": json.loads(json.dumps(detail, default=str))})
            return
        with self._lock:
            self.requests.append(body)
        reply = self._run(request)
        if fault == "no_run_result":
            reply["run_result"] = None
        h._send(200, reply)

    def _run(self, request: RunCodeRequest) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "status": "Success",
            "message": "",
            "compile_result": None,
            "run_result": None,
            "executor_pod_name": None,
            "files": {},
        }
        if request.language != "python" or request.fetch_files:
            reply.update(status="SandboxError", message="the stub runs python without fetch_files only")
            return reply
        name = f"tmp{secrets.token_hex(4)}.py"
        try:
            bootstrap = _bootstrap(name, request.files)
        except (binascii.Error, ValueError) as exc:
            reply.update(status="SandboxError", message=f"bad file content: {exc}")
            return reply
        job = Job(
            code=bootstrap,
            stdin=json.dumps({"code": request.code}).encode() + b"\n" + (request.stdin or "").encode("utf-8"),
            timeout_s=request.run_timeout,
            memory_mb=request.memory_limit_MB if request.memory_limit_MB > 0 else 4096,
            max_stdout_bytes=4 * MAX_CAPTURED_BYTES,
            max_stderr_bytes=4 * MAX_CAPTURED_BYTES,
        )
        try:
            run = self.executor.run_once(job)
        except SandboxError as exc:
            reply.update(
                status="SandboxError",
                message=str(exc),
                run_result={"status": "Error", "execution_time": None, "return_code": None, "stdout": None,
                            "stderr": str(exc)},
            )  # fmt: skip
            return reply
        timed_out = run.killed_reason is not None
        reply["run_result"] = {
            "status": "TimeLimitExceeded" if timed_out else "Finished",
            "execution_time": run.elapsed_s,
            "return_code": None if timed_out else run.returncode,
            "stdout": run.stdout.encode()[:MAX_CAPTURED_BYTES].decode("utf-8", "ignore"),
            "stderr": run.stderr.encode()[:MAX_CAPTURED_BYTES].decode("utf-8", "ignore"),
        }
        if timed_out or run.returncode != 0:
            reply["status"] = "Failed"
        return reply


def _bootstrap(name: str, files: dict[str, str | None]) -> str:
    """A program that lays out the run's directory like SandboxFusion's runner (the files, then the code
    as ``<name>``) and runs ``python <name>`` there with the rest of stdin, as an unprivileged child
    process (not PID 1) in an environment without kubedistill's own settings — as on the service."""
    decoded = {path: base64.b64decode(content, validate=True).hex() for path, content in files.items() if content}
    for path in decoded:
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"file path {path!r} leaves the run's directory")
    return (
        "import json, os, sys, tempfile\n"
        "line = b''\n"
        "while not line.endswith(b'\\n'):\n"
        "    line += os.read(0, 1)\n"
        "code = json.loads(line)['code']\n"
        "uid = os.environ.get('KD_PROGRAM_UID')\n"
        "if uid is not None and os.getuid() == 0:\n"
        "    os.setgroups([]); os.setgid(int(uid)); os.setuid(int(uid))\n"
        "env = {k: v for k, v in os.environ.items() if not k.startswith('KD_')}\n"
        "work = tempfile.mkdtemp()\n"
        f"for path, hexdata in {decoded!r}.items():\n"
        "    full = os.path.join(work, path)\n"
        "    os.makedirs(os.path.dirname(full), exist_ok=True)\n"
        "    open(full, 'wb').write(bytes.fromhex(hexdata))\n"
        f"open(os.path.join(work, {name!r}), 'w').write(code)\n"
        "os.chdir(work)\n"
        "os.closerange(3, 1024)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        f"    os.execve(sys.executable, [sys.executable, '-s', {name!r}], env)\n"
        "os.close(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "sys.exit(os.waitstatus_to_exitcode(status) % 256)\n"
    )


if __name__ == "__main__":  # pragma: no cover
    import time

    with SandboxFusionStub() as stub:
        print(stub.url, flush=True)
        while True:
            time.sleep(3600)
    os._exit(0)
