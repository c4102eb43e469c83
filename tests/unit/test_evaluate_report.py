"""Outputs, plots and the side-by-side report of evaluation runs, on synthetic items (no servers)."""

from __future__ import annotations

import base64
import json
import random
import re
from pathlib import Path

import pytest

from kubedistill.core.config import ConfigError
from kubedistill.evaluate.compare import compare_runs, load_run, paired
from kubedistill.evaluate.core import EvalConfig, EvalItem, summarize
from kubedistill.evaluate.plots import save_plots
from kubedistill.evaluate.run import mlflow_metrics, write_outputs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _items(bench: str, model: str, n_problems: int, samples: int, p_correct: float, seed: int) -> list[EvalItem]:
    rng = random.Random(seed)
    out = []
    for i in range(n_problems):
        ease = rng.random()
        for j in range(samples):
            correct = rng.random() < p_correct * (0.5 + ease)
            tokens = int(rng.lognormvariate(6.2 if correct else 6.8, 0.4))
            truncated = not correct and rng.random() < 0.05
            out.append(
                EvalItem(
                    benchmark=bench,
                    model=model,
                    problem_id=f"{bench}:{i}",
                    sample_index=j,
                    text=f"<think>\nthinking {i}.{j}\n</think>\n\n\\boxed{{{i}}}",
                    final_answer=None if truncated else str(i),
                    correct=correct,
                    method="truncated" if truncated else "math-verify",
                    completion_tokens=tokens,
                    finish_reason="length" if truncated else "stop",
                )
            )
    return out


def _write_run(
    out: Path, label: str, p_correct: float, seed: int, *, temperature: float = 0.6, benches: tuple[str, ...] = ()
) -> Path:
    benches = benches or ("math500", "aime2024", "reasoning_gym:chain_sum")
    cfg = EvalConfig(n=4, n_per_benchmark={"aime2024": 8}, k=[1, 2, 4], temperature=temperature)
    items = {
        b: _items(b, label, 20 if b != "aime2024" else 10, cfg.n_for(b), p_correct, seed + i)
        for i, b in enumerate(benches)
    }
    results = {b: summarize(v, b, label, cfg) for b, v in items.items()}
    info = {
        "label": label,
        "model": label,
        "endpoint": "http://127.0.0.1:8000/v1",
        "harness": "kubedistill test",
        "prompt": "generate@v1",
        "requests": {"total": sum(len(v) for v in items.values()), "cached": 0, "failed": 0},
    }
    write_outputs(out, results, items, info)
    return out


def _is_png(p: Path, min_bytes: int = 8_000) -> bool:
    data = p.read_bytes()
    return data.startswith(PNG_SIGNATURE) and len(data) >= min_bytes


def test_write_outputs_layout_and_results_json_shape(tmp_path: Path) -> None:
    out = _write_run(tmp_path / "run", "student", 0.5, 1)
    res = json.loads((out / "results.json").read_text())
    assert list(res) == ["math500", "aime2024", "reasoning_gym:chain_sum"]
    m = res["aime2024"]
    assert m["n"] == 8 and m["n_problems"] == 10
    for key in ("pass@1", "pass@2", "pass@4", "accuracy", "accuracy_stderr", "answered_rate", "n_truncated"):
        assert isinstance(m[key], float | int), key
    assert set(m["lengths"]) >= {"mean", "median", "mean_correct", "mean_incorrect", "median_correct"}
    assert m["settings"]["n"] == 8 and m["settings"]["temperature"] == 0.6
    # items: one file per benchmark, file-name-safe, one row per completion with the raw text
    rows = (out / "items" / "reasoning_gym_chain_sum.jsonl").read_text().splitlines()
    assert len(rows) == 20 * 4 and json.loads(rows[0])["text"].startswith("<think>")
    assert (out / "items" / "aime2024.jsonl").read_text().count("\n") == 80
    for name in ("scores.png", "pass_at_k.png", "lengths.png"):
        assert _is_png(out / "plots" / name), name
    md = (out / "report.md").read_text()
    assert "# Evaluation of student" in md and "| pass@4 |" in md and "Δ" not in md.split("## Plots")[0]
    assert "![pass@k curves](plots/pass_at_k.png)" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3


def test_run_round_trips_through_load_run(tmp_path: Path) -> None:
    out = _write_run(tmp_path / "run", "student", 0.5, 1)
    run = load_run(out)
    assert run.label == "student"
    assert (
        run.results["aime2024"].pass_at_k["pass@4"]
        == json.loads((out / "results.json").read_text())["aime2024"]["pass@4"]
    )
    assert len(run.items["math500"]) == 80
    assert run.items["math500"][0].problem_id == "math500:0"


