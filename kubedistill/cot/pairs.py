"""Stage `pairs`: DPO preference pairs from verified CoTs.

chosen = a verified CoT (by default *medium*); rejected = a corrupted copy of it, with the corruption's
kind and magnitude recorded, at several magnitudes so pairs of varying difficulty exist (a subtle
change makes a hard pair):

* ``number`` — one number in a late reasoning step is changed by ``magnitude`` (relative; at least 1);
  the rest of the CoT is left as it was, so it no longer adds up.
* ``drop_step`` — a run of steps in the second half of the reasoning is removed (``magnitude`` =
  share of the steps removed, at least one; the last step stays).
* ``wrong_conclusion`` — the reasoning is kept, the final answer is changed by ``magnitude``
  (relative; at least 1); kept only if the verifier confirms the new answer is wrong.

With ``per_pair_beta``, each pair gets a DPO beta that grows as the corruption gets subtler
(CogPO-style): ``beta = beta_max - (beta_max - beta_min) * magnitude``.
Deterministic for a given seed: each CoT's corruptions draw from a generator seeded by the seed and the
CoT's id, so a CoT gets the same pairs whatever else is in the input and in whatever order — the pairs of
the shards of a ``dsl.ParallelFor`` (slow-thinking pipeline) are those of one run over all CoTs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from kubedistill.core.config import StrictModel
from kubedistill.core.records import (
    Difficulty,
    PreferencePair,
    Problem,
    Reject,
    Sample,
    StageStats,
    Timer,
    records_by_id,
)
from kubedistill.core.text import last_boxed, split_think
from kubedistill.prompts import format_completion

STAGE = "pairs"
CorruptionKind = Literal["number", "drop_step", "wrong_conclusion"]

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class PairsConfig(StrictModel):
    kinds: list[CorruptionKind] = Field(default_factory=lambda: ["number", "drop_step", "wrong_conclusion"])
    magnitudes: list[float] = Field(default_factory=lambda: [0.1, 0.5, 1.0], min_length=1)
    pairs_per_sample: int = Field(default=2, ge=1)
    difficulties: list[Difficulty] = Field(default_factory=lambda: ["medium"])
    include_unlabelled: bool = Field(default=True, description="CoTs without a difficulty label count as medium")
    per_pair_beta: bool = False
    beta_min: float = Field(default=0.05, gt=0)
    beta_max: float = Field(default=0.5, gt=0)
    seed: int = 0


def steps_of(reasoning: str) -> list[str]:
    lines = [ln for ln in reasoning.splitlines() if ln.strip()]
    if len(lines) >= 2:
        return lines
    return [s for s in _SENTENCE.split(reasoning.strip()) if s]


def _fmt(value: float, like: str) -> str:
    if "." in like:
        decimals = len(like.split(".")[1])
        return f"{value:.{decimals}f}"
    return str(round(value))


def _shift(old: float, magnitude: float, rng: random.Random) -> float:
    delta = max(1.0, abs(old) * magnitude)
    return old + delta if rng.random() < 0.5 or old - delta == old else old - delta


def corrupt_number(
    reasoning: str, answer: str, magnitude: float, rng: random.Random
) -> tuple[str, str, float, str] | None:
    steps = steps_of(reasoning)
    late = [i for i in range(len(steps) // 2, len(steps)) if _NUMBER.search(steps[i])]
    if not late:
        return None
    i = rng.choice(late)
    matches = list(_NUMBER.finditer(steps[i]))
    m = rng.choice(matches)
    old = float(m.group())
    new = _shift(old, magnitude, rng)
    new_text = _fmt(new, m.group())
    if new_text == m.group():
        return None
    steps[i] = steps[i][: m.start()] + new_text + steps[i][m.end() :]
    actual = min(1.0, abs(new - old) / max(abs(old), 1.0))
    return "\n".join(steps), answer, actual, f"step {i + 1}: {m.group()} -> {new_text}"


def corrupt_drop_step(
    reasoning: str, answer: str, magnitude: float, rng: random.Random
) -> tuple[str, str, float, str] | None:
    steps = steps_of(reasoning)
    if len(steps) < 3:
        return None
    first_late, last_droppable = len(steps) // 2, len(steps) - 2  # never the last step
    if last_droppable < first_late:
        first_late = last_droppable
    k = max(1, round(magnitude * (last_droppable - first_late + 1)))
    start = rng.randint(first_late, max(first_late, last_droppable - k + 1))
    end = min(start + k, last_droppable + 1)
    kept = steps[:start] + steps[end:]
    return "\n".join(kept), answer, (end - start) / len(steps), f"dropped steps {start + 1}-{end} of {len(steps)}"


def corrupt_conclusion(
    reasoning: str, answer: str, magnitude: float, rng: random.Random
) -> tuple[str, str, float, str] | None:
    boxed = last_boxed(answer)
    target = boxed if boxed is not None else None
    if target is None:
        nums = list(_NUMBER.finditer(answer))
        if not nums:
            return None
        target = nums[-1].group()
    try:
        old = float(target.replace(",", ""))
    except ValueError:
        return None
    new = _shift(old, magnitude, rng)
    new_text = _fmt(new, target)
    pos = answer.rfind(target)
    new_answer = answer[:pos] + new_text + answer[pos + len(target) :]
    return reasoning, new_answer, min(1.0, abs(new - old) / max(abs(old), 1.0)), f"answer {target} -> {new_text}"


CORRUPTIONS = {"number": corrupt_number, "drop_step": corrupt_drop_step, "wrong_conclusion": corrupt_conclusion}


def make_pairs(
    samples: Iterable[Sample],
    cfg: PairsConfig,
    *,
    problems: Sequence[Problem] | Mapping[str, Problem],
    reject_sink: Callable[[Reject], None] | None = None,
) -> tuple[Any, StageStats]:
    """Stage `pairs`: DPO preference pairs — each verified sample (of the configured difficulties) against
    corrupted copies of it (see the module docstring).

    Input: samples (with ``correct``) and their problems. Output: :class:`PreferencePair` records with
    the corruption's kind, magnitude in [0, 1] and, with ``per_pair_beta``, their own beta; samples that
    give no pair are rejects with the reason. Deterministic for ``cfg.seed``. Given a list, the output is
    a list; given another iterable (the runner's stream), an iterator of pairs made one sample at a time,
    rejects handed to ``reject_sink``: memory does not grow with the input."""
    from kubedistill.verifiers import verify

    stats = StageStats(stage=STAGE)
    stats.stream_rejects(reject_sink)
    by_id = records_by_id(problems)
    kinds_made: dict[str, int] = {}
    magnitudes = 0.0

    def run() -> Iterator[PreferencePair]:
        nonlocal magnitudes
        with Timer() as timer:
            for s in samples:
                stats.n_in += 1
                rec = {"sample_id": s.id}
                difficulty = s.difficulty or ("medium" if cfg.include_unlabelled else None)
                if s.correct is not True:
                    stats.reject("not_correct", f"correct={s.correct}", record=rec)
                    continue
                if difficulty not in cfg.difficulties:
                    stats.reject("not_in_difficulties", f"difficulty={s.difficulty}", record=rec)
                    continue
                chosen = format_completion(s)
                problem = by_id.get(s.problem_id)
                if chosen is None or problem is None:
                    stats.reject("unusable", "no problem or no usable CoT", record=rec)
                    continue
                split = split_think(chosen)
                rng = random.Random(f"{cfg.seed}:{s.id}")  # per CoT: the same pairs in any shard, in any order
                options = [(k, m) for k in cfg.kinds for m in cfg.magnitudes]
                rng.shuffle(options)
                mine: list[PreferencePair] = []
                for kind, magnitude in options:
                    got = CORRUPTIONS[kind](split.reasoning, split.answer_part, magnitude, rng)
                    if got is None:
                        continue
                    reasoning, answer, actual, detail = got
                    rejected = f"<think>\n{reasoning}\n</think>\n\n{answer}"
                    if rejected == chosen:
                        continue
                    if kind == "wrong_conclusion" and verify(problem, answer).correct is not False:
                        continue  # the "wrong" answer is not provably wrong: no pair
                    pid = f"{s.id}::{kind}::{magnitude:g}"
                    if any(p.id == pid for p in mine):
                        continue
                    beta = cfg.beta_max - (cfg.beta_max - cfg.beta_min) * actual if cfg.per_pair_beta else None
                    mine.append(
                        PreferencePair(
                            id=pid,
                            problem_id=s.problem_id,
                            chosen_sample_id=s.id,
                            chosen=chosen,
                            rejected=rejected,
                            corruption=kind,
                            magnitude=round(actual, 4),
                            beta=beta,
                            metadata={"detail": detail},
                        )
                    )
                    kinds_made[kind] = kinds_made.get(kind, 0) + 1
                    if len(mine) >= cfg.pairs_per_sample:
                        break
                if not mine:
                    stats.reject("no_corruption_possible", "no corruption applies to this CoT", record=rec)
                stats.n_out += len(mine)
                magnitudes += sum(p.magnitude for p in mine)
                yield from mine
        stats.elapsed_s = timer.elapsed
        stats.info["kinds"] = kinds_made
        stats.metrics.update({f"pairs.{k}": float(v) for k, v in kinds_made.items()})
        if stats.n_out:
            stats.metrics["pairs.mean_magnitude"] = magnitudes / stats.n_out

    if isinstance(samples, Sequence):
        return list(run()), stats
    return run(), stats
