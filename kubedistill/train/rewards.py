"""GRPO reward functions: format, accuracy (our verifiers) and interval penalties on distilled scores.

The reward of a completion ``c`` for problem ``x`` is

    R(x, c) = w_format·R_format(c) + w_accuracy·R_accuracy(x, c) + λ_RV·R_RV(x, c) + λ_CD·R_CD(x, c)

summed over the terms that apply (a term that returns ``None`` — "cannot tell" — adds nothing, as TRL
sums rewards with ``nansum``; a completion for which every term is ``None`` gets no advantage).

**R_format** ∈ {0, 1} is 1 exactly when all of these hold for the completion text ``c``:

1. ``c`` contains exactly one ``</think>``;
2. ``c`` contains at most one ``<think>``, and if present it is the first thing in ``c`` (leading
   whitespace aside) — a chat template may put ``<think>`` in the prompt, so it may be absent;
3. the reasoning between ``<think>`` (or the start) and ``</think>`` is not blank;
4. the answer part after ``</think>`` states a final answer in the form the verifier reads: a closed
   fenced code block for code problems (``problem.tests`` set or ``domain == "code"``), a choice
   letter (:func:`kubedistill.verifiers.extract_choice`) for multiple choice, otherwise a
   ``\\boxed{...}`` with balanced braces.

**R_accuracy** ∈ {0, 1, None}: :func:`kubedistill.verifiers.verify` on the answer part (the text after
``</think>``; the whole text when there are no think tags; empty when ``<think>`` never closes, i.e.
the completion was cut off — that is wrong, 0.0). 1.0 correct, 0.0 wrong, ``None`` when the verifier
cannot tell (no reference, unparsable gold): an unknown is never rewarded.

**R_X** for X ∈ {RV, CD} (reasoning verbosity, cognitive difficulty), with ``f_X(x, c)`` ∈ [0, 1] the
reward model's prediction (the judge's 0-9 score / 9) and a target interval [L_X, H_X] ⊆ [0, 1]:

    R_X = -| f_X - clip(f_X, L_X, H_X) |

zero inside the interval (boundaries included), falling linearly with the distance outside it.

Every function here follows TRL's reward signature ``fn(prompts, completions, **columns) ->
list[float | None]`` (``completions[i]`` is ``[{"role": "assistant", "content": ...}]`` or a string);
TRL passes the whole per-process batch (several prompts x their generations) and the dataset's other
columns as lists — here ``problem_id`` (required) and ``problem`` (the problem text).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubedistill.core.records import Problem
from kubedistill.core.text import THINK_CLOSE, THINK_OPEN, extract_code, last_boxed, split_think

log = logging.getLogger(__name__)

ScoreMany = Callable[[Sequence[str], Sequence[str]], list[float]]


def completion_text(completion: Any) -> str:
    """The text of one completion as TRL passes it (a message list or a plain string)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant")
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    raise TypeError(f"unexpected completion type {type(completion).__name__}")


# ------------------------------------------------------------------------------------------------ maths


def interval_penalty(f: float, low: float, high: float) -> float:
    """``-|f - clip(f, low, high)|``: 0 inside [low, high] (boundaries included), linear outside."""
    if low > high:
        raise ValueError(f"empty interval [{low}, {high}]")
    return -abs(f - min(max(f, low), high))


def combine(terms: Sequence[float | None], weights: Sequence[float]) -> float | None:
    """Σ w_i·r_i over the terms that are not None (TRL's nansum); None when every term is None."""
    if len(terms) != len(weights):
        raise ValueError("one weight per term")
    known = [(r, w) for r, w in zip(terms, weights, strict=True) if r is not None and not math.isnan(r)]
    if not known:
        return None
    return sum(w * r for r, w in known)


def is_well_formed(text: str, problem: Problem | None = None) -> bool:
    """The R_format conditions (module docstring), for one completion text."""
    if text.count(THINK_CLOSE) != 1 or text.count(THINK_OPEN) > 1:
        return False
    if THINK_OPEN in text and not text.lstrip().startswith(THINK_OPEN):
        return False
    split = split_think(text)
    if not split.closed or not split.reasoning.strip() or not split.answer_part.strip():
        return False
    return has_final_answer(split.answer_part, problem)


