"""Evaluate a model behind an OpenAI-compatible endpoint on a set of problems.

For each problem, ``n`` completions (through the teacher client: cache, retries, progress),
each scored by the verifiers; per benchmark: mean accuracy over all samples, pass@k with the unbiased
estimator 1 - C(n-c, k)/C(n, k) averaged over problems, and completion lengths (mean/median, for
correct and incorrect answers) as in the DistilQwen paper's Table 3.

The pieces compose: :func:`build_requests` (the chat requests of one benchmark), the client's
``run``, :func:`score_results` (verdicts → :class:`EvalItem` rows) and :func:`summarize` (items →
:class:`BenchmarkResult`). :func:`evaluate_problems` chains them for one benchmark;
:func:`kubedistill.evaluate.run.evaluate_endpoint` sends several benchmarks as one batch and writes
the outputs.

Counting rules:

* a completion cut off at ``max_tokens`` (``finish_reason=length``, or a ``<think>`` never closed) is
  **incorrect** (``method="truncated"``), never scored on its partial text;
* ``correct=None`` (the verifier cannot tell: no reference, sandbox failure, request failed) is never
  counted correct; it stays in the denominator of accuracy and pass@k and is counted in
  ``n_unscorable`` (``n_failed`` of those are requests that failed after every retry);
* lengths are the server's ``usage.completion_tokens``; failed requests (no completion) are left out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kubedistill import __version__
from kubedistill.chat import ChatClient, ChatRequest, ChatResult
from kubedistill.chat.client import derived_seed
from kubedistill.chat.config import ClientConfig
from kubedistill.core.config import ConfigError, StrictModel, reference
from kubedistill.core.records import Problem
from kubedistill.core.text import extract_final_answer, split_think, with_reasoning
from kubedistill.prompts import problem_messages
from kubedistill.verifiers.executors import SandboxConfig

#: Samples per problem in the peers' protocol (DeepSeek-R1, open-r1, DistilQwen): pass@1 is averaged
#: over this many samples at T=0.6, top_p=0.95. ``--recommended-n`` applies them.
RECOMMENDED_N: dict[str, int] = {"aime2024": 64, "math500": 4, "gpqa_diamond": 8, "livecodebench_v2": 16}

ERROR_METHOD = "error"
TRUNCATED_METHOD = "truncated"


class EvalConfig(StrictModel):
    n: int = Field(default=1, ge=1, description="completions per problem (pass@k's n)")
    n_per_benchmark: dict[str, int] = Field(
        default_factory=dict, description="n for named benchmarks (overrides `n`), e.g. {aime2024: 64}"
    )
    k: list[int] = Field(default_factory=lambda: [1], description="pass@k for each k (k <= n)")
    temperature: float = Field(default=0.6, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=4096, ge=1)
    seed: int | None = 0
    prompt: str = reference("prompt", "generate")
    timeout_s: float = Field(default=10.0, gt=0, description="per program run (code benchmarks)")
    memory_mb: int = 1024
    workers: int = Field(default=2, ge=1, description="parallel checks (sandbox runs, math workers)")
    sandbox: SandboxConfig = Field(
        default_factory=SandboxConfig, description="where code runs: local bubblewrap, or a SandboxFusion service"
    )
    client: ClientConfig = Field(default_factory=ClientConfig)

    @field_validator("k")
    @classmethod
    def _k(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one k")
        if any(k < 1 for k in v):
            raise ValueError(f"every k must be at least 1 (got {v})")
        return sorted(set(v))

    @field_validator("n_per_benchmark")
    @classmethod
    def _per_benchmark(cls, v: dict[str, int]) -> dict[str, int]:
        for name, n in v.items():
            if n < 1:
                raise ValueError(f"n for {name!r} must be at least 1 (got {n})")
        return v

    def n_for(self, benchmark: str) -> int:
        """n for ``benchmark``: its entry in ``n_per_benchmark``, else ``n``."""
        return self.n_per_benchmark.get(benchmark, self.n)

    def check_k(self, benchmarks: Sequence[str]) -> None:
        """Raise :class:`ConfigError` unless every k fits every benchmark's sample count."""
        for b in benchmarks:
            n = self.n_for(b)
            too_big = [k for k in self.k if k > n]
            if too_big:
                raise ConfigError(
                    f"pass@{too_big[0]} needs at least {too_big[0]} samples per problem, but benchmark {b!r} "
                    f"gets {n} (raise --n, or drop k={too_big[0]})"
                )


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
    """Completion tokens (the paper's Table 3): over all completions, the correct and the incorrect ones."""

    mean: float = 0.0
    median: float = 0.0
    mean_correct: float | None = None
    median_correct: float | None = None
    mean_incorrect: float | None = None
    median_incorrect: float | None = None
    n_correct: int = 0
    n_incorrect: int = 0


class BenchmarkResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    benchmark: str
    model: str
    n_problems: int
    n: int
    accuracy: float
    accuracy_stderr: float = Field(
        default=0.0, description="standard error of accuracy over problems (spread of per-problem accuracy)"
    )
    accuracy_ci95: tuple[float, float] = Field(
        default=(0.0, 1.0),
        description="95% interval of accuracy: Wilson's score interval over problems when n=1, else accuracy "
        "± 1.96 standard errors (clipped to [0, 1])",
    )
    pass_at_k: dict[str, float]
    lengths: LengthStats
    answered_rate: float = Field(description="share of completions that finished and stated a final answer")
    n_truncated: int
    n_unscorable: int
    n_failed: int = Field(default=0, description="requests that failed after every retry (counted unscorable)")
    settings: dict[str, Any] = Field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """``results.json`` shape: pass@K keys at the top level beside accuracy and lengths."""
        d: dict[str, Any] = {
            "n_problems": self.n_problems,
            "n": self.n,
            "accuracy": self.accuracy,
            "accuracy_stderr": self.accuracy_stderr,
            "accuracy_ci95": list(self.accuracy_ci95),
            **self.pass_at_k,
            "answered_rate": self.answered_rate,
            "lengths": self.lengths.model_dump(),
            "n_truncated": self.n_truncated,
            "n_unscorable": self.n_unscorable,
            "n_failed": self.n_failed,
            "model": self.model,
            "settings": self.settings,
        }
        return d

    @classmethod
    def from_flat(cls, benchmark: str, d: Mapping[str, Any]) -> BenchmarkResult:
        """Inverse of :meth:`flat` (reads a ``results.json`` entry)."""
        return cls(
            benchmark=benchmark,
            model=str(d.get("model", "")),
            n_problems=int(d["n_problems"]),
            n=int(d["n"] if "n" in d else d["samples"]),  # "samples": results written before 0.2
            accuracy=float(d["accuracy"]),
            accuracy_stderr=float(d.get("accuracy_stderr", 0.0)),
            accuracy_ci95=tuple(d.get("accuracy_ci95") or (0.0, 1.0)),  # type: ignore[arg-type]
            pass_at_k={k: float(v) for k, v in d.items() if k.startswith("pass@")},
            lengths=LengthStats.model_validate(d.get("lengths") or {}),
            answered_rate=float(d.get("answered_rate", 0.0)),
            n_truncated=int(d.get("n_truncated", 0)),
            n_unscorable=int(d.get("n_unscorable", 0)),
            n_failed=int(d.get("n_failed", 0)),
            settings=dict(d.get("settings") or {}),
        )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem (got {n})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _mean_median(xs: list[int]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return float(statistics.fmean(xs)), float(statistics.median(xs))


def _length_stats(items: Sequence[EvalItem]) -> LengthStats:
    done = [i for i in items if i.method != ERROR_METHOD]  # a failed request has no completion
    ok = [i.completion_tokens for i in done if i.correct is True]
    bad = [i.completion_tokens for i in done if i.correct is False]
    m, md = _mean_median([i.completion_tokens for i in done])
    mc, mdc = _mean_median(ok)
    mi, mdi = _mean_median(bad)
    return LengthStats(
        mean=m or 0.0,
        median=md or 0.0,
        mean_correct=mc,
        median_correct=mdc,
        mean_incorrect=mi,
        median_incorrect=mdi,
        n_correct=len(ok),
        n_incorrect=len(bad),
    )


def per_problem_accuracy(items: Sequence[EvalItem]) -> dict[str, float]:
    """problem id → share of its samples that are correct."""
    by_problem: dict[str, list[EvalItem]] = {}
    for it in items:
        by_problem.setdefault(it.problem_id, []).append(it)
    return {pid: sum(1 for i in v if i.correct is True) / len(v) for pid, v in by_problem.items()}


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion (95% for z=1.96); (0, 1) without trials.
    Unlike the normal interval it stays inside [0, 1] and is not empty at 0 or ``trials`` successes."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(items: Sequence[EvalItem], z: float = 1.96) -> tuple[float, float]:
    """The 95% interval of accuracy: Wilson over problems when every problem has one sample (greedy pass@1),
    else accuracy ± z standard errors of the per-problem accuracies, clipped to [0, 1]."""
    per_problem = list(per_problem_accuracy(items).values())
    if not per_problem:
        return 0.0, 1.0
    if len(per_problem) == len(items):
        return wilson_interval(sum(1 for i in items if i.correct is True), len(items), z)
    acc = sum(1 for i in items if i.correct is True) / len(items)
    half = z * stderr_of_mean(per_problem)
    return max(0.0, acc - half), min(1.0, acc + half)


def stderr_of_mean(xs: Sequence[float]) -> float:
    """Standard error of the mean of ``xs`` (0 for fewer than two values)."""
    if len(xs) < 2:
        return 0.0
    return float(statistics.stdev(xs) / math.sqrt(len(xs)))


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
        n=cfg.n_for(benchmark),
        accuracy=sum(1 for i in items if i.correct is True) / len(items) if items else 0.0,
        accuracy_stderr=stderr_of_mean(list(per_problem_accuracy(items).values())),
        accuracy_ci95=accuracy_interval(items),
        pass_at_k=pass_k,
        lengths=_length_stats(items),
        answered_rate=(
            sum(1 for i in items if i.final_answer and i.finish_reason != "length") / len(items) if items else 0.0
        ),
        n_truncated=sum(1 for i in items if i.finish_reason == "length" or i.method == TRUNCATED_METHOD),
        n_unscorable=len(items) - len(scored),
        n_failed=sum(1 for i in items if i.method == ERROR_METHOD),
        settings={
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_tokens,
            "n": cfg.n_for(benchmark),
            "k": list(cfg.k),
            "seed": cfg.seed,
            "prompt": cfg.prompt,
            "harness": f"kubedistill {__version__}",
        },
    )


