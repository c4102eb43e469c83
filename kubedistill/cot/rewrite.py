"""Stage `rewrite` (DistilQwen2.5-R1): extend CoTs judged *easy*, simplify CoTs judged *hard*, and
validate every rewrite.

The processor's loop is the published one — evaluate, improve, **validate**:

1. *evaluate*: the `judge` stage labelled each CoT easy / medium / hard for the student;
2. *improve*: each easy CoT is extended (missing steps added), each hard one simplified, through the
   rewriter endpoint. A rewritten CoT is a new Sample: id ``<original id>::rw``, ``rewritten_from`` =
   the original id, ``teacher`` = the rewriter, the original's problem, temperature and index;
3. *validate* (``keep_rewrites: medium`` or ``verified``): every rewrite's answer is verified
   (kubedistill/verifiers: a rewrite must keep a correct answer) and the rewrite is judged again with
   the difficulty judge (``judge``: the recipe's judge section). Its outcome is one of
   ``moved_to_medium``, ``stayed`` (the same label as before: still too terse, still too convoluted),
   ``moved_other`` (easy became hard or the reverse), ``unlabelled`` (the judge gave no parsable
   label) or ``wrong_answer``. The policy ``keep_rewrites`` decides:

   ============  ==========================================================================
   ``medium``    keep a rewrite that judges *medium* and whose answer is not wrong (DistilQwen2.5-R1)
   ``verified``  keep every rewrite whose answer is not wrong, with its re-judged difficulty
   ``all``       no validation: keep every rewrite, an extended easy CoT assumed *medium*, a
                 simplified hard one *hard* (no judge calls, no verification)
   ============  ==========================================================================

   In a dropped rewrite's place stays the original CoT (``dropped_rewrites: original``, with its old
   label) or nothing (``none``: the original is a ``rewrite_rejected`` reject).

Medium and unlabelled CoTs pass unchanged. By default a kept rewrite replaces its original
(``keep_original`` keeps both); a rewrite that failed or lost the ``<think>`` format keeps the original,
counted as ``rewrite_failed``. The metrics (``rewrite.extend``, ``.simplify``, ``.rewrite_failed``,
``rewrite.validated.<outcome>``, ``rewrite.kept``, ``rewrite.dropped``) make the run report's funnel row.

The stage streams (``Stage.streams``): it works ``chunk_size`` CoTs at a time — the chunk's rewrite requests,
then the validation of its rewrites, then its outputs in input order — so memory does not grow with the input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from kubedistill.chat import ChatClient, ChatRequest
from kubedistill.chat.config import ClientConfig, EndpointConfig
from kubedistill.core.config import ConfigError, StrictModel
from kubedistill.core.records import (
    Judgement,
    Problem,
    Reject,
    Sample,
    StageStats,
    Timer,
    Usage,
    chunked,
    records_by_id,
)
from kubedistill.core.text import THINK_CLOSE, extract_final_answer, split_think
from kubedistill.cot.judge import SPECS, JudgeConfig, run_judge, show_cot
from kubedistill.prompts import load_prompt

STAGE = "rewrite"

ANSWER_FORMAT = {
    "code": "the complete program in one ```python code block.",
    "science": 'a last line "Answer: X" (X the letter of the correct choice), or the value within \\boxed{}.',
}
DEFAULT_ANSWER_FORMAT = "the final answer within \\boxed{}."


class RewriteConfig(StrictModel):
    rewriter: EndpointConfig | None = Field(default=None, description="None: the recipe's first teacher")
    temperature: float = Field(default=0.3, ge=0)
    max_tokens: int = Field(default=4096, ge=16)
    max_cot_chars: int = Field(default=24000, ge=1000)
    keep_original: bool = Field(default=False, description="keep the original easy/hard CoT beside its rewrite")
    accept_untagged: bool = Field(
        default=True,
        description="accept a rewrite without <think> tags when it states an answer (as generate accepts CoTs)",
    )
    keep_rewrites: Literal["medium", "verified", "all"] = Field(
        default="medium",
        description="validation policy (module docstring): medium = keep rewrites re-judged medium whose answer "
        "is not wrong; verified = keep every rewrite whose answer is not wrong; all = no re-judging or verifying",
    )
    dropped_rewrites: Literal["original", "none"] = Field(
        default="original", description="what stays in a dropped rewrite's place: its original CoT, or nothing"
    )
    judge: JudgeConfig | None = Field(
        default=None,
        description="the judge that re-judges rewrites (a recipe gives its judge section); None: the rewriter, "
        "with JudgeConfig's defaults",
    )
    client: ClientConfig = Field(default_factory=ClientConfig)
    chunk_size: int = Field(
        default=2000,
        ge=1,
        description="CoTs rewritten (and held in memory) at a time: their rewrite requests go out together, then "
        "their rewrites are validated together",
    )

    def endpoint(self) -> EndpointConfig:
        if self.rewriter is None:
            raise ConfigError("rewrite: no rewriter endpoint configured (rewrite.rewriter or the recipe's teachers)")
        return self.rewriter

    def judge_config(self) -> JudgeConfig:
        """The re-judging judge: ``judge`` (its endpoint defaulting to the rewriter), cached beside the rewrites."""
        judge = self.judge or JudgeConfig()
        update: dict[str, object] = {}
        if judge.judge is None:
            update["judge"] = self.endpoint()
        if judge.client.cache_dir is None and self.client.cache_dir is not None:
            update["client"] = judge.client.model_copy(update={"cache_dir": self.client.cache_dir})
        return judge.model_copy(update=update) if update else judge


OUTCOMES = ("moved_to_medium", "stayed", "moved_other", "unlabelled", "wrong_answer")
#: at most this many examples each in ``stats.info["failed"]`` / ``["dropped_rewrites"]`` (the counts are complete)
MAX_LISTED = 100


@dataclass
class _Tally:
    """The stage's counts over every chunk: all it keeps of the CoTs it has seen."""

    made: dict[str, int] = field(default_factory=lambda: {"extend": 0, "simplify": 0, "rewrite_failed": 0})
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    validated: int = 0
    kept: int = 0


