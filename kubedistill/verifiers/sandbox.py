"""Run untrusted Python (model-written programs) in a separate, locked-down process.

:func:`run_python` is the only entry point. It never runs the code in the calling process and always
returns a :class:`SandboxResult` once the program and everything it started are dead and the scratch
directory is deleted. It raises :class:`SandboxError` only when the sandbox itself could not start the
program (never because of what the program did).

Process layout (one run)::

    caller ── launcher (python -I -S -B, the caller's uid; new session; child subreaper)
                 └── program (python -I -B: prelude + main.py; unprivileged uid; rlimits)

Layers, each independent of the others (see docs/verifiers.md for what they do NOT cover):

1. **Separate process, isolated interpreter**: ``python -I`` (no PYTHON* variables, no user site,
   no script directory on sys.path), ``-B`` (no .pyc writes), in a fresh scratch directory that is
   the working directory and is deleted afterwards.
2. **Empty environment**: only ``PATH`` and ``LANG``; the caller's variables (API keys) never reach it.
3. **Process control**: a new session/process group; the launcher is a child subreaper that kills
   and reaps every descendant when the program ends; on timeout or output overflow the program is
   SIGKILLed and, as a fallback, the whole process group too.
4. **Resource limits**: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_NPROC,
   RLIMIT_CORE=0; stdout+stderr capped at ``max_output_bytes`` (the program is killed beyond).
5. **Privilege drop** (when the caller is root): the program runs as a per-run unprivileged uid/gid
   (leased from ``UID_BASE``..``UID_BASE+UID_COUNT`` with a lock file, so RLIMIT_NPROC binds and every
   process of that uid can be swept afterwards), with no supplementary groups and ``no_new_privs``.
6. **Namespaces** (when permitted: root with CAP_SYS_ADMIN, or unprivileged user namespaces): a new
   network namespace (no interfaces but a down loopback: no network at all) and a new PID namespace
   (when the program exits or is killed, the kernel kills everything it started).
7. **Audit hook** (PEP 578) installed by a prelude before the program runs: refuses socket
   connect/bind/send, fork/exec/spawn/subprocess/system/kill, ctypes library loading and symbol
   lookup, opening for writing, renaming or removing anything outside the scratch directory, and
   reading other processes' /proc entries or mounted secrets. PEP 578 hooks are a tripwire, not a
   security boundary: the layers above (those active) hold when the hook is bypassed.

:attr:`SandboxResult.layers` tells which layers were active for that run. This module imports only the
standard library: the launcher and the prelude are functions below, shipped by source to the child
interpreters.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SANDBOX_ENV", "SandboxError", "SandboxPolicy", "SandboxResult", "run_python"]

#: The program's whole environment. Nothing of the caller's environment is passed on.
SANDBOX_ENV: dict[str, str] = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
#: Per-run unprivileged uids/gids (used only when the caller is root): a lease of one of these.
UID_BASE = 61000
UID_COUNT = 1000

_MAIN_FILE = "main.py"
_KILL_GRACE_S = 3.0  # how long the launcher may take to clean up after a kill request
_DRAIN_GRACE_S = 0.5  # how long pipes may stay open after the launcher exited
_SWEEP_WAIT_S = 3.0  # how long to wait for the processes of a leased uid to disappear


class SandboxError(RuntimeError):
    """The sandbox could not start the program (an infrastructure failure, not the program's fault)."""


@dataclass(frozen=True)
class SandboxPolicy:
    """Which layers to use and the limits not given per call. The defaults are the strongest available;
    switching a layer off exists to test the remaining layers on their own."""

    use_namespaces: bool = True  # new network + PID namespace when the kernel permits it
    drop_privileges: bool = True  # when root: run the program as a leased unprivileged uid/gid
    audit_hook: bool = True  # the PEP 578 tripwire in the prelude
    max_processes: int = 16  # RLIMIT_NPROC (processes + threads of the sandbox uid)
    max_file_bytes: int = 16 * 2**20  # RLIMIT_FSIZE: largest file the program may write
    max_open_files: int = 64  # RLIMIT_NOFILE


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one program.

    ``returncode`` is the program's exit status (negative: killed by that signal). ``killed_reason`` is
    None when the program ended on its own, else why it was stopped: ``"timeout"``, ``"output limit"``,
    ``"cpu limit"``, ``"file size limit"`` or ``"signal NAME"``. ``stdout``/``stderr`` are decoded as
    UTF-8 (invalid bytes replaced) and hold at most ``max_output_bytes`` together. ``layers`` lists the
    isolation layers that were active (e.g. ``netns``, ``pidns``, ``uid=61003``, ``audit_hook``).
    ``pid`` is the launcher's pid, which is also the process-group id of the run; ``uid`` the leased uid
    the program ran as (None: the caller's); ``interpreter`` the Python that ran it (the caller's, or a
    system Python when the caller's is unreadable to the leased uid).
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    elapsed_s: float
    killed_reason: str | None = None
    layers: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    pid: int = 0
    uid: int | None = None
    interpreter: str = ""

    @property
    def ok(self) -> bool:
        """The program exited with status 0 on its own."""
        return self.returncode == 0 and self.killed_reason is None


# ------------------------------------------------------------------------------------------- public API


def run_python(
    code: str,
    *,
    stdin: str = "",
    timeout_s: float,
    memory_mb: int,
    max_output_bytes: int = 1_000_000,
    policy: SandboxPolicy | None = None,
) -> SandboxResult:
    """Run ``code`` as ``main.py`` in a sandboxed Python process, feeding ``stdin``.

    ``timeout_s`` is wall-clock time from start to end (interpreter start-up included); RLIMIT_CPU is
    ``ceil(timeout_s) + 1`` CPU seconds as a backstop. ``memory_mb`` bounds the address space (Python
    itself needs ~50 MiB; below ~100 MiB start-up may fail). Safe to call from many threads at once.
    Guarantees on return: the program and all its descendants are dead and reaped (or, for processes
    that escaped every layer, SIGKILLed), and the scratch directory is removed.
    """
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    if memory_mb <= 0:
        raise ValueError("memory_mb must be positive")
    policy = policy or SandboxPolicy()
    with contextlib.ExitStack() as stack:
        plan = _plan(policy, stack)
        scratch = _make_scratch(plan.uid, plan.gid)
        stack.callback(_remove_tree, scratch)
        (scratch / _MAIN_FILE).write_text(code, encoding="utf-8")
        return _execute(
            code_dir=scratch,
            plan=plan,
            policy=policy,
            stdin=stdin,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            max_output_bytes=max_output_bytes,
        )


# ------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Plan:
    python: str  # interpreter that runs the program
    uid: int | None  # unprivileged uid to run as (None: the caller's)
    gid: int | None
    warnings: tuple[str, ...] = ()


def _plan(policy: SandboxPolicy, stack: contextlib.ExitStack) -> _Plan:
    """Choose the uid and interpreter of one run; a leased uid is released when ``stack`` closes."""
    if not (policy.drop_privileges and os.geteuid() == 0):
        return _Plan(python=sys.executable, uid=None, gid=None)
    uid = stack.enter_context(_lease_uid())
    python = _interpreter_for(uid)
    if python is None:
        msg = f"privilege drop impossible: no Python interpreter is usable by uid {uid}; running as root"
        return _Plan(python=sys.executable, uid=None, gid=None, warnings=(msg,))
    _sweep_uid(uid, python)  # processes and files left by a run that crashed while holding this uid
    _sweep_files(uid, keep=None)
    return _Plan(python=python, uid=uid, gid=uid)


def _lock_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "kubedistill-sandbox-uids"
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise SandboxError(f"{path} is not private to this user: refusing to use it for uid leases")
    return path


@contextlib.contextmanager
def _lease_uid() -> Iterator[int]:
    """An unprivileged uid no other sandbox run (in any process on this host) is using right now."""
    lock_dir = _lock_dir()
    offset = (os.getpid() * 7919 + threading.get_ident()) % UID_COUNT
    for i in range(UID_COUNT):
        uid = UID_BASE + (offset + i) % UID_COUNT
        fd = os.open(lock_dir / f"{uid}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield uid
        finally:
            os.close(fd)  # releases the lock
        return
    raise SandboxError(f"all {UID_COUNT} sandbox uids are in use")


_PROBE_LOCK = threading.Lock()
_PROBED: dict[str, bool] = {}


def _interpreter_for(uid: int) -> str | None:
    """The first interpreter the unprivileged ``uid`` can run with its standard library (cached).

    The caller's interpreter comes first; it may be unreadable to other users (e.g. pyenv under
    /root), then a system Python runs the program instead."""
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), "/usr/local/bin/python3", "/usr/bin/python3"]
    seen: set[str] = set()
    for cand in candidates:
        if not cand or cand in seen or not os.path.exists(cand):
            continue
        seen.add(cand)
        with _PROBE_LOCK:
            if cand not in _PROBED:
                _PROBED[cand] = _probe_interpreter(cand, uid)
            if _PROBED[cand]:
                return cand
    return None


def _probe_interpreter(python: str, uid: int) -> bool:
    probe = "import collections, fractions, json, math, re, types"
    try:
        done = subprocess.run(
            [python, "-I", "-B", "-c", probe],
            user=uid,
            group=uid,
            extra_groups=[],
            cwd="/",
            env=SANDBOX_ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _make_scratch(uid: int | None, gid: int | None) -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="kubedistill-sbx-"))
    if uid is not None and gid is not None:
        os.chown(scratch, uid, gid)
    scratch.chmod(0o700)
    return scratch


