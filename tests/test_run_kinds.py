"""The checkpoint loop end to end, through the real CLI (docs/architecture.md, "Run kinds").

One module fixture runs, with the real SmolLM2 and a SQLite MLflow store in a temporary folder:
- a sweep over two checkpoints of a suite holding a best-of task (`python -m engine -m
  model.path=null,ckpt/step10 suite=loop_suite`, a user's suite of `mmlu:olmes` and
  `truthfulqa_mc1:mc`; the user's config folder gives MMLU its own `olmes`, the best of MC and RC
  without the 5-shot prompts that would make the test slow): a sweep parent, two suite parents and
  six task runs in one MLflow experiment;
- one more task run of a third checkpoint (`ckpt/step20`) in the same experiment.
Then `engine.compare --series --experiment` must work from MLflow and from the run folders and give
the same numbers, and the suite's mean must be one number through every path: the run's printed
aggregate, suite.json, the MLflow metric, the compare table and JSON, and the viewer's API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.compare import compare_runs, resolve
from engine.compare.cli import main as compare_main
from engine.compare.server import ViewerState, start_in_thread
from engine.sync import main as sync_main
from tests.conftest import run_engine

pytestmark = pytest.mark.slow

EXPERIMENT = "ckpt-loop"
SUITE = "loop_suite"
SUITE_YAML = f"name: {SUITE}\ntasks: [mmlu:olmes, truthfulqa_mc1:mc]\naggregate: mean\n"
MMLU_OLMES_YAML = "# @package task\nbest_of: [mc, rc]\nnum_fewshot: 0\nprimary_metric: acc\n"
COMMON = ["limit=6", "progress=false", f"tracking.experiment_name={EXPERIMENT}"]
BEST_OF = ["mmlu:olmes:mc", "mmlu:olmes:rc"]
TASK_SPECS = [*BEST_OF, "truthfulqa_mc1:mc"]


@dataclass(frozen=True)
class Loop:
    root: Path
    uri: str
    sweep_stdout: str


def _perturbed_checkpoint(src: Path, dst: Path) -> None:
    """A checkpoint whose answers differ from the base: one MLP layer with seeded noise; every other
    file is a link to the base's (torch and safetensors are heavy: imported where needed)."""
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (dst / f.name).symlink_to(f)
    tensors = load_file(src / "model.safetensors")
    w = tensors["model.layers.10.mlp.down_proj.weight"]
    noise = torch.randn(w.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    tensors["model.layers.10.mlp.down_proj.weight"] = (w.float() + w.float().std() * noise).to(w.dtype)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Loop:
    root = tmp_path_factory.mktemp("loop")
    _perturbed_checkpoint(smollm2_dir, root / "ckpt" / "step10")
    (root / "ckpt" / "step20").mkdir()
    for f in (root / "ckpt" / "step10").iterdir():  # the same weights as step10, another step
        (root / "ckpt" / "step20" / f.name).symlink_to(f.resolve())
    (root / "conf" / "suite").mkdir(parents=True)
    (root / "conf" / "suite" / f"{SUITE}.yaml").write_text(SUITE_YAML)
    (root / "conf" / "variant" / "mmlu").mkdir(parents=True)
    (root / "conf" / "variant" / "mmlu" / "olmes.yaml").write_text(MMLU_OLMES_YAML)
    env = {"EVALBENCH_CONFIG_PATH": str(root / "conf")}
    sweep = run_engine(["-m", "model.path=null,ckpt/step10", f"suite={SUITE}", *COMMON,
                        "hydra.sweep.dir=runs/sweep"], root, timeout=1500, env=env)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    task = run_engine(["task=truthfulqa_mc1", "variant=mc", "model.path=ckpt/step20", *COMMON,
                       "hydra.run.dir=runs/step20"], root, timeout=900)
    assert task.returncode == 0, task.stderr[-3000:]
    return Loop(root=root, uri=f"sqlite:///{root / 'mlruns.db'}", sweep_stdout=sweep.stdout)


def _compare(loop: Loop, capsys: pytest.CaptureFixture[str], *args: str, fmt: str = "json") -> Any:
    """`python -m engine.compare ARGS` in this process (its `main`: the same parsing, exit codes and
    output; MLflow is imported once for the module instead of once per call)."""
    capsys.readouterr()
    code = compare_main(["--tracking-uri", loop.uri, *args, "--format", fmt])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    return json.loads(out.out) if fmt == "json" else out.out


def _mlflow_runs(loop: Loop) -> list[Any]:
    from mlflow.tracking import MlflowClient  # heavy: only these tests read the store directly

    client = MlflowClient(tracking_uri=loop.uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    return list(client.search_runs([exp.experiment_id], max_results=1000))


def _without_paths(series: dict[str, Any]) -> list[dict[str, Any]]:
    """The series' numbers (MLflow-materialized runs live elsewhere on disk than the run folders)."""
    return [{**t, "points": [{k: v for k, v in p.items() if k != "run_dir"} for p in t["points"]]}
            for t in series["tasks"]]


def test_every_run_carries_its_kind(loop: Loop) -> None:
    runs = _mlflow_runs(loop)
    kinds = sorted(r.data.tags.get("evalbench.kind", "?") for r in runs)
    assert kinds == ["suite", "suite", "sweep"] + ["task"] * 7, kinds
    records = [json.loads(p.read_text()) for p in (loop.root / "runs").rglob("experiment.json")]
    assert len(records) == 7 and {r["kind"] for r in records} == {"task"}
    suites = [json.loads(p.read_text()) for p in (loop.root / "runs").rglob("suite.json")]
    assert len(suites) == 2 and {s["kind"] for s in suites} == {"suite"}
    sweep = json.loads((loop.root / "runs" / "sweep" / "sweep.json").read_text())
    (parent,) = [r for r in runs if r.data.tags.get("evalbench.kind") == "sweep"]
    assert sweep["kind"] == "sweep" and sweep["mlflow_run_ids"] == [parent.info.run_id]


def test_series_over_an_experiment_with_sweeps_and_suites(loop: Loop, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALBENCH_CACHE", str(loop.root / "compare-cache"))
    runs_root = str(loop.root / "runs")
    # The README's command, as a user types it (a subprocess: its exit code and stdout).
    res = subprocess.run([sys.executable, "-m", "engine.compare", "--series", "--experiment", EXPERIMENT,
                          "--format", "json"], cwd=loop.root, capture_output=True, text=True, timeout=600,
                         env={**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
                              "EVALBENCH_CACHE": str(loop.root / "compare-cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    from_mlflow = json.loads(res.stdout)
    from_folders = _compare(loop, capsys, "--series", "--experiment", EXPERIMENT, "--runs-root", runs_root)
    assert sorted(t["task_spec"] for t in from_mlflow["tasks"]) == TASK_SPECS
    assert _without_paths(from_mlflow) == _without_paths(from_folders)
    assert from_mlflow["warnings"] == from_folders["warnings"] == []
    (tqa,) = [t for t in from_mlflow["tasks"] if t["task_spec"] == "truthfulqa_mc1:mc"]
    # Checkpoint steps and labels come from the fine-tuned checkpoints' paths: base, step10, step20.
    assert [p["step"] for p in tqa["points"]] == [0, 10, 20]
    labels = [p["model_label"] for p in tqa["points"]]
    assert labels[1].endswith("@step10") and labels[2].endswith("@step20") and "@step" not in labels[0]
    assert all(p["n"] == 6 for p in tqa["points"])
    assert tqa["points"][1]["value"] == tqa["points"][2]["value"]  # the same weights
    for spec in TASK_SPECS:
        one_mlflow = _compare(loop, capsys, "--series", "--experiment", EXPERIMENT, "--task", spec)
        one_folders = _compare(loop, capsys, "--series", "--experiment", EXPERIMENT, "--runs-root", runs_root,
                               "--task", spec)
        (whole,) = [t for t in from_mlflow["tasks"] if t["task_spec"] == spec]
        assert _without_paths(one_mlflow) == _without_paths(one_folders) == _without_paths({"tasks": [whole]})
    table = _compare(loop, capsys, "--series", "--experiment", EXPERIMENT, "--task", "truthfulqa_mc1:mc", fmt="table")
    assert "@step10" in table and "@step20" in table


def _suite_runs(loop: Loop) -> dict[str, dict[str, Any]]:
    """Checkpoint ("base", "step10") → its suite.json."""
    out = {}
    for path in (loop.root / "runs" / "sweep").rglob("suite.json"):
        rec = json.loads(path.read_text())
        out["step10" if any("@step10" in m for m in rec["models"]) else "base"] = rec
    assert sorted(out) == ["base", "step10"]
    return out


def _independent_suite_mean(suite_rec: dict[str, Any]) -> float:
    """The suite mean written out from the task records: mmlu:olmes counts once, as its better format."""
    acc = {}
    for ref in suite_rec["runs"]:
        rec = json.loads((Path(ref["run_dir"]) / "experiment.json").read_text())
        acc[rec["task_spec"]] = rec["scores"][rec["primary_metric"]]["value"]
    assert sorted(acc) == TASK_SPECS
    return (max(acc[s] for s in BEST_OF) + acc["truthfulqa_mc1:mc"]) / 2


def _printed_suite_means(stdout: str) -> list[float]:
    return [float(m.group(1)) for m in re.finditer(rf"^{SUITE}\s+\S+\s+([0-9.]+)\s+SE", stdout, re.MULTILINE)]


def test_suite_mean_is_one_number_on_every_path(loop: Loop, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALBENCH_CACHE", str(loop.root / "compare-cache"))
    suites = _suite_runs(loop)
    recorded = {k: rec["aggregate"]["value"] for k, rec in suites.items()}
    for k, rec in suites.items():
        assert recorded[k] == pytest.approx(_independent_suite_mean(rec), abs=1e-12), k
    # The run's printed aggregate (4 decimals), one line per job of the sweep.
    assert sorted(_printed_suite_means(loop.sweep_stdout)) == sorted(round(v, 4) for v in recorded.values())
    # The MLflow metric of each suite parent run.
    parents = {r.info.run_id: r for r in _mlflow_runs(loop) if r.data.tags.get("evalbench.kind") == "suite"}
    for k, rec in suites.items():
        assert parents[rec["mlflow_run_id"]].data.metrics[SUITE] == recorded[k]
    # engine.compare by selector: JSON, table and CSV.
    a, b = f"model.checkpoint=step10,suite={SUITE}", f"model.checkpoint=base,suite={SUITE}"
    report = _compare(loop, capsys, "--experiment", EXPERIMENT, a, b)
    assert report["suite"]["mean_a"] == recorded["step10"] and report["suite"]["mean_b"] == recorded["base"]
    assert report["suite"]["k"] == 2 and report["suite"]["delta"] == pytest.approx(recorded["step10"] - recorded["base"])
    table = _compare(loop, capsys, "--experiment", EXPERIMENT, a, b, fmt="table")
    (row,) = [ln for ln in table.splitlines() if ln.startswith(f"SUITE {SUITE} (mean of 2 tasks)")]
    cells = row.split(")", 1)[1].split()
    assert cells[1:3] == [f"{recorded['step10']:.4f}", f"{recorded['base']:.4f}"], row
    csv_rows = _compare(loop, capsys, "--experiment", EXPERIMENT, a, b, fmt="csv").splitlines()
    (suite_csv,) = [ln for ln in csv_rows if ln.startswith("suite,")]
    assert [float(x) for x in suite_csv.split(",")[4:6]] == [recorded["step10"], recorded["base"]]
    # The suite parents' MLflow ids name their task runs: the same comparison.
    by_ids = _compare(loop, capsys, suites["step10"]["mlflow_run_id"], suites["base"]["mlflow_run_id"])
    assert (by_ids["suite"]["mean_a"], by_ids["suite"]["mean_b"]) == (recorded["step10"], recorded["base"])
    # The viewer's API over the same comparison.
    assert _viewer_suite_means(loop, a, b) == (recorded["step10"], recorded["base"])


def _viewer_suite_means(loop: Loop, a: str, b: str) -> tuple[float, float]:
    def side(sel: str) -> Any:
        return resolve(sel, experiment=EXPERIMENT, tracking_uri=loop.uri, cache_dir=loop.root / "viewer-cache")

    server, url = start_in_thread(ViewerState(comparison=compare_runs(side(a), side(b))))
    try:
        with urllib.request.urlopen(url + "api/overview", timeout=60) as resp:
            suite = json.loads(resp.read())["report"]["suite"]
    finally:
        server.shutdown()
        server.server_close()
    return suite["mean_a"], suite["mean_b"]


def test_sync_reads_records_by_kind(loop: Loop, capsys: pytest.CaptureFixture[str]) -> None:
    """Every record of the loop is in the store: sync finds the 7 task runs and 2 suites by their
    kinds (not the sweep record, which the sweep's own process logs) and pushes nothing."""
    capsys.readouterr()
    assert sync_main([str(loop.root / "runs"), "--tracking-uri", loop.uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len([ln for ln in lines if ln.startswith("run") and "already in" in ln]) == 7
    assert len([ln for ln in lines if ln.startswith("suite") and "already in" in ln]) == 2
    assert lines[-1] == "9 of 9 record(s) in the store."
