"""Configuration of OpenAI-compatible chat endpoints (teachers, judges, rewriters, students under
evaluation) and of the one client that talks to them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from kubedistill.core.config import ConfigError, StrictModel


class EndpointConfig(StrictModel):
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