def _remove_tree(path: Path) -> None:
    """Delete the scratch directory even if the program made parts of it unreadable."""

    def fix_and_retry(func: Callable[..., object], failed: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
            func(failed)

    if not path.exists():
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix_and_retry)
    else:
        shutil.rmtree(path, onerror=fix_and_retry)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------- execution


@dataclass
class _Pumped:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    status: bytearray = field(default_factory=bytearray)
    reason: str | None = None  # why the caller stopped the program: "timeout" | "output limit"


def _execute(
    *,
    code_dir: Path,
    plan: _Plan,
    policy: SandboxPolicy,
    stdin: str,
    timeout_s: float,
    memory_mb: int,
    max_output_bytes: int,
) -> SandboxResult:
    prelude, launcher_source = _source_of(_prelude_main), _source_of(_launcher_main)
    status_r, status_w = os.pipe()
    config = {
        "python": plan.python,
        "argv": [plan.python, "-I", "-B", "-c", prelude, str(code_dir), str(int(policy.audit_hook))],
        "status_fd": status_w,
        "uid": plan.uid,
        "gid": plan.gid,
        "namespaces": policy.use_namespaces,
        "rlimits": _rlimits(policy, timeout_s=timeout_s, memory_mb=memory_mb, uid=plan.uid),
    }
    launcher = [sys.executable, "-I", "-S", "-B", "-c", launcher_source, json.dumps(config)]
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            launcher,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=code_dir,
            env=SANDBOX_ENV,
            start_new_session=True,
            close_fds=True,
            pass_fds=(status_w,),
        )
    except OSError as exc:
        os.close(status_r)
        raise SandboxError(f"cannot start the sandbox launcher: {exc}") from exc
    finally:
        os.close(status_w)
    pumped = _Pumped()
    try:
        _pump(proc, pumped, status_r, stdin.encode("utf-8"), start + timeout_s, max_output_bytes)
        returncode = _finish(proc, stop=pumped.reason is not None)
    finally:
        if proc.returncode is None:  # an exception above: never leave the run behind
            _kill_group(proc.pid)
            proc.kill()
            proc.wait()
        _drain(status_r, pumped.status)
        os.close(status_r)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()
    elapsed = time.monotonic() - start
    status = _parse_status(pumped.status)
    warnings = list(plan.warnings) + list(status.get("warnings", []))
    if plan.uid is not None:
        if stray := _sweep_uid(plan.uid, plan.python):
            warnings.append(f"{stray} stray process(es) of uid {plan.uid} killed after the run")
        if left := _sweep_files(plan.uid, keep=code_dir):
            warnings.append(f"removed {left} file(s) the program left in shared temporary directories")
    if "error" in status or (not status.get("ready") and pumped.reason is None):
        detail = status.get("error") or _tail(pumped.stderr.decode("utf-8", "replace")) or f"exit {returncode}"
        raise SandboxError(f"the sandbox could not start the program: {detail}")
    layers = ["session", "empty_env", "scratch_dir", *sorted(status.get("layers", []))]
    if policy.audit_hook:
        layers.append("audit_hook")
    return SandboxResult(
        returncode=returncode,
        stdout=pumped.stdout.decode("utf-8", "replace"),
        stderr=pumped.stderr.decode("utf-8", "replace"),
        timed_out=pumped.reason == "timeout",
        elapsed_s=elapsed,
        killed_reason=pumped.reason or _signal_reason(returncode),
        layers=tuple(layers),
        warnings=tuple(warnings),
        pid=proc.pid,
        uid=plan.uid,
        interpreter=plan.python,
    )


