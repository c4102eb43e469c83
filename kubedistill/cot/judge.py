"""LLM judges: CoT difficulty for the student (slow thinking), reasoning verbosity (RV) and cognitive
difficulty (CD) scores 0-9 (adaptive thinking), and logical correctness (the verifier's fallback).

Every judge call goes through the teacher client (cache, retries, progress). A judge's reply is parsed
strictly: the label must appear exactly as ``<difficulty>medium</difficulty>``, ``<score>7</score>`` or
``<verdict>1</verdict>`` (the last one in the reply counts); anything else is re-asked, at most
``max_reasks`` times, with the prompt's re-ask message after the bad reply. Every label records which
judge model and prompt version produced it, the raw reply and the number of attempts
(``Sample.judgements``). A reply that is not a finished answer (empty, ``content_filter``, no finish
reason) counts as unparsable. A CoT the judge never labelled keeps its field unset and is counted
(``unparsable``) — never silently dropped or given a made-up label.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from kubedistill.chat import ChatClient, ChatRequest
from kubedistill.chat.config import ClientConfig, EndpointConfig
from kubedistill.core.config import ConfigError, StrictModel
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
from kubedistill.prompts import Prompt, load_prompt

_DIFFICULTY = re.compile(r"<difficulty>\s*(easy|medium|hard)\s*</difficulty>", re.IGNORECASE)
_SCORE = re.compile(r"<score>\s*(\d)\s*</score>")
_VERDICT = re.compile(r"<verdict>\s*([01])\s*</verdict>")


def parse_difficulty(text: str) -> str | None:
    found = _DIFFICULTY.findall(text or "")
    return found[-1].lower() if found else None


def parse_score(text: str) -> int | None:
    """``<score>N</score>`` with N a single digit 0-9 (the last one in the reply); else None."""
    found = _SCORE.findall(text or "")
    return int(found[-1]) if found else None


def parse_verdict(text: str) -> bool | None:
    found = _VERDICT.findall(text or "")
    return found[-1] == "1" if found else None


class JudgeConfig(StrictModel):
    """Which model judges, and how it is asked."""

    judge: EndpointConfig | None = Field(default=None, description="judge endpoint; None: the recipe's first teacher")
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=1024, ge=16)
    max_reasks: int = Field(default=2, ge=0, description="re-asks after an unparsable reply")
    max_cot_chars: int = Field(default=16000, ge=1000, description="longer CoTs are shown to the judge as head + tail")
    only_correct: bool = Field(
        default=False,
        description="label only CoTs whose answer verified (correct=true); the others pass unlabelled and "
        "uncounted (saves judge calls when verify ran first with keep_all)",
    )
    constrained: bool = Field(
        default=False,
        description="ask the judge's server to decode only replies in the label's format (vLLM structured "
        "outputs: a short rationale, then the tag); for small judges that miss the format",
    )
    rationale_chars: int = Field(
        default=200,
        ge=0,
        le=2000,
        description="with constrained decoding: at most this many characters of rationale before the tag (0: the "
        "tag alone — a few tokens per reply)",
    )
    client: ClientConfig = Field(default_factory=ClientConfig)
    chunk_size: int = Field(
        default=2000, ge=1, description="CoTs judged (and held in memory) at a time; their requests go out together"
    )

    def endpoint(self) -> EndpointConfig:
        if self.judge is None:
            raise ConfigError("judge: no judge endpoint configured (judge.judge or the recipe's teachers)")
        return self.judge


@dataclass(frozen=True)
class JudgeSpec:
    name: str  # the label: difficulty, rv, cd, correct
    prompt: str
    parse: Callable[[str], Any]
    pattern: str  # every reply the parser accepts, for constrained decoding (a rationale, then the tag)


_RATIONALE = r"[^<]{0,200}"
SPECS = {
    "difficulty": JudgeSpec(
        "difficulty", "judge_difficulty", parse_difficulty, _RATIONALE + r"<difficulty>(easy|medium|hard)</difficulty>"
    ),
    "rv": JudgeSpec("rv", "judge_rv", parse_score, _RATIONALE + r"<score>[0-9]</score>"),
    "cd": JudgeSpec("cd", "judge_cd", parse_score, _RATIONALE + r"<score>[0-9]</score>"),
    "correct": JudgeSpec("correct", "judge_correct", parse_verdict, _RATIONALE + r"<verdict>[01]</verdict>"),
}


@dataclass
class Outcome:
    value: Any  # None when the judge never gave a parsable label
    raw: str
    attempts: int
    error: str | None  # the request failed after all retries


def show_cot(sample: Sample, max_chars: int) -> str:
    text = sample.text.strip()
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}\n\n[... {len(text) - max_chars} characters omitted ...]\n\n{text[-half:]}"


def run_judge(
    items: Sequence[tuple[Problem, Sample]], spec: JudgeSpec, cfg: JudgeConfig, client: ChatClient
) -> list[Outcome]:
    """Ask the judge about every (problem, CoT); re-ask unparsable replies up to ``cfg.max_reasks`` times."""
    prompt: Prompt = load_prompt(spec.prompt)
    label = cfg.endpoint().label
    conversations = [prompt.messages(p.domain, problem=p.problem, cot=show_cot(s, cfg.max_cot_chars)) for p, s in items]
    outcomes = [Outcome(None, "", 0, None) for _ in items]
    pending = list(range(len(items)))
    params: dict[str, Any] = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
    if cfg.constrained:  # vLLM's OpenAI server: structured outputs by regex
        pattern = spec.pattern.replace(_RATIONALE, f"[^<]{{0,{cfg.rationale_chars}}}" if cfg.rationale_chars else "", 1)
        params["structured_outputs"] = {"regex": pattern}
    for round_ in range(cfg.max_reasks + 1):
        if not pending:
            break
        reqs = [ChatRequest(endpoint=label, messages=conversations[i], params=params, tag=i) for i in pending]
        desc = f"judge {spec.name}" + (f" (re-ask {round_})" if round_ else "")
        still = []
        for res in client.run(reqs, desc=desc):
            i = res.request.tag
            out = outcomes[i]
            out.attempts = round_ + 1
            if not res.ok:
                out.error = res.error
                continue
            reply = res.content or ""
            out.raw = reply if not out.raw else f"{out.raw}\n\n--- re-ask {round_} ---\n\n{reply}"
            # a reply the server did not finish (content_filter, no finish_reason) gives no label; one cut at
            # max_tokens still does when its tag is complete (the tag comes first, the rambling after it)
            finished = res.complete or (res.finish_reason == "length" and bool(reply.strip()))
            value = spec.parse(reply) if finished else None
            if value is not None:
                out.value = value
            elif prompt.reask:
                conversations[i] = [
                    *conversations[i],
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": prompt.reask},
                ]
                still.append(i)
        pending = still
    return outcomes


def _client(cfg: JudgeConfig, client: ChatClient | None) -> tuple[ChatClient, bool]:
    if client is not None:
        return client, False
    return ChatClient([cfg.endpoint()], cfg.client), True


def label_samples(
    samples: Iterable[Sample],
    cfg: JudgeConfig,
    *,
    problems: Sequence[Problem] | Mapping[str, Problem],
    labels: Sequence[str],
    stage: str,
    client: ChatClient | None = None,
    reject_sink: Callable[[Reject], None] | None = None,
) -> tuple[Any, StageStats]:
    """Set each of ``labels`` (difficulty / rv / cd) on every sample; returns the samples (all of them).

    Samples are judged ``cfg.chunk_size`` at a time (each chunk's requests go out together, up to the
    client's concurrency). Given a list, the output is a list; given any other iterable (the runner's
    :class:`~kubedistill.core.records.RecordStream`), an iterator that yields each chunk once judged,
    with rejects handed to ``reject_sink``: memory does not grow with the input. ``stats`` is complete
    once the output is exhausted."""
    stats = StageStats(stage=stage)
    stats.stream_rejects(reject_sink)
    by_id = records_by_id(problems)
    funnel = SourceFunnel()
    counts: dict[str, dict[str, int]] = {name: {} for name in labels}
    not_correct = [0]  # with cfg.only_correct: CoTs passed on unjudged

    def run() -> Iterator[Sample]:
        cl, owned = _client(cfg, client)
        judge_label = cfg.endpoint().label
        try:
            for chunk in chunked(samples, cfg.chunk_size):
                with Timer() as timer:
                    kept, skipped = _label_chunk(chunk, labels, cfg, cl, judge_label, by_id, stats, counts)
                not_correct[0] += skipped
                stats.elapsed_s += timer.elapsed
                stats.n_in += len(chunk)
                stats.n_out += len(kept)
                for s in chunk:
                    funnel.add_in(s)
                for s in kept:
                    funnel.add_out(s)
                yield from kept
        finally:
            if owned:
                cl.close()
        if cfg.only_correct:
            stats.metrics["not_judged.not_correct"] = float(not_correct[0])
        for name in labels:
            c = counts[name]
            stats.info[name] = dict(sorted(c.items()))
            stats.metrics[f"{name}.unparsable"] = float(c.get("unparsable", 0))
            # the label's distribution and how much of it the judge gave in its format (the funnel shows it)
            for value, count in c.items():
                if value not in ("unparsable", "reasked"):
                    stats.metrics[f"{name}.{value}"] = float(count)
            judged = sum(v for k, v in c.items() if k != "reasked")
            stats.metrics[f"{name}.labelled_fraction"] = (judged - c.get("unparsable", 0)) / judged if judged else 0.0
        stats.metrics.update(cl.stats.as_metrics("judge."))
        funnel.into(stats)

    if isinstance(samples, Sequence):
        return list(run()), stats
    return run(), stats


def _label_chunk(
    chunk: list[Sample],
    labels: Sequence[str],
    cfg: JudgeConfig,
    cl: ChatClient,
    judge_label: str,
    by_id: Mapping[str, Problem],
    stats: StageStats,
    counts: dict[str, dict[str, int]],
) -> tuple[list[Sample], int]:
    """Judge one chunk; returns the samples kept and how many were passed on unjudged (only_correct)."""
    out = [s.model_copy(deep=True) for s in chunk]
    known = [
        (i, by_id[s.problem_id], s)
        for i, s in enumerate(out)
        if s.problem_id in by_id and (s.correct is True or not cfg.only_correct)
    ]
    for s in out:
        if s.problem_id not in by_id:
            stats.reject("unknown_problem", f"no problem {s.problem_id!r}", record={"sample_id": s.id})
    keep = {i for i, s in enumerate(out) if s.problem_id in by_id}
    skipped = len(keep) - len(known)
    for name in labels:
        spec = SPECS[name]
        outcomes = run_judge([(p, s) for _, p, s in known], spec, cfg, cl)
        prompt_ref = load_prompt(spec.prompt).ref
        c = counts[name]
        for (i, _, s), o in zip(known, outcomes, strict=True):
            if o.error is not None:
                stats.reject("request_failed", f"judge {name}: {o.error}", record={"sample_id": s.id})
                keep.discard(i)
                continue
            s.judgements[name] = Judgement(by=judge_label, prompt=prompt_ref, raw=o.raw[-4000:], attempts=o.attempts)
            if o.value is None:
                c["unparsable"] = c.get("unparsable", 0) + 1
                continue
            setattr(s, name, o.value)
            c[str(o.value)] = c.get(str(o.value), 0) + 1
            if o.attempts > 1:
                c["reasked"] = c.get("reasked", 0) + 1
    return [s for i, s in enumerate(out) if i in keep], skipped


def judge_difficulty(
    samples: Iterable[Sample],
    cfg: JudgeConfig,
    *,
    problems: Sequence[Problem] | Mapping[str, Problem],
    client: ChatClient | None = None,
    reject_sink: Callable[[Reject], None] | None = None,
) -> tuple[Any, StageStats]:
    """Stage `judge`: each CoT's difficulty for the student (``easy`` / ``medium`` / ``hard``), by the LLM
    judge ``cfg.judge``, parsed strictly from ``<difficulty>…</difficulty>`` with bounded re-asks.

    Input: samples and their problems. Output: every sample with ``difficulty`` (None when the judge's
    answer could not be parsed: metric ``difficulty.unparsable``) and ``judgements["difficulty"]`` (the
    judge's raw text). Requests that fail after every retry are ``request_failed`` rejects (fatal for
    the stage). In chunks of ``cfg.chunk_size`` (see :func:`label_samples`). Raises ``ConfigError`` without
    a judge endpoint."""
    return label_samples(
        samples, cfg, problems=problems, labels=["difficulty"], stage="judge", client=client, reject_sink=reject_sink
    )


def score_rv_cd(
    samples: Iterable[Sample],
    cfg: JudgeConfig,
    *,
    problems: Sequence[Problem] | Mapping[str, Problem],
    client: ChatClient | None = None,
    reject_sink: Callable[[Reject], None] | None = None,
) -> tuple[Any, StageStats]:
    """Stage `score`: each CoT's reasoning verbosity (``rv``) and cognitive difficulty (``cd``), integers
    0-9, by the LLM judge ``cfg.judge`` (strict ``<score>N</score>`` parsing, bounded re-asks).

    Input: samples and their problems. Output: every sample with ``rv`` / ``cd`` (None when unparsable:
    metrics ``rv.unparsable``, ``cd.unparsable``). Requests that fail after every retry are
    ``request_failed`` rejects (fatal). In chunks of ``cfg.chunk_size`` (see :func:`label_samples`). Raises
    ``ConfigError`` without a judge endpoint."""
    return label_samples(
        samples, cfg, problems=problems, labels=["rv", "cd"], stage="score", client=client, reject_sink=reject_sink
    )


def judge_correctness(items: Sequence[tuple[Problem, Sample]], judge: EndpointConfig, client: Any = None) -> list[Any]:
    """The verifier's fallback for problems with no reference: an LLM judge's 0/1 on logical correctness.
    Returns :class:`~kubedistill.verifiers.Verdict` s with method ``llm-judge`` (None when it never answered)."""
    from kubedistill.verifiers import Verdict

    cfg = JudgeConfig(judge=judge)
    cl, owned = _client(cfg, client)
    try:
        outcomes = run_judge(items, SPECS["correct"], cfg, cl)
    finally:
        if owned:
            cl.close()
    ref = load_prompt("judge_correct").ref
    return [
        Verdict(
            o.value if o.error is None else None,
            "llm-judge",
            f"{judge.label} with {ref}, {o.attempts} attempt(s)" + (f": {o.error}" if o.error else ""),
        )
        for o in outcomes
    ]