def test_load_run_refuses_a_directory_without_results(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an evaluation output"):
        load_run(tmp_path)


def test_comparison_report_has_deltas_paired_counts_and_embedded_plots(tmp_path: Path) -> None:
    base = _write_run(tmp_path / "base", "base", 0.3, 1)
    student = _write_run(tmp_path / "student", "student", 0.6, 1)
    rep = compare_runs({"base": base, "student": student}, tmp_path / "cmp")
    d = rep.data
    assert d["baseline"] == "base"
    for bench in ("math500", "aime2024", "reasoning_gym:chain_sum"):
        entry = d["benchmarks"][bench]
        b, s = entry["results"]["base"], entry["results"]["student"]
        assert entry["delta"]["student"]["pass@1"] == pytest.approx(s["pass@1"] - b["pass@1"])
        assert entry["delta"]["student"]["mean_tokens"] == pytest.approx(s["lengths"]["mean"] - b["lengths"]["mean"])
        pr = entry["paired"]["student"]
        assert pr["shared_problems"] == b["n_problems"]
        assert pr["better"] + pr["worse"] + pr["same"] == pr["shared_problems"]
    assert d["warnings"] == []
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "# Evaluation: base vs student" in md
    assert "| benchmark | problems | n | base pass@1 | student pass@1 | Δ student |" in md
    delta = d["benchmarks"]["math500"]["delta"]["student"]["pass@1"]
    assert f"| pass@1 | {d['benchmarks']['math500']['results']['base']['pass@1']:.3f} |" in md
    assert f"{delta:+.3f}" in md
    assert "Paired by problem, student vs base, on 20 shared problems" in md
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html
    assert 'class="r up"' in html  # a better score is marked
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == 3 and all(base64.b64decode(i).startswith(PNG_SIGNATURE) for i in imgs)
    assert "http" not in html.replace("http://127.0.0.1:8000/v1", "")  # self-contained: nothing fetched
    for name in ("scores.png", "pass_at_k.png", "lengths.png"):
        assert _is_png(tmp_path / "cmp" / "plots" / name, 15_000), name
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["baseline"] == "base"


def test_comparison_warns_when_settings_differ_and_takes_a_baseline(tmp_path: Path) -> None:
    a = _write_run(tmp_path / "a", "a", 0.3, 1, benches=("math500",))
    b = _write_run(tmp_path / "b", "b", 0.3, 2, temperature=1.0, benches=("math500", "gsm8k"))
    rep = compare_runs({"a": a, "b": b}, tmp_path / "cmp", baseline="b")
    w = " ".join(rep.data["warnings"])
    assert "math500: runs differ in temperature (a=0.6, b=1.0)" in w
    assert "gsm8k: not evaluated in a" in w
    assert rep.data["baseline"] == "b" and "a" in rep.data["benchmarks"]["math500"]["delta"]
    assert "**Warning:**" in (tmp_path / "cmp" / "report.md").read_text()
    with pytest.raises(ConfigError, match="baseline"):
        compare_runs({"a": a, "b": b}, tmp_path / "x", baseline="c")


def test_three_runs_side_by_side(tmp_path: Path) -> None:
    runs = {name: _write_run(tmp_path / name, name, p, 3) for name, p in (("base", 0.2), ("sft", 0.4), ("dpo", 0.5))}
    rep = compare_runs(runs, tmp_path / "cmp")
    assert set(rep.data["benchmarks"]["math500"]["delta"]) == {"sft", "dpo"}
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| metric | base | sft | Δ sft | dpo | Δ dpo |" in md


def test_paired_counts_by_problem() -> None:
    from kubedistill.evaluate.compare import ItemPoint

    def pts(spec: dict[str, list[bool]]) -> list[ItemPoint]:
        return [ItemPoint(pid, j, c, 10, "math-verify") for pid, cs in spec.items() for j, c in enumerate(cs)]

    base = pts({"a": [True, False], "b": [False, False], "c": [True, True], "x": [True, True]})
    other = pts({"a": [True, True], "b": [False, False], "c": [True, False], "y": [True, True]})
    pr = paired(base, other)
    assert pr is not None
    assert (pr["shared_problems"], pr["better"], pr["worse"], pr["same"]) == (3, 1, 1, 1)
    assert pr["only_in_baseline"] == 1 and pr["only_in_run"] == 1
    assert pr["mean_delta"] == pytest.approx(0.0)


def test_plots_cope_with_empty_and_one_sided_benchmarks(tmp_path: Path) -> None:
    cfg = EvalConfig(n=1, k=[1])
    all_wrong = _items("hard", "m", 5, 1, 0.0, 1)
    results = {"m": {"hard": summarize(all_wrong, "hard", "m", cfg)}}
    paths = save_plots(results, {"m": {"hard": all_wrong, "empty": []}}, tmp_path)
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in paths.values())


def test_mlflow_metric_names() -> None:
    cfg = EvalConfig(n=4, k=[1, 4])
    r = summarize(_items("math500", "m", 5, 4, 0.5, 1), "math500", "m", cfg)
    m = mlflow_metrics({"math500": r})
    assert m["math500.pass_at_1"] == r.pass_at_k["pass@1"] and "math500.pass_at_4" in m
    assert {"math500.accuracy", "math500.mean_tokens", "math500.mean_tokens_correct", "math500.n_problems"} <= set(m)
    assert set(mlflow_metrics({"math500": r}, prefix="student.")) == {f"student.{k}" for k in m}
