"""Code answers run against their tests in the sandbox (:mod:`kubedistill.verifiers.sandbox`).

Guarantees of :func:`verify_code`:

* The program is the last fenced code block of the response (:func:`kubedistill.core.text.extract_code`);
  none gives ``correct=False`` with detail ``"no code block"``. Nothing is ever run in this process.
* **Functional tests** (HumanEval style): one run of ``program + tests.code + check(entry_point)``.
  Correct iff the run exits with status 0 on its own *and* prints a random per-run token after
  ``check`` returned, so a program that exits early (``sys.exit(0)``, ``os._exit(0)``) before the tests
  ran does not pass.
* **Stdio tests** (LiveCodeBench style): one run per case with the case's input on stdin; correct iff
  every run exits 0 and prints the expected output, compared after stripping trailing whitespace of
  each line and trailing blank lines. Runs stop at the first failing case. ``timeout_s`` applies to
  each run.
* The detail names the first failure: ``case 3: expected '7', got '8'``, the last line of the
  exception (``AssertionError``, ``NameError: name 'x' is not defined``), ``timeout after 10 s``,
  ``output limit``, ``cpu limit``...
* ``correct=None`` only when the sandbox itself failed to start the program (:class:`SandboxError`).
"""

from __future__ import annotations

import secrets

from kubedistill.core.records import FunctionalTests, StdioTests
from kubedistill.core.text import extract_code
from kubedistill.verifiers.sandbox import SandboxError, SandboxResult, run_python
from kubedistill.verifiers.verdict import Verdict

__all__ = ["functional_program", "normalize_output", "verify_code"]

METHOD = "sandbox"
_SHOW = 120


def verify_code(
    tests: FunctionalTests | StdioTests,
    response: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    prefix: str = "",
) -> Verdict:
    """Run the program in ``response`` against ``tests``. See the module docstring.

    ``prefix`` goes before the program (e.g. LiveCodeBench's ``from typing import *`` header for
    LeetCode-style starter code, kept in ``problem.metadata["program_prefix"]``)."""
    program = extract_code(response)
    if program is None or not program.strip():
        return Verdict(False, METHOD, "no code block")
    if prefix:
        program = f"{prefix.rstrip()}\n\n{program}"
    try:
        if isinstance(tests, FunctionalTests):
            return _functional(program, tests, timeout_s=timeout_s, memory_mb=memory_mb)
        return _stdio(program, tests, timeout_s=timeout_s, memory_mb=memory_mb)
    except SandboxError as exc:
        return Verdict(None, METHOD, f"sandbox error: {exc}"[:300])


def functional_program(program: str, tests: FunctionalTests, token: str) -> str:
    """The script of a functional-test run: program, tests, the check call, then the token."""
    return f"{program}\n\n{tests.code}\n\ncheck({tests.entry_point})\nprint({token!r}, flush=True)\n"


def normalize_output(text: str) -> str:
    """Strip trailing whitespace of each line and trailing blank lines (``\\r\\n`` counts as ``\\n``)."""
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip("\n")


def _functional(program: str, tests: FunctionalTests, *, timeout_s: float, memory_mb: int) -> Verdict:
    token = f"kubedistill-tests-done-{secrets.token_hex(16)}"
    result = run_python(functional_program(program, tests, token), timeout_s=timeout_s, memory_mb=memory_mb)
    failure = _run_failure(result, timeout_s)
    if failure is not None:
        return Verdict(False, METHOD, failure)
    if token not in result.stdout.splitlines()[-1:]:
        return Verdict(False, METHOD, "exited before the tests finished")
    return Verdict(True, METHOD, "all tests passed")


def _stdio(program: str, tests: StdioTests, *, timeout_s: float, memory_mb: int) -> Verdict:
    for i, case in enumerate(tests.cases):
        result = run_python(program, stdin=case.input, timeout_s=timeout_s, memory_mb=memory_mb)
        failure = _run_failure(result, timeout_s)
        if failure is not None:
            return Verdict(False, METHOD, f"case {i}: {failure}")
        got, want = normalize_output(result.stdout), normalize_output(case.output)
        if got != want:
            return Verdict(False, METHOD, f"case {i}: expected {want[:_SHOW]!r}, got {got[:_SHOW]!r}")
    return Verdict(True, METHOD, f"all {len(tests.cases)} cases passed")


def _run_failure(result: SandboxResult, timeout_s: float) -> str | None:
    """Why a run failed (None if it exited 0 on its own)."""
    if result.timed_out:
        return f"timeout after {timeout_s:g} s"
    if result.killed_reason is not None:
        return result.killed_reason
    if result.returncode != 0:
        return _last_line(result.stderr) or f"exit status {result.returncode}"
    return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
