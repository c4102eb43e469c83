"""Evaluate a model behind an OpenAI-compatible endpoint on a set of problems.

For each problem, ``samples`` completions (through the teacher client: cache, retries, progress),
each scored by the verifiers; per benchmark: mean accuracy over all samples, pass@k with the unbiased
estimator 1 - C(n-c, k)/C(n, k) averaged over problems, and completion lengths (mean/median, for
correct and incorrect answers) as in the DistilQwen paper's Table 3.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kubedistill.config import ClientConfig, StrictModel
from kubedistill.cot.generate import derived_seed, problem_messages
from kubedistill.cot.parse import extract_final_answer, split_think
from kubedistill.records import Problem
from kubedistill.teacher import ChatRequest, TeacherClient


class EvalConfig(StrictModel):
    samples: int = Field(default=1, ge=1, description="completions per problem (n)")
    k: list[int] = Field(default_factory=lambda: [1], description="pass@k for each k (k <= samples)")
    temperature: float = Field(default=0.6, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=4096, ge=1)
    seed: int | None = 0
    prompt: str = "generate"
    timeout_s: float = Field(default=10.0, gt=0, description="per program run (code benchmarks)")
    memory_mb: int = 1024
    workers: int = 2
    client: ClientConfig = Field(default_factory=ClientConfig)


class EvalItem(BaseModel):
    """One scored completion (the per-item JSONL rows)."""

    model_config = ConfigDict(extra="forbid")
    benchmark: str
    model: str
    problem_id: str
    sample_index: int
    text: str
    final_answer: str | None
    correct: bool | None
    method: str
    detail: str = ""
    completion_tokens: int
    finish_reason: str | None


class LengthStats(BaseModel):
    mean: float = 0.0
    median: float = 0.0
    mean_correct: float | None = None
    median_correct: float | None = None
    mean_incorrect: float | None = None
    median_incorrect: float | None = None


class BenchmarkResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    benchmark: str
    model: str
    n_problems: int
    samples: int
    accuracy: float
    pass_at_k: dict[str, float]
    lengths: LengthStats
    answered_rate: float = Field(description="share of completions that finished and stated a final answer")
    n_truncated: int
    n_unscorable: int
    settings: dict[str, Any] = Field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """``results.json`` shape: pass@K keys at the top level beside accuracy and lengths."""
        d: dict[str, Any] = {
            "n_problems": self.n_problems,
            "samples": self.samples,
            "accuracy": self.accuracy,
            **self.pass_at_k,
            "answered_rate": self.answered_rate,
            "lengths": self.lengths.model_dump(),
            "n_truncated": self.n_truncated,
            "n_unscorable": self.n_unscorable,
            "model": self.model,
            "settings": self.settings,
        }
        return d


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem (got {n})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _length_stats(items: Sequence[EvalItem]) -> LengthStats:
    def mean_median(xs: list[int]) -> tuple[float | None, float | None]:
        if not xs:
            return None, None
        return float(statistics.fmean(xs)), float(statistics.median(xs))

    all_ = [i.completion_tokens for i in items]
    ok = [i.completion_tokens for i in items if i.correct is True]
    bad = [i.completion_tokens for i in items if i.correct is False]
    m, md = mean_median(all_)
    mc, mdc = mean_median(ok)
    mi, mdi = mean_median(bad)
    return LengthStats(
        mean=m or 0.0, median=md or 0.0, mean_correct=mc, median_correct=mdc, mean_incorrect=mi, median_incorrect=mdi
    )


def summarize(items: Sequence[EvalItem], benchmark: str, model: str, cfg: EvalConfig) -> BenchmarkResult:
    by_problem: dict[str, list[EvalItem]] = {}
    for it in items:
        by_problem.setdefault(it.problem_id, []).append(it)
    pass_k: dict[str, float] = {}
    for k in cfg.k:
        vals = [pass_at_k(len(v), sum(1 for i in v if i.correct is True), k) for v in by_problem.values()]
        pass_k[f"pass@{k}"] = float(statistics.fmean(vals)) if vals else 0.0
    scored = [i for i in items if i.correct is not None]
    return BenchmarkResult(
        benchmark=benchmark,
        model=model,
        n_problems=len(by_problem),
        samples=cfg.samples,
        accuracy=sum(1 for i in items if i.correct is True) / len(items) if items else 0.0,
        pass_at_k=pass_k,
        lengths=_length_stats(items),
        answered_rate=(
            sum(1 for i in items if i.final_answer and i.finish_reason != "length") / len(items) if items else 0.0
        ),
        n_truncated=sum(1 for i in items if i.finish_reason == "length"),
        n_unscorable=len(items) - len(scored),
        settings={
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_tokens,
            "samples": cfg.samples,
            "seed": cfg.seed,
            "prompt": cfg.prompt,
        },
    )


def evaluate_problems(
    problems: Sequence[Problem],
    cfg: EvalConfig,
    *,
    client: TeacherClient,
    model: str,
    benchmark: str,
) -> tuple[list[EvalItem], BenchmarkResult]:
    """Sample ``cfg.samples`` completions per problem from endpoint ``model`` of ``client``; score them."""
    from kubedistill.verifiers import Verdict, verify_many

    for k in cfg.k:
        if k > cfg.samples:
            raise ValueError(f"pass@{k} needs --samples >= {k} (got {cfg.samples})")
    requests = []
    for p in problems:
        messages = problem_messages(p, cfg.prompt)
        for i in range(cfg.samples):
            params: dict[str, Any] = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
            if cfg.seed is not None:
                params["seed"] = derived_seed(cfg.seed, p.id, i)
            requests.append(ChatRequest(teacher=model, messages=messages, params=params, sample_index=i, tag=p))
    results = client.run(requests, desc=f"evaluate {benchmark}")
    to_check: list[tuple[Problem, str]] = []
    slots: list[int] = []
    verdicts: dict[int, Verdict] = {}
    texts: dict[int, tuple[str, str | None]] = {}
    for j, r in enumerate(results):
        text = r.content or ""
        if r.reasoning:
            text = f"<think>\n{r.reasoning}\n</think>\n\n{text}"
        split = split_think(text)
        final = extract_final_answer(split.answer_part) if split.closed else None
        texts[j] = (text, final)
        if not r.ok:
            verdicts[j] = Verdict(None, "error", r.error or "request failed")
        elif r.finish_reason == "length" or not split.closed:
            verdicts[j] = Verdict(False, "truncated", "cut off at max_tokens")
        else:
            to_check.append((r.request.tag, split.answer_part))
            slots.append(j)
    for j, v in zip(
        slots, verify_many(to_check, workers=cfg.workers, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb), strict=True
    ):
        verdicts[j] = v
    items = []
    for j, r in enumerate(results):
        text, final = texts[j]
        v = verdicts[j]
        items.append(
            EvalItem(
                benchmark=benchmark,
                model=model,
                problem_id=r.request.tag.id,
                sample_index=r.request.sample_index,
                text=text,
                final_answer=final,
                correct=v.correct,
                method=v.method,
                detail=v.detail[:1000],
                completion_tokens=r.completion_tokens,
                finish_reason=r.finish_reason,
            )
        )
    return items, summarize(items, benchmark, model, cfg)
