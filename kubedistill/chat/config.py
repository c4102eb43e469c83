"""Configuration of OpenAI-compatible chat endpoints (teachers, judges, rewriters, students under
evaluation) and of the one client that talks to them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from kubedistill.core.config import ConfigError, StrictModel

LOCAL_SCHEME = "local://"


class EndpointConfig(StrictModel):
    """One OpenAI-compatible endpoint (vLLM, KServe, or any hosted API).

    ``url`` is the API base, e.g. ``http://127.0.0.1:8000/v1``; ``api_key_env`` names the environment
    variable holding the key (the key itself never appears in a config, log or MLflow param).
    ``local://MODEL`` names the teacher ``kubedistill run --local`` serves on this machine: it is started
    the first time a task has a request the request cache cannot answer (kubedistill/chat/local.py), so
    the URL, and with it every task's inputs, is the same from one run to the next."""

    url: str
    model: str
    name: str | None = Field(default=None, description="label used in records; defaults to `model`")
    api_key_env: str | None = None
    max_concurrency: int | None = Field(default=None, ge=1, description="per-endpoint cap (None: global)")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="extra JSON fields for every request")
    cache_identity: str | None = Field(
        default=None,
        description="what this endpoint serves, for the request cache, in place of its URL: a teacher that "
        "moves (a new port or host) or replicas at several URLs keep sharing their answers under one label "
        "when they name the same identity (e.g. the checkpoint); default: the URL",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if v.startswith(LOCAL_SCHEME):
            if not v.removeprefix(LOCAL_SCHEME).strip("/"):
                raise ValueError(f"a local teacher's url names its model: local://MODEL (got {v!r})")
            return v
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

    @property
    def identity(self) -> str:
        """Who answers, for the request cache and the in-batch dedup: the label and the endpoint —
        ``cache_identity`` when set, else the URL without credentials, query or fragment. Two endpoints
        with different labels or different URLs never share an answer."""
        from kubedistill.core.secrets import strip_url

        return f"{self.label}@{self.cache_identity or strip_url(self.url)}"

    @property
    def request_url(self) -> str:
        """The URL requests go to: without user info (that is sent as an ``Authorization`` header). For a
        ``local://`` teacher: the URL it answers at, once started (this call starts it)."""
        from urllib.parse import urlsplit, urlunsplit

        if self.url.startswith(LOCAL_SCHEME):
            from kubedistill.chat.local import local_teacher_url

            return local_teacher_url(self.url)

        parts = urlsplit(self.url)
        if "@" not in parts.netloc:
            return self.url
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    @property
    def display_url(self) -> str:
        """The URL as messages show it (credentials masked)."""
        from kubedistill.core.secrets import mask_url

        return mask_url(self.url) or self.url

    def api_key(self) -> str | None:
        """The API key from the variable ``api_key_env`` names (remembered, so that no redaction step
        ever writes it); None without ``api_key_env``. Raises ``ConfigError`` when the variable is unset."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"teacher {self.label!r}: environment variable {self.api_key_env} (api_key_env) is not set"
            )
        from kubedistill.core.secrets import remember

        remember(key)
        return key

    def authorization(self) -> str | None:
        """The ``Authorization`` header: ``Bearer <key>`` with an API key, else HTTP Basic from credentials
        in the URL (``https://user:pass@host/v1``), else None."""
        key = self.api_key()
        if key:
            return f"Bearer {key}"
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(self.url)
        if parts.username is None:
            return None
        import base64

        from kubedistill.core.secrets import remember, url_secrets

        remember(*url_secrets(self.url))
        user, password = unquote(parts.username), unquote(parts.password or "")
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


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
