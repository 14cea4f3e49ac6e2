"""Synthetic run folders (written with the real RunRecord/InstanceRecord models) for the compare tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engine.compare.loading import find_run_dirs
from engine.compare.synthetic import write_run
from engine.config.schema import TrackingConfig
from engine.record.mlflow_writer import finish_mlflow_run, start_mlflow_run
from engine.types import InstanceRecord, RunRecord

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "compare"


@dataclass(frozen=True)
class SuitePair:
    root: Path
    job_a: Path  # new checkpoint (step 20)
    job_b: Path  # base
    mmlu_a: np.ndarray
    mmlu_b: np.ndarray
    arc_a: np.ndarray  # per-question means over K=3 samples
    arc_b: np.ndarray


def make_suite_pair(root: Path, n_mmlu: int = 240, n_arc: int = 90, seed: int = 7) -> SuitePair:
    """Two job dirs of a 2-task suite: MMLU (binary, errors, unaligned ids) and ARC (K=3, clustered)."""
    rng = np.random.default_rng(seed)
    mmlu_b = (rng.random(n_mmlu) < 0.45).astype(float)
    mmlu_a = mmlu_b.copy()
    flip_up = rng.random(n_mmlu) < 0.25
    flip_down = rng.random(n_mmlu) < 0.06
    mmlu_a[flip_up] = 1.0
    mmlu_a[flip_down & ~flip_up] = 0.0
    arc_b = rng.integers(0, 4, n_arc) / 3
    arc_a = np.clip(arc_b + rng.integers(-1, 2, n_arc) / 3, 0, 1)
    ids = [f"q{i:06d}" for i in range(n_mmlu)]
    job_a, job_b = root / "runs" / "2025-01-02_10-00-00", root / "runs" / "2025-01-01_10-00-00"
    clusters = [f"passage{i // 3}" for i in range(n_arc)]
    # A lacks the last 3 MMLU questions and has 2 extra; A errored on 2, B on 1.
    write_run(job_a / "mmlu__mc", task_spec="mmlu:mc", correct=np.r_[mmlu_a[:-3], [1.0, 0.0]],
              ids=ids[:-3] + ["extra1", "extra2"], model="smol-ft", step=20, suite="core",
              errored=["q000010", "q000011"], trajectory_every=7, seed=1, created="2025-01-02T10:00:00")
    write_run(job_b / "mmlu__mc", task_spec="mmlu:mc", correct=mmlu_b, ids=ids, model="smol", suite="core",
              errored=["q000012"], seed=2, created="2025-01-01T10:00:00")
    write_run(job_a / "arc__mc", task_spec="arc:mc", correct=arc_a, model="smol-ft", step=20, suite="core",
              samples=3, clusters=clusters, seed=3, created="2025-01-02T10:00:00")
    write_run(job_b / "arc__mc", task_spec="arc:mc", correct=arc_b, model="smol", suite="core",
              samples=3, clusters=clusters, seed=4, created="2025-01-01T10:00:00")
    return SuitePair(root, job_a, job_b, mmlu_a, mmlu_b, arc_a, arc_b)


def log_runs(uri: str, job_dirs: list[Path], workdir: Path) -> dict[tuple[str, str], str]:
    """Log each run folder through the engine's own MLflow writer (engine/record/mlflow_writer.py)."""
    tracking = TrackingConfig(tracking_uri=uri)
    ids: dict[tuple[str, str], str] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)  # the store's default artifact root is relative to the working directory
        for job in job_dirs:
            for d in find_run_dirs(job):
                rec = RunRecord.model_validate_json((d / "experiment.json").read_text())
                instances = [InstanceRecord.model_validate_json(line)
                             for line in (d / "instances.jsonl").read_text().splitlines()]
                run_id = start_mlflow_run(tracking, rec.experiment_name, f"{rec.model.label}:{rec.task_spec}")
                finish_mlflow_run(tracking, rec.model_copy(update={"mlflow_run_id": run_id}), instances, d)
                ids[(rec.model.label, rec.task_spec)] = run_id
    return ids


@pytest.fixture
def suite_pair(tmp_path: Path) -> SuitePair:
    return make_suite_pair(tmp_path)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACTS.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")  # test artifacts (screenshots) are never committed
    return ARTIFACTS


@pytest.fixture(autouse=True)
def _isolated_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the developer's mlruns.db or cache."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/absent-mlruns.db")
    monkeypatch.setenv("EVALBENCH_CACHE", str(tmp_path / "cache"))
