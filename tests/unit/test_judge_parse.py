"""Strict parsing of judge replies, on real-looking outputs."""

from __future__ import annotations

import pytest

from kubedistill.cot.judge import parse_difficulty, parse_score, parse_verdict
from kubedistill.prompts import PromptError, load_prompt, render


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("The CoT restates the problem twice and re-checks every step.\n\n<score>7</score>", 7),
        ("Rating: moderately detailed.\n<score> 4 </score>", 4),
        ("I first thought <score>3</score> but on reflection it is longer.\n<score>5</score>", 5),  # last wins
        ("<score>0</score>", 0),
        ("Score: 7", None),  # no tag
        ("<score>10</score>", None),  # not a single digit 0-9
        ("<score>7.5</score>", None),
        ("<score>seven</score>", None),
        ("", None),
        ("**<score>6</score>**", 6),
    ],
)
def test_parse_score(reply: str, score: int | None) -> None:
    assert parse_score(reply) == score


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("It skips the carrying step a small model needs.\n<difficulty>easy</difficulty>", "easy"),
        ("Balanced.\n<difficulty> Medium </difficulty>", "medium"),
        ("<difficulty>hard</difficulty>", "hard"),
        ("difficulty: hard", None),
        ("<difficulty>very hard</difficulty>", None),
    ],
)
def test_parse_difficulty(reply: str, label: str | None) -> None:
    assert parse_difficulty(reply) == label


def test_parse_verdict() -> None:
    assert parse_verdict("Step 3 divides by zero.\n<verdict>0</verdict>") is False
    assert parse_verdict("All steps check out. <verdict>1</verdict>") is True
    assert parse_verdict("correct") is None


def test_prompts_are_versioned_data_and_render_strictly() -> None:
    for name in (
        "judge_difficulty",
        "judge_rv",
        "judge_cd",
        "judge_correct",
        "rewrite_extend",
        "rewrite_simplify",
        "generate",
    ):
        p = load_prompt(name)
        assert p.ref == f"{name}@v{p.version}"
    msgs = load_prompt("judge_rv").messages("math", problem="1+1?", cot="<think>2</think> 2")
    assert "1+1?" in msgs[-1]["content"] and "<score>N</score>" in msgs[-1]["content"]
    assert load_prompt("judge_rv").reask
    with pytest.raises(PromptError, match="has no value"):
        render("{{problem}} and {{cot}}", {"problem": "x"})
    with pytest.raises(PromptError, match="no prompt named"):
        load_prompt("nope")


@pytest.mark.parametrize(
    ("name", "reply", "value"),
    [
        ("rv", "Short and direct.\n<score>2</score>", 2),
        ("cd", "<score>9</score>", 9),
        ("difficulty", "Balanced steps. <difficulty>medium</difficulty>", "medium"),
        ("correct", "The steps hold. <verdict>1</verdict>", True),
    ],
)
def test_constrained_decoding_patterns_admit_only_parsable_replies(name: str, reply: str, value: object) -> None:
    """With ``constrained: true`` the judge's server may only produce replies matching the spec's pattern;
    every such reply parses, and the parser's failure cases cannot be produced."""
    import re

    from kubedistill.cot.judge import SPECS

    spec = SPECS[name]
    assert re.fullmatch(spec.pattern, reply) and spec.parse(reply) == value
    for bad in (
        "<score>10</score>",
        "no tag at all",
        "x" * 201 + "<score>3</score>",
        "<difficulty>trivial</difficulty>",
    ):
        assert not re.fullmatch(spec.pattern, bad)
