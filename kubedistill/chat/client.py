"""Async client for OpenAI-compatible chat-completion endpoints (vLLM, KServe, hosted APIs).

What it guarantees, for a batch of :class:`ChatRequest`:

* one :class:`ChatResult` per request, in order — nothing lost, nothing duplicated (identical requests
  in one batch are sent once);
* bounded concurrency, overall and per endpoint;
* retries with exponential backoff and full jitter on 408/409/425/429/5xx, timeouts, connection
  resets **and** malformed or truncated 200 bodies (which the stock ``openai`` client passes on or
  loses); ``Retry-After`` is honoured; other 4xx fail at once (retrying cannot fix them);
* a per-attempt timeout that grows with ``max_tokens`` (long CoTs take minutes);
* a durable cache (:class:`~kubedistill.chat.cache.RequestCache`) written as each answer arrives,
  so a killed run, started again, repeats nothing that finished;
* token accounting and a progress bar with requests/s and tokens/s.

API keys are read from the environment variables named in :class:`EndpointConfig` and only ever
placed in the ``Authorization`` header; they are never logged or cached.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from kubedistill.chat.cache import RequestCache
from kubedistill.chat.config import ClientConfig, EndpointConfig
from kubedistill.core.errors import BadInputError
from kubedistill.core.progress import RequestProgress
from kubedistill.core.records import COMPLETE_FINISH_REASONS

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
CACHE_KEY_VERSION = 3  # 2: keys hold the endpoint's identity (label + URL) and extra_body; 3: not the token limit
TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")  # request params that bound the answer, not shape it
MAX_RETRY_AFTER_S = 600.0


class EndpointError(BadInputError, RuntimeError):
    """An endpoint cannot be used (unreachable, unauthorised, wrong model)."""


class MalformedResponse(ValueError):
    """A 200 answer whose body is not a usable chat completion (truncated JSON, no choices, ...)."""


def derived_seed(base: int, *parts: object) -> int:
    """A per-sample seed: distinct samples of one prompt must not share a seed (or they are identical)."""
    h = hashlib.sha256(repr((base, *parts)).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


@dataclass(slots=True)
class ChatRequest:
    """One chat completion to make. ``tag`` is the caller's (e.g. the problem id); not part of the key."""

    endpoint: str  # the label of the EndpointConfig to send it to
    messages: list[dict[str, str]]
    params: dict[str, Any] = field(default_factory=dict)
    sample_index: int = 0
    tag: Any = None

    def cache_key(self, endpoint: EndpointConfig) -> str:
        """Content hash of who answers and what was asked: the endpoint's identity (label and URL or
        ``cache_identity``: :attr:`EndpointConfig.identity`), its model name and ``extra_body``, the
        messages, the sampling parameters and the sample index. Two teachers never share a key.

        The token limit (``max_tokens`` / ``max_completion_tokens``) is left out: whether a stored answer
        serves a request under another limit is :func:`reusable`'s decision, so raising a stage's
        ``max_tokens`` re-asks only the answers the old limit cut short."""
        params = {k: v for k, v in self.params.items() if k not in TOKEN_LIMITS}
        payload = json.dumps(
            {
                "v": CACHE_KEY_VERSION,
                "endpoint": endpoint.identity,
                "model": endpoint.model,
                "extra_body": endpoint.extra_body,
                "messages": self.messages,
                "params": params,
                "i": self.sample_index,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    @property
    def token_limit(self) -> int | None:
        """The request's bound on the answer's tokens (``max_completion_tokens``, else ``max_tokens``;
        None: the server's default)."""
        for name in reversed(TOKEN_LIMITS):
            value = self.params.get(name)
            if value is not None:
                return int(value)
        return None


def reusable(cached: dict[str, Any], request: ChatRequest) -> bool:
    """Whether a stored answer (:meth:`ChatResult.to_cache`) is the answer ``request`` would get, though
    the two may differ in their token limit: decoding is the same token by token whatever the limit (a
    greedy decode, or a seeded sample), so

    * an answer that ended by itself (``stop``, or a filter) after ``n`` completion tokens serves any limit
      of at least ``n`` tokens (or no limit);
    * an answer the limit cut short (``length``) serves only the same limit.

    An answer stored without its token count serves only the same limit."""
    limit = request.token_limit
    stored_limit = cached.get("max_tokens")
    if limit == stored_limit:
        return True
    if cached.get("finish_reason") == "length":
        return False
    n = int((cached.get("usage") or {}).get("completion_tokens") or 0)
    return n > 0 and (limit is None or n <= limit)


@dataclass(slots=True)
class ChatResult:
    request: ChatRequest
    content: str | None = None
    reasoning: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    cached: bool = False
    error: str | None = None
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def complete(self) -> bool:
        """A finished answer: the request succeeded, the content is not blank, and the server says the
        model stopped by itself (``finish_reason`` ``stop`` or a synonym). A truncated answer
        (``length``), a filtered one (``content_filter``), one without a finish reason and an empty or
        whitespace-only content are not complete."""
        return (
            self.ok
            and bool((self.content or "").strip())
            and self.finish_reason is not None
            and self.finish_reason in COMPLETE_FINISH_REASONS
        )

    @property
    def incomplete_reason(self) -> str | None:
        """Why an answer that succeeded is not complete (None when it is): ``empty answer``,
        ``finish_reason=content_filter``, ``no finish_reason``, ``finish_reason=length``."""
        if not self.ok or self.complete:
            return None
        if not (self.content or "").strip():
            return "empty answer" + (f" (finish_reason={self.finish_reason})" if self.finish_reason else "")
        if self.finish_reason is None:
            return "no finish_reason"
        return f"finish_reason={self.finish_reason}"

    def to_cache(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "reasoning": self.reasoning,
            "finish_reason": self.finish_reason,
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
            "attempts": self.attempts,
            "latency_s": round(self.latency_s, 4),
            "max_tokens": self.request.token_limit,
        }

    @classmethod
    def from_cache(cls, request: ChatRequest, data: dict[str, Any]) -> ChatResult:
        usage = data.get("usage") or {}
        return cls(
            request=request,
            content=data.get("content"),
            reasoning=data.get("reasoning"),
            finish_reason=data.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            attempts=int(data.get("attempts") or 0),
            cached=True,
            latency_s=float(data.get("latency_s") or 0.0),
        )


@dataclass
class EndpointUsage:
    requests: int = 0
    cached: int = 0
    failed: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ClientStats:
    """Totals over the client's lifetime (all batches)."""

    requests: int = 0
    cached: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    per_endpoint: dict[str, EndpointUsage] = field(default_factory=dict)

    def as_metrics(self, prefix: str) -> dict[str, float]:
        m = {
            f"{prefix}requests": self.requests,
            f"{prefix}cached": self.cached,
            f"{prefix}succeeded": self.succeeded,
            f"{prefix}failed": self.failed,
            f"{prefix}retries": self.retries,
            f"{prefix}truncated": self.truncated,
            f"{prefix}prompt_tokens": self.prompt_tokens,
            f"{prefix}completion_tokens": self.completion_tokens,
            f"{prefix}elapsed_s": round(self.elapsed_s, 3),
        }
        return {k: float(v) for k, v in m.items()}


def parse_chat_response(raw: bytes) -> dict[str, Any]:
    """Extract content, reasoning, finish_reason and usage from a chat-completion body, or raise
    :class:`MalformedResponse`."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MalformedResponse(f"body is not JSON ({len(raw)} bytes): {e}") from None
    if not isinstance(data, dict):
        raise MalformedResponse("body is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("no choices in body")
    msg = choices[0].get("message")
    if not isinstance(msg, dict):
        raise MalformedResponse("choice has no message")
    content = msg.get("content")
    # vLLM's reasoning parsers put the thinking in a separate field (older: reasoning_content).
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if content is not None and not isinstance(content, str):
        raise MalformedResponse("message content is not a string")
    if reasoning is not None and not isinstance(reasoning, str):
        raise MalformedResponse("message reasoning is not a string")
    finish = choices[0].get("finish_reason")
    if content is None and not reasoning:
        raise MalformedResponse("message has neither content nor reasoning")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return {
        "content": content or "",
        "reasoning": reasoning,
        "finish_reason": finish if isinstance(finish, str) else None,
        "prompt_tokens": _int(usage.get("prompt_tokens")),
        "completion_tokens": _int(usage.get("completion_tokens")),
    }


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    """Runs batches of chat requests against one or more OpenAI-compatible endpoints (teachers, judges,
    rewriters, students under evaluation). See the module docstring."""

    def __init__(self, endpoints: Sequence[EndpointConfig], cfg: ClientConfig | None = None) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.cfg = cfg or ClientConfig()
        self.endpoints: dict[str, EndpointConfig] = {}
        for t in endpoints:
            if t.label in self.endpoints:
                raise ValueError(f"two endpoints share the name {t.label!r}")
            self.endpoints[t.label] = t
        # Resolve keys now: a missing variable fails before any request is made.
        self._headers = {}
        for label, t in self.endpoints.items():
            h = {"Content-Type": "application/json"}
            auth = t.authorization()
            if auth:
                h["Authorization"] = auth
            self._headers[label] = h
        self.cache = RequestCache(self.cfg.cache_dir) if self.cfg.cache_dir else None
        self.stats = ClientStats()

    # ------------------------------------------------------------------------------------ public API

    def run(self, requests: Sequence[ChatRequest], desc: str = "requests") -> list[ChatResult]:
        """Blocking wrapper of :meth:`arun` (on uvloop where installed: less client CPU per request)."""
        return run_async(self.arun(requests, desc=desc))

    async def arun(self, requests: Sequence[ChatRequest], desc: str = "requests") -> list[ChatResult]:
        start = time.perf_counter()
        n = len(requests)
        results: list[ChatResult | None] = [None] * n
        keys: list[str] = []
        for r in requests:
            t = self.endpoints.get(r.endpoint)
            if t is None:
                raise ValueError(f"request names unknown endpoint {r.endpoint!r} (known: {list(self.endpoints)})")
            keys.append(r.cache_key(t))
        found = self.cache.get_many(keys) if self.cache else {}
        pending: dict[str, list[int]] = {}
        for i, (req, key) in enumerate(zip(requests, keys, strict=True)):
            if key in found and reusable(found[key], req):
                results[i] = ChatResult.from_cache(req, found[key])
            else:  # identical requests of one batch are asked once (the limit is part of "identical" here)
                pending.setdefault(f"{key}/{req.token_limit}", []).append(i)
        if pending:
            # a `local://` teacher is started now, outside the event loop, and only when something is asked
            for label in {requests[idxs[0]].endpoint for idxs in pending.values()}:
                _ = self.endpoints[label].request_url
        n_cached = n - sum(len(v) for v in pending.values())
        for res in results:
            if res is not None:
                self._account(res)

        progress = RequestProgress(total=n, initial=n_cached, desc=desc, enabled=self.cfg.progress)
        try:
            if pending:
                await self._run_pending(requests, keys, pending, results, progress)
        finally:
            progress.close()
            self.stats.elapsed_s += time.perf_counter() - start
        return [r for r in results if r is not None]

    def check(self, timeout_s: float = 5.0, attempts: int = 3) -> None:
        run_async(self.acheck(timeout_s=timeout_s, attempts=attempts))

    async def acheck(self, timeout_s: float = 5.0, attempts: int = 3) -> None:
        """Fail fast, before any work: every endpoint answers ``GET /models`` and serves its model."""
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._check_one(session, t, timeout_s, attempts) for t in self.endpoints.values()))

    def close(self) -> None:
        if self.cache:
            self.cache.close()

    # ----------------------------------------------------------------------------------- internals

    async def _check_one(
        self, session: aiohttp.ClientSession, t: EndpointConfig, timeout_s: float, attempts: int
    ) -> None:
        last = ""
        for attempt in range(attempts):
            try:
                async with session.get(
                    f"{t.request_url}/models",
                    headers=self._headers[t.label],
                    timeout=aiohttp.ClientTimeout(total=timeout_s),
                ) as resp:
                    body = await resp.read()
                    if resp.status in (401, 403):
                        raise EndpointError(
                            f"endpoint {t.label!r} at {t.display_url} refused the key (HTTP {resp.status}); "
                            f"check {t.api_key_env or 'api_key_env'}"
                        )
                    if resp.status == 200:
                        served = _served_models(body)
                        if served and t.model not in served:
                            raise EndpointError(
                                f"endpoint {t.label!r} at {t.display_url} does not serve model {t.model!r} "
                                f"(it serves: {', '.join(sorted(served))})"
                            )
                        return
                    if resp.status == 404:
                        return  # some gateways do not expose /models; the first request will tell
                    last = f"HTTP {resp.status}"
            except EndpointError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                last = f"{type(e).__name__}: {e}".strip()
            if attempt + 1 < attempts:
                await asyncio.sleep(1.0 * (attempt + 1))
        raise EndpointError(f"endpoint {t.label!r} at {t.display_url} is unreachable after {attempts} tries: {last}")

    async def _run_pending(
        self,
        requests: Sequence[ChatRequest],
        keys: list[str],
        pending: dict[str, list[int]],
        results: list[ChatResult | None],
        progress: RequestProgress,
    ) -> None:
        sems = {
            label: asyncio.Semaphore(t.max_concurrency)
            for label, t in self.endpoints.items()
            if t.max_concurrency is not None
        }
        work = iter(list(pending.items()))
        connector = aiohttp.TCPConnector(limit=self.cfg.concurrency, limit_per_host=0, ttl_dns_cache=300)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:

            async def worker() -> None:
                for _, idxs in work:
                    req, key = requests[idxs[0]], keys[idxs[0]]
                    sem = sems.get(req.endpoint)
                    if sem is not None:
                        async with sem:
                            res = await self._call(session, req)
                    else:
                        res = await self._call(session, req)
                    if self.cache is not None and res.ok and _cacheable(res):
                        self.cache.put(key, self.endpoints[req.endpoint].model, res.to_cache())
                    for i in idxs:
                        r = res if i == idxs[0] else _copy_for(res, requests[i])
                        results[i] = r
                        self._account(r)
                        progress.update(0 if r.cached else r.completion_tokens, failed=not r.ok)

            n_workers = min(self.cfg.concurrency, len(pending))
            await asyncio.gather(*(worker() for _ in range(n_workers)))

    async def _call(self, session: aiohttp.ClientSession, req: ChatRequest) -> ChatResult:
        t = self.endpoints[req.endpoint]
        body = {"model": t.model, "messages": req.messages, **req.params, **t.extra_body}
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        url = f"{t.request_url}/chat/completions"
        timeout = aiohttp.ClientTimeout(
            total=self.cfg.attempt_timeout(req.params.get("max_tokens")), sock_connect=self.cfg.connect_timeout_s
        )
        headers = self._headers[req.endpoint]
        start = time.perf_counter()
        error = ""
        attempt = 0
        for attempt in range(1, self.cfg.max_retries + 2):
            retry_after: float | None = None
            try:
                async with session.post(url, data=data, headers=headers, timeout=timeout) as resp:
                    raw = await resp.read()
                    status = resp.status
                    if status != 200:
                        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                if isinstance(e, TimeoutError):
                    kind = "timeout"
                elif isinstance(e, aiohttp.ClientPayloadError):
                    kind = "truncated_body"
                else:
                    kind = "connection"
                error = f"{kind}: {type(e).__name__} {e}".strip()
                self.stats.errors[kind] += 1
            else:
                if status == 200:
                    try:
                        parsed = parse_chat_response(raw)
                    except MalformedResponse as e:
                        error = f"malformed 200 body: {e}"
                        self.stats.errors["malformed"] += 1
                    else:
                        return ChatResult(
                            request=req, attempts=attempt, latency_s=time.perf_counter() - start, **parsed
                        )
                else:
                    snippet = raw[:300].decode("utf-8", "replace").strip()
                    error = f"HTTP {status}: {snippet}"
                    self.stats.errors[f"http_{status}"] += 1
                    if status not in RETRYABLE_STATUS and status < 500:
                        break  # 400/401/404/422...: the same request will fail again
            if attempt > self.cfg.max_retries:
                break
            self.stats.retries += 1
            await asyncio.sleep(self._backoff(attempt, retry_after))
        return ChatResult(request=req, attempts=attempt, error=error, latency_s=time.perf_counter() - start)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * (2 ** (attempt - 1)))
        delay = random.uniform(0.0, cap)  # full jitter
        if retry_after is not None:
            # Honour the server; a little jitter on top keeps clients from returning in lockstep.
            delay = min(retry_after, MAX_RETRY_AFTER_S) + random.uniform(0.0, 0.1 * cap)
        return delay

    def _account(self, r: ChatResult) -> None:
        s = self.stats
        u = s.per_endpoint.setdefault(r.request.endpoint, EndpointUsage())
        s.requests += 1
        u.requests += 1
        if r.cached:
            s.cached += 1
            u.cached += 1
        if not r.ok:
            s.failed += 1
            u.failed += 1
            return
        s.succeeded += 1
        if r.finish_reason == "length":
            s.truncated += 1
            u.truncated += 1
        if r.cached:
            return  # tokens count what this run spent; cached answers cost nothing
        s.prompt_tokens += r.prompt_tokens
        s.completion_tokens += r.completion_tokens
        u.prompt_tokens += r.prompt_tokens
        u.completion_tokens += r.completion_tokens


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (Linux), else on the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _cacheable(res: ChatResult) -> bool:
    """Whether an answer is worth keeping: complete, or ended by a property of the request (``length``:
    max_tokens; ``content_filter``: the content). An empty answer or one without a finish reason is a
    server's glitch: the next run asks again."""
    return res.complete or (bool((res.content or "").strip()) and res.finish_reason in ("length", "content_filter"))


def _copy_for(res: ChatResult, req: ChatRequest) -> ChatResult:
    """The answer to an identical request, attached to another request of the same batch."""
    return ChatResult(
        request=req,
        content=res.content,
        reasoning=res.reasoning,
        finish_reason=res.finish_reason,
        prompt_tokens=res.prompt_tokens,
        completion_tokens=res.completion_tokens,
        attempts=0,
        cached=True,
        error=res.error,
        latency_s=0.0,
    )


def _served_models(body: bytes) -> set[str]:
    try:
        data = json.loads(body)
        return {m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m}
    except (json.JSONDecodeError, AttributeError, TypeError):
        return set()