def build_requests(problems: Sequence[Problem], cfg: EvalConfig, *, model: str, benchmark: str) -> list[ChatRequest]:
    """``n_for(benchmark)`` chat requests per problem for endpoint label ``model``; each request's
    ``tag`` is its Problem. Each sample gets its own derived seed (identical seeds give identical samples)."""
    n = cfg.n_for(benchmark)
    requests = []
    for p in problems:
        messages = problem_messages(p, cfg.prompt)
        for i in range(n):
            params: dict[str, Any] = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
            if cfg.seed is not None:
                params["seed"] = derived_seed(cfg.seed, p.id, i)
            requests.append(ChatRequest(endpoint=model, messages=messages, params=params, sample_index=i, tag=p))
    return requests


def score_results(results: Sequence[ChatResult], cfg: EvalConfig, *, model: str, benchmark: str) -> list[EvalItem]:
    """Verify each completion against its problem (the request's ``tag``); one :class:`EvalItem` each."""
    from kubedistill.verifiers import Verdict, verify_many

    to_check: list[tuple[Problem, str]] = []
    slots: list[int] = []
    verdicts: dict[int, Verdict] = {}
    texts: dict[int, tuple[str, str | None]] = {}
    for j, r in enumerate(results):
        text = with_reasoning(r.content, r.reasoning)
        split = split_think(text)
        final = extract_final_answer(split.answer_part) if split.closed else None
        texts[j] = (text, final)
        if not r.ok:
            verdicts[j] = Verdict(None, ERROR_METHOD, r.error or "request failed")
        elif r.finish_reason == "length" or not split.closed:
            verdicts[j] = Verdict(False, TRUNCATED_METHOD, "cut off at max_tokens")
        else:
            to_check.append((r.request.tag, split.answer_part))
            slots.append(j)
    checked = verify_many(
        to_check, workers=cfg.workers, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, sandbox=cfg.sandbox
    )
    for j, v in zip(slots, checked, strict=True):
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
    return items


def evaluate_problems(
    problems: Sequence[Problem],
    cfg: EvalConfig,
    *,
    client: ChatClient,
    model: str,
    benchmark: str,
) -> tuple[list[EvalItem], BenchmarkResult]:
    """Sample ``cfg.n_for(benchmark)`` completions per problem from endpoint ``model`` of
    ``client``; score them."""
    n = cfg.n_for(benchmark)
    for k in cfg.k:
        if k > n:
            raise ValueError(f"pass@{k} needs --n >= {k} (got {n})")
    requests = build_requests(problems, cfg, model=model, benchmark=benchmark)
    results = client.run(requests, desc=f"evaluate {benchmark}")
    items = score_results(results, cfg, model=model, benchmark=benchmark)
    return items, summarize(items, benchmark, model, cfg)
