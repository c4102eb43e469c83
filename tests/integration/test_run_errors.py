"""`kubedistill run` on bad input: one clear line and a non-zero exit, nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubedistill.testing.openai_server import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubedistill.cli", "run", "--local", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_unknown_key_and_wrong_type(tmp_path: Path) -> None:
    recipe = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    recipe["generate"]["temprature"] = 0.5
    recipe["sft"]["learning_rate"] = "fast"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = _run(["--recipe", str(path), "--workdir", str(tmp_path / "out")], ROOT)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.count("\n") == 0, err
    assert "generate.temprature: unknown key" in err and "sft.learning_rate" in err and "'fast'" in err
    assert not (tmp_path / "out").exists()


def test_missing_recipe_file(tmp_path: Path) -> None:
    proc = _run(["--recipe", str(tmp_path / "none.yaml")], ROOT)
    assert proc.returncode == 2 and "no such file" in proc.stderr and proc.stderr.count("\n") == 1


def test_unreachable_teacher_fails_fast_before_any_stage(tmp_path: Path) -> None:
    proc = _run(
        [
            "--recipe",
            str(ROOT / "examples" / "quickstart.yaml"),
            "--workdir",
            str(tmp_path / "out"),
            "--teacher-url",
            f"http://127.0.0.1:{free_port()}/v1",
            "--teacher-model",
            "m",
        ],
        ROOT,
    )
    assert proc.returncode == 2
    assert "unreachable after 3 tries" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not list((tmp_path / "out").rglob("pipeline_root"))  # no stage ran


def test_a_killed_run_stops_its_running_task(tmp_path: Path) -> None:
    import os
    import signal
    import time

    import psutil

    from kubedistill.testing.openai_server import ServerScript, read_log, running_server

    log = tmp_path / "teacher.jsonl"
    with running_server(ServerScript(models=["m"], latency_s=2.0, log_path=str(log))) as url:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubedistill.cli",
                "run",
                "--local",
                "--recipe",
                str(ROOT / "examples" / "quickstart.yaml"),
                "--workdir",
                str(tmp_path / "out"),
                "--teacher-url",
                url,
                "--teacher-model",
                "m",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline and not read_log(log):
            time.sleep(0.5)
        assert read_log(log), "generate never reached the teacher"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children  # the kfp.local task running generate
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 130 and "interrupted" in (proc.stderr.read() if proc.stderr else "")
    time.sleep(1)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
