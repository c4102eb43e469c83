"""Start a local OpenAI-compatible server for a model directory and wait until it answers.

Backends:
* ``vllm`` — vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``), run with the
  serving environment's python: ``$KUBEDISTILL_VLLM_PYTHON``, else ``<venv>/serve/bin/python`` (made by
  ``make setup``), else this python if it has vllm. On a CPU host it gets vLLM's CPU settings (both
  cores, a 1 GiB KV cache, float32).
* ``transformers`` — kubedistill.serve.hf_server (one request at a time; for tests and hosts without vLLM).
* ``auto`` — vllm when available, else transformers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Literal

from kubedistill.core.errors import UserError

Backend = Literal["vllm", "transformers", "auto"]


def vllm_python() -> str | None:
    """The python that has vLLM, or None."""
    env = os.environ.get("KUBEDISTILL_VLLM_PYTHON")
    if env:
        return env
    candidate = Path(sys.prefix) / "serve" / "bin" / "python"
    if candidate.exists():
        return str(candidate)
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    return None


def has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """``with LocalServer(model_dir, served_name="student") as url: ...`` — ``url`` ends in ``/v1``."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        served_name: str,
        backend: Backend = "auto",
        port: int | None = None,
        host: str = "127.0.0.1",
        max_model_len: int = 4096,
        startup_timeout_s: float = 900.0,
        log_path: str | Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.served_name = served_name
        self.host = host
        self.port = port or free_port()
        self.max_model_len = max_model_len
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = extra_args or []
        if backend == "auto":
            backend = "vllm" if vllm_python() else "transformers"
        self.backend = backend
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        if self.backend == "vllm":
            py = vllm_python()
            if py is None:
                raise UserError(
                    "vLLM is not installed: run `make setup` (it creates .venv/serve) or set "
                    "KUBEDISTILL_VLLM_PYTHON, or use backend 'transformers'"
                )
            cmd = [
                py,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(self.model_dir),
                "--served-model-name",
                self.served_name,
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--max-model-len",
                str(self.max_model_len),
                "--disable-log-stats",
            ]
            if not has_gpu():
                cmd += ["--dtype", "float32"]
                n = os.cpu_count() or 1
                env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{n - 1}")
                env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
                env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            env.setdefault("HF_HUB_OFFLINE", "1")
            # TRL/vLLM confusion: never start vLLM from a directory that holds a folder named "vllm".
            return cmd + self.extra_args, env
        cmd = [
            sys.executable,
            "-m",
            "kubedistill.serve.hf_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        return cmd + self.extra_args, env

    def start(self) -> str:
        cmd, env = self.command()
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            out = self._log_file
        else:
            out = subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.url

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UserError(
                    f"the {self.backend} server for {self.model_dir} exited with code "
                    f"{self.proc.returncode} while starting{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    data = json.loads(r.read())
                    if any(m.get("id") == self.served_name for m in data.get("data", [])):
                        return
            except (urllib.error.URLError, OSError, json.JSONDecodeError, TimeoutError):
                pass
            time.sleep(1.0)
        raise UserError(
            f"the {self.backend} server for {self.model_dir} did not answer within "
            f"{self.startup_timeout_s:.0f} s{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return f" (log {self.log_path}; last line: {lines[-1][:300]})" if lines else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def serve_forever(
    model: str,
    *,
    served_name: str | None = None,
    backend: Backend = "auto",
    host: str = "127.0.0.1",
    port: int = 8000,
    max_model_len: int = 4096,
    log_path: str | Path | None = None,
) -> int:
    """`kubedistill serve`: resolve ``model`` (a directory, ``models:/NAME@ALIAS``, an alias or hub id), start a
    local OpenAI-compatible server for it and keep it up until interrupted."""
    import signal as _signal

    from kubedistill.models import resolve_model

    model_dir = resolve_model(model)
    name = served_name or _default_name(model)
    server = LocalServer(
        model_dir,
        served_name=name,
        backend=backend,
        port=port,
        host=host,
        max_model_len=max_model_len,
        log_path=log_path,
    )
    print(f"serving {model} ({model_dir}) with {server.backend} ...", file=sys.stderr, flush=True)
    url = server.start()
    print(f"ready: {url}  model: {name}", flush=True)
    print(f'try:   kubedistill chat --url {url} --model {name} "What is 7 + 5?"', flush=True)
    stop = {"flag": False}

    def _stop(*_: object) -> None:
        stop["flag"] = True

    _signal.signal(_signal.SIGTERM, _stop)
    try:
        while not stop["flag"]:
            if server.proc is None or server.proc.poll() is not None:
                print("the server exited", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _default_name(model: str) -> str:
    if model.startswith("models:/"):
        return model.removeprefix("models:/").replace("@", "-").replace("/", "-")
    return Path(model).name or "student"
