from __future__ import annotations

import math

import pytest

from kubedistill.evaluate.core import EvalConfig, EvalItem, pass_at_k, summarize


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (4, 1, 1, 0.25),  # c/n for k=1
        (4, 2, 1, 0.5),
        (4, 1, 2, 1 - (3 * 2 / 2) / 6),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (10, 3, 5, 1 - math.comb(7, 5) / math.comb(10, 5)),
        (8, 0, 8, 0.0),
        (8, 1, 8, 1.0),
        (5, 4, 2, 1.0),  # n-c < k: every k-subset holds a correct one
    ],
)
def test_pass_at_k_matches_hand_computed(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_needs_enough_samples() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        pass_at_k(2, 1, 4)


def _item(pid: str, i: int, correct: bool | None, tokens: int, finish: str = "stop") -> EvalItem:
    return EvalItem(
        benchmark="b",
        model="m",
        problem_id=pid,
        sample_index=i,
        text="",
        final_answer=None,
        correct=correct,
        method="math-verify",
        completion_tokens=tokens,
        finish_reason=finish,
    )


def test_summarize_averages_pass_at_k_over_problems_and_splits_lengths() -> None:
    items = [
        _item("a", 0, True, 10),
        _item("a", 1, False, 30),
        _item("a", 2, True, 20),
        _item("a", 3, False, 40),
        _item("b", 0, False, 100),
        _item("b", 1, False, 100),
        _item("b", 2, None, 50),
        _item("b", 3, False, 70, "length"),
    ]
    r = summarize(items, "b", "m", EvalConfig(n=4, k=[1, 2, 4]))
    # problem a: c=2 of 4; problem b: c=0
    assert r.pass_at_k["pass@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert r.pass_at_k["pass@2"] == pytest.approx(((1 - math.comb(2, 2) / math.comb(4, 2)) + 0.0) / 2)
    assert r.pass_at_k["pass@4"] == pytest.approx(0.5)
    assert r.accuracy == pytest.approx(2 / 8)
    assert r.lengths.mean_correct == pytest.approx(15)
    assert r.lengths.median_incorrect == pytest.approx(70)
    assert r.n_truncated == 1 and r.n_unscorable == 1
    flat = r.flat()
    assert flat["pass@1"] == r.pass_at_k["pass@1"] and flat["n_problems"] == 2


def test_wilson_interval_and_the_paired_interval() -> None:
    from kubedistill.evaluate.compare import ItemPoint, paired
    from kubedistill.evaluate.core import wilson_interval

    lo, hi = wilson_interval(0, 100)
    assert lo == 0.0 and 0.03 < hi < 0.04  # not empty at zero successes
    lo, hi = wilson_interval(40, 100)
    assert 0.30 < lo < 0.31 and 0.49 < hi < 0.50
    assert wilson_interval(0, 0) == (0.0, 1.0)
    base = [ItemPoint(f"p{i}", 0, i < 10, 10, "m") for i in range(100)]
    student = [ItemPoint(f"p{i}", 0, i < 40, 10, "m") for i in range(100)]
    pr = paired(base, student)
    assert pr is not None and pr["mean_delta"] == pytest.approx(0.30)
    low, high = pr["delta_ci95"]
    assert 0.20 < low < 0.22 and 0.38 < high < 0.40
