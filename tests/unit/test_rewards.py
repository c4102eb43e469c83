"""GRPO reward maths against hand-computed values, boundaries included."""

from __future__ import annotations

import math

import pytest

from kubedistill.core.records import Problem
from kubedistill.train.rewards import (
    AccuracyReward,
    FormatReward,
    IntervalReward,
    answer_part,
    combine,
    completion_text,
    interval_penalty,
    is_well_formed,
)

MATH = Problem(id="m", problem="What is 2 + 2?", answer="4", source="t")
CHOICE = Problem(id="c", problem="Pick", answer="B", choices=["one", "two", "three"], source="t", domain="science")
CODE = Problem(
    id="k",
    problem="Write double(x).",
    domain="code",
    source="t",
    tests={
        "kind": "functional",
        "code": "def check(candidate):\n    assert candidate(2) == 4",
        "entry_point": "double",
    },
)
NO_REF = Problem(id="n", problem="Tell me something.", source="t")
BAD_GOLD = Problem(id="b", problem="?", answer="\\frac{", source="t")
PROBLEMS = {p.id: p for p in (MATH, CHOICE, CODE, NO_REF, BAD_GOLD)}


def msg(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# ------------------------------------------------------------------------------------- interval maths


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        (0.3, 0.0),  # exactly L
        (0.7, 0.0),  # exactly H
        (0.5, 0.0),  # inside
        (0.29, -0.01),  # just below L
        (0.71, -0.01),  # just above H
        (0.0, -0.3),  # far below: linear
        (1.0, -0.3),  # far above: linear
    ],
)
def test_interval_penalty_is_zero_inside_and_linear_outside(f: float, expected: float) -> None:
    assert interval_penalty(f, 0.3, 0.7) == pytest.approx(expected, abs=1e-12)


def test_interval_penalty_of_a_point_interval_and_an_empty_one() -> None:
    assert interval_penalty(0.5, 0.5, 0.5) == 0.0
    assert interval_penalty(0.6, 0.5, 0.5) == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="empty interval"):
        interval_penalty(0.5, 0.6, 0.4)


def test_combined_reward_matches_hand_computation_and_skips_none() -> None:
    # R = 1·1 + 1·1 + 0.5·(-0.2) + 2·0 = 1.9
    assert combine([1.0, 1.0, -0.2, 0.0], [1.0, 1.0, 0.5, 2.0]) == pytest.approx(1.9)
    # accuracy unknown (None): it adds nothing; R = 1 + 0.5·(-0.2) = 0.9
    assert combine([1.0, None, -0.2], [1.0, 1.0, 0.5]) == pytest.approx(0.9)
    assert combine([None, float("nan")], [1.0, 1.0]) is None


# ------------------------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("text", "problem", "ok"),
    [
        ("<think>\n2 + 2 = 4\n</think>\n\nThe answer is \\boxed{4}.", MATH, True),
        ("  <think>x</think>\\boxed{4}", MATH, True),  # leading whitespace is fine
        ("2 + 2 = 4\n</think>\n\n\\boxed{4}", MATH, True),  # <think> was in the prompt
        ("<think>\n2 + 2 = 4\n</think>\n\nThe answer is 4.", MATH, False),  # no boxed answer
        ("<think>\n\n</think>\n\n\\boxed{4}", MATH, False),  # blank reasoning
        ("<think>\n2 + 2 = 4\n</think>\n\n", MATH, False),  # no answer part
        ("<think>\n2 + 2 = 4", MATH, False),  # cut off inside <think>
        ("\\boxed{4}", MATH, False),  # no think block
        ("<think>a</think><think>b</think>\\boxed{4}", MATH, False),  # two blocks
        ("Sure. <think>a</think>\\boxed{4}", MATH, False),  # <think> not first
        ("<think>a</think>\\boxed{4", MATH, False),  # unbalanced box
        ("<think>a</think>\\boxed{}", MATH, False),  # empty box
        ("<think>options</think>\n\nAnswer: B", CHOICE, True),
        ("<think>options</think>\n\nI am not sure.", CHOICE, False),
        ("<think>plan</think>\n\n```python\ndef double(x):\n    return 2 * x\n```", CODE, True),
        ("<think>plan</think>\n\n```python\ndef double(x):\n    return 2 * x\n", CODE, False),  # unclosed fence
        ("<think>plan</think>\n\n\\boxed{4}", CODE, False),  # code problem wants code
        ("<think>x</think>\n\n```python\nprint(1)\n```", None, True),  # unknown problem: code or boxed
    ],
)
def test_format_conditions(text: str, problem: Problem | None, ok: bool) -> None:
    assert is_well_formed(text, problem) is ok


def test_format_reward_scores_a_trl_batch_of_several_prompts() -> None:
    fn = FormatReward(PROBLEMS)
    good, bad = msg("<think>\nx\n</think>\n\n\\boxed{4}"), msg("\\boxed{4}")
    out = fn(prompts=[[], [], [], []], completions=[good, bad, good, msg("")], problem_id=["m", "m", "b", "n"])
    assert out == [1.0, 0.0, 1.0, 0.0]
    assert fn.__name__ == "format" and fn.calls == 1


