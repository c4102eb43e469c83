"""Turn records into training rows: the student sees the teacher's prompt and learns the CoT.

A completion is always ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``. CoTs whose teacher did not use
think tags (small instruct models rarely do) are wrapped: the whole text is the reasoning and the
answer is ``\\boxed{final_answer}`` — so every student learns one format, the one the verifiers and
the GRPO format reward read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubedistill.core.records import Problem, Sample, StageStats
from kubedistill.prompts import format_completion, problem_messages


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
