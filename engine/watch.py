"""`python -m engine.watch CKPT_DIR [overrides...] [--once] [--interval S] [--runs-dir DIR]`.

Evaluates each `step<N>` checkpoint directory a training run writes under CKPT_DIR, once, in order
of step, with the experiment the overrides compose (`task=mmlu limit=200 tracking=server`), as
`python -m engine model.path=CKPT_DIR/step<N> ...` in a child process (a crash in one checkpoint
never stops the watch).

- A checkpoint counts once its config.json and weights exist (every shard a
  `*.index.json` lists) and the sizes and times of its files did not change over one poll interval:
  a trainer still writing it is left for the next poll.
- Exactly once: a checkpoint whose experiment (engine/runner/experiment.py `experiment_id`, which
  includes model.path) already has a finished or partial run of every task spec, in a run folder
  under --runs-dir or in the MLflow store the experiment names (tag `evalbench.experiment_id`), is
  skipped. A failed evaluation is not retried until the watch restarts.
- `--once` looks twice, one interval apart, evaluates what is ready and exits: 0, or 1 when an
  evaluation failed. Without it the watch polls until Ctrl-C or SIGTERM, which also stop the
  evaluation in progress (its finished responses are cached).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from engine.config.compose import compose_experiment
from engine.config.errors import ConfigError
from engine.config.overrides import ParsedOverrides, quote
from engine.config.schema import Experiment
from engine.config.suites import expand_experiment
from engine.record.mlflow_writer import is_task_run
from engine.record.store import client as store_client
from engine.record.store import sqlite_path
from engine.runner.experiment import experiment_id, experiment_name

STEP_DIR = re.compile(r"^step[-_]?(\d+)$")
DONE_STATUSES = ("finished", "partial")
Snapshot = tuple[tuple[str, int, int], ...]


class Stop(Exception):
    """SIGTERM: stop like Ctrl-C."""


def step_dirs(root: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return sorted(found)


def snapshot(ckpt: Path) -> Snapshot | None:
    """Name, size and mtime of every file; None while config.json or some weights are missing."""
    files = {p.name: p for p in ckpt.iterdir() if p.is_file() and not p.name.startswith(".")}
    if "config.json" not in files:
        return None
    weights = [n for n in files if n.endswith((".safetensors", ".bin")) and not n.startswith("training_args")]
    if not weights:
        return None
    for index in (n for n in files if n.endswith(".index.json")):
        try:
            shards = set(json.loads(files[index].read_text()).get("weight_map", {}).values())
        except (OSError, ValueError):
            return None  # an index still being written
        if not shards <= set(files):
            return None
    try:
        return tuple(sorted((n, p.stat().st_size, p.stat().st_mtime_ns) for n, p in files.items()))
    except FileNotFoundError:  # a temporary file renamed away between listing and stat
        return None


def _folder_specs(runs_dir: Path, exp_id: str) -> dict[str, str]:
    """task spec → run folder, for the finished runs of the experiment under runs_dir."""
    found: dict[str, str] = {}
    for path in runs_dir.rglob("experiment.json") if runs_dir.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("experiment_id") == exp_id and data.get("status") in DONE_STATUSES:
            found[str(data.get("task_spec"))] = str(path.parent)
    return found


def _mlflow_specs(exp: Experiment, exp_id: str, names: set[str]) -> dict[str, str]:
    """task spec → MLflow run id, for the finished runs tagged with the experiment id."""
    uri = exp.tracking.tracking_uri
    db = sqlite_path(uri)
    if not exp.tracking.mlflow or (db is not None and not db.exists()):
        return {}
    client = store_client(uri)
    found: dict[str, str] = {}
    for name in names:
        got = client.get_experiment_by_name(name)
        if got is None:
            continue
        runs = client.search_runs([got.experiment_id], filter_string=f"tags.`evalbench.experiment_id` = '{exp_id}' "
                                  "and attributes.status = 'FINISHED'", max_results=1000)
        for run in runs:
            tags: dict[str, Any] = run.data.tags
            # Suite parents carry the experiment id too: only task runs say a spec was evaluated.
            if is_task_run(tags) and tags.get("evalbench.status") in DONE_STATUSES:
                found[str(tags.get("evalbench.task_spec"))] = str(run.info.run_id)
    return found


def already_evaluated(exp: Experiment, runs_dir: Path) -> str | None:
    """Where the finished runs of every task spec of `exp` are, or None when some spec has none."""
    runs = expand_experiment(exp)
    specs = {r.spec for r in runs}
    exp_id = experiment_id(exp)
    folders = _folder_specs(runs_dir, exp_id)
    if specs <= set(folders):
        return "run folder(s) " + ", ".join(sorted({folders[s] for s in specs}))
    try:
        tracked = _mlflow_specs(exp, exp_id, {experiment_name(exp, r) for r in runs})
    except Exception as err:  # noqa: BLE001 - an unreachable store must not stop the watch: the folders decide
        print(f"watch: could not search {exp.tracking.tracking_uri} ({err}); going by the run folders", file=sys.stderr)
        return None
    if specs <= set(folders) | set(tracked):
        return "MLflow run(s) " + ", ".join(sorted({tracked[s] for s in specs if s in tracked}))
    return None


class Watcher:
    def __init__(self, root: Path, overrides: list[str], runs_dir: Path, interval: float):
        self.root, self.overrides, self.runs_dir, self.interval = root, overrides, runs_dir, interval
        self.previous: dict[Path, Snapshot] = {}
        self.attempted: set[Path] = set()
        self.failures = 0
        self.child: subprocess.Popen[bytes] | None = None

    def ready(self) -> list[tuple[int, Path]]:
        """Checkpoints complete and unchanged since the previous poll, not yet handled this session."""
        out = []
        current: dict[Path, Snapshot] = {}
        for step, path in step_dirs(self.root):
            snap = snapshot(path)
            if snap is None or path in self.attempted:
                continue
            current[path] = snap
            if self.previous.get(path) == snap:
                out.append((step, path))
        self.previous = current
        return out

    def handle(self, step: int, ckpt: Path) -> None:
        self.attempted.add(ckpt)
        model = [f"model.path={quote(str(ckpt.resolve()))}"]
        exp = compose_experiment([*self.overrides, *model])
        where = already_evaluated(exp, self.runs_dir)
        if where is not None:
            print(f"watch: {ckpt.name} already evaluated (experiment {experiment_id(exp)}, {where}): skipped", flush=True)
            return
        out = self.runs_dir / ckpt.name / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        cmd = [sys.executable, "-m", "engine", *self.overrides, *model, f"output_dir={quote(str(out))}"]
        print(f"watch: evaluating {ckpt.name} (step {step}, experiment {experiment_id(exp)}) into {out}", flush=True)
        self.child = subprocess.Popen(cmd)
        try:
            code = self.child.wait()
        finally:
            if self.child.poll() is None:  # interrupted: stop the evaluation too
                self.child.send_signal(signal.SIGINT)
                try:
                    self.child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.child.kill()
                    self.child.wait()
            self.child = None
        if code not in (0, 3):  # 3: scored, with some instances errored
            self.failures += 1
        print(f"watch: {ckpt.name} evaluated, exit code {code}", flush=True)

    def run(self, once: bool) -> int:
        print(f"watch: watching {self.root} every {self.interval:g}s for step<N> checkpoints", flush=True)
        if once:
            self.ready()  # the first look; what is unchanged at the second one is ready
            time.sleep(self.interval)
            for step, path in self.ready():
                self.handle(step, path)
            for path in sorted(set(self.previous) - self.attempted):
                print(f"watch: {path.name} is still being written: left for the next run", flush=True)
            return 1 if self.failures else 0
        while True:
            for step, path in self.ready():
                self.handle(step, path)
            time.sleep(self.interval)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stop()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.watch", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("ckpt_dir", type=Path, help="the folder a training run writes step<N> checkpoints into")
    parser.add_argument("overrides", nargs="*", help="the experiment, as for `python -m engine` (task=mmlu limit=200 ...)")
    parser.add_argument("--once", action="store_true", help="evaluate what is ready now, then exit")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between looks (default 60)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/watch"),
                        help="where the run folders go, and where finished ones are looked for (default runs/watch)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if not args.ckpt_dir.is_dir():
            raise ConfigError(f"{args.ckpt_dir} is not a directory. Fix: give the folder your training run writes its "
                              "step<N> checkpoint directories into (it may be empty at first).")
        flags = [o for o in args.overrides if o.startswith("-")]
        given = ParsedOverrides.parse([o for o in args.overrides if not o.startswith("-")])
        bad = flags or [o.text for o in given if o.key in ("model.path", "output_dir")]
        if bad:
            raise ConfigError(f"`{bad[0]}` cannot be given to the watch: it sets model.path to each checkpoint and "
                              "output_dir under --runs-dir, one job at a time. Fix: drop it (use --runs-dir DIR to choose "
                              "where the run folders go).")
        if args.interval <= 0:
            raise ConfigError("--interval must be positive (seconds). Fix: e.g. `--interval 30`.")
        compose_experiment([*args.overrides, f"model.path={quote(str(args.ckpt_dir.resolve() / 'step0'))}"])  # bad input fails now
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    watcher = Watcher(args.ckpt_dir, list(args.overrides), args.runs_dir, args.interval)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return watcher.run(args.once)
    except (KeyboardInterrupt, Stop):
        print("\nwatch: stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
