"""Pydantic configuration: shared building blocks, stage configs and recipe loading.

Every config model forbids unknown keys, so a typo in a recipe is an error with the key's path, not a
silently ignored setting. :func:`load_config` turns YAML into a validated model and raises
:class:`ConfigError` with a one-line message (``file: path.to.key: what is wrong``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration cannot be used; the message is one line and names the offending key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ------------------------------------------------------------------------------------------- teachers


class TeacherConfig(StrictModel):
    """One OpenAI-compatible endpoint (vLLM, KServe, or any hosted API).

    ``url`` is the API base, e.g. ``http://127.0.0.1:8000/v1``; ``api_key_env`` names the environment
    variable holding the key (the key itself never appears in a config, log or MLflow param)."""

    url: str
    model: str
    name: str | None = Field(default=None, description="label used in records; defaults to `model`")
    api_key_env: str | None = None
    max_concurrency: int | None = Field(default=None, ge=1, description="per-endpoint cap (None: global)")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="extra JSON fields for every request")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"teacher url must start with http:// or https:// (got {v!r})")
        from urllib.parse import urlsplit

        if urlsplit(v).path in ("", "/"):
            # A bare host: the OpenAI routes live under /v1 (KServe's under /openai/v1: give it in full).
            v = v + "/v1"
        return v

    @property
    def label(self) -> str:
        return self.name or self.model

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"teacher {self.label!r}: environment variable {self.api_key_env} (api_key_env) is not set"
            )
        return key


class ClientConfig(StrictModel):
    """The teacher client: concurrency, retries, timeouts, cache."""

    concurrency: int = Field(default=64, ge=1, description="requests in flight at once, over all teachers")
    max_retries: int = Field(default=8, ge=0, description="retries per request after the first attempt")
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    timeout_s: float | None = Field(default=None, gt=0, description="per-attempt timeout; None scales with max_tokens")
    timeout_base_s: float = Field(default=60.0, gt=0)
    timeout_per_token_s: float = Field(
        default=0.05, ge=0, description="added per max_tokens: long CoTs take minutes (16K tokens ≈ 8 min)"
    )
    connect_timeout_s: float = Field(default=10.0, gt=0)
    cache_dir: Path | None = Field(default=None, description="durable request cache; None disables it")
    progress: bool = True

    def attempt_timeout(self, max_tokens: int | None) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        return self.timeout_base_s + (max_tokens or 1024) * self.timeout_per_token_s


class GenerateConfig(StrictModel):
    """`generate`: several CoTs per problem (teachers × temperatures × samples)."""

    teachers: list[TeacherConfig] = Field(
        default_factory=list, description="endpoints; in a recipe, empty means the recipe's teachers"
    )
    temperatures: list[float] = Field(default_factory=lambda: [0.6], min_length=1)
    samples: int = Field(default=1, ge=1, description="CoTs per (problem, teacher, temperature)")
    max_tokens: int = Field(default=4096, ge=1)
    top_p: float = Field(default=0.95, gt=0, le=1)
    seed: int | None = Field(default=None, description="base seed; each sample gets its own derived seed")
    prompt: str = Field(default="generate", description="prompt template in kubedistill/prompts")
    client: ClientConfig = Field(default_factory=ClientConfig)

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


class TrackingConfig(StrictModel):
    """MLflow: the tracking URI comes from MLFLOW_TRACKING_URI, else this, else a local SQLite store."""

    tracking_uri: str | None = None
    experiment: str = "kubedistill"
    enabled: bool = True


# ------------------------------------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)


def format_validation_error(err: ValidationError, source: str = "") -> str:
    """One line: ``source: key.path: message; other.key: message``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            got = e.get("input")
            if not isinstance(got, dict | list) and got is not None:
                msg += f" (got {got!r})"
        parts.append(f"{loc}: {msg}")
    prefix = f"{source}: " if source else ""
    return prefix + "; ".join(parts)


def validate_config(cls: type[M], data: Any, source: str = "config") -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_yaml(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such file")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None


def load_config(path: str | os.PathLike[str], cls: type[M], overrides: dict[str, Any] | None = None) -> M:
    """Load a YAML file into ``cls``; ``overrides`` (dotted keys) are applied before validation."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    return validate_config(cls, data, str(path))


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[k] = nxt
        cur = nxt
    cur[keys[-1]] = value
