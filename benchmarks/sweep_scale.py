"""Wall time of a sweep of N checkpoints x M tasks, per launcher, and the per-job overhead.

    python benchmarks/sweep_scale.py [--checkpoints 6] [--tasks mmlu] [--limit 200]
                                     [--launchers basic,joblib,ray] [--workers 2] [--keep DIR]

Checkpoints are step<k> folders of symlinks to the embedded SmolLM2 (the same weights under N
paths); the response cache is off, so every job computes. Each launcher runs the whole sweep with
`python -m engine -m ...` in a fresh working directory (its own SQLite MLflow store). Printed per
launcher: wall, jobs/min, the mean job wall (composition, model load, runs, records; from
job_result.json), the mean run time (the task runs' own `duration_s`), and the overhead: per job
(job wall − its runs' time) and per sweep (wall − Σ job wall / workers: process start-up, the
launcher, the summary, the MLflow parent run), each as a share.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.models.embedded import embedded_checkpoint_dir
from engine.record.sweep import read_job_results

LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib"], "ray": ["hydra/launcher=ray"]}


def checkpoints(root: Path, source: Path, n: int) -> list[Path]:
    out = []
    for k in range(n):
        d = root / f"step{(k + 1) * 100}"
        d.mkdir(parents=True, exist_ok=True)
        for f in source.iterdir():
            if not (d / f.name).exists():
                (d / f.name).symlink_to(f.resolve())
        out.append(d)
    return out


def run_sweep(launcher: str, workers: int, ckpts: list[Path], tasks: str, limit: int, work: Path) -> dict[str, float]:
    work.mkdir(parents=True, exist_ok=True)
    extra = list(LAUNCHERS[launcher])
    if launcher == "joblib":
        extra.append(f"hydra.launcher.n_jobs={workers}")
    if launcher == "ray":
        extra.append(f"++hydra.launcher.ray.init.num_cpus={workers}")
    sweep = work / "sweep"
    cmd = [sys.executable, "-m", "engine", "-m", *extra, f"model.path={','.join(map(str, ckpts))}", f"task={tasks}",
           f"limit={limit}", "cache.enabled=false", "progress=false", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (work / "stdout.txt").write_text(proc.stdout)
    (work / "stderr.txt").write_text(proc.stderr)
    results = read_job_results(sweep)
    n = len(results)
    if proc.returncode != 0 or n == 0:
        print(f"{launcher}: exit {proc.returncode}, {n} job result(s); see {work}/stderr.txt", file=sys.stderr)
    job_wall = [r.wall_s for r in results]
    run_time = [sum(json.loads((Path(x.run_dir or "") / "experiment.json").read_text())["duration_s"] for x in r.runs
                    if x.run_dir) for r in results]
    parallel = 1 if launcher == "basic" else workers
    mean_job = sum(job_wall) / max(n, 1)
    mean_run = sum(run_time) / max(n, 1)
    return {"jobs": n, "finished": sum(r.status == "finished" for r in results), "wall_s": wall,
            "jobs_per_min": 60 * n / wall if wall else 0.0, "mean_job_s": mean_job, "mean_run_s": mean_run,
            "job_overhead_s": mean_job - mean_run, "job_overhead_share": (mean_job - mean_run) / mean_job if mean_job else 0.0,
            "sweep_overhead_s": wall - sum(job_wall) / parallel,
            "sweep_overhead_share": (wall - sum(job_wall) / parallel) / wall if wall else 0.0, "exit_code": proc.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, default=6)
    ap.add_argument("--tasks", default="mmlu", help="a Hydra sweep value: mmlu or mmlu,hellaswag or mmlu:rc,hellaswag")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--launchers", default="basic,joblib,ray")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="work here and keep everything")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="sweep_scale_"))
    ckpts = checkpoints(root / "ckpt", embedded_checkpoint_dir(), args.checkpoints)
    print(f"{args.checkpoints} checkpoints x tasks={args.tasks}, limit={args.limit}, {args.workers} workers, "
          f"{os.cpu_count()} cores; work dir {root}")
    rows = {}
    for launcher in args.launchers.split(","):
        rows[launcher] = r = run_sweep(launcher, args.workers, ckpts, args.tasks, args.limit, root / launcher)
        print(f"{launcher:>7}: {r['jobs']:.0f} jobs ({r['finished']:.0f} finished), wall {r['wall_s']:.1f} s, "
              f"{r['jobs_per_min']:.2f} jobs/min; per job {r['mean_job_s']:.1f} s of which runs {r['mean_run_s']:.1f} s, "
              f"overhead {r['job_overhead_s']:.1f} s ({100 * r['job_overhead_share']:.0f}%); sweep overhead "
              f"{r['sweep_overhead_s']:.1f} s ({100 * r['sweep_overhead_share']:.0f}% of the wall)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["exit_code"] == 0 for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
