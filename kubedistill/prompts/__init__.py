"""Prompts are data: versioned YAML templates shipped with the package (documented in docs/prompts.md).

A template names its variables as ``{{name}}``; rendering fails on a missing variable instead of
sending a half-filled prompt. Every label a judge sets records ``Prompt.ref`` (``id@vN``).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from kubedistill.core.errors import BadInputError
from kubedistill.core.records import Problem, Sample
from kubedistill.core.text import THINK_CLOSE, join_think, split_think

_VAR = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


class PromptError(BadInputError, ValueError):
    pass


class Shot(BaseModel):
    """One worked example, sent as a prior user turn and the assistant's answer to it (few-shot prompting
    as chat turns; Brown et al. 2020, "Language Models are Few-Shot Learners")."""

    model_config = ConfigDict(extra="forbid")
    user: str
    assistant: str


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str | None = None
    shots: list[Shot] = Field(default_factory=list)  # worked examples, before the user's turn
    user: str


class Prompt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    version: int = Field(ge=1)
    description: str = ""
    reask: str | None = None  # sent after an unparsable judge reply (bounded re-ask)
    templates: dict[str, Template]  # by domain; "default" is the fallback

    @property
    def ref(self) -> str:
        return f"{self.id}@v{self.version}"

    def messages(self, domain: str = "default", **variables: Any) -> list[dict[str, str]]:
        tpl = self.templates.get(domain) or self.templates.get("default")
        if tpl is None:
            raise PromptError(f"prompt {self.ref} has no template for domain {domain!r} and no default")
        out = []
        if tpl.system:
            out.append({"role": "system", "content": render(tpl.system, variables, self.ref)})
        for shot in tpl.shots:  # fixed text: a worked example takes no variables
            out += [{"role": "user", "content": shot.user}, {"role": "assistant", "content": shot.assistant}]
        out.append({"role": "user", "content": render(tpl.user, variables, self.ref)})
        return out


def render(template: str, variables: dict[str, Any], where: str = "prompt") -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            raise PromptError(f"{where}: variable {{{{{name}}}}} has no value")
        return str(variables[name])

    return _VAR.sub(sub, template)


@cache
def load_prompt(name: str) -> Prompt:
    """Load ``kubedistill/prompts/<name>.yaml``."""
    try:
        text = resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    except FileNotFoundError:
        known = sorted(
            p.name.removesuffix(".yaml") for p in resources.files(__package__).iterdir() if p.name.endswith(".yaml")
        )
        raise PromptError(f"no prompt named {name!r} (known: {', '.join(known)})") from None
    return Prompt.model_validate(yaml.safe_load(text))


def format_choices(choices: list[str] | None) -> str:
    """Multiple-choice options as the prompts show them: ``A. first\\nB. second\\n\\n`` (empty without choices)."""
    if not choices:
        return ""
    return "".join(f"{chr(ord('A') + i)}. {c}\n" for i, c in enumerate(choices)) + "\n"


def problem_messages(problem: Problem, prompt_name: str = "generate") -> list[dict[str, str]]:
    """The chat messages that ask for a CoT on ``problem``: what teachers are sent (generate), what the
    student is trained on (SFT / DPO / GRPO prompts) and evaluated with — the same text in all three."""
    prompt = load_prompt(prompt_name)
    return prompt.messages(problem.domain, problem=problem.problem, choices=format_choices(problem.choices))


def format_completion(sample: Sample) -> str | None:
    """The assistant turn the student learns from ``sample``: ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``.

    A CoT whose teacher used no think tags is wrapped: its whole text is the reasoning and the answer is
    ``\\boxed{final_answer}`` — so every student learns the one format the verifiers and the GRPO format
    reward read. None when the sample has nothing usable (no reasoning or no answer)."""
    split = split_think(sample.text)
    if THINK_CLOSE in sample.text:
        if not split.reasoning or not split.answer_part:
            return None
        return join_think(split.reasoning, split.answer_part)
    if not sample.text.strip():
        return None
    answer = f"\\boxed{{{sample.final_answer}}}" if sample.final_answer else sample.text.strip().splitlines()[-1]
    return join_think(sample.text.strip(), answer)
