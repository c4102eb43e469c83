"""`kubedistill serve` a registered student, then `kubedistill chat` with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kubedistill.testing.openai_server import ServerScript, free_port, running_server

pytestmark = pytest.mark.integration


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    deadline = time.time() + timeout
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("ready: "):
            return line.split()[1]
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stderr.read() if proc.stderr else ''}")
    raise AssertionError("serve did not get ready")


def test_serve_a_registered_student_and_chat(tiny_model: Path, tracking_uri: str, tmp_path: Path) -> None:
    from kubedistill.registry import register_student

    register_student(tiny_model, "kd-serve-test", aliases=["champion"], experiment="t")
    port = free_port()
    env = {**os.environ, "KUBEDISTILL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubedistill.cli",
            "serve",
            "--model",
            "models:/kd-serve-test@champion",
            "--backend",
            "transformers",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        url = _wait_ready(proc)
        assert url == f"http://127.0.0.1:{port}/v1"
        with urllib.request.urlopen(f"{url}/models", timeout=5) as r:
            assert b"kd-serve-test-champion" in r.read()
        chat = subprocess.run(
            [
                sys.executable,
                "-m",
                "kubedistill.cli",
                "chat",
                "--url",
                url,
                "--model",
                "kd-serve-test-champion",
                "--max-tokens",
                "6",
                "What is 2 + 2?",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert chat.returncode == 0, chat.stderr
        assert "cut off at 6 tokens" in chat.stderr  # an untrained tiny model rambles: said, not hidden
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_chat_prints_thinking_and_answer_and_reads_stdin() -> None:
    with running_server(ServerScript(models=["m"])) as url:
        proc = subprocess.run(
            [sys.executable, "-m", "kubedistill.cli", "chat", "--url", url, "--model", "m"],
            input="What is 3 + 4?\nWhat is 1 + 1?\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("[thinking]") == 2
    assert "The answer is \\boxed{7}." in proc.stdout and "The answer is \\boxed{2}." in proc.stdout


def test_chat_to_nothing_fails_fast() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubedistill.cli",
            "chat",
            "--url",
            f"http://127.0.0.1:{free_port()}/v1",
            "--model",
            "m",
            "hi",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unreachable" in proc.stderr
