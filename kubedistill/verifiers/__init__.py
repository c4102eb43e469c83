"""Verifiers: is a response's answer correct? The primitives cot/verify, GRPO rewards and evaluate use.

``response`` is always the answer part of a CoT (the text after ``</think>``, or the whole text when
there are no think tags). Every verifier returns a :class:`Verdict`; ``correct=None`` means "cannot
tell" (no reference, unparsable gold, the sandbox could not start) and must never be counted as correct.

:func:`verify` dispatches on the problem (docs/ARCHITECTURE.md):
``metadata["reasoning_gym"]`` -> the task's own scorer; ``tests`` -> sandboxed execution; ``choices``
-> choice letter; ``answer`` -> math-verify; nothing -> ``Verdict(None, "none", "no reference")``.

Verdicts are deterministic (math runs in fixed-seed worker processes reset before every item, code
with a fixed hash seed), and code verdicts come back signed by a harness the program cannot reach,
through the executor ``SandboxConfig`` selects (docs/verifiers.md).

Importing this package is cheap: math-verify (sympy) and reasoning-gym load on first use (in the math
workers), bubblewrap sandboxes start on the first code check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from kubedistill.core.records import FunctionalTests, Problem, StdioTests
from kubedistill.verifiers.choice import extract_choice, verify_choice
from kubedistill.verifiers.code import verify_code
from kubedistill.verifiers.math import verify_math
from kubedistill.verifiers.reasoning_gym import verify_reasoning_gym
from kubedistill.verifiers.sandbox import SandboxConfig, SandboxError, SandboxResult, run_python
from kubedistill.verifiers.verdict import Method, Verdict

__all__ = [
    "FunctionalTests",
    "Method",
    "SandboxConfig",
    "SandboxError",
    "SandboxResult",
    "StdioTests",
    "Verdict",
    "extract_choice",
    "method_for",
    "run_python",
    "verify",
    "verify_choice",
    "verify_code",
    "verify_many",
    "verify_math",
    "verify_reasoning_gym",
]

log = logging.getLogger(__name__)


def method_for(problem: Problem) -> Method:
    """Which verifier :func:`verify` uses for ``problem``."""
    if problem.metadata.get("reasoning_gym"):
        return "reasoning-gym"
    if problem.tests is not None:
        return "sandbox"
    if problem.choices:
        return "choice"
    if problem.answer is not None and problem.answer.strip():
        return "math-verify"
    return "none"


def verify(
    problem: Problem,
    response: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    sandbox: SandboxConfig | None = None,
) -> Verdict:
    """Check ``response`` (the answer part of a CoT) against ``problem``'s reference.

    ``timeout_s`` (seconds) and ``memory_mb`` (MiB) apply to each sandboxed run of a code problem;
    ``sandbox`` picks the code executor (default: local bubblewrap)."""
    method = method_for(problem)
    if method == "reasoning-gym":
        return verify_reasoning_gym(problem, response)
    if method == "sandbox":
        assert problem.tests is not None
        return verify_code(
            problem.tests,
            response,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            prefix=str(problem.metadata.get("program_prefix") or ""),
            sandbox=sandbox,
        )
    if method == "choice":
        if problem.answer is None or not problem.answer.strip():
            return Verdict(None, "choice", "no reference answer")
        return verify_choice(problem.answer, response, problem.choices)
    if method == "math-verify":
        assert problem.answer is not None
        return verify_math(problem.answer, response)
    return Verdict(None, "none", "no reference")


def verify_many(
    items: Sequence[tuple[Problem, str]],
    *,
    workers: int = 2,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    sandbox: SandboxConfig | None = None,
) -> list[Verdict]:
    """:func:`verify` for many ``(problem, response)`` pairs; verdicts in the same order.

    Code and math checks run in up to ``workers`` threads at a time, each driving a sandbox or a
    fixed-seed math worker process; choice and reasoning-gym checks run in the calling thread. A
    verdict depends only on its own pair, not on ``workers`` or on the order. An unexpected error in one
    check becomes ``Verdict(None, method, "verifier error: ...")`` (logged) instead of failing the batch."""
    verdicts: list[Verdict | None] = [None] * len(items)
    offloaded = {"sandbox", "math-verify"}
    futures: dict[int, Future[Verdict]] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="verify") as pool:
        for i, (problem, response) in enumerate(items):
            if method_for(problem) in offloaded:
                futures[i] = pool.submit(_guarded, problem, response, timeout_s, memory_mb, sandbox)
        for i, (problem, response) in enumerate(items):
            if i not in futures:
                verdicts[i] = _guarded(problem, response, timeout_s, memory_mb, sandbox)
        for i, future in futures.items():
            verdicts[i] = future.result()
    return [v if v is not None else Verdict(None, "none", "not verified") for v in verdicts]


def _guarded(
    problem: Problem, response: str, timeout_s: float, memory_mb: int, sandbox: SandboxConfig | None
) -> Verdict:
    try:
        return verify(problem, response, timeout_s=timeout_s, memory_mb=memory_mb, sandbox=sandbox)
    except Exception as exc:
        log.exception("verifier failed on problem %s", problem.id)
        return Verdict(None, method_for(problem), f"verifier error: {type(exc).__name__}: {exc}"[:300])
