"""Stage `verify`: set ``correct`` on every CoT and drop the wrong ones.

Math answers are checked with math-verify, code by running the program against the problem's tests in
the sandbox, multiple choice by the letter, reasoning-gym problems by their task's own scorer (see
kubedistill/verifiers). A truncated CoT (finish_reason=length) is never correct, nor is an incomplete one
(empty text, or a finish reason such as ``content_filter``: :attr:`Sample.complete`). Where a problem has no
reference, an LLM judge can decide (``judge_fallback``), and the label says so.

Dropped CoTs are rejects with the reason (``incorrect``, ``truncated``, ``incomplete``, ``unverifiable``) and the
verifier's detail; ``keep_all`` keeps them with ``correct`` set instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pydantic import Field

from kubedistill.chat.config import EndpointConfig
from kubedistill.core.config import StrictModel
from kubedistill.core.records import Judgement, Problem, Sample, SourceFunnel, StageStats, Timer
from kubedistill.core.text import split_think
from kubedistill.verifiers.executors import SandboxConfig

STAGE = "verify"


class VerifyConfig(StrictModel):
    keep_all: bool = Field(default=False, description="keep wrong CoTs (correct=false) instead of dropping")
    keep_unverifiable: bool = Field(default=False, description="keep CoTs whose correctness cannot be told")
    timeout_s: float = Field(default=10.0, gt=0, description="per program run (code problems)")
    memory_mb: int = Field(default=1024, ge=64)
    workers: int = Field(default=2, ge=1, description="parallel checks (sandbox runs, math workers)")
    sandbox: SandboxConfig = Field(
        default_factory=SandboxConfig, description="where code runs: local bubblewrap, or a SandboxFusion service"
    )
    judge_fallback: EndpointConfig | None = Field(
        default=None, description="LLM judge for problems without a reference answer or tests"
    )


def verify_samples(
    samples: Sequence[Sample], cfg: VerifyConfig, *, problems: Sequence[Problem], judge: object | None = None
) -> tuple[list[Sample], StageStats]:
    """Stage `verify`: set ``correct`` on every sample by its problem's verifier (see the module docstring).

    Input: samples and their problems. Output: the correct samples (all of them with ``keep_all``), each
    with its ``judgements["verify"]``; dropped ones are rejects with reason ``incorrect``, ``truncated``
    or ``unverifiable`` and the verifier's detail. ``judge`` is an optional client for the LLM-judge
    fallback. Metrics: counts by verifier method and outcome. Sandboxed code runs are bounded by
    ``cfg.timeout_s`` (seconds) and ``cfg.memory_mb`` (MiB)."""
    from kubedistill.verifiers import Verdict, verify_many

    stats = StageStats(stage=STAGE, n_in=len(samples))
    by_id = {p.id: p for p in problems}
    todo: list[tuple[int, Problem, str]] = []
    verdicts: dict[int, Verdict] = {}
    with Timer() as timer:
        for i, s in enumerate(samples):
            p = by_id.get(s.problem_id)
            if p is None:
                verdicts[i] = Verdict(None, "none", f"no problem {s.problem_id!r} in the problems file")
                continue
            split = split_think(s.text)
            if s.truncated or not split.closed:
                verdicts[i] = Verdict(False, "truncated", "the CoT was cut off (finish_reason=length)")
                continue
            if not s.complete:
                why = "empty text" if not s.text.strip() else f"finish_reason={s.finish_reason}"
                verdicts[i] = Verdict(False, "incomplete", f"not a complete CoT ({why})")
                continue
            todo.append((i, p, split.answer_part))
        for (i, _, _), v in zip(
            todo,
            verify_many(
                [(p, a) for _, p, a in todo],
                workers=cfg.workers,
                timeout_s=cfg.timeout_s,
                memory_mb=cfg.memory_mb,
                sandbox=cfg.sandbox,
            ),
            strict=True,
        ):
            verdicts[i] = v
        if cfg.judge_fallback is not None:
            from kubedistill.cot.judge import judge_correctness

            unknown = [i for i, v in verdicts.items() if v.correct is None and samples[i].problem_id in by_id]
            if unknown:
                judged = judge_correctness(
                    [(by_id[samples[i].problem_id], samples[i]) for i in unknown], cfg.judge_fallback, client=judge
                )
                for i, v in zip(unknown, judged, strict=True):
                    verdicts[i] = v
    out: list[Sample] = []
    methods: Counter[str] = Counter()
    for i, s in enumerate(samples):
        v = verdicts[i]
        methods[v.method] += 1
        s = s.model_copy(deep=True)
        s.correct = v.correct
        s.judgements["correct"] = Judgement(by=v.method, detail=v.detail[:2000])
        if v.correct is True:
            out.append(s)
            continue
        if v.correct is None:
            reason = "unverifiable"
            keep = cfg.keep_all or cfg.keep_unverifiable
        else:
            reason = v.method if v.method in ("truncated", "incomplete") else "incorrect"
            keep = cfg.keep_all
        if keep:
            out.append(s)
        else:
            stats.reject(
                reason,
                v.detail[:500],
                record={"sample_id": s.id, "problem_id": s.problem_id, "final_answer": s.final_answer},
            )
    n_true = sum(1 for v in verdicts.values() if v.correct is True)
    stats.n_out = len(out)
    stats.elapsed_s = timer.elapsed
    stats.metrics["correct_rate"] = n_true / len(samples) if samples else 0.0
    stats.metrics["n_correct"] = float(n_true)
    stats.info["methods"] = dict(methods)
    SourceFunnel.of(stats, samples, out)
    return out, stats