def _rlimits(policy: SandboxPolicy, *, timeout_s: float, memory_mb: int, uid: int | None) -> list[list[object]]:
    cpu = math.ceil(timeout_s) + 1
    nproc = policy.max_processes
    if uid is None and os.geteuid() != 0:
        # RLIMIT_NPROC counts every task of the real uid, which the caller shares with the program.
        nproc += _tasks_of_uid(os.getuid())
    nofile = min(policy.max_open_files, _hard_limit("RLIMIT_NOFILE"))
    return [
        ["RLIMIT_AS", memory_mb * 2**20, memory_mb * 2**20],
        ["RLIMIT_CPU", cpu, cpu + 1],
        ["RLIMIT_FSIZE", policy.max_file_bytes, policy.max_file_bytes],
        ["RLIMIT_NOFILE", nofile, nofile],
        ["RLIMIT_NPROC", nproc, nproc],
        ["RLIMIT_CORE", 0, 0],
    ]


def _hard_limit(name: str) -> int:
    import resource

    hard = resource.getrlimit(getattr(resource, name))[1]
    return sys.maxsize if hard == resource.RLIM_INFINITY else hard


def _pump(
    proc: subprocess.Popen[bytes], out: _Pumped, status_r: int, stdin: bytes, deadline: float, max_output: int
) -> None:
    """Feed stdin and collect stdout/stderr/status into ``out`` until the launcher has exited and the
    pipes are closed, the deadline passes (reason "timeout") or the output exceeds ``max_output``
    ("output limit")."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    sinks = {proc.stdout.fileno(): out.stdout, proc.stderr.fileno(): out.stderr, status_r: out.status}
    sel = selectors.DefaultSelector()
    for fd in sinks:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    # fd numbers are only compared while the fd is open (a closed one may be reused by another thread)
    stdin_fd: int | None = proc.stdin.fileno()
    pending = memoryview(stdin)
    if pending:
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
        stdin_fd = None
    exit_fd = _pidfd(proc.pid)
    if exit_fd is not None:
        sel.register(exit_fd, selectors.EVENT_READ)
    exited_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and exit_fd is None and _has_exited(proc.pid):
                exited_at = now
            open_pipes = [fd for fd in sinks if fd in sel.get_map()]
            if exited_at is not None and (not open_pipes or now - exited_at > _DRAIN_GRACE_S):
                break
            if now >= deadline:
                out.reason = "timeout"
                break
            wait = deadline - now if exit_fd is not None else min(deadline - now, 0.02)
            if exited_at is not None:
                wait = min(wait, _DRAIN_GRACE_S)
            for key, _ in sel.select(wait):
                fd = key.fd
                if fd == stdin_fd:
                    pending = _feed(sel, proc, pending)
                    if not pending:
                        stdin_fd = None
                elif fd == exit_fd:
                    sel.unregister(fd)
                    exited_at = time.monotonic()
                else:
                    _read_into(sel, fd, sinks[fd])
            if len(out.stdout) + len(out.stderr) > max_output:
                out.reason = "output limit"
                break
    finally:
        sel.close()
        if exit_fd is not None:
            os.close(exit_fd)
        if not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()
    if out.reason == "output limit":
        _truncate(out, max_output)


def _feed(sel: selectors.BaseSelector, proc: subprocess.Popen[bytes], pending: memoryview) -> memoryview:
    assert proc.stdin is not None
    try:
        written = os.write(proc.stdin.fileno(), pending[:65536])
        pending = pending[written:]
    except BlockingIOError:
        return pending
    except (BrokenPipeError, OSError):
        pending = pending[:0]
    if not pending:
        sel.unregister(proc.stdin.fileno())
        proc.stdin.close()
    return pending


def _read_into(sel: selectors.BaseSelector, fd: int, sink: bytearray) -> None:
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if data:
        sink += data
    else:
        sel.unregister(fd)


def _drain(fd: int, sink: bytearray) -> None:
    with contextlib.suppress(OSError):
        os.set_blocking(fd, False)
        while data := os.read(fd, 65536):
            sink += data


def _truncate(out: _Pumped, max_output: int) -> None:
    keep_out = min(len(out.stdout), max_output)
    del out.stdout[keep_out:]
    del out.stderr[max(0, max_output - keep_out) :]


def _pidfd(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _has_exited(pid: int) -> bool:
    """True once ``pid`` (our child) has exited; does not reap it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _finish(proc: subprocess.Popen[bytes], *, stop: bool) -> int:
    """Wait for the launcher; when ``stop``, first ask it to kill the program (SIGUSR1). Falls back to
    SIGKILL for the whole process group if the launcher does not exit in time. Returns the program's
    exit status as relayed by the launcher."""
    if stop:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + (_KILL_GRACE_S if stop else _KILL_GRACE_S + 1.0)
    while not _has_exited(proc.pid):
        if time.monotonic() > deadline:
            _kill_group(proc.pid)
            break
        time.sleep(0.005)
    _kill_group(proc.pid)  # stragglers in the group; the unreaped leader keeps the pgid from reuse
    return proc.wait()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _signal_reason(returncode: int) -> str | None:
    if returncode >= 0:
        return None
    sig = -returncode
    if sig == signal.SIGXCPU:
        return "cpu limit"
    if sig == signal.SIGXFSZ:
        return "file size limit"
    try:
        return f"signal {signal.Signals(sig).name}"
    except ValueError:
        return f"signal {sig}"