# ----------------------------------------------------------------------------------------- accuracy


def test_accuracy_reward_is_one_zero_or_none_never_rewarding_an_unknown() -> None:
    fn = AccuracyReward(PROBLEMS)
    completions = [
        msg("<think>2 + 2 = 4</think>\n\n\\boxed{4}"),  # correct
        msg("<think>2 + 2 = 5</think>\n\n\\boxed{5}"),  # wrong
        msg("<think>2 + 2 = 4, so \\boxed{4}"),  # cut off inside <think>: no answer given
        msg("<think>hmm</think>\n\n\\boxed{4}"),  # no reference answer: cannot tell
        msg("<think>hmm</think>\n\n\\boxed{4}"),  # unparsable gold: cannot tell
        msg("The answer is 4."),  # no tags: the whole text is the answer part
        msg("<think>x</think>\n\nAnswer: B"),  # multiple choice
        msg("<think>x</think>\n\nAnswer: C"),
    ]
    ids = ["m", "m", "m", "n", "b", "m", "c", "c"]
    out = fn(prompts=[[]] * len(ids), completions=completions, problem_id=ids)
    assert out == [1.0, 0.0, 0.0, None, None, 1.0, 1.0, 0.0]


@pytest.mark.usefixtures("bwrap_sandbox")
def test_accuracy_reward_runs_code_in_the_sandbox() -> None:
    fn = AccuracyReward(PROBLEMS)
    ok = msg("<think>p</think>\n\n```python\ndef double(x):\n    return 2 * x\n```")
    wrong = msg("<think>p</think>\n\n```python\ndef double(x):\n    return x\n```")
    assert fn(prompts=[[], []], completions=[ok, wrong], problem_id=["k", "k"]) == [1.0, 0.0]


def test_answer_part_and_completion_text() -> None:
    assert answer_part("<think>r</think>\n\nA") == "A"
    assert answer_part("<think>cut") == ""
    assert answer_part("plain") == "plain"
    assert completion_text(msg("hi")) == "hi"
    assert completion_text("hi") == "hi"


# ---------------------------------------------------------------------------------- interval reward


def test_interval_reward_uses_the_scorer_per_completion_at_the_boundaries() -> None:
    seen: list[tuple[list[str], list[str]]] = []
    values = {"at-low": 0.3, "at-high": 0.7, "below": 0.29, "above": 0.71, "inside": 0.5, "far": 1.0}

    def score_many(problems, cots):  # type: ignore[no-untyped-def]
        seen.append((list(problems), list(cots)))
        return [values[c] for c in cots]

    logged: dict[str, float] = {}
    fn = IntervalReward("rv", score_many, 0.3, 0.7, PROBLEMS)
    names = list(values)
    out = fn(
        prompts=[[]] * len(names),
        completions=[msg(n) for n in names],
        problem_id=["m"] * len(names),
        problem=["What is 2 + 2?"] * (len(names) - 1) + [None],  # a missing text comes from the problem
        log_metric=lambda k, v: logged.__setitem__(k, v),
    )
    assert out == pytest.approx([0.0, 0.0, -0.01, -0.01, 0.0, -0.3], abs=1e-12)
    assert seen == [(["What is 2 + 2?"] * len(names), names)]
    assert fn.__name__ == "rv"
    assert logged["rv/inside"] == pytest.approx(3 / 6)
    assert logged["rv/f_mean"] == pytest.approx(sum(values.values()) / 6)


def test_interval_reward_rejects_intervals_outside_the_unit_range() -> None:
    with pytest.raises(ValueError):
        IntervalReward("rv", lambda p, c: [], 0.5, 1.2)
    with pytest.raises(ValueError):
        IntervalReward("cd", lambda p, c: [], 0.6, 0.4)


def test_full_reward_of_one_completion_by_hand() -> None:
    """R = w_f·R_format + w_a·R_accuracy + λ_RV·R_RV + λ_CD·R_CD for one completion, by hand."""
    text = "<think>2 + 2 = 4</think>\n\n\\boxed{4}"
    rv = IntervalReward("rv", lambda p, c: [0.9], 0.2, 0.6)  # 0.3 above H
    cd = IntervalReward("cd", lambda p, c: [0.1], 0.25, 0.5)  # 0.15 below L
    terms = [
        FormatReward(PROBLEMS)([[]], [msg(text)], problem_id=["m"])[0],
        AccuracyReward(PROBLEMS)([[]], [msg(text)], problem_id=["m"])[0],
        rv([[]], [msg(text)], problem_id=["m"], problem=["q"])[0],
        cd([[]], [msg(text)], problem_id=["m"], problem=["q"])[0],
    ]
    assert terms == pytest.approx([1.0, 1.0, -0.3, -0.15])
    total = combine(terms, [1.0, 1.0, 0.5, 2.0])
    assert total is not None and math.isclose(total, 1.0 + 1.0 - 0.15 - 0.3)
