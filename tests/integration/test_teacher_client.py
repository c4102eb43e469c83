"""The teacher client against a real HTTP server on 127.0.0.1 that injects faults."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from kubedistill.chat import ChatClient, ChatRequest, EndpointError
from kubedistill.chat.config import ClientConfig, EndpointConfig
from kubedistill.core.records import Sample, read_records
from kubedistill.testing.openai_server import ServerScript, free_port, read_log, running_server

pytestmark = pytest.mark.integration

FAST = {"backoff_base_s": 0.02, "backoff_max_s": 0.1, "progress": False}


def _reqs(n: int, teacher: str = "scripted", prefix: str = "q") -> list[ChatRequest]:
    return [
        ChatRequest(
            endpoint=teacher,
            messages=[{"role": "user", "content": f"{prefix} {i} + {i}"}],
            params={"max_tokens": 16, "temperature": 0.6},
            sample_index=0,
            tag=i,
        )
        for i in range(n)
    ]


def test_every_fault_kind_is_retried_nothing_lost_nothing_duplicated(tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    script = ServerScript(fail_first_max=4, retry_after_s=0.05, log_path=str(log))
    with running_server(script) as url:
        client = ChatClient(
            [EndpointConfig(url=url, model="scripted")],
            ClientConfig(max_retries=6, cache_dir=tmp_path / "cache", **FAST),
        )
        reqs = _reqs(120)
        results = client.run(reqs)
    assert [r.request.tag for r in results] == list(range(120))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert [r.content for r in results][:2] == [
        "<think>\nThe numbers are 0 + 0. Adding them gives 0.\n</think>\n\nThe answer is \\boxed{0}.",
        "<think>\nThe numbers are 1 + 1. Adding them gives 2.\n</think>\n\nThe answer is \\boxed{2}.",
    ]
    rows = read_log(log)
    outcomes = Counter(r["outcome"] for r in rows)
    # every injected fault kind actually happened...
    for kind in ("http_500", "http_503", "http_429", "reset", "malformed", "truncated", "empty_choices"):
        assert outcomes[kind] > 0, outcomes
    # ...and each request got exactly one successful answer: nothing re-asked after success
    ok_per_key = Counter(r["key"] for r in rows if r["outcome"] == "ok")
    assert len(ok_per_key) == 120 and set(ok_per_key.values()) == {1}
    assert client.stats.retries == sum(v for k, v in outcomes.items() if k != "ok")
    assert client.stats.errors["malformed"] > 0 and client.stats.errors["truncated_body"] > 0


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    script = ServerScript(fail_first_max=1, fault_kinds=["http_429"], retry_after_s=0.6, log_path=str(log))
    with running_server(script) as url:
        client = ChatClient([EndpointConfig(url=url, model="scripted")], ClientConfig(max_retries=3, **FAST))
        results = client.run(_reqs(12))
    assert all(r.ok for r in results)
    by_key: dict[str, list[float]] = {}
    for r in read_log(log):
        by_key.setdefault(r["key"], []).append(r["t"])
    gaps = [ts[1] - ts[0] for ts in by_key.values() if len(ts) == 2]
    assert gaps, "some request must have been told to wait"
    assert min(gaps) >= 0.55  # the backoff alone (max 0.1 s) would have come back much sooner


def test_permanent_failures_are_reported_after_all_retries(tmp_path: Path) -> None:
    script = ServerScript(always_fail=["doomed"])
    with running_server(script) as url:
        client = ChatClient([EndpointConfig(url=url, model="scripted")], ClientConfig(max_retries=2, **FAST))
        results = client.run(_reqs(5) + _reqs(2, prefix="doomed"))
    assert [r.ok for r in results] == [True] * 5 + [False] * 2
    assert results[-1].attempts == 3 and "HTTP 500" in (results[-1].error or "")


def test_client_errors_fail_at_once_without_retries(tmp_path: Path) -> None:
    with running_server(ServerScript(models=["other"])) as url:
        client = ChatClient([EndpointConfig(url=url, model="scripted")], ClientConfig(max_retries=5, **FAST))
        [res] = client.run(_reqs(1))
    assert not res.ok and res.attempts == 1 and "HTTP 404" in (res.error or "")


def test_timeout_is_retried(tmp_path: Path) -> None:
    script = ServerScript(fail_first_max=1, fault_kinds=["slow"], slow_s=3.0)
    with running_server(script) as url:
        client = ChatClient(
            [EndpointConfig(url=url, model="scripted")], ClientConfig(max_retries=2, timeout_s=0.5, **FAST)
        )
        t0 = time.perf_counter()
        results = client.run(_reqs(6))
        elapsed = time.perf_counter() - t0
    assert all(r.ok for r in results)
    assert client.stats.errors["timeout"] > 0
    assert elapsed < 3.0  # the client gave up on the slow attempt instead of waiting it out


def test_identical_requests_are_sent_once_and_cache_serves_the_next_run(tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    with running_server(ServerScript(log_path=str(log))) as url:
        cfg = ClientConfig(cache_dir=tmp_path / "cache", **FAST)
        client = ChatClient([EndpointConfig(url=url, model="scripted")], cfg)
        reqs = _reqs(10) + _reqs(10)  # the same ten twice
        first = client.run(reqs)
        assert len(first) == 20 and all(r.ok for r in first)
        assert len(read_log(log)) == 10
        again = ChatClient([EndpointConfig(url=url, model="scripted")], cfg).run(_reqs(10))
        assert all(r.cached for r in again)
        assert len(read_log(log)) == 10  # no new request reached the server
        # a different sample index is a different request
        other = [
            ChatRequest(endpoint="scripted", messages=r.messages, params=r.params, sample_index=1) for r in _reqs(2)
        ]
        client.run(other)
        assert len(read_log(log)) == 12


def test_reasoning_field_is_read(tmp_path: Path) -> None:
    with running_server(ServerScript(reasoning_field=True)) as url:
        [res] = ChatClient([EndpointConfig(url=url, model="scripted")], ClientConfig(**FAST)).run(_reqs(1))
    assert res.reasoning and "Adding them" in res.reasoning
    assert res.content == "The answer is \\boxed{0}."


def test_api_key_from_env_and_preflight_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_server(ServerScript(api_key="sk-test-123456")) as url:
        monkeypatch.setenv("KD_TEACHER_KEY", "sk-test-123456")
        good = ChatClient(
            [EndpointConfig(url=url, model="scripted", api_key_env="KD_TEACHER_KEY")], ClientConfig(**FAST)
        )
        good.check()
        assert good.run(_reqs(1))[0].ok
        monkeypatch.setenv("KD_TEACHER_KEY", "wrong-key-000")
        bad = ChatClient(
            [EndpointConfig(url=url, model="scripted", api_key_env="KD_TEACHER_KEY")], ClientConfig(**FAST)
        )
        with pytest.raises(EndpointError, match="refused the key"):
            bad.check()
        monkeypatch.setenv("KD_TEACHER_KEY", "sk-test-123456")
        wrong_model = ChatClient(
            [EndpointConfig(url=url, model="nope", api_key_env="KD_TEACHER_KEY")], ClientConfig(**FAST)
        )
        with pytest.raises(EndpointError, match="does not serve model 'nope'"):
            wrong_model.check()


def test_unreachable_teacher_fails_fast() -> None:
    client = ChatClient([EndpointConfig(url=f"http://127.0.0.1:{free_port()}/v1", model="m")], ClientConfig(**FAST))
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match="unreachable after 2 tries"):
        client.check(timeout_s=1.0, attempts=2)
    assert time.perf_counter() - t0 < 5


# ------------------------------------------------------------------------------- the generate CLI


def _problems(path: Path, n: int, doomed: int = 0) -> Path:
    with path.open("w") as f:
        for i in range(n):
            text = f"What is {i} + 1?" + (" doomed" if i < doomed else "")
            f.write(json.dumps({"id": f"p{i}", "problem": text, "answer": str(i + 1), "source": "t"}) + "\n")
    return path


def _generate_cmd(url: str, inp: Path, out: Path, cache: Path, extra: list[str] | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kubedistill.cli",
        "generate",
        "--input",
        str(inp),
        "--output",
        str(out),
        "--teacher-url",
        url,
        "--teacher-model",
        "scripted",
        "--temperature",
        "0.6",
        "--temperature",
        "0.9",
        "--num-generations",
        "2",
        "--max-tokens",
        "64",
        "--cache-dir",
        str(cache),
        "--no-tracking",
        "--no-progress",
        *(extra or []),
    ]


def test_generate_cli_one_sample_per_combination_under_faults(tmp_path: Path) -> None:
    inp = _problems(tmp_path / "problems.jsonl", 15)
    out = tmp_path / "samples.jsonl"
    with running_server(ServerScript(fail_first_max=3, retry_after_s=0.05)) as url:
        proc = subprocess.run(
            _generate_cmd(url, inp, out, tmp_path / "cache", ["--max-retries", "6"]),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr
    samples = read_records(out, Sample)
    keys = [(s.problem_id, s.teacher, s.temperature, s.sample_index) for s in samples]
    assert len(keys) == len(set(keys)) == 15 * 2 * 2
    assert {s.final_answer for s in samples if s.problem_id == "p3"} == {"4"}
    assert all(s.reasoning.startswith("The numbers are") for s in samples)
    stats = json.loads((tmp_path / "samples.stats.json").read_text())
    assert stats["n_in"] == 15 and stats["n_out"] == 60 and stats["metrics"]["teacher.retries"] > 0


def test_generate_cli_exits_nonzero_and_lists_failed_requests(tmp_path: Path) -> None:
    inp = _problems(tmp_path / "problems.jsonl", 6, doomed=2)
    out = tmp_path / "samples.jsonl"
    with running_server(ServerScript(always_fail=["doomed"])) as url:
        proc = subprocess.run(
            _generate_cmd(url, inp, out, tmp_path / "cache", ["--max-retries", "1"]),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 3
    assert "8 request failed" in proc.stderr and "no output written" in proc.stderr
    assert not out.exists()
    failed = [json.loads(x) for x in (tmp_path / "samples.rejects.jsonl").read_text().splitlines()]
    assert len(failed) == 8 and {f["record"]["problem_id"] for f in failed} == {"p0", "p1"}
    assert all(f["reason"] == "request_failed" and "HTTP 500" in f["detail"] for f in failed)


def test_generate_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubedistill.cli",
            "generate",
            "--input",
            str(tmp_path / "none.jsonl"),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--teacher-url",
            "http://127.0.0.1:9/v1",
            "--teacher-model",
            "m",
            "--no-tracking",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr


def test_generate_does_not_import_torch() -> None:
    code = (
        "import sys, kubedistill.cli, kubedistill.cot.generate, kubedistill.runner; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_killed_run_resumes_repeating_no_finished_request(tmp_path: Path) -> None:
    inp = _problems(tmp_path / "problems.jsonl", 30)  # 30 x 2 temps x 2 samples = 120 requests
    out = tmp_path / "samples.jsonl"
    cache = tmp_path / "cache"
    log = tmp_path / "server.jsonl"
    port = free_port()
    with running_server(ServerScript(latency_s=0.15, log_path=str(log)), port=port) as url:
        cmd = _generate_cmd(url, inp, out, cache, ["--concurrency", "4"])
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        db = cache / "requests.sqlite"
        deadline = time.time() + 60
        while time.time() < deadline:
            if db.exists():
                try:
                    n = sqlite3.connect(db).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                except sqlite3.OperationalError:
                    n = 0
                if n >= 40:
                    break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not out.exists()
        finished = {row[0] for row in sqlite3.connect(db).execute("SELECT key FROM responses")}
        assert 40 <= len(finished) < 120
        n_logged_before = len(read_log(log))
        proc2 = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc2.returncode == 0, proc2.stderr
    samples = read_records(out, Sample)
    keys = [(s.problem_id, s.temperature, s.sample_index) for s in samples]
    assert len(keys) == len(set(keys)) == 120
    # the resumed run asked only for what had not finished (plus at most the 4 in flight at the kill)
    resumed = read_log(log)[n_logged_before:]
    assert len(resumed) <= 120 - len(finished) + 4
    assert len(resumed) >= 120 - len(finished)
