"""Prompt templates: worked examples (shots) as prior chat turns, variables checked."""

from __future__ import annotations

import pytest

from kubedistill.prompts import Prompt, PromptError, load_prompt


def test_shots_come_as_prior_turns_between_the_system_message_and_the_problem() -> None:
    messages = load_prompt("generate_fewshot").messages("math", problem="State the final answer: 3 + 4 =")
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert messages[-1]["content"].startswith("State the final answer: 3 + 4 =")
    for answer in messages[2:7:2]:  # each worked example is a short CoT and a boxed answer
        assert answer["content"].startswith("<think>\n") and "</think>\n\n\\boxed{" in answer["content"]
    # no worked example is a one-digit problem of the quickstart's task (nothing held out is shown)
    for question in messages[1:6:2]:
        expression = question["content"].split(":")[1].split("=")[0]
        assert any(len(n.strip()) == 2 for n in expression.replace("-", "+").split("+"))


def test_the_plain_prompt_has_no_shots_and_a_shot_takes_no_variables() -> None:
    assert [m["role"] for m in load_prompt("generate").messages("math", problem="1 + 1")] == ["system", "user"]
    p = Prompt.model_validate(
        {
            "id": "x",
            "version": 1,
            "templates": {"default": {"shots": [{"user": "{{a}}", "assistant": "b"}], "user": "q"}},
        }
    )
    assert p.messages()[0]["content"] == "{{a}}"  # fixed text, sent as written
    with pytest.raises(ValueError):
        Prompt.model_validate(
            {"id": "x", "version": 1, "templates": {"default": {"shots": [{"user": "u"}], "user": "q"}}}
        )
    with pytest.raises(PromptError, match="no prompt named"):
        load_prompt("generate_fewshots")