def _parse_status(raw: bytearray) -> dict[str, object]:
    """Merge the JSON lines the launcher and the program's process wrote before exec."""
    merged: dict[str, object] = {}
    layers: list[str] = []
    warnings: list[str] = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(item, dict):
            continue
        layers += item.pop("layers", [])
        warnings += item.pop("warnings", [])
        merged.update(item)
    merged["layers"] = layers
    merged["warnings"] = warnings
    return merged


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


# -------------------------------------------------------------------------------- processes of a uid


def _pids_of_uid(uid: int) -> list[int]:
    """Pids of live (non-zombie) processes whose real or effective uid is ``uid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        state = fields.get("State", "").split()[:1]
        ids = fields.get("Uid", "").split()[:2]
        if str(uid) in ids and state != ["Z"]:
            found.append(int(entry))
    return found


def _tasks_of_uid(uid: int) -> int:
    """Number of tasks (threads) the real uid ``uid`` owns: what RLIMIT_NPROC counts."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        uid_line = next((ln for ln in text.splitlines() if ln.startswith("Uid:")), "")
        if uid_line.split()[1:2] == [str(uid)]:
            threads = next((ln for ln in text.splitlines() if ln.startswith("Threads:")), "Threads: 1")
            total += int(threads.split()[1])
    return total


