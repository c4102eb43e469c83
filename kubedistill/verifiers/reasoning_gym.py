"""reasoning-gym problems scored by their own task's scorer.

A reasoning-gym problem carries ``metadata["reasoning_gym"] = {"task": <dataset name>, "entry": <the
JSON-safe entry dict>}`` (docs/ARCHITECTURE.md). Guarantees of :func:`verify_reasoning_gym`:

* The answer is the last ``<answer>...</answer>`` of the response (reasoning-gym's own convention),
  else :func:`kubedistill.core.text.extract_final_answer` (last ``\\boxed{}``, "answer is X", last line).
* ``correct`` is ``score >= 1.0`` from the task's ``score_answer(answer=..., entry=...)``; the score is
  in the detail (partial credit, e.g. 0.5, is *not* correct).
* ``correct=None`` when the metadata is malformed, the task is unknown to the installed reasoning-gym,
  or its scorer raises; ``False`` with ``"no answer found"`` when the response has no answer.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from kubedistill.core.records import Problem
from kubedistill.core.text import extract_final_answer
from kubedistill.verifiers.verdict import Verdict

__all__ = ["extract_rg_answer", "verify_reasoning_gym"]

METHOD = "reasoning-gym"
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def verify_reasoning_gym(problem: Problem, response: str) -> Verdict:
    """Score ``response`` with the scorer of the problem's reasoning-gym task. See the module docstring."""
    spec = problem.metadata.get("reasoning_gym")
    if not isinstance(spec, dict) or not isinstance(spec.get("task"), str) or not isinstance(spec.get("entry"), dict):
        return Verdict(None, METHOD, "metadata['reasoning_gym'] needs {'task': str, 'entry': dict}")
    task: str = spec["task"]
    answer = extract_rg_answer(response)
    if answer is None:
        return Verdict(False, METHOD, "no answer found")
    try:
        scorer = _scorer(task)
    except (ValueError, KeyError) as exc:
        return Verdict(None, METHOD, f"unknown reasoning-gym task {task!r}: {exc}")
    try:
        score = float(scorer(answer=answer, entry=spec["entry"]))
    except Exception as exc:  # a scorer bug or an entry it cannot read: cannot tell
        return Verdict(None, METHOD, f"scorer of {task!r} failed: {type(exc).__name__}: {exc}"[:300])
    return Verdict(score >= 1.0, METHOD, f"score={score:.4g} answer={answer[:80]!r}")


def extract_rg_answer(response: str) -> str | None:
    """The answer reasoning-gym should score: last ``<answer>`` tag, else the final answer."""
    tags = _ANSWER_TAG.findall(response)
    if tags:
        return tags[-1].strip()
    return extract_final_answer(response)


@functools.cache
def _scorer(task: str) -> Callable[..., Any]:
    """The task's ``score_answer`` (its dataset built once with the default config, then cached)."""
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)
