"""EvalConfig's per-benchmark samples, k checks, length statistics and result round trips."""

from __future__ import annotations

import math

import pytest

from kubedistill.core.config import ConfigError
from kubedistill.core.records import Problem
from kubedistill.evaluate.core import (
    BenchmarkResult,
    EvalConfig,
    EvalItem,
    build_requests,
    pass_at_k,
    summarize,
)


def _item(pid: str, i: int, correct: bool | None, tokens: int, method: str = "math-verify") -> EvalItem:
    return EvalItem(
        benchmark="b",
        model="m",
        problem_id=pid,
        sample_index=i,
        text="",
        final_answer="1",
        correct=correct,
        method=method,
        completion_tokens=tokens,
        finish_reason="stop",
    )


def test_pass_at_k_is_the_average_over_all_k_subsets() -> None:
    # brute force: the share of k-subsets of n samples (c correct) that hold a correct one
    from itertools import combinations

    for n, c, k in [(6, 2, 3), (7, 3, 2), (5, 1, 5), (10, 0, 4), (8, 5, 4)]:
        samples = [True] * c + [False] * (n - c)
        subsets = list(combinations(range(n), k))
        expected = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_is_monotone_in_k_and_pass_at_1_is_c_over_n() -> None:
    for n in range(1, 9):
        for c in range(n + 1):
            vals = [pass_at_k(n, c, k) for k in range(1, n + 1)]
            assert vals == sorted(vals)
            assert vals[0] == pytest.approx(c / n)


def test_k_is_sorted_deduplicated_and_checked_per_benchmark() -> None:
    cfg = EvalConfig(n=4, n_per_benchmark={"aime2024": 64}, k=[8, 1, 8])
    assert cfg.k == [1, 8]
    cfg.check_k(["aime2024"])
    with pytest.raises(ConfigError, match=r"pass@8 needs at least 8 samples per problem, but benchmark 'math500'"):
        cfg.check_k(["aime2024", "math500"])
    with pytest.raises(ValueError):
        EvalConfig(k=[0])
    with pytest.raises(ValueError):
        EvalConfig(n_per_benchmark={"x": 0})


def test_requests_per_benchmark_samples_with_distinct_seeds() -> None:
    p = Problem(id="p1", problem="What is 1+1?", answer="2", source="t")
    cfg = EvalConfig(n=2, n_per_benchmark={"aime2024": 5})
    reqs = build_requests([p], cfg, model="m", benchmark="aime2024")
    assert [r.sample_index for r in reqs] == [0, 1, 2, 3, 4]
    assert len({r.params["seed"] for r in reqs}) == 5
    assert all(r.params["temperature"] == 0.6 and r.params["top_p"] == 0.95 for r in reqs)
    assert len(build_requests([p], cfg, model="m", benchmark="math500")) == 2
    assert "seed" not in build_requests([p], EvalConfig(seed=None), model="m", benchmark="x")[0].params


def test_lengths_split_correct_incorrect_and_leave_out_failed_requests() -> None:
    items = [
        _item("a", 0, True, 100),
        _item("a", 1, False, 300),
        _item("b", 0, True, 200),
        _item("b", 1, None, 0, method="error"),  # failed request: no completion
        _item("c", 0, False, 500, method="truncated"),
        _item("c", 1, None, 50, method="none"),  # no verdict, but a completion
    ]
    r = summarize(items, "b", "m", EvalConfig(n=2))
    ln = r.lengths
    assert ln.mean == pytest.approx((100 + 300 + 200 + 500 + 50) / 5)
    assert ln.median == 200
    assert (ln.mean_correct, ln.median_correct, ln.n_correct) == (150, 150, 2)
    assert (ln.mean_incorrect, ln.median_incorrect, ln.n_incorrect) == (400, 400, 2)
    assert r.n_failed == 1 and r.n_unscorable == 2 and r.n_truncated == 1
    assert r.accuracy == pytest.approx(2 / 6)
    # per-problem accuracy 0.5, 0.5, 0 -> standard error of their mean
    sd = math.sqrt(((1 / 6) ** 2 * 2 + (1 / 3) ** 2) / 2)
    assert r.accuracy_stderr == pytest.approx(sd / math.sqrt(3))
    assert r.settings["n"] == 2 and r.settings["harness"].startswith("kubedistill ")


def test_flat_round_trips() -> None:
    items = [_item("a", 0, True, 10), _item("a", 1, False, 20), _item("b", 0, False, 30), _item("b", 1, False, 40)]
    r = summarize(items, "math500", "m", EvalConfig(n=2, k=[1, 2]))
    flat = r.flat()
    assert flat["pass@1"] == 0.25 and flat["pass@2"] == 0.5
    assert BenchmarkResult.from_flat("math500", flat) == r
