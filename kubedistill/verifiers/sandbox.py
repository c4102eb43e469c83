"""Run untrusted Python through an executor and the test harness, and read the harness's signed verdict.

This module builds the jobs that :mod:`kubedistill.verifiers.harness` runs inside a sandbox, hands them
to an executor (:func:`executor_for`: local bubblewrap by default, a SandboxFusion service on a cluster)
and accepts only report lines signed with the run's key. The key is random per run, travels on the
harness's stdin and is never readable by the program (docs/verifiers.md, "Code").

Entry points:

* :func:`run_functional` — HumanEval-style: the program's entry point called by ``check(candidate)``
  in the harness's own process; returns a :class:`FunctionalResult`.
* :func:`run_stdio` — LiveCodeBench-style: one fresh interpreter per input; returns the
  :class:`CaseResult` of each case run (the caller compares outputs; expected outputs never enter the
  sandbox).
* :func:`run_python` — one program with one stdin, for tools and tests: a :class:`SandboxResult`.

All raise :class:`SandboxError` only when the executor could not run the job (never because of what the
program did).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kubedistill.verifiers.executors import Executor, Job, RunResult, SandboxConfig, SandboxError

__all__ = [
    "CaseResult",
    "FunctionalResult",
    "SandboxConfig",
    "SandboxError",
    "SandboxResult",
    "executor_for",
    "run_functional",
    "run_python",
    "run_stdio",
    "signed_reports",
]

PROTOCOL = "KDV1"
#: Seconds a run may take beyond its own time limit (interpreter start-up, sandbox set-up, teardown).
STARTUP_SLACK_S = 10.0
_SERVICE_MEMORY_HEADROOM_MB = 512  # what the harness itself may use on a service that limits the whole run


# ------------------------------------------------------------------------------------------ executors


def executor_for(config: SandboxConfig | None = None) -> Executor:
    """The executor ``config`` selects (one instance per distinct config, shared by threads)."""
    config = config or SandboxConfig()
    return _executor(config.model_dump_json())


@functools.cache
def _executor(config_json: str) -> Executor:
    config = SandboxConfig.model_validate_json(config_json)
    if config.executor == "sandboxfusion":
        from kubedistill.verifiers.sandboxfusion import SandboxFusionExecutor

        assert config.url is not None
        return SandboxFusionExecutor(url=config.url, request_timeout_s=config.request_timeout_s)
    from kubedistill.verifiers.bwrap import BwrapExecutor

    return BwrapExecutor(packages=config.packages, tmpfs_mb=config.tmpfs_mb)


@functools.cache
def harness_source() -> str:
    """The source of :mod:`kubedistill.verifiers.harness` (what runs as ``main.py`` in the sandbox)."""
    return Path(__file__).with_name("harness.py").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ reports


def signed_reports(stdout: str, key: str) -> tuple[list[dict[str, Any]], int]:
    """The payloads of the lines of ``stdout`` signed with ``key`` (``KDV1 <json> <hmac-sha256>``), in
    order, and how many ``KDV1`` lines had a bad signature (forged or cut off)."""
    good: list[dict[str, Any]] = []
    bad = 0
    mac_key = key.encode("ascii")
    for line in stdout.splitlines():
        if not line.startswith(PROTOCOL + " "):
            continue
        body, _, mac = line[len(PROTOCOL) + 1 :].rpartition(" ")
        expected = hmac.new(mac_key, body.encode("utf-8", "replace"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac.encode("ascii", "replace"), expected.encode("ascii")):
            bad += 1
            continue
        try:
            payload = json.loads(body)
        except ValueError:
            bad += 1
            continue
        if isinstance(payload, dict):
            good.append(payload)
    return good, bad


def _frame(payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode("utf-8")
    return str(len(body)).encode("ascii") + b"\n" + body


def _stdin(key: str, job: dict[str, Any], tests: dict[str, Any] | None = None) -> bytes:
    """What the harness reads for one job: the public frame (the job), then the secret frame (the key
    and the tests), which only the job's tester reads, after the program's process exists."""
    secret: dict[str, Any] = {"key": key}
    if tests is not None:
        secret["tests"] = tests
    return _frame(job) + _frame(secret)


def _job(mode: str, program: str, prefix: str, timeout_s: float, memory_mb: int, config: SandboxConfig,
         executor: Executor, **extra: Any) -> dict[str, Any]:  # fmt: skip
    if prefix and not prefix.endswith("\n"):
        prefix += "\n"
    return {
        "mode": mode,
        "program": program,
        "prefix": prefix + ("\n" if prefix else ""),
        "timeout_s": float(timeout_s),
        "memory_mb": int(memory_mb),
        "max_processes": config.max_processes,
        "max_file_bytes": config.max_file_mb * 2**20,
        "sys_path": list(executor.sys_path),
        **extra,
    }


def _check_limits(timeout_s: float, memory_mb: int) -> None:
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    if memory_mb <= 0:
        raise ValueError("memory_mb must be positive")


# --------------------------------------------------------------------------------------- functional


@dataclass(frozen=True)
class FunctionalResult:
    """The harness's verdict on one functional run.

    ``status``: ``passed``; ``failed`` (``detail``: the exception's last line, e.g. ``AssertionError``
    or ``NameError: name 'f' is not defined``, or why the program's process ended); ``timeout`` (the
    tests did not finish within the time limit); ``error`` (the tests themselves do not run: cannot
    tell); ``no verdict`` (no signed verdict came back: the run was stopped or the harness died;
    ``detail`` says how). ``forged``: report lines with a bad signature. ``run``: the raw run."""

    status: Literal["passed", "failed", "timeout", "error", "no verdict"]
    detail: str
    run: RunResult
    forged: int = 0


def run_functional(
    program: str,
    tests_code: str,
    entry_point: str,
    *,
    prefix: str = "",
    timeout_s: float,
    memory_mb: int,
    config: SandboxConfig | None = None,
    executor: Executor | None = None,
) -> FunctionalResult:
    """Run ``tests_code`` (which defines ``check(candidate)``) against ``entry_point`` of ``program``.

    ``prefix`` runs before the program and before the tests (helpers a HumanEval prompt defines).
    ``timeout_s`` (seconds) bounds loading the program plus the whole check; ``memory_mb`` (MiB) the
    program's address space; ``executor`` overrides the one ``config`` selects. Raises
    :class:`SandboxError` if the executor cannot run the job."""
    _check_limits(timeout_s, memory_mb)
    config = config or SandboxConfig()
    executor = executor or executor_for(config)
    key = secrets.token_hex(32)
    job = _job("functional", program, prefix, timeout_s, memory_mb, config, executor)
    stdin = _stdin(key, job, {"code": tests_code, "entry_point": entry_point})
    run = executor.run(
        Job(
            code=harness_source(),
            stdin=stdin,
            timeout_s=timeout_s + STARTUP_SLACK_S,
            memory_mb=memory_mb + _SERVICE_MEMORY_HEADROOM_MB,
            max_stdout_bytes=1_000_000,
            max_stderr_bytes=1_000_000,
        )
    )
    reports, forged = signed_reports(run.stdout, key)
    verdicts = [r for r in reports if "status" in r]
    if verdicts:
        final = verdicts[-1]
        status = final.get("status")
        if status in ("passed", "failed", "timeout", "error"):
            return FunctionalResult(status, str(final.get("error") or ""), run, forged)  # type: ignore[arg-type]
    if run.killed_reason is not None:
        return FunctionalResult("no verdict", run.killed_reason, run, forged)
    return FunctionalResult("no verdict", f"the test harness ended without a verdict ({_ended(run)})", run, forged)


def _ended(run: RunResult) -> str:
    if run.returncode is None:
        return "stopped"
    if run.returncode < 0:
        return f"killed by signal {-run.returncode}"
    return f"exit status {run.returncode}"


# -------------------------------------------------------------------------------------------- stdio


@dataclass(frozen=True)
class CaseResult:
    """One stdio case. ``returncode``: the program's exit status (negative: killed by that signal);
    ``killed_reason``: ``"timeout"`` or ``"output limit"`` when the harness stopped it; ``stderr`` is the
    tail of what it wrote there (2000 characters)."""

    index: int
    returncode: int
    stdout: str
    stderr: str
    killed_reason: str | None
    elapsed_s: float
    signal: str | None = None

    @property
    def ok(self) -> bool:
        """It exited with status 0 on its own."""
        return self.returncode == 0 and self.killed_reason is None


def run_stdio(
    program: str,
    inputs: Sequence[str],
    *,
    prefix: str = "",
    timeout_s: float,
    memory_mb: int,
    max_output_bytes: int = 1_000_000,
    config: SandboxConfig | None = None,
    stop_on_failure: bool = True,
    executor: Executor | None = None,
) -> list[CaseResult]:
    """Run ``program`` once per input, each in a fresh interpreter; results in input order.

    ``timeout_s`` (seconds) and ``memory_mb`` (MiB) apply to each case; ``max_output_bytes`` bounds what
    one case may print. With ``stop_on_failure`` the cases after the first that crashes, times out or
    overflows are not run; ``executor`` overrides the one ``config`` selects. Raises
    :class:`SandboxError` if the executor cannot run the job or the harness reports nothing."""
    _check_limits(timeout_s, memory_mb)
    config = config or SandboxConfig()
    executor = executor or executor_for(config)
    if executor.max_report_bytes is not None:  # each case's output must fit in one report line
        max_output_bytes = min(max_output_bytes, executor.max_report_bytes // 4)
    results: list[CaseResult] = []
    start = 0
    while start < len(inputs):
        key = secrets.token_hex(32)
        rest = list(inputs[start:])
        job = _job(
            "stdio", program, prefix, timeout_s, memory_mb, config, executor,
            inputs=rest, first_case=start, max_output_bytes=max_output_bytes, stop_on_failure=stop_on_failure,
        )  # fmt: skip
        run = executor.run(
            Job(
                code=harness_source(),
                stdin=_stdin(key, job),
                timeout_s=len(rest) * (timeout_s + 1.0) + STARTUP_SLACK_S,
                memory_mb=memory_mb + _SERVICE_MEMORY_HEADROOM_MB,
                max_stdout_bytes=len(rest) * (2 * max_output_bytes + 4096) + 65536,
                max_stderr_bytes=1_000_000,
            )
        )
        reports, _ = signed_reports(run.stdout, key)
        if not any(r.get("started") for r in reports):
            raise SandboxError(f"the test harness did not start ({_ended(run)}): {_tail(run.stderr)}")
        errors = [r for r in reports if r.get("status") == "error"]
        if errors:
            raise SandboxError(f"the test harness failed: {errors[-1].get('error', '')}")
        new = [_case(r) for r in reports if "case" in r and int(r["case"]) >= start]
        new = [c for i, c in enumerate(new) if c.index == start + i]  # in order, no gaps
        results.extend(new)
        if any(r.get("done") for r in reports) or (stop_on_failure and any(not c.ok for c in new)):
            break
        if not new:
            why = run.killed_reason or _ended(run)
            raise SandboxError(f"the sandbox stopped before case {start} finished ({why}): {_tail(run.stderr)}")
        start = results[-1].index + 1  # the report was cut short (e.g. a service's output cap): go on
    return results


def _case(report: dict[str, Any]) -> CaseResult:
    return CaseResult(
        index=int(report["case"]),
        returncode=int(report.get("exit", 1)),
        stdout=str(report.get("stdout", "")),
        stderr=str(report.get("stderr", "")),
        killed_reason=report.get("killed") or None,
        elapsed_s=float(report.get("elapsed_s", 0.0)),
        signal=report.get("signal") or None,
    )


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


# --------------------------------------------------------------------------------------- run_python


@dataclass(frozen=True)
class SandboxResult:
    """What one program did: ``returncode`` (negative: killed by that signal), its ``stdout`` and
    ``stderr`` (the last 2000 characters), ``killed_reason`` (``"timeout"``, ``"output limit"`` or
    None), the case's ``elapsed_s`` and the ``executor`` that ran it."""

    returncode: int
    stdout: str
    stderr: str
    killed_reason: str | None
    elapsed_s: float
    executor: str
    signal: str | None = None

    @property
    def timed_out(self) -> bool:
        return self.killed_reason == "timeout"

    @property
    def ok(self) -> bool:
        """It exited with status 0 on its own."""
        return self.returncode == 0 and self.killed_reason is None


def run_python(
    code: str,
    *,
    stdin: str = "",
    timeout_s: float,
    memory_mb: int,
    max_output_bytes: int = 1_000_000,
    config: SandboxConfig | None = None,
    executor: Executor | None = None,
) -> SandboxResult:
    """Run ``code`` as a script (``__main__``) in the sandbox with ``stdin``; see :func:`run_stdio`."""
    config = config or SandboxConfig()
    executor = executor or executor_for(config)
    (case,) = run_stdio(
        code, [stdin], timeout_s=timeout_s, memory_mb=memory_mb, max_output_bytes=max_output_bytes, config=config,
        executor=executor,
    )  # fmt: skip
    return SandboxResult(
        returncode=case.returncode,
        stdout=case.stdout,
        stderr=case.stderr,
        killed_reason=case.killed_reason,
        elapsed_s=case.elapsed_s,
        executor=executor.name,
        signal=case.signal,
    )
