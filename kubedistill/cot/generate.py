"""Stage `generate`: several CoTs per problem — teachers × temperatures × num_generations.

Output: one :class:`Sample` per (problem, teacher, temperature, sample_index), each exactly once — or one
reject in its place. Requests that still fail after every retry become rejects with reason
``request_failed`` (the caller decides what a failure means: the CLI and the KFP component exit non-zero
and write no output). An answer that is not a complete CoT — empty or whitespace-only content, a
``content_filter`` or any other finish reason that is not ``stop``, or none at all — is an
``incomplete`` reject with the answer as it came; a truncated one (``finish_reason=length``) is kept
and marked (``verify`` never counts it correct).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from pydantic import Field, field_validator, model_validator

from kubedistill.chat import ChatClient, ChatRequest, ChatResult, derived_seed
from kubedistill.chat.config import ClientConfig, EndpointConfig
from kubedistill.core.config import ConfigError, StrictModel, reference
from kubedistill.core.records import Problem, Reject, Sample, StageStats, Timer, Usage, chunked
from kubedistill.core.text import extract_final_answer, split_think, with_reasoning
from kubedistill.prompts import problem_messages

STAGE = "generate"


class GenerateConfig(StrictModel):
    """`generate`: several CoTs per problem (teachers × temperatures × num_generations)."""

    teachers: list[EndpointConfig] = Field(
        default_factory=list, description="endpoints; in a recipe, empty means the recipe's teachers"
    )
    temperatures: list[float] = Field(default_factory=lambda: [0.6], min_length=1)
    num_generations: int = Field(default=1, ge=1, description="CoTs per (problem, teacher, temperature)")
    max_tokens: int = Field(default=4096, ge=1)
    top_p: float = Field(default=0.95, gt=0, le=1)
    seed: int | None = Field(default=None, description="base seed; each sample gets its own derived seed")
    prompt: str = reference("prompt", "generate", description="prompt template in kubedistill/prompts")
    client: ClientConfig = Field(default_factory=ClientConfig)
    chunk_size: int = Field(default=256, ge=1, description="problems asked (and their CoTs held in memory) at a time")

    @field_validator("temperatures")
    @classmethod
    def _temps(cls, v: list[float]) -> list[float]:
        for t in v:
            if t < 0 or t > 2:
                raise ValueError(f"temperature {t} is outside [0, 2]")
        if len(set(v)) != len(v):
            raise ValueError("temperatures repeat")
        return v

    @model_validator(mode="after")
    def _unique_teachers(self) -> GenerateConfig:
        labels = [t.label for t in self.teachers]
        if len(set(labels)) != len(labels):
            raise ValueError(f"teacher names repeat: {labels} (give each a distinct `name`)")
        return self


def build_requests(problems: Sequence[Problem], cfg: GenerateConfig) -> list[ChatRequest]:
    reqs = []
    for p in problems:
        messages = problem_messages(p, cfg.prompt)
        for t in cfg.teachers:
            for temp in cfg.temperatures:
                for i in range(cfg.num_generations):
                    params: dict[str, object] = {"temperature": temp, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
                    if cfg.seed is not None:
                        params["seed"] = derived_seed(cfg.seed, p.id, t.label, temp, i)
                    reqs.append(
                        ChatRequest(
                            endpoint=t.label, messages=messages, params=params, sample_index=i, tag=(p.id, temp)
                        )
                    )
    return reqs


def result_to_sample(res: ChatResult) -> Sample:
    problem_id, temp = res.request.tag
    text = res.content or ""
    split = split_think(text, res.reasoning)
    # With a separate reasoning field, keep the whole output in `text` as the model produced it.
    full = with_reasoning(text, res.reasoning)
    return Sample(
        id=Sample.make_id(problem_id, res.request.endpoint, temp, res.request.sample_index),
        problem_id=problem_id,
        teacher=res.request.endpoint,
        temperature=temp,
        sample_index=res.request.sample_index,
        text=full,
        reasoning=split.reasoning,
        final_answer=extract_final_answer(split.answer_part) if split.closed else None,
        finish_reason=res.finish_reason,
        usage=Usage(prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens),
    )


def generate(
    problems: Iterable[Problem],
    cfg: GenerateConfig,
    *,
    client: ChatClient | None = None,
    imported: Iterable[Sample] | None = None,
    reject_sink: Callable[[Reject], None] | None = None,
) -> tuple[Any, StageStats]:
    """Stage `generate`: ``cfg.num_generations`` CoTs per (problem, teacher, temperature).

    Input: problems. Output: one :class:`Sample` per (problem, teacher, temperature, sample_index), in
    request order; a request that still fails after every retry is a ``request_failed`` reject (fatal for
    the stage); an answer that is not a complete CoT is an ``incomplete`` reject (not fatal). ``client``
    is for tests and callers that hold one; by default one is made from
    ``cfg.teachers`` and ``cfg.client``. ``imported`` are existing CoTs (collect's ``samples`` output):
    those of ``problems`` (this shard's) follow the generated ones in the output, so that the stages after
    see teachers' and a dataset's CoTs of the same problems side by side (metric ``samples.imported``); an
    imported CoT whose id a generated one already has is an ``imported_id_taken`` reject (give the
    teacher another label). Raises ``ConfigError`` without teachers, ``EndpointError`` for an endpoint
    that refuses the key. Metrics: the client's request / token / retry counts.

    Problems are asked ``cfg.chunk_size`` at a time. Given a list, the output is a list; given another
    iterable (the runner's stream), an iterator that yields each chunk's CoTs as they are done, rejects
    handed to ``reject_sink`` — memory holds one chunk's CoTs, not the shard's."""
    if client is None and not cfg.teachers:
        raise ConfigError("generate: no teacher endpoints configured (give --teacher-url/--teacher-model)")
    stats = StageStats(stage=STAGE)
    stats.stream_rejects(reject_sink)
    owned = client is None
    cl = client or ChatClient(cfg.teachers, cfg.client)

    def run() -> Iterator[Sample]:
        mine: set[str] = set()
        taken: set[str] = set()
        n_imported = n_truncated = 0
        try:
            with Timer() as timer:
                for chunk in chunked(problems, cfg.chunk_size):
                    stats.n_in += len(chunk)
                    mine.update(p.id for p in chunk)
                    for res in cl.run(build_requests(chunk, cfg), desc=STAGE):
                        sample = _result(res, stats)
                        if sample is not None:
                            taken.add(sample.id)
                            n_truncated += sample.truncated
                            stats.n_out += 1
                            yield sample
                for s in imported or ():
                    if s.problem_id not in mine:
                        continue  # another shard's problem, or a problem this run does not have
                    if s.id in taken:
                        stats.reject(
                            "imported_id_taken",
                            f"a generated CoT has the id {s.id!r}: label the teacher apart from the imported CoTs",
                            record={"sample_id": s.id},
                        )
                        continue
                    n_imported += 1
                    stats.n_out += 1
                    yield s
        finally:
            if owned:
                cl.close()
        stats.elapsed_s = timer.elapsed
        stats.metrics["samples.imported"] = float(n_imported)
        stats.metrics.update(cl.stats.as_metrics("teacher."))
        stats.metrics["samples.truncated"] = float(n_truncated)
        stats.info["teachers"] = {label: vars(u) for label, u in cl.stats.per_endpoint.items()}

    if isinstance(problems, Sequence):
        return list(run()), stats
    return run(), stats


def _result(res: ChatResult, stats: StageStats) -> Sample | None:
    """A teacher's answer as a Sample, or a reject (``incomplete``, ``request_failed``) in its place."""
    if res.ok and (res.complete or res.finish_reason == "length"):
        return result_to_sample(res)  # a truncated CoT is kept, marked (finish_reason=length)
    problem_id, temp = res.request.tag
    where = {
        "problem_id": problem_id,
        "teacher": res.request.endpoint,
        "temperature": temp,
        "sample_index": res.request.sample_index,
    }
    if res.ok:
        stats.reject(
            "incomplete",
            detail=f"the teacher's answer is not a complete CoT: {res.incomplete_reason}",
            record={**where, "finish_reason": res.finish_reason, "content": res.content, "reasoning": res.reasoning},
        )
    else:
        stats.reject("request_failed", detail=f"after {res.attempts} attempt(s): {res.error}", record=where)
    return None