class _Rejudge:
    """The client that re-judges rewrites: the given client when it serves the judge's endpoint, else its
    own, opened on first use and closed by :meth:`close`."""

    def __init__(self, cfg: RewriteConfig, client: ChatClient | None) -> None:
        self.cfg = cfg.judge_config()
        self._given = client if client is not None and self.cfg.endpoint().label in client.endpoints else None
        self._own: ChatClient | None = None

    def client(self) -> ChatClient:
        if self._given is not None:
            return self._given
        if self._own is None:
            self._own = ChatClient([self.cfg.endpoint()], self.cfg.client)
        return self._own

    def close(self) -> None:
        if self._own is not None:
            self._own.close()


def rewrite(
    samples: Iterable[Sample],
    cfg: RewriteConfig,
    *,
    problems: Sequence[Problem] | Mapping[str, Problem],
    client: ChatClient | None = None,
    reject_sink: Callable[[Reject], None] | None = None,
) -> tuple[Any, StageStats]:
    """Stage `rewrite`: extend every CoT judged *easy*, simplify every CoT judged *hard*, through the
    rewriter endpoint ``cfg.rewriter``, then validate every rewrite (verify its answer, judge it again)
    and keep or drop it by ``cfg.keep_rewrites`` (see the module docstring).

    Input: samples (with ``difficulty``) and their problems. Output: every sample in input order, easy and
    hard ones replaced by their kept rewrites (or kept beside them with ``keep_original``); a failed or
    dropped rewrite leaves the original (``dropped_rewrites: none``: nothing, a ``rewrite_rejected`` reject).

    Samples are rewritten ``cfg.chunk_size`` at a time: a chunk's rewrite requests go out together (up to
    the client's concurrency), then its rewrites are validated (verified and re-judged together), then its
    outputs are produced. Given a list, the output is a list; given any other iterable (the runner's
    :class:`~kubedistill.core.records.RecordStream`), an iterator that yields each chunk once validated, with
    rejects handed to ``reject_sink``: memory does not grow with the input (counts only, and at most
    :data:`MAX_LISTED` examples of failed and dropped rewrites in ``stats.info``). ``stats`` is complete once
    the output is exhausted.

    Metrics: ``rewrite.extend`` / ``.simplify`` / ``.rewrite_failed``, ``rewrite.validated.<outcome>``,
    ``rewrite.kept`` / ``.dropped``, the clients' request and token counts. Raises ``ConfigError``
    without a rewriter endpoint (at the call, before any input is read)."""
    stats = StageStats(stage=STAGE)
    stats.stream_rejects(reject_sink)
    by_id = records_by_id(problems)  # the runner's index by id, or a list
    endpoint = cfg.endpoint()
    tally = _Tally()

    def run() -> Iterator[Sample]:
        cl = client or ChatClient([endpoint], cfg.client)
        rejudge = _Rejudge(cfg, client) if cfg.keep_rewrites != "all" else None
        try:
            for chunk in chunked(samples, cfg.chunk_size):
                with Timer() as timer:
                    rewritten = _rewrite_chunk(chunk, cfg, endpoint, by_id, cl, stats, tally)
                    kept = _validate(rewritten, chunk, cfg, by_id, stats, rejudge, tally)
                stats.elapsed_s += timer.elapsed
                out = _outputs(chunk, rewritten, kept, cfg, stats)
                stats.n_in += len(chunk)
                stats.n_out += len(out)
                yield from out
        finally:
            if client is None:
                cl.close()
            if rejudge is not None:
                rejudge.close()
        if tally.validated:
            stats.info["validation"] = dict(tally.outcomes)
            stats.metrics.update({f"rewrite.validated.{k}": float(v) for k, v in tally.outcomes.items()})
            stats.metrics["rewrite.kept"] = float(tally.kept)
            stats.metrics["rewrite.dropped"] = float(tally.validated - tally.kept)
        else:  # `all`, or nothing to validate: every rewrite is kept
            stats.metrics["rewrite.kept"] = float(tally.made["extend"] + tally.made["simplify"])
            stats.metrics["rewrite.dropped"] = 0.0
        stats.metrics.update({f"rewrite.{k}": float(v) for k, v in tally.made.items()})
        stats.metrics.update(cl.stats.as_metrics("rewriter."))
        stats.info["counts"] = dict(tally.made)

    if isinstance(samples, Sequence):
        return list(run()), stats
    return run(), stats


