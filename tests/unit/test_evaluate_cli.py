"""`kubedistill evaluate` flags: parsing into EvalConfig, one-line errors (no server needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from kubedistill.cli.evaluate import build_parser, eval_config, main


def _ns(*args: str) -> argparse.Namespace:
    return build_parser().parse_args(list(args))


def test_flags_build_the_eval_config() -> None:
    cfg = eval_config(
        _ns(
            "--n", "4", "--n", "aime2024=64", "--k", "1,4", "--k", "2",
            "--temperature", "0.7", "--top-p", "0.9", "--max-tokens", "32768", "--seed", "none",
            "--concurrency", "8", "--cache-dir", "/tmp/c", "--no-progress", "--verify-timeout", "3",
        )
    )  # fmt: skip
    assert cfg.n == 4 and cfg.n_for("aime2024") == 64 and cfg.n_for("math500") == 4
    assert cfg.k == [1, 2, 4]
    assert (cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed) == (0.7, 0.9, 32768, None)
    assert cfg.client.concurrency == 8 and str(cfg.client.cache_dir) == "/tmp/c" and cfg.client.progress is False
    assert cfg.timeout_s == 3


def test_recommended_n_and_defaults() -> None:
    cfg = eval_config(_ns("--recommended-n", "--n", "math500=8"))
    assert [cfg.n_for(b) for b in ("aime2024", "math500", "gpqa_diamond", "livecodebench_v2", "x")] == [
        64,
        8,
        8,
        16,
        1,
    ]
    d = eval_config(_ns())
    assert (d.n, d.k, d.temperature, d.top_p, d.seed) == (1, [1], 0.6, 0.95, 0)


def test_config_file_then_flags(tmp_path: Path) -> None:
    y = tmp_path / "eval.yaml"
    y.write_text("n: 8\nk: [1, 8]\nmax_tokens: 1000\nbackend: vllm\n")  # backend: a recipe-only key
    cfg = eval_config(_ns("--config", str(y), "--max-tokens", "2000"))
    assert (cfg.n, cfg.k, cfg.max_tokens) == (8, [1, 8], 2000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output", "o", "--endpoint", "http://x/v1", "--model", "m", "--benchmark", "gsm8k", "--k", "4"],
         "pass@4 needs at least 4 samples per problem, but benchmark 'gsm8k' gets 1"),
        (["--output", "o", "--endpoint", "http://x/v1", "--benchmark", "gsm8k"], "needs both --endpoint"),
        (["--output", "o", "--endpoint", "http://x/v1", "--model", "m"], "at least one --benchmark"),
        (["--output", "o"], "--compare LABEL=DIR"),
        (["--endpoint", "http://x/v1", "--model", "m", "--benchmark", "gsm8k"], "give --output"),
        (["--output", "o", "--compare", "base"], "--compare wants NAME=VALUE"),
        (["--output", "o", "--endpoint", "http://x/v1", "--model", "m", "--benchmark", "nope"], "unknown benchmark"),
        (["--output", "o", "--endpoint", "http://x/v1", "--model", "m", "--benchmark", "gsm8k",
          "--benchmark-path", "math500=/x.jsonl"], "not among the --benchmark names"),
        (["--output", "o", "--endpoint", "http://x/v1", "--model", "m", "--benchmark", "gsm8k", "--n", "two"],
         "--n: 'two' is not an integer"),
        (["--output", "o", "--endpoint", "ftp://x", "--model", "m", "--benchmark", "gsm8k"], "http://"),
        (["--output", "o", "--compare", "a=/nonexistent/run"], "not an evaluation output"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*args, "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert message in err


def test_list_benchmarks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-benchmarks"]) == 0
    out = capsys.readouterr().out
    for name in ("math500", "aime2024", "gpqa_diamond", "livecodebench_v2", "gsm8k", "humaneval", "reasoning_gym:"):
        assert name in out


def test_a_problems_file_is_a_benchmark_named_after_it(tmp_path: Path) -> None:
    from kubedistill.evaluate.run import load_benchmarks

    f = tmp_path / "my_set.jsonl"
    f.write_text(json.dumps({"id": "a", "problem": "1+1?", "answer": "2", "source": "x"}) + "\n")
    got, sources = load_benchmarks([str(f)])
    assert list(got) == ["my_set"] and got["my_set"][0].id == "a" and sources["my_set"] == str(f)
