"""Turn records into training rows: the student sees the teacher's prompt and learns the CoT.

A completion is always ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``. CoTs whose teacher did not use
think tags (small instruct models rarely do) are wrapped: the whole text is the reasoning and the
answer is ``\\boxed{final_answer}`` — so every student learns one format, the one the verifiers and
the GRPO format reward read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubedistill.cot.generate import problem_messages
from kubedistill.cot.parse import THINK_CLOSE, split_think
from kubedistill.records import Problem, Sample, StageStats


def format_completion(sample: Sample) -> str | None:
    """The assistant turn the student learns, or None when the sample has nothing usable."""
    split = split_think(sample.text)
    if THINK_CLOSE in sample.text:
        if not split.reasoning or not split.answer_part:
            return None
        return f"<think>\n{split.reasoning}\n</think>\n\n{split.answer_part}"
    if not sample.text.strip():
        return None
    answer = f"\\boxed{{{sample.final_answer}}}" if sample.final_answer else sample.text.strip().splitlines()[-1]
    return f"<think>\n{sample.text.strip()}\n</think>\n\n{answer}"


def sft_rows(
    samples: Sequence[Sample], problems: Sequence[Problem], stats: StageStats, prompt: str = "generate"
) -> list[dict[str, Any]]:
    """Conversational prompt-completion rows (TRL trains on the completion only)."""
    by_id = {p.id: p for p in problems}
    rows = []
    for s in samples:
        p = by_id.get(s.problem_id)
        if p is None:
            stats.reject("unknown_problem", f"no problem {s.problem_id!r}", record={"sample_id": s.id})
            continue
        if s.truncated:
            stats.reject("truncated", "finish_reason=length: the CoT was cut off", record={"sample_id": s.id})
            continue
        completion = format_completion(s)
        if completion is None:
            stats.reject("empty_cot", "no reasoning or no answer", record={"sample_id": s.id})
            continue
        rows.append(
            {
                "prompt": problem_messages(p, prompt),
                "completion": [{"role": "assistant", "content": completion}],
                "sample_id": s.id,
                "difficulty": s.difficulty or "medium",
            }
        )
    return rows
