"""A scripted OpenAI-compatible server on 127.0.0.1 for tests, benchmarks and dry runs.

It is a real HTTP server (aiohttp) that answers ``POST /v1/chat/completions`` and ``GET /v1/models``
with scripted content, a fixed latency, and injected faults: HTTP 500/503/429 (with Retry-After),
connection resets, malformed and truncated 200 bodies, empty choices, and slow answers. Every request
is appended to a JSONL log (request key, attempt, outcome) so tests can prove what the client did.

Faults are deterministic per request: with ``fail_first_max = k`` each distinct request fails its first
``hash(request) mod (k+1)`` attempts (kinds cycling through ``fault_kinds``), so a client with enough
retries always finishes; ``always_fail`` substrings make requests that never succeed.

Run it standalone: ``python -m kubedistill.testing.openai_server --port 8000 --latency 0.2``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FAULT_KINDS = ("http_500", "http_503", "http_429", "reset", "malformed", "truncated", "empty_choices")


class ServerScript(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(default_factory=lambda: ["scripted"])
    latency_s: float = 0.0
    latency_per_token_s: float = 0.0
    fail_first_max: int = 0
    fault_kinds: list[str] = Field(default_factory=lambda: list(FAULT_KINDS))
    always_fail: list[str] = Field(default_factory=list)
    slow_s: float = 0.0  # extra delay on a "slow" fault (longer than the client timeout to test it)
    retry_after_s: float = 0.2
    # Answers: the first (pattern, content) whose regex matches the last user message wins;
    # otherwise the echo answer. Content may use {n} for the request's sample seed.
    answers: list[tuple[str, str]] = Field(default_factory=list)
    finish_reason: str = "stop"
    # (pattern, finish_reason) pairs: the first whose regex matches the last user message sets the answer's
    # finish_reason (None: null, as servers that do not report one)
    finish_reasons: list[tuple[str, str | None]] = Field(default_factory=list)
    reasoning_field: bool = False  # put the thinking in message.reasoning, like vLLM reasoning parsers
    api_key: str | None = None
    # Servers that quote what they were sent: a 401 names the key given (as OpenAI's "Incorrect API key
    # provided: ..."), a 400 for a prompt matching `bad_request` quotes the Authorization header
    echo_key_in_errors: bool = False
    bad_request: list[str] = Field(default_factory=list)
    # prompts matching these get the request's Authorization header inside the answer's content
    echo_auth_in_content: list[str] = Field(default_factory=list)
    log_path: str | None = None


def request_key(body: dict[str, Any]) -> str:
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def echo_answer(prompt: str, body: dict[str, Any]) -> str:
    """Deterministic answer: the sum of the integers in the prompt, boxed, after a short CoT."""
    nums = [int(x) for x in re.findall(r"-?\d+", prompt)][:50]
    total = sum(nums)
    steps = " + ".join(str(n) for n in nums) or "0"
    return (
        f"<think>\nThe numbers are {steps}. Adding them gives {total}.\n</think>\n\nThe answer is \\boxed{{{total}}}."
    )


class ScriptedServer:
    def __init__(self, script: ServerScript) -> None:
        self.s = script
        self.attempts: dict[str, int] = defaultdict(int)
        self._log = open(script.log_path, "a", buffering=1, encoding="utf-8") if script.log_path else None  # noqa: SIM115
        self._answers = [(re.compile(p, re.S), c) for p, c in script.answers]

    def log(self, **row: Any) -> None:
        if self._log:
            self._log.write(json.dumps(row) + "\n")

    def fault_for(self, key: str, attempt: int, prompt: str) -> str | None:
        if any(s in prompt for s in self.s.always_fail):
            return "http_500"
        if self.s.fail_first_max <= 0:
            return None
        n_fail = int(key, 16) % (self.s.fail_first_max + 1)
        if attempt <= n_fail:
            kinds = self.s.fault_kinds
            return kinds[(int(key[:8], 16) + attempt) % len(kinds)]
        return None

    def content_for(self, prompt: str, body: dict[str, Any]) -> str:
        for pat, content in self._answers:
            if pat.search(prompt):
                return content.replace("{n}", str(body.get("seed", 0)))
        return echo_answer(prompt, body)

    def _unauthorised(self, request: Any) -> Any | None:
        from aiohttp import web

        given = request.headers.get("Authorization", "")
        if not self.s.api_key or given == f"Bearer {self.s.api_key}":
            return None
        msg = "Incorrect API key provided"
        if self.s.echo_key_in_errors:
            msg += f": {given.removeprefix('Bearer ')}. You can find your API key at https://example.invalid/keys."
        return _error(web, 401, msg, "invalid_request_error", code="invalid_api_key")

    async def handle_chat(self, request: Any) -> Any:
        from aiohttp import web

        denied = self._unauthorised(request)
        if denied is not None:
            return denied
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(web, 400, "We could not parse the JSON body of your request.", "invalid_request_error")
        problem = validate_chat_body(body)
        if problem is not None:
            return _error(web, 400, problem, "invalid_request_error")
        if body.get("model") not in self.s.models:
            return _error(web, 404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        key = request_key(body)
        self.attempts[key] += 1
        attempt = self.attempts[key]
        messages = body.get("messages") or []
        prompt = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        if any(re.search(p, prompt) for p in self.s.bad_request):
            msg = "This request is not allowed"
            if self.s.echo_key_in_errors:
                msg += f" (headers: Authorization: {request.headers.get('Authorization', '')})"
            self.log(key=key, attempt=attempt, outcome="http_400", t=time.time(), prompt=prompt[:200])
            return _error(web, 400, msg, "invalid_request_error")
        fault = self.fault_for(key, attempt, prompt)
        await asyncio.sleep(self.s.latency_s)
        if fault is None:
            content = self.content_for(prompt, body)
            if any(re.search(p, prompt) for p in self.s.echo_auth_in_content):
                content += f"\n(I was called with Authorization: {request.headers.get('Authorization', '')})"
            finish = next((f for pat, f in self.s.finish_reasons if re.search(pat, prompt, re.S)), self.s.finish_reason)
            n_tokens = max(1, len(content.split()))  # a token here is a whitespace-separated word
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            if isinstance(limit, int) and n_tokens > limit:  # as vLLM: cut at the limit, finish_reason "length"
                content, n_tokens, finish = " ".join(content.split()[:limit]), limit, "length"
            if self.s.latency_per_token_s:
                await asyncio.sleep(self.s.latency_per_token_s * n_tokens)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if self.s.reasoning_field and "</think>" in content:
                thinking, _, rest = content.partition("</think>")
                message = {
                    "role": "assistant",
                    "content": rest.strip(),
                    "reasoning": thinking.replace("<think>", "").strip(),
                }
            resp = {
                "id": f"chatcmpl-{key}-{attempt}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": max(1, len(prompt.split())),
                    "completion_tokens": n_tokens,
                    "total_tokens": n_tokens + max(1, len(prompt.split())),
                },
            }
            self.log(key=key, attempt=attempt, outcome="ok", t=time.time(), prompt=prompt[:200])
            return web.Response(body=json.dumps(resp).encode(), content_type="application/json")
        self.log(key=key, attempt=attempt, outcome=fault, t=time.time(), prompt=prompt[:200])
        if fault.startswith("http_"):
            status = int(fault.removeprefix("http_"))
            headers = {"Retry-After": f"{self.s.retry_after_s:g}"} if status in (429, 503) else {}
            return web.json_response(
                {"error": {"message": f"injected {status}", "type": "server_error", "param": None, "code": None}},
                status=status,
                headers=headers,
            )
        if fault == "empty_choices":
            return web.json_response({"id": "x", "choices": []})
        if fault == "malformed":
            return web.Response(
                body=b'{"id": "x", "choices": [{"message": {"content": "cut', content_type="application/json"
            )
        if fault == "slow":
            await asyncio.sleep(self.s.slow_s)
            return web.json_response({"error": {"message": "too slow"}}, status=504)
        transport = request.transport
        if fault == "truncated" and transport is not None:
            transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
                b'{"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "par'
            )
        if transport is not None:
            transport.abort() if fault == "reset" else transport.close()
        raise asyncio.CancelledError  # nothing more to send on this connection

    async def handle_models(self, request: Any) -> Any:
        from aiohttp import web

        denied = self._unauthorised(request)
        if denied is not None:
            return denied
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.s.models]})

    def app(self) -> Any:
        from aiohttp import web

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.handle_chat)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_get("/health", lambda r: web.Response(text="ok"))
        return app


_ROLES = ("system", "user", "assistant", "developer", "tool")


def validate_chat_body(body: Any) -> str | None:
    """What the OpenAI / vLLM chat-completions endpoint would refuse with HTTP 400 in ``body``, or None:
    the body must be an object with a model name and a non-empty list of messages, each an object with a
    known ``role`` and string ``content``; sampling parameters must have their types and ranges
    (``temperature`` 0-2, ``top_p`` (0, 1], ``max_tokens`` >= 1, ``n`` >= 1, ``seed`` an integer)."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"messages[{i}]: 'role' must be one of {', '.join(_ROLES)}"
        if not isinstance(m.get("content"), str):
            return f"messages[{i}]: 'content' must be a string"
    checks: dict[str, tuple[type | tuple[type, ...], float, float]] = {
        "temperature": ((int, float), 0.0, 2.0),
        "top_p": ((int, float), 1e-12, 1.0),
        "max_tokens": (int, 1, float("inf")),
        "n": (int, 1, 128),
        "seed": (int, -(2**63), 2**63 - 1),
    }
    for name, (types, lo, hi) in checks.items():
        if name not in body or body[name] is None:
            continue
        v = body[name]
        if isinstance(v, bool) or not isinstance(v, types) or not lo <= v <= hi:
            return f"'{name}': {v!r} is not valid"
    return None