def _rewrite_chunk(
    chunk: list[Sample],
    cfg: RewriteConfig,
    endpoint: EndpointConfig,
    by_id: Mapping[str, Problem],
    cl: ChatClient,
    stats: StageStats,
    tally: _Tally,
) -> dict[int, Sample]:
    """Ask the rewriter for every easy and hard CoT of ``chunk``; returns chunk index -> its rewrite (a new
    Sample), leaving out the rewrites that failed (counted ``rewrite_failed``)."""
    todo: list[tuple[int, str]] = []
    requests: list[ChatRequest] = []
    for i, s in enumerate(chunk):
        p = by_id.get(s.problem_id)
        if p is None or s.difficulty not in ("easy", "hard"):
            continue
        mode = "extend" if s.difficulty == "easy" else "simplify"
        messages = load_prompt(f"rewrite_{mode}").messages(
            p.domain,
            problem=p.problem,
            cot=show_cot(s, cfg.max_cot_chars),
            answer_format=ANSWER_FORMAT.get(p.domain, DEFAULT_ANSWER_FORMAT),
        )
        requests.append(
            ChatRequest(
                endpoint=endpoint.label,
                messages=messages,
                params={"temperature": cfg.temperature, "max_tokens": cfg.max_tokens},
                tag=i,
            )
        )
        todo.append((i, mode))
    results = cl.run(requests, desc=STAGE) if requests else []
    rewritten: dict[int, Sample] = {}
    for (i, mode), res in zip(todo, results, strict=True):
        orig = chunk[i]
        text = (res.content or "") if res.ok else ""
        if res.reasoning:
            text = f"<think>\n{res.reasoning}\n</think>\n\n{text}"
        split = split_think(text)
        # A small rewriter rarely keeps the <think> tags: like `generate`, accept its text when it states an
        # answer (training wraps it in the tags); without the tags and without an answer it failed.
        stated = THINK_CLOSE in text or (cfg.accept_untagged and extract_final_answer(text) is not None)
        if not res.complete or not stated or not split.answer_part:
            tally.made["rewrite_failed"] += 1
            why = res.error if not res.ok else (res.incomplete_reason or "no <think> format")
            _list(stats, "failed", {"sample_id": orig.id, "why": (why or "")[:200]})
            continue
        tally.made[mode] += 1
        rewritten[i] = Sample(
            id=f"{orig.id}::rw",
            problem_id=orig.problem_id,
            teacher=endpoint.label,
            temperature=orig.temperature,
            sample_index=orig.sample_index,
            text=text,
            reasoning=split.reasoning,
            final_answer=extract_final_answer(split.answer_part),
            finish_reason=res.finish_reason,
            usage=Usage(prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens),
            difficulty="medium" if mode == "extend" else "hard",
            rewritten_from=orig.id,
            judgements={
                **orig.judgements,
                "rewrite": Judgement(
                    by=endpoint.label,
                    prompt=load_prompt(f"rewrite_{mode}").ref,
                    detail=f"{mode} ({orig.difficulty} CoT)",
                ),
            },
            metadata={**orig.metadata, "original_difficulty": orig.difficulty},
        )
    return rewritten