def _sweep_uid(uid: int | None, python: str) -> int:
    """SIGKILL every process of the leased ``uid`` (there should be none); returns how many were found.

    Uses ``kill(-1, SIGKILL)`` from a helper running as that uid, which the kernel applies to all of the
    uid's processes at once, so a fork bomb cannot outrun it."""
    if uid is None:
        return 0
    stray = _pids_of_uid(uid)
    if not stray:
        return 0
    deadline = time.monotonic() + _SWEEP_WAIT_S
    while _pids_of_uid(uid) and time.monotonic() < deadline:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [python, "-I", "-S", "-c", "import os, signal; os.kill(-1, signal.SIGKILL)"],
                user=uid,
                group=uid,
                extra_groups=[],
                cwd="/",
                env=SANDBOX_ENV,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
        time.sleep(0.01)
    return len(stray)


_SHARED_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def _sweep_files(uid: int, *, keep: Path | None) -> int:
    """Remove what the leased ``uid`` created at the top of world-writable directories (the only places
    outside its scratch directory it can write to); returns how many entries were removed."""
    removed = 0
    for base in sorted({*_SHARED_WRITABLE_DIRS, tempfile.gettempdir()}):
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid or (keep is not None and entry.path == str(keep)):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                removed += 1
            except OSError:
                continue
    return removed


# ----------------------------------------------------------------------- code shipped to the children


@functools.cache
def _source_of(fn: Callable[..., object]) -> str:
    """Source that defines and calls ``fn`` in a fresh interpreter (``fn`` must be self-contained)."""
    try:
        body = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:  # e.g. installed without .py sources
        raise SandboxError(f"cannot read the source of {fn.__name__}: {exc}") from exc
    return f"from __future__ import annotations\n{body}\n{fn.__name__}()\n"


