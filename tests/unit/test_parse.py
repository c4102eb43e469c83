from __future__ import annotations

import pytest

from kubedistill.core.text import extract_code, extract_final_answer, last_boxed, split_think


def test_split_think_forms() -> None:
    s = split_think("<think>\nstep 1\n</think>\n\nThe answer is \\boxed{4}.")
    assert (s.reasoning, s.answer_part, s.closed) == ("step 1", "The answer is \\boxed{4}.", True)
    # the template put <think> in the prompt: only the closing tag is in the output
    assert split_think("step 1\n</think> 4").reasoning == "step 1"
    cut = split_think("<think>\nstep 1, step 2")
    assert cut.closed is False and cut.answer_part == ""
    plain = split_think("2 + 2 = 4. The answer is 4.")
    assert plain.reasoning == plain.answer_part and plain.closed
    field = split_think("The answer is 4.", reasoning_field="thinking")
    assert (field.reasoning, field.answer_part) == ("thinking", "The answer is 4.")


def test_last_boxed_balances_braces_and_detects_cut_off() -> None:
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\frac{1}{2}") is None
    assert last_boxed("no box") is None


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("So \\boxed{12}.", "12"),
        ("So, the final answer to the given arithmetic problem is 10.", "10"),
        ("Therefore, the final answer to the problem is 4. In terms of pairs, 4 is even.", "4"),
        ("So, the answer is: 22.", "22"),
        ("Final answer: 5", "5"),
        ("the answer is 3.5.", "3.5"),
        ("Answer: **B**", "B"),
        ("blah\n12", "12"),
        ("   ", None),
    ],
)
def test_extract_final_answer(text: str, answer: str | None) -> None:
    assert extract_final_answer(text) == answer


def test_extract_code_takes_the_last_block_and_an_unclosed_one() -> None:
    assert extract_code("```python\na = 1\n```\ntext\n```python\nb = 2\n```") == "b = 2"
    assert extract_code("```python\nprint(1)\n") == "print(1)"
    assert extract_code("no code") is None
