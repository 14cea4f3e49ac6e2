"""`--series --log-mlflow`: the series statistics land in a real MLflow SQLite store as a run of kind
`series`, nested under the checkpoints' sweep parent; every figure is recomputed from the
checkpoints' per-question scores with numpy (Heineman et al.'s noise and signal, the flip rate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.compare import resolve_experiment
from engine.compare.cli import main
from engine.compare.series import build_series
from engine.compare.synthetic import write_run
from engine.config.schema import TrackingConfig
from engine.record.mlflow_writer import KIND_TAG, start_mlflow_run
from engine.types import SERIES_RUN, SWEEP_RUN

from .conftest import log_runs

mlflow = pytest.importorskip("mlflow")
STEPS = (0, 10, 20, 30)


def _checkpoints(root: Path) -> list[np.ndarray]:
    """Four checkpoints of one model on the same 60 questions (a tenth of the answers churn each step)."""
    rng = np.random.default_rng(5)
    correct = [(rng.random(60) < 0.4).astype(float)]
    for _ in STEPS[1:]:
        nxt = correct[-1].copy()
        churn = rng.random(60) < 0.15
        nxt[churn] = (rng.random(int(churn.sum())) < 0.55).astype(float)
        correct.append(nxt)
    for step, c in zip(STEPS, correct, strict=True):
        write_run(root / f"job{step}" / "arc__mc", task_spec="arc:mc", correct=c, model="smol", step=step or None,
                  experiment_name="series-demo", created=f"2025-01-01T00:00:{step:02d}", run_id=f"smol-{step}")
    return correct


def _nest_under_a_sweep(uri: str, run_ids: list[str]) -> str:
    """What a sweep's parent does after its launcher returns (engine/record/sweep.py)."""
    parent = start_mlflow_run(TrackingConfig(tracking_uri=uri), "series-demo", "sweep s (4 jobs)", {KIND_TAG: SWEEP_RUN})
    client = mlflow.tracking.MlflowClient(uri)
    for run_id in run_ids:
        client.set_tag(run_id, "mlflow.parentRunId", parent)
    return parent


def test_series_statistics_are_logged_as_a_series_run_in_the_sweep(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    correct = _checkpoints(tmp_path / "data")
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    ids = log_runs(uri, [tmp_path / "data" / f"job{s}" for s in STEPS], tmp_path)
    sweep = _nest_under_a_sweep(uri, list(ids.values()))
    args = ["--series", "--experiment", "series-demo", "--tracking-uri", uri, "--noise-checkpoints", "3", "--log-mlflow"]
    assert main(args) == 0
    assert "logged as run" in capsys.readouterr().err
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("series-demo")
    (run,) = client.search_runs([exp.experiment_id], f"tags.`{KIND_TAG}` = '{SERIES_RUN}'")
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == sweep
    m = run.data.metrics
    # independent figures: scores by step, noise over the last 3, flip rates between neighbours
    scores = np.array([c.mean() for c in correct])
    history = client.get_metric_history(run.info.run_id, "arc:mc.score")
    assert [h.step for h in sorted(history, key=lambda h: h.step)] == list(STEPS)
    assert [h.value for h in sorted(history, key=lambda h: h.step)] == pytest.approx(scores)
    last = scores[-3:]
    assert m["arc:mc.noise"] == pytest.approx(last.std() / last.mean())
    assert m["arc:mc.noise_std"] == pytest.approx(last.std()) and m["arc:mc.noise_checkpoints"] == 3
    flips = [float((a != b).mean()) for a, b in zip(correct[:-1], correct[1:], strict=True)]
    assert m["arc:mc.flip_rate"] == pytest.approx(np.mean(flips))
    steps = client.get_metric_history(run.info.run_id, "arc:mc.flip_rate_step")
    assert [h.step for h in sorted(steps, key=lambda h: h.step)] == list(STEPS[1:])
    assert [h.value for h in sorted(steps, key=lambda h: h.step)] == pytest.approx(flips)
    deltas = client.get_metric_history(run.info.run_id, "arc:mc.delta_vs_first")
    assert [h.step for h in sorted(deltas, key=lambda h: h.step)] == list(STEPS[1:])
    assert [h.value for h in sorted(deltas, key=lambda h: h.step)] == pytest.approx(scores[1:] - scores[0])
    assert "arc:mc.snr" not in m  # one model: no signal, so no SNR (the JSON says why)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "series")}
    assert artifacts == {"series/series.json", "series/series.txt"}
    # the same series again: found, not logged twice; and the series run is never read as a checkpoint
    assert main(args) == 0
    assert "already logged as run " + run.info.run_id in capsys.readouterr().err
    assert len(client.search_runs([exp.experiment_id], f"tags.`{KIND_TAG}` = '{SERIES_RUN}'")) == 1
    series = build_series(resolve_experiment("series-demo", tracking_uri=uri, cache_dir=tmp_path / "cache"))
    assert [p.step for p in series.tasks[0].points] == list(STEPS)


def test_signal_runs_add_signal_and_snr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    correct = _checkpoints(tmp_path / "data")
    other = np.r_[np.ones(45), np.zeros(15)]
    write_run(tmp_path / "data" / "other" / "arc__mc", task_spec="arc:mc", correct=other, model="big",
              experiment_name="series-demo", run_id="big-final")
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    log_runs(uri, [tmp_path / "data" / f"job{s}" for s in STEPS] + [tmp_path / "data" / "other"], tmp_path)
    assert main(["--series", "--tracking-uri", uri, "--experiment", "series-demo", "tag.evalbench.model_name=smol", "--signal-runs",
                 "model=big", "--log-mlflow"]) == 0
    client = mlflow.tracking.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("series-demo").experiment_id],
                                f"tags.`{KIND_TAG}` = '{SERIES_RUN}'")
    assert "mlflow.parentRunId" not in run.data.tags  # no sweep: a run of its own in the experiment
    finals = np.array([correct[-1].mean(), other.mean()])
    scores = np.array([c.mean() for c in correct])
    signal = abs(finals[0] - finals[1]) / finals.mean()
    noise = scores[-3:].std() / scores[-3:].mean()  # 4 checkpoints: the default window is the last 3
    assert run.data.metrics["arc:mc.signal"] == pytest.approx(signal)
    assert run.data.metrics["arc:mc.snr"] == pytest.approx(signal / noise)


def test_log_mlflow_needs_a_series(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["a", "b", "--log-mlflow"]) == 2
    assert "--log-mlflow logs a series' statistics: use it with --series" in capsys.readouterr().err