def _launcher_main() -> None:  # pragma: no cover - runs in the launcher process
    """The launcher: ``python -I -S -B -c <this> CONFIG_JSON``, as the caller's uid, cwd = scratch dir.

    Becomes a child subreaper, enters new namespaces when permitted, forks the program's process (which
    sets limits, drops privileges, reports its layers on the status fd and execs the interpreter), then
    reaps everything: when the program ends, every remaining descendant is killed. SIGUSR1 from the
    caller means "kill the program now". Exits with the program's status (re-raising its signal)."""
    import contextlib
    import ctypes
    import json
    import os
    import resource
    import signal
    import sys
    import time

    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    state = {"main": 0, "kill": False}

    def on_kill_request(_sig: int, _frame: object) -> None:
        state["kill"] = True
        if state["main"]:
            os.kill(state["main"], signal.SIGKILL)

    signal.signal(signal.SIGUSR1, on_kill_request)
    libc = ctypes.CDLL(None, use_errno=True)

    def report(**items: object) -> None:
        os.write(status_fd, (json.dumps(items) + "\n").encode())

    def prctl(option: int, arg: int) -> bool:
        return libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0

    def unshare(flags: int) -> bool:
        return libc.unshare(ctypes.c_int(flags)) == 0

    layers: list[str] = []
    warnings: list[str] = []
    if prctl(36, 1):  # PR_SET_CHILD_SUBREAPER
        layers.append("subreaper")
    newnet, newpid, newuser = 0x40000000, 0x20000000, 0x10000000
    pidns = False
    if cfg["namespaces"]:
        extra = newuser if os.geteuid() != 0 else 0
        if unshare(newnet | newpid | extra):
            pidns = True
            layers += ["netns", "pidns"] + (["userns"] if extra else [])
        elif unshare(newnet | extra):
            layers += ["netns"] + (["userns"] if extra else [])
        else:
            warnings.append(f"no network/PID namespace: {os.strerror(ctypes.get_errno())}")

    def become_program() -> None:
        try:
            os.set_inheritable(status_fd, False)  # closed by exec: the program cannot write status
            for name, soft, hard in cfg["rlimits"]:
                resource.setrlimit(getattr(resource, name), (soft, hard))
            mine = ["rlimits"]
            uid, gid = cfg["uid"], cfg["gid"]
            if uid is not None:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (uid, uid, gid, gid):
                    raise RuntimeError("privilege drop did not take")
                mine.append(f"uid={uid}")
            if prctl(1, signal.SIGKILL):  # PR_SET_PDEATHSIG, after setuid (which clears it)
                mine.append("pdeathsig")
            if prctl(38, 1):  # PR_SET_NO_NEW_PRIVS
                mine.append("no_new_privs")
            report(layers=mine, ready=True)
            os.execve(cfg["python"], cfg["argv"], dict(os.environ))
        except BaseException as exc:
            try:
                report(error=f"{type(exc).__name__}: {exc}")
            finally:
                os._exit(127)

    main = os.fork()
    if main == 0:
        become_program()
    state["main"] = main
    if state["kill"]:
        os.kill(main, signal.SIGKILL)
    report(layers=layers, warnings=warnings)
    os.close(status_fd)

    def kill_children() -> None:
        me = str(os.getpid())
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = f.read().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
            if ppid == me:
                with contextlib.suppress(OSError):
                    os.kill(int(entry), signal.SIGKILL)

    def sweep_uid() -> None:
        uid, gid = cfg["uid"], cfg["gid"]
        if uid is None:
            return
        helper = os.fork()
        if helper == 0:
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)  # every process of this uid, atomically
            finally:
                os._exit(0)
        os.waitpid(helper, 0)

    main_status = None
    while main_status is None:
        # wait without reaping first: while state["main"] is set, that pid cannot be reused
        pid = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT).si_pid
        if pid == main:
            state["main"] = 0
        _, status = os.waitpid(pid, 0)
        if pid == main:
            main_status = status
    if not pidns:  # (with a PID namespace the kernel already killed the program's descendants)
        sweep_uid()
    give_up = time.monotonic() + 5.0
    while time.monotonic() < give_up:
        kill_children()
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.002)
    if os.WIFSIGNALED(main_status):
        sig = os.WTERMSIG(main_status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(main_status))


