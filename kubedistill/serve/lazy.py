"""The broker behind ``local://MODEL`` endpoints (kubedistill/chat/local.py): a local run's teacher,
started the first time a task needs it and stopped when the run ends.

:class:`LazyTeacher` listens on 127.0.0.1 (an ephemeral port; stdlib ``ThreadingHTTPServer``) in the
process of ``kubedistill run --local``. ``POST /start?model=MODEL`` starts the server (once: concurrent
calls wait for the same start), checks that it answers, and returns ``{"url": "http://127.0.0.1:PORT/v1"}``;
a failed start is HTTP 500 ``{"error": ...}`` and later calls get the same error without a new start.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubedistill.chat.local import BROKER_ENV

__all__ = ["BROKER_ENV", "LazyTeacher"]


class LazyTeacher:
    """``with LazyTeacher({"MODEL": start}) as broker_url: ...``; ``start()`` starts a server and returns
    its base URL; ``stop()`` (and leaving the block) stops the servers that were started.

    ``started`` lists the models that were started (empty when every answer came from the caches);
    :meth:`release` stops them while other work needs the machine (a later request starts them again)."""

    def __init__(self, starters: dict[str, Callable[[], str]], stoppers: dict[str, Callable[[], None]] | None = None):
        self._starters = starters
        self._stoppers = stoppers or {}
        self._urls: dict[str, str] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self.started: list[str] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def ensure(self, model: str) -> str:
        """The model's URL, starting its server first if needed. Raises ``KeyError`` for an unknown model
        and ``RuntimeError`` when the start failed (now or before)."""
        with self._lock:
            if model in self._urls:
                return self._urls[model]
            if model in self._errors:
                raise RuntimeError(self._errors[model])
            if model not in self._starters:
                raise KeyError(f"no local teacher {model!r} in this run (known: {', '.join(self._starters)})")
            try:
                url = self._starters[model]()
            except BaseException as e:  # every failure becomes the tasks' message
                self._errors[model] = f"{type(e).__name__}: {e}"
                raise RuntimeError(self._errors[model]) from e
            self.started.append(model)
            self._urls[model] = url
            return url

    def release(self) -> list[str]:
        """Stop every running server now (they start again on the next request); returns their models.

        A vLLM CPU worker polls for work even when idle (one core at ~90%): on a small machine a local
        run releases its teacher before a training or evaluation task, which would otherwise run at a
        fraction of its speed."""
        with self._lock:
            running = list(self._urls)
            for model in running:
                stop = self._stoppers.get(model)
                if stop is not None:
                    stop()
                del self._urls[model]
            return running

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the broker is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        broker = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                model = urllib.parse.parse_qs(parsed.query).get("model", [""])[0]
                if parsed.path != "/start" or not model:
                    self._reply(404, {"error": "POST /start?model=MODEL"})
                    return
                try:
                    self._reply(200, {"url": broker.ensure(model)})
                except (KeyError, RuntimeError) as e:
                    self._reply(500, {"error": str(e).strip("'\"")})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="local-teacher-broker", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self.release()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