def has_final_answer(answer_part: str, problem: Problem | None = None) -> bool:
    """Does the answer part state an answer in the form the problem's verifier reads?"""
    if problem is not None and (problem.tests is not None or problem.domain == "code"):
        return _closed_code_block(answer_part)
    if problem is not None and problem.choices:
        from kubedistill.verifiers import extract_choice

        return extract_choice(answer_part, problem.choices) is not None
    if problem is None and _closed_code_block(answer_part):
        return True
    boxed = last_boxed(answer_part)
    return boxed is not None and bool(boxed.strip())


def _closed_code_block(text: str) -> bool:
    return text.count("```") >= 2 and bool((extract_code(text) or "").strip())


def answer_part(text: str) -> str:
    """What the verifier reads: after ``</think>``; all of it without tags; nothing when cut off."""
    split = split_think(text)
    return split.answer_part if split.closed else ""


# ------------------------------------------------------------------------------ TRL reward functions


class _RewardFunction:
    """Base: resolves each completion's problem from the ``problem_id`` column."""

    __name__ = "reward"

    def __init__(self, problems: Mapping[str, Problem] | None = None) -> None:
        self.problems = dict(problems or {})
        self.calls = 0  # how many batches it scored (for stats and tests)

    def _problem(self, problem_id: Any) -> Problem | None:
        if problem_id is None:
            return None
        p = self.problems.get(str(problem_id))
        if p is None and self.problems:
            log.warning("%s: unknown problem id %r", self.__name__, problem_id)
        return p

    @staticmethod
    def _column(columns: Mapping[str, Any], name: str, n: int) -> list[Any]:
        values = columns.get(name)
        if values is None:
            return [None] * n
        if len(values) != n:
            raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
        return list(values)


class FormatReward(_RewardFunction):
    """R_format ∈ {0, 1} (see the module docstring)."""

    __name__ = "format"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.calls += 1
        ids = self._column(columns, "problem_id", len(completions))
        return [
            1.0 if is_well_formed(completion_text(c), self._problem(pid)) else 0.0
            for c, pid in zip(completions, ids, strict=True)
        ]


class AccuracyReward(_RewardFunction):
    """R_accuracy ∈ {0, 1, None} from :func:`kubedistill.verifiers.verify` (code runs in the sandbox)."""

    __name__ = "accuracy"

    def __init__(self, problems: Mapping[str, Problem], *, workers: int = 2, timeout_s: float = 10.0) -> None:
        super().__init__(problems)
        self.workers = workers
        self.timeout_s = timeout_s

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        from kubedistill.verifiers import verify_many

        self.calls += 1
        ids = self._column(columns, "problem_id", len(completions))
        items, where = [], []
        out: list[float | None] = [None] * len(completions)
        for i, (c, pid) in enumerate(zip(completions, ids, strict=True)):
            problem = self._problem(pid)
            if problem is None:
                continue  # no problem, no reference: cannot tell
            items.append((problem, answer_part(completion_text(c))))
            where.append(i)
        for i, verdict in zip(where, verify_many(items, workers=self.workers, timeout_s=self.timeout_s), strict=True):
            out[i] = None if verdict.correct is None else float(verdict.correct)
        metric = columns.get("log_metric")
        known = [r for r in out if r is not None]
        if callable(metric) and out:
            metric("accuracy/unknown_fraction", 1.0 - len(known) / len(out))
        return out


class IntervalReward(_RewardFunction):
    """R_X = -|f_X - clip(f_X, L, H)| with ``f_X`` from a reward model (a batched scorer)."""

    def __init__(
        self,
        name: str,
        score_many: ScoreMany,
        low: float,
        high: float,
        problems: Mapping[str, Problem] | None = None,
    ) -> None:
        super().__init__(problems)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"{name}: need 0 <= low <= high <= 1, got [{low}, {high}]")
        self.__name__ = name
        self.score_many = score_many
        self.low, self.high = low, high

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.calls += 1
        n = len(completions)
        texts = self._column(columns, "problem", n)
        ids = self._column(columns, "problem_id", n)
        problem_texts = []
        for text, pid in zip(texts, ids, strict=True):
            if text is None:
                p = self._problem(pid)
                text = p.problem if p is not None else ""
            problem_texts.append(str(text))
        scores = self.score_many(problem_texts, [completion_text(c).strip() for c in completions])
        metric = columns.get("log_metric")
        if callable(metric) and scores:
            metric(f"{self.__name__}/f_mean", sum(scores) / len(scores))
            metric(f"{self.__name__}/inside", sum(self.low <= s <= self.high for s in scores) / len(scores))
        return [interval_penalty(float(s), self.low, self.high) for s in scores]