def _prelude_main() -> None:  # pragma: no cover - runs in the sandboxed program's process
    """The program's interpreter: ``python -I -B -c <this> SCRATCH HOOK``; runs SCRATCH/main.py as
    ``__main__`` after installing the audit hook (HOOK == "1"). Must run on any Python >= 3.8."""
    import os
    import sys
    import types

    scratch = os.path.realpath(sys.argv[1])
    main_path = os.path.join(scratch, "main.py")
    with open(main_path, encoding="utf-8") as f:
        source = f.read()

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError("sandbox: starting processes is not allowed")

    import _posixsubprocess  # the spawn path of multiprocessing/subprocess that raises no audit event

    _posixsubprocess.fork_exec = refuse

    if sys.argv[2] == "1":
        write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
        own_pid = str(os.getpid())
        write_ok = ("/dev/null", "/dev/stdout", "/dev/stderr")
        secret_dirs = ("/run/secrets", "/var/run/secrets")
        always_refused = {
            "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.killpg",
            "subprocess.Popen", "pty.spawn", "socket.connect", "socket.bind", "socket.sendto",
            "socket.sendmsg", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function",
            "ctypes.cdata", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "resource.setrlimit",
            "resource.prlimit", "sys.setprofile", "sys.settrace", "os.setxattr", "os.removexattr",
        }  # fmt: skip
        # event -> (indices of paths that are modified, indices of dir_fd arguments)
        path_events = {
            "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
            "os.rename": ((0, 1), (2, 3)), "os.link": ((1,), (2, 3)), "os.symlink": ((1,), (2,)),
            "os.truncate": ((0,), ()), "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)),
            "os.utime": ((0,), (3,)), "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()),
            "shutil.rmtree": ((0,), (1,)), "shutil.copyfile": ((1,), ()), "shutil.copymode": ((1,), ()),
            "shutil.copystat": ((1,), ()), "shutil.chown": ((0,), ()), "shutil.unpack_archive": ((1,), ()),
            "shutil.make_archive": ((0,), ()),
        }  # fmt: skip

        def resolve(path: object) -> str | None:
            if isinstance(path, int):
                return None  # an already open file descriptor
            path = os.fsdecode(os.fspath(path))  # type: ignore[arg-type]
            return os.path.realpath(os.path.join(os.getcwd(), path))

        def inside(real: str) -> bool:
            return real == scratch or real.startswith(scratch + os.sep)

        def check_open(path: object, mode: object, flags: object) -> None:
            real = resolve(path)
            if real is None:
                return
            writing = (isinstance(flags, int) and flags & write_flags) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if writing:
                if not inside(real) and path not in write_ok:
                    raise PermissionError(f"sandbox: writing {path!r} outside the scratch directory is not allowed")
                return
            parts = real.split(os.sep)
            if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != own_pid:
                raise PermissionError(f"sandbox: reading {path!r} is not allowed")
            if real.startswith(secret_dirs):
                raise PermissionError(f"sandbox: reading {path!r} is not allowed")
            if not inside(real) and os.path.isdir(real):
                raise PermissionError(f"sandbox: opening directory {path!r} is not allowed")

        def hook(event: str, args: tuple) -> None:
            if event == "open":
                check_open(*args[:3])
            elif event in always_refused:
                raise PermissionError(f"sandbox: {event} is not allowed")
            elif event == "ctypes.dlopen":
                if args and args[0] is not None:  # dlopen(None) (the process itself) is what numpy needs
                    raise PermissionError("sandbox: loading native libraries is not allowed")
            elif event == "os.kill":
                if args[0] != os.getpid():
                    raise PermissionError("sandbox: os.kill is not allowed")
            elif event == "socket.__new__":
                if len(args) > 1 and args[1] != 1:  # 1 == AF_UNIX
                    raise PermissionError("sandbox: network sockets are not allowed")
            elif event in path_events:
                paths, dir_fds = path_events[event]
                for i in dir_fds:
                    if i < len(args) and args[i] not in (None, -1, -100):  # -1: none given, -100: AT_FDCWD
                        raise PermissionError(f"sandbox: {event} with dir_fd is not allowed")
                for i in paths:
                    real = resolve(args[i]) if i < len(args) else None
                    if real is not None and not inside(real):
                        raise PermissionError(f"sandbox: {event} outside the scratch directory is not allowed")

        sys.addaudithook(hook)

    sys.argv = ["main.py"]
    module = types.ModuleType("__main__")
    module.__file__ = main_path
    module.__builtins__ = __builtins__  # type: ignore[attr-defined]
    sys.modules["__main__"] = module
    try:
        exec(compile(source, "main.py", "exec"), module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # print the traceback without the prelude's own frames
        import traceback

        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
        raise SystemExit(1) from None