def _validate(
    rewritten: dict[int, Sample],
    originals: Sequence[Sample],
    cfg: RewriteConfig,
    by_id: Mapping[str, Problem],
    stats: StageStats,
    rejudge: _Rejudge | None,
    tally: _Tally,
) -> dict[int, bool]:
    """Verify and re-judge one chunk's rewrites (in place: their ``difficulty``, ``correct`` and judgements);
    returns chunk index -> kept by the policy (empty, every rewrite kept, for ``keep_rewrites: all``: no
    ``rejudge``). Counts the outcomes in ``tally``."""
    if rejudge is None or not rewritten:
        return {}
    from kubedistill.verifiers import verify_many

    order = sorted(rewritten)
    judge_cfg = rejudge.cfg
    answers = [(by_id[rewritten[i].problem_id], split_think(rewritten[i].text).answer_part) for i in order]
    verdicts = verify_many(answers)
    items = [(by_id[rewritten[i].problem_id], rewritten[i]) for i in order]
    outcomes = run_judge(items, SPECS["difficulty"], judge_cfg, rejudge.client())
    kept: dict[int, bool] = {}
    prompt_ref = load_prompt(SPECS["difficulty"].prompt).ref
    for i, verdict, o in zip(order, verdicts, outcomes, strict=True):
        rw, before = rewritten[i], originals[i].difficulty
        if o.error is not None:
            o.value = None  # a failed re-judge request: no label (counted unlabelled)
        rw.correct = verdict.correct
        rw.judgements["correct"] = Judgement(by=verdict.method, detail=verdict.detail[:2000])
        rw.judgements["difficulty"] = Judgement(
            by=judge_cfg.endpoint().label, prompt=prompt_ref, raw=o.raw[-4000:], attempts=o.attempts
        )
        rw.difficulty = o.value
        if verdict.correct is False:
            outcome = "wrong_answer"
        elif o.value is None:
            outcome = "unlabelled"
        elif o.value == "medium":
            outcome = "moved_to_medium"
        elif o.value == before:
            outcome = "stayed"
        else:
            outcome = "moved_other"
        tally.outcomes[outcome] += 1
        tally.validated += 1
        rw.metadata["validation"] = outcome
        keep = outcome == "moved_to_medium" or (cfg.keep_rewrites == "verified" and outcome != "wrong_answer")
        kept[i] = keep
        tally.kept += keep
        if not keep:
            _list(stats, "dropped_rewrites", {"sample_id": rw.id, "outcome": outcome})
    return kept


def _outputs(
    chunk: list[Sample], rewritten: dict[int, Sample], kept: dict[int, bool], cfg: RewriteConfig, stats: StageStats
) -> list[Sample]:
    """One chunk's output in input order: a kept rewrite in its original's place (or after it, with
    ``keep_original``); a dropped one's original, or with ``dropped_rewrites: none`` a reject."""
    out: list[Sample] = []
    for i, s in enumerate(chunk):
        if i in rewritten and kept.get(i, True):
            if cfg.keep_original:
                out.append(s)
            out.append(rewritten[i])
        elif i in rewritten and cfg.dropped_rewrites == "none" and not cfg.keep_original:
            stats.reject(
                "rewrite_rejected",
                f"its rewrite was dropped ({rewritten[i].metadata.get('validation', '?')}) and dropped_rewrites=none",
                record={"sample_id": s.id, "problem_id": s.problem_id},
            )
        else:
            out.append(s)
    return out


def _list(stats: StageStats, key: str, example: dict[str, str]) -> None:
    """Keep ``example`` in ``stats.info[key]`` unless it already holds :data:`MAX_LISTED` of them."""
    listed = stats.info.setdefault(key, [])
    if len(listed) < MAX_LISTED:
        listed.append(example)
