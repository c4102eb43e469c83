"""Text primitives every stage shares: a completion's reasoning and answer, the answer, the code.

Split a teacher's output into reasoning and final answer, and put them back together.

Reasoning is the part inside ``<think>…</think>`` (or the server's separate reasoning field); the
answer part is what follows. A ``<think>`` that never closes means the CoT was cut off: there is no
answer part. Output without think tags is all reasoning and all answer part (small models rarely
follow the tag format; the verifier reads the answer from the whole text then).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# "The final answer is 12.", "Answer: 12", "the final answer to the problem is 12. Because ..." — the
# captured answer ends at the end of its sentence (a period followed by a space or the end; not "3.5").
_SENTENCE_END = r"\s*(?:\.(?=\s|$)|$)"
_ANSWER_PATTERNS = [
    re.compile(r"final answer\b[^\n]{0,80}?(?:\bis|=|:)\s*:?\s*([^\n]+?)" + _SENTENCE_END, re.IGNORECASE),
    re.compile(r"\banswer\b[^\n]{0,80}?(?:\bis|=|:)\s*:?\s*([^\n]+?)" + _SENTENCE_END, re.IGNORECASE),
]


@dataclass(frozen=True)
class SplitOutput:
    reasoning: str
    answer_part: str
    closed: bool  # the thinking was closed (or there was none); False = cut off inside <think>


def join_think(reasoning: str, answer: str) -> str:
    """``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``: the one form a CoT with its answer takes on disk
    and in training (the inverse of :func:`split_think` for closed thinking)."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}"


def with_reasoning(content: str | None, reasoning: str | None) -> str:
    """A completion's full text: when the server returned the reasoning in a separate field (vLLM's
    reasoning parsers: ``reasoning_content`` / ``reasoning``), put it back inside think tags before the
    content, so that every stage sees the output as the model produced it."""
    return join_think(reasoning, content or "") if reasoning else (content or "")


def split_think(text: str, reasoning_field: str | None = None) -> SplitOutput:
    if reasoning_field:
        return SplitOutput(reasoning_field.strip(), text.strip(), True)
    if THINK_CLOSE in text:
        before, _, after = text.partition(THINK_CLOSE)
        reasoning = before.split(THINK_OPEN, 1)[1] if THINK_OPEN in before else before
        return SplitOutput(reasoning.strip(), after.strip(), True)
    if THINK_OPEN in text:
        return SplitOutput(text.split(THINK_OPEN, 1)[1].strip(), "", False)
    return SplitOutput(text.strip(), text.strip(), True)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if absent."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = text.find("{", idx)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unbalanced: cut off


def extract_final_answer(answer_part: str) -> str | None:
    """The answer as the model stated it: last boxed expression, else an "answer is X" phrase, else the
    last non-empty line. None when there is no answer part."""
    if not answer_part.strip():
        return None
    boxed = last_boxed(answer_part)
    if boxed is not None:
        return boxed
    for pat in _ANSWER_PATTERNS:
        matches = pat.findall(answer_part)
        if matches:
            return matches[-1].strip().strip("$*").strip()[:500]
    lines = [ln.strip() for ln in answer_part.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else None


_CODE_BLOCK = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(answer_part: str) -> str | None:
    """The last fenced code block (preferring python); None if there is none."""
    blocks = _CODE_BLOCK.findall(answer_part)
    if blocks:
        return blocks[-1].strip("\n")
    # an unclosed fence (cut off): take what is there
    if "```" in answer_part:
        tail = answer_part.rsplit("```", 1)[1]
        tail = tail.split("\n", 1)[1] if "\n" in tail else ""
        return tail.strip("\n") or None
    return None
