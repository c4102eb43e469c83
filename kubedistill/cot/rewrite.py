"""Stage `rewrite` (DistilQwen2.5-R1): extend CoTs judged *easy*, simplify CoTs judged *hard*.

One pass, through the teacher client. A rewritten CoT is a new Sample: id ``<original id>::rw``,
``rewritten_from`` = the original id, ``teacher`` = the rewriter, the original's problem,
temperature and index. Difficulty after the rewrite: an extended easy CoT becomes *medium*; a
simplified hard CoT keeps *hard* (its problem still belongs in the curriculum's second stage).
Medium and unlabelled CoTs pass unchanged. By default the rewrite replaces the original
(``keep_original`` keeps both); a rewrite that failed or lost the ``<think>`` format keeps the
original, counted as ``rewrite_failed``. Rewrites are checked again by `verify` afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from kubedistill.chat import ChatClient, ChatRequest
from kubedistill.chat.config import ClientConfig, EndpointConfig
from kubedistill.core.config import ConfigError, StrictModel
from kubedistill.core.records import Judgement, Problem, Sample, StageStats, Timer, Usage
from kubedistill.core.text import THINK_CLOSE, extract_final_answer, split_think
from kubedistill.cot.judge import show_cot
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
    client: ClientConfig = Field(default_factory=ClientConfig)

    def endpoint(self) -> EndpointConfig:
        if self.rewriter is None:
            raise ConfigError("rewrite: no rewriter endpoint configured (rewrite.rewriter or the recipe's teachers)")
        return self.rewriter


def rewrite(
    samples: Sequence[Sample], cfg: RewriteConfig, *, problems: Sequence[Problem], client: ChatClient | None = None
) -> tuple[list[Sample], StageStats]:
    """Stage `rewrite`: extend every CoT judged *easy*, simplify every CoT judged *hard* (see the module
    docstring), through the rewriter endpoint ``cfg.rewriter``.

    Input: samples (with ``difficulty``) and their problems. Output: every sample, easy and hard ones
    replaced by their rewrites (or kept beside them with ``keep_original``); a failed rewrite keeps the
    original (metric ``rewrite.rewrite_failed``). Metrics: ``rewrite.extend`` / ``.simplify`` counts and
    the client's request and token counts. Raises ``ConfigError`` without a rewriter endpoint."""
    stats = StageStats(stage=STAGE, n_in=len(samples))
    by_id = {p.id: p for p in problems}
    endpoint = cfg.endpoint()
    todo: list[tuple[int, str]] = []
    requests: list[ChatRequest] = []
    for i, s in enumerate(samples):
        p = by_id.get(s.problem_id)
        if p is None or s.difficulty not in ("easy", "hard"):
            continue
        mode = "extend" if s.difficulty == "easy" else "simplify"
        prompt = load_prompt(f"rewrite_{mode}")
        messages = prompt.messages(
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
    cl = client or ChatClient([endpoint], cfg.client)
    try:
        with Timer() as timer:
            results = cl.run(requests, desc=STAGE) if requests else []
    finally:
        if client is None:
            cl.close()
    rewritten: dict[int, Sample] = {}
    counts = {"extend": 0, "simplify": 0, "rewrite_failed": 0}
    for (i, mode), res in zip(todo, results, strict=True):
        orig = samples[i]
        text = (res.content or "") if res.ok else ""
        if res.reasoning:
            text = f"<think>\n{res.reasoning}\n</think>\n\n{text}"
        split = split_think(text)
        if not res.complete or THINK_CLOSE not in text or not split.answer_part:
            counts["rewrite_failed"] += 1
            why = res.error if not res.ok else (res.incomplete_reason or "no <think> format")
            stats.info.setdefault("failed", []).append({"sample_id": orig.id, "why": (why or "")[:200]})
            continue
        counts[mode] += 1
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
    out: list[Sample] = []
    for i, s in enumerate(samples):
        if i in rewritten:
            if cfg.keep_original:
                out.append(s)
            out.append(rewritten[i])
        else:
            out.append(s)
    stats.n_out = len(out)
    stats.elapsed_s = timer.elapsed
    stats.metrics.update({f"rewrite.{k}": float(v) for k, v in counts.items()})
    stats.metrics.update(cl.stats.as_metrics("rewriter."))
    stats.info["counts"] = counts
    return out, stats
