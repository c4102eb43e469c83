"""Stage `generate`: several CoTs per problem — teachers × temperatures × samples.

Output: one :class:`Sample` per (problem, teacher, temperature, sample_index), each exactly once.
Requests that still fail after every retry become rejects with reason ``request_failed`` (the caller
decides what a failure means: the CLI and the KFP component exit non-zero and write no output).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from kubedistill.config import ConfigError, GenerateConfig
from kubedistill.cot.parse import extract_final_answer, split_think
from kubedistill.prompts import load_prompt
from kubedistill.records import Problem, Sample, StageStats, Timer, Usage
from kubedistill.teacher import ChatRequest, ChatResult, TeacherClient

STAGE = "generate"


def format_choices(choices: list[str] | None) -> str:
    if not choices:
        return ""
    return "".join(f"{chr(ord('A') + i)}. {c}\n" for i, c in enumerate(choices)) + "\n"


def problem_messages(problem: Problem, prompt_name: str = "generate") -> list[dict[str, str]]:
    prompt = load_prompt(prompt_name)
    return prompt.messages(problem.domain, problem=problem.problem, choices=format_choices(problem.choices))


def derived_seed(base: int, *parts: object) -> int:
    """A per-sample seed: distinct samples of one prompt must not share a seed (or they are identical)."""
    h = hashlib.sha256(repr((base, *parts)).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def build_requests(problems: Sequence[Problem], cfg: GenerateConfig) -> list[ChatRequest]:
    reqs = []
    for p in problems:
        messages = problem_messages(p, cfg.prompt)
        for t in cfg.teachers:
            for temp in cfg.temperatures:
                for i in range(cfg.samples):
                    params: dict[str, object] = {"temperature": temp, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
                    if cfg.seed is not None:
                        params["seed"] = derived_seed(cfg.seed, p.id, t.label, temp, i)
                    reqs.append(
                        ChatRequest(teacher=t.label, messages=messages, params=params, sample_index=i, tag=(p.id, temp))
                    )
    return reqs


def result_to_sample(res: ChatResult) -> Sample:
    problem_id, temp = res.request.tag
    text = res.content or ""
    split = split_think(text, res.reasoning)
    # With a separate reasoning field, keep the whole output in `text` as the model produced it.
    full = f"<think>\n{res.reasoning}\n</think>\n\n{text}" if res.reasoning else text
    return Sample(
        id=Sample.make_id(problem_id, res.request.teacher, temp, res.request.sample_index),
        problem_id=problem_id,
        teacher=res.request.teacher,
        temperature=temp,
        sample_index=res.request.sample_index,
        text=full,
        reasoning=split.reasoning,
        final_answer=extract_final_answer(split.answer_part) if split.closed else None,
        finish_reason=res.finish_reason,
        usage=Usage(prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens),
    )


def generate(
    problems: Sequence[Problem], cfg: GenerateConfig, *, teacher: TeacherClient | None = None
) -> tuple[list[Sample], StageStats]:
    """Ask every teacher for ``samples`` CoTs per problem at every temperature."""
    if teacher is None and not cfg.teachers:
        raise ConfigError("generate: no teacher endpoints configured (give --teacher-url/--teacher-model)")
    stats = StageStats(stage=STAGE, n_in=len(problems))
    client = teacher or TeacherClient(cfg.teachers, cfg.client)
    with Timer() as timer:
        try:
            results = client.run(build_requests(problems, cfg), desc=STAGE)
        finally:
            if teacher is None:
                client.close()
    samples: list[Sample] = []
    for res in results:
        if res.ok:
            samples.append(result_to_sample(res))
        else:
            problem_id, temp = res.request.tag
            stats.reject(
                "request_failed",
                detail=f"after {res.attempts} attempt(s): {res.error}",
                record={
                    "problem_id": problem_id,
                    "teacher": res.request.teacher,
                    "temperature": temp,
                    "sample_index": res.request.sample_index,
                },
            )
    stats.n_out = len(samples)
    stats.elapsed_s = timer.elapsed
    stats.metrics.update(client.stats.as_metrics())
    stats.metrics["samples.truncated"] = float(sum(s.truncated for s in samples))
    stats.info["teachers"] = {label: vars(u) for label, u in client.stats.per_teacher.items()}
    return samples, stats
