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

_VAR = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


class PromptError(ValueError):
    pass


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str | None = None
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
