"""Secrets, once: which names denote credentials, which values are secret, and how text is redacted.

Every place that writes something a person or a machine may read later — rejects, stats, logs, MLflow
params, reports, compiled pipelines, ``submit --dry-run`` — goes through this module:

* :func:`is_secret_name` — a key or environment variable that holds a credential (``HF_TOKEN``,
  ``api_key``, ``AWS_SECRET_ACCESS_KEY``), but not ``max_tokens`` or an ``*_env`` key (which holds the
  *name* of a variable, never its value);
* :func:`known_secrets` — every secret value this process knows: the environment's credential
  variables (:func:`secret_values`) plus what was :func:`remember` ed — API keys read through an
  ``api_key_env`` (whatever the variable is called), and what :func:`remember_config` found in a recipe
  or a stage config (values of credential keys, variables named by ``*_env`` keys, passwords in URLs);
* :func:`redact` — free text with known secret values, bearer tokens, ``Authorization`` values,
  credential ``key=value`` pairs, API-key-shaped strings and credentials in URLs replaced by ``***``;
* :func:`mask` — a copy of a JSON-like object with credential keys masked and every string redacted:
  **the one redaction step** for everything written for people to read — rejects, stats, logs, error
  lines, reports, MLflow params, tags and artifacts (``core/records.py`` and ``tracking.py`` call it on
  every write);
* :func:`redact_values` / :func:`mask_values` — only the known secret values replaced: what record
  outputs and the request cache go through (patterns would mangle data such as a problem about tokens);
* :func:`secret_paths` — where in such an object a secret sits (to refuse it rather than mask it);
* :func:`strip_url` — an endpoint URL without user info, query or fragment.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
MIN_SECRET_LEN = 6  # shorter values are too common to redact in free text without mangling it

_SECRET_WORDS = {"password", "passwd", "secret", "credential", "credentials", "authorization", "apikey", "pat"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("client", "secret")}
# user:password@ (or a bare token@) in a URL's authority
URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
# an HTTP credential: "Bearer <token>", and "Authorization: <scheme> <credentials>" whatever the scheme
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)([A-Za-z0-9._~+/=-]{8,})")
_AUTHORIZATION = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:([A-Za-z]+)\s+)?([^\s\"',;]{3,})")
# key=value / "key": "value" pairs whose key names a credential, e.g. api_key=sk-..., "password": "..."
_KEY_VALUE = re.compile(
    r"""(?ix)
    (?P<key>["']?[a-z0-9_.-]*(?:api[_-]?key|access[_-]?key|secret|password|passwd|token|authorization)["']?)
    (?P<sep>\s*[:=]\s*)
    (?P<quote>["']?)
    (?P<value>(?:(?:bearer|basic|token|digest)\s+(?:\*\*\*|[^\s"',;&}]{4,}))|[^\s"',;&}]{4,})  # a scheme goes too
    """
)
# Token shapes hosted APIs issue: OpenAI / Anthropic (sk-...), Hugging Face (hf_...), GitHub, AWS access keys.
_TOKEN_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16})\b"
)


def is_secret_name(name: str) -> bool:
    """Whether a key or environment variable name denotes a credential: ``HF_TOKEN``, ``api_key``,
    ``AWS_SECRET_ACCESS_KEY``, ``password`` — but not ``max_tokens`` or ``timeout_per_token_s``, and never
    a ``*_env`` key (which holds the *name* of a variable)."""
    if name.lower().endswith("_env"):
        return False
    parts = [p.lower() for p in re.split(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])", name) if p]
    if not parts:
        return False
    if parts[-1] in ("token", "key") and len(parts) > 1 and parts[-2] in ("access", "api", "auth", "bearer", "hf"):
        return True
    if parts[-1] == "token" or parts == ["key"]:
        return True
    if any(p in _SECRET_WORDS for p in parts):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(parts))


def secret_values(environ: Mapping[str, str] | None = None, min_len: int = MIN_SECRET_LEN) -> set[str]:
    """Values of environment variables whose names look like credentials, and passwords in the URLs of
    any variable (what must never be written)."""
    environ = os.environ if environ is None else environ
    found = {v for k, v in environ.items() if is_secret_name(k) and v and len(v) >= min_len}
    for v in environ.values():  # MLFLOW_TRACKING_URI=https://user:pass@host, HTTPS_PROXY=http://u:p@proxy
        if "://" in v and "@" in v:
            found.update(s for s in url_secrets(v) if len(s) >= min_len)
    return found


_REMEMBERED: set[str] = set()


def remember(*values: str | None) -> None:
    """Add secret values this process has read (an API key from the variable an ``api_key_env`` names,
    a password from a URL): from now on every redaction step removes them. Values shorter than
    :data:`MIN_SECRET_LEN` are ignored (too common to remove from text)."""
    for v in values:
        if isinstance(v, str) and len(v) >= MIN_SECRET_LEN:
            _REMEMBERED.add(v)


def forget_all() -> None:
    """Forget what :func:`remember` added (tests)."""
    _REMEMBERED.clear()


def known_secrets(environ: Mapping[str, str] | None = None) -> set[str]:
    """The environment's secret values (:func:`secret_values`) and every value :func:`remember` ed."""
    return secret_values(environ) | _REMEMBERED


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL: the password (or a bare token) of its user info, and the values of
    query parameters named like credentials (``?api_key=...``)."""
    from urllib.parse import parse_qsl

    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = []
    if parts.password:
        found.append(parts.password)
    elif parts.username and "@" in parts.netloc:
        found.append(parts.username)  # https://TOKEN@host
    found += [v for k, v in parse_qsl(parts.query) if is_secret_name(k) and v]
    return found


def config_secrets(obj: Any, environ: Mapping[str, str] | None = None) -> set[str]:
    """Secret values a JSON-like config (a recipe, a stage config) holds or points at: the values of
    credential keys (``api_key: ...``), the values of the environment variables its ``*_env`` keys name
    (``api_key_env: TEACHER_KEY`` -> ``$TEACHER_KEY``, whatever that variable is called), and passwords
    or tokens in its URLs."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()

    def walk(o: Any, key: str = "") -> None:
        if isinstance(o, Mapping):
            for k, v in o.items():
                walk(v, str(k))
        elif isinstance(o, list | tuple):
            for x in o:
                walk(x, key)
        elif isinstance(o, str) and o:
            if key.lower().endswith("_env") and environ.get(o):
                found.add(environ[o])
            elif is_secret_name(key):
                found.add(o)
            if "://" in o:
                found.update(url_secrets(o))

    walk(obj)
    return {v for v in found if len(v) >= MIN_SECRET_LEN}


def remember_config(obj: Any) -> None:
    """:func:`remember` the secret values of a config (:func:`config_secrets`)."""
    remember(*config_secrets(obj))


def has_url_credentials(text: str) -> bool:
    """Whether ``text`` holds a URL with user info (``https://user:pass@host``)."""
    return URL_CREDENTIALS.search(text) is not None


def mask_url(url: str | None) -> str | None:
    """``https://user:pass@host/v1`` -> ``https://***@host/v1`` (None stays None)."""
    return URL_CREDENTIALS.sub(lambda m: m.group("scheme") + MASK + "@", url) if url else url


def strip_url(url: str) -> str:
    """The URL without user info, query or fragment (any of them may carry credentials)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with known secret values (``secrets``, default: :func:`known_secrets`),
    bearer tokens, credential ``key=value`` pairs, API-key-shaped tokens and credentials in URLs replaced
    by ``***``. Idempotent; leaves everything else as it was."""
    if not text:
        return text
    text = redact_values(text, known_secrets() if secrets is None else secrets)
    text = URL_CREDENTIALS.sub(lambda m: m.group("scheme") + MASK + "@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}" if m.group(3) != MASK else m.group(0), text)
    text = _AUTHORIZATION.sub(_mask_authorization, text)
    text = _KEY_VALUE.sub(_mask_key_value, text)
    return _TOKEN_SHAPES.sub(MASK, text)


def _mask_authorization(m: re.Match[str]) -> str:
    """``Authorization: <scheme> <credentials>`` -> ``Authorization: <scheme> ***``. Closing brackets that
    end the match are the surrounding text's (credentials are token68 / base64) and are kept after the
    mask; brackets inside the value are masked with it."""
    value = m.group(3)
    tail = value[len(value.rstrip(")]}")) :]
    if value.removesuffix(tail) == MASK:
        return m.group(0)
    if m.group(2) is None and value.removesuffix(tail) == "":
        return m.group(0)
    return f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}{MASK}{tail}"


def _mask_key_value(m: re.Match[str]) -> str:
    """``api_key=<value>`` -> ``api_key=***``. An ``authorization`` key is left to :data:`_AUTHORIZATION`,
    which has masked its credentials and kept its scheme (``Authorization: Bearer ***``)."""
    if m.group("value") == MASK or "authorization" in m.group("key").lower():
        return m.group(0)
    return f"{m.group('key')}{m.group('sep')}{m.group('quote')}{MASK}"


def _values_pattern(values: frozenset[str]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for v in values:
        if v:
            forms.add(v)
            forms.add(json.dumps(v, ensure_ascii=False)[1:-1])  # as it appears inside a JSON string
            forms.add(json.dumps(v)[1:-1])
    if not forms:
        return None
    # longest first: one secret may contain another
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))


_PATTERNS: dict[frozenset[str], re.Pattern[str] | None] = {}


def redact_values(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every known secret value (``secrets``, default :func:`known_secrets`) replaced by
    ``***`` — also where it appears JSON-escaped — and nothing else touched."""
    if not text:
        return text
    values = frozenset(known_secrets() if secrets is None else (s for s in secrets if s))
    if not values:
        return text
    pattern = _PATTERNS.get(values)
    if pattern is None and values not in _PATTERNS:
        if len(_PATTERNS) > 64:
            _PATTERNS.clear()
        pattern = _PATTERNS[values] = _values_pattern(values)
    return pattern.sub(MASK, text) if pattern is not None else text


def mask_values(obj: Any, secrets: Iterable[str] | None = None) -> Any:
    """A copy of a JSON-like ``obj`` with every string passed through :func:`redact_values`."""
    values = list(known_secrets() if secrets is None else secrets)
    if not values:
        return obj

    def walk(o: Any) -> Any:
        if isinstance(o, str):
            return redact_values(o, values)
        if isinstance(o, Mapping):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [walk(x) for x in o]
        return o

    return walk(obj)


def mask(obj: Any, secrets: Iterable[str] | None = None) -> Any:
    """A copy of a JSON-like ``obj`` with the values of credential keys (not ``*_env`` names) masked and
    every string redacted (:func:`redact`): the one redaction step for diagnostics (see the module
    docstring)."""
    values = known_secrets() if secrets is None else set(secrets)

    def walk(o: Any) -> Any:
        if isinstance(o, Mapping):
            return {
                (redact(k, values) if isinstance(k, str) else k): (
                    MASK if is_secret_name(str(k)) and v not in (None, "") and not isinstance(v, bool) else walk(v)
                )
                for k, v in o.items()
            }
        if isinstance(o, list | tuple):
            return [walk(x) for x in o]
        if isinstance(o, str):
            return redact(o, values)
        return o

    return walk(obj)


def secret_paths(obj: Any, secrets: Iterable[str] | None = None) -> list[str]:
    """Dotted paths in a JSON-like ``obj`` that hold a secret: a credential key with a value, a URL with
    user info, or a known secret value (e.g. to refuse pipeline parameters that would carry one)."""
    values = known_secrets() if secrets is None else set(secrets)
    found: list[str] = []

    def walk(o: Any, path: str) -> None:
        if isinstance(o, Mapping):
            for k, v in o.items():
                p = f"{path}.{k}" if path else str(k)
                if is_secret_name(str(k)) and v not in (None, "", {}, []):
                    found.append(p)
                else:
                    walk(v, p)
        elif isinstance(o, list | tuple):
            for i, x in enumerate(o):
                walk(x, f"{path}.{i}")
        elif isinstance(o, str) and (has_url_credentials(o) or any(s in o for s in values)):
            found.append(path)

    walk(obj, "")
    return found