def _error(web: Any, status: int, message: str, kind: str, code: str | None = None) -> Any:
    """An error response shaped as OpenAI's: ``{"error": {"message", "type", "param", "code"}}``."""
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(script: ServerScript, port: int, host: str = "127.0.0.1") -> None:
    from aiohttp import web

    server = ScriptedServer(script)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(server.app(), host=host, port=port, print=None, access_log=None, backlog=1024, handle_signals=True)


@contextmanager
def running_server(script: ServerScript | None = None, port: int | None = None) -> Iterator[str]:
    """Start the server in a separate process; yields its base URL (``http://127.0.0.1:PORT/v1``)."""
    script = script or ServerScript()
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "kubedistill.testing.openai_server",
        "--port",
        str(port),
        "--script",
        script.model_dump_json(),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"scripted server exited: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("scripted server did not start in 30 s")
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--script", default=None, help="ServerScript as JSON")
    ap.add_argument("--latency", type=float, default=None, help="seconds per request")
    ap.add_argument("--model", action="append", default=None)
    ns = ap.parse_args(argv)
    script = ServerScript.model_validate_json(ns.script) if ns.script else ServerScript()
    if ns.latency is not None:
        script.latency_s = ns.latency
    if ns.model:
        script.models = ns.model
    serve(script, ns.port, ns.host)


if __name__ == "__main__":
    main()
