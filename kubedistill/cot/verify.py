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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import Field

from kubedistill.chat.config import EndpointConfig
from kubedistill.core.config import StrictModel
from kubedistill.core.records import (
    Judgement,
    Problem,
    Reject,
    Sample,
    SourceFunnel,
    StageStats,
    Timer,
    chunked,
    records_by_id,
)
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
    chunk_size: int = Field(
        default=1000, ge=1, description="CoTs read, checked and written at a time (memory is bounded by it)"
    )


def verify_samples(
    samples: Iterable[Sample],
    cfg: VerifyConfig,
    *,
    problems: Sequence[Problem] | Mapping[str, Problem],
    judge: object | None = None,
    reject_sink: Callable[[Reject], None] | None = None,
) -> tuple[Any, StageStats]:
    """Stage `verify`: set ``correct`` on every sample by its problem's verifier (see the module docstring).

    Input: samples and their problems. Output: the correct samples (all of them with ``keep_all``), each
    with its ``judgements["verify"]``; dropped ones are rejects with reason ``incorrect``, ``truncated``
    or ``unverifiable`` and the verifier's detail. ``judge`` is an optional client for the LLM-judge
    fallback. Metrics: counts by verifier method and outcome, per source. Sandboxed code runs are bounded
    by ``cfg.timeout_s`` (seconds) and ``cfg.memory_mb`` (MiB).

    Samples are verified ``cfg.chunk_size`` at a time. Given a list, the output is a list; given any other
    iterable (the runner's :class:`~kubedistill.core.records.RecordStream`), it is an iterator that reads,
    checks and yields one chunk at a time, with rejects handed to ``reject_sink`` — resident memory does
    not grow with the input; ``stats`` is complete once the iterator is exhausted."""
    stats = StageStats(stage=STAGE)
    stats.stream_rejects(reject_sink)
    by_id = records_by_id(problems)
    funnel = SourceFunnel()
    methods: Counter[str] = Counter()
    n_true = 0

    def run() -> Iterator[Sample]:
        nonlocal n_true
        for chunk in chunked(samples, cfg.chunk_size):
            with Timer() as timer:
                stats.n_in += len(chunk)
                out = _verify_chunk(chunk, cfg, by_id, judge, stats, methods, funnel)
            stats.elapsed_s += timer.elapsed
            n_true += sum(1 for s in chunk if s.correct is True)
            yield from out
        stats.metrics["correct_rate"] = n_true / stats.n_in if stats.n_in else 0.0
        stats.metrics["n_correct"] = float(n_true)
        stats.info["methods"] = dict(methods)
        funnel.into(stats)

    if isinstance(samples, Sequence):
        return list(run()), stats
    return run(), stats


def _verify_chunk(
    chunk: list[Sample],
    cfg: VerifyConfig,
    by_id: Mapping[str, Problem],
    judge: object | None,
    stats: StageStats,
    methods: Counter[str],
    funnel: SourceFunnel,
) -> list[Sample]:
    """Verify one chunk; sets ``correct`` on the chunk's own copies (``chunk`` is replaced by them)."""
    from kubedistill.verifiers import Verdict, verify_many

    todo: list[tuple[int, Problem, str]] = []
    verdicts: dict[int, Verdict] = {}
    for i, s in enumerate(chunk):
        funnel.add_in(s)
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

        unknown = [i for i, v in verdicts.items() if v.correct is None and chunk[i].problem_id in by_id]
        if unknown:
            judged = judge_correctness(
                [(by_id[chunk[i].problem_id], chunk[i]) for i in unknown], cfg.judge_fallback, client=judge
            )
            for i, v in zip(unknown, judged, strict=True):
                verdicts[i] = v
    out: list[Sample] = []
    for i, s in enumerate(chunk):
        v = verdicts[i]
        methods[v.method] += 1
        s = s.model_copy(deep=True)
        s.correct = v.correct
        s.judgements["correct"] = Judgement(by=v.method, detail=v.detail[:2000])
        chunk[i] = s
        if v.correct is True:
            out.append(s)
            funnel.add_out(s)
            continue
        if v.correct is None:
            reason = "unverifiable"
            keep = cfg.keep_all or cfg.keep_unverifiable
        else:
            reason = v.method if v.method in ("truncated", "incomplete") else "incorrect"
            keep = cfg.keep_all
        if keep:
            out.append(s)
            funnel.add_out(s)
        else:
            stats.reject(
                reason,
                v.detail[:500],
                record={"sample_id": s.id, "problem_id": s.problem_id, "final_answer": s.final_answer},
            )
    stats.n_out += len(out)
    return out
