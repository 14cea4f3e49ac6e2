"""Readers select task runs by kind (docs/architecture.md, "Run kinds"): in a real MLflow store that
also holds suite and sweep parents, a training run, a run killed before its record was logged, and
task runs from before task runs were tagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.compare import CompareError, compare_runs, find_run_dirs, load_run, resolve, resolve_experiment
from engine.compare.cli import main
from engine.compare.report import rows, to_table
from engine.config.schema import TrackingConfig
from engine.record import store as record_store
from engine.record.folder import record_kind
from engine.record.mlflow_writer import KIND_TAG, start_mlflow_run
from engine.record.suite import build_suite_record, log_suite_run
from engine.record.sweep import JobResult, job_run, log_sweep_parents
from engine.scoring.suites import suite_score
from engine.sync import collect
from engine.types import EXTERNAL_RUN, SUITE_RUN, SWEEP_RUN, TASK_RUN, RunRecord

from .conftest import log_runs, make_suite_pair

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory: pytest.TempPathFactory):
    """Four task runs (two of them untagged, as an old store has them), a suite parent over A's runs,
    a sweep parent over everything, a training run and a run that never got its record."""
    root = tmp_path_factory.mktemp("kinds")
    p = make_suite_pair(root / "data")
    uri = f"sqlite:///{root}/mlruns.db"
    ids = log_runs(uri, [p.job_a, p.job_b], root)
    tracking = TrackingConfig(tracking_uri=uri)
    client = record_store.client(uri)
    for key in (("smol", "mmlu:mc"), ("smol", "arc:mc")):  # an old store: task runs without a kind
        client.delete_tag(ids[key], KIND_TAG)
    records_a = [load_run(d).record for d in find_run_dirs(p.job_a)]
    records_a = [r.model_copy(update={"mlflow_run_id": ids[(r.model.label, r.task_spec)]}) for r in records_a]
    agg = {"name": "core", "kind": "suite", "metric": "acc", "value": 0.5, "stderr": 0.1, "ci_low": 0.3,
           "ci_high": 0.7, "mde": 0.4, "n": 2, "parts": []}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        suite_parent = log_suite_run(tracking, build_suite_record(agg, records_a, tracking))
        records_b = [load_run(d).record for d in find_run_dirs(p.job_b)]
        job = JobResult(job=0, job_dir=str(root), model="smol", task_spec="core", status="finished", exit_code=0,
                        runs=[job_run(r.model_copy(update={"mlflow_run_id": ids[(r.model.label, r.task_spec)]}))
                              for r in records_b])
        (sweep_parent,) = log_sweep_parents("s1", root / "sweep", [job], [tracking])
        training = start_mlflow_run(tracking, "synthetic", "training", {KIND_TAG: "training"})
        killed = start_mlflow_run(tracking, "synthetic", "killed before its record")
    return p, uri, ids, {"suite": suite_parent, "sweep": sweep_parent, "training": training, "killed": killed}


def test_store_holds_every_kind(mixed_store) -> None:
    _, uri, ids, parents = mixed_store
    client = record_store.client(uri)
    kinds = {rid: client.get_run(rid).data.tags.get(KIND_TAG) for rid in [*ids.values(), *parents.values()]}
    assert kinds[parents["suite"]] == SUITE_RUN and kinds[parents["sweep"]] == SWEEP_RUN
    assert kinds[ids[("smol-ft@step20", "mmlu:mc")]] == TASK_RUN and kinds[ids[("smol", "mmlu:mc")]] is None


def test_series_over_experiment_reads_task_runs_only(mixed_store, capsys: pytest.CaptureFixture[str]) -> None:
    p, uri, ids, _ = mixed_store
    runs = resolve_experiment("synthetic", tracking_uri=uri)
    assert sorted(r.info.mlflow_run_id for r in runs) == sorted(ids.values())  # untagged old task runs included
    assert main(["--series", "--experiment", "synthetic", "--tracking-uri", uri, "--format", "json"]) == 0
    from_mlflow = json.loads(capsys.readouterr().out)
    assert main(["--series", "--experiment", "synthetic", "--runs-root", str(p.root), "--format", "json"]) == 0
    from_folders = json.loads(capsys.readouterr().out)
    # the same points; only the MLflow run id is known from MLflow alone (these folders' records predate it)
    def points(report: dict) -> list[list[dict]]:
        return [[{k: v for k, v in pt.items() if k != "mlflow_run_id"} for pt in t["points"]] for t in report["tasks"]]

    assert points(from_mlflow) == points(from_folders)
    assert main(["--series", "--experiment", "synthetic", "--tracking-uri", uri, "--task", "arc:mc"]) == 0
    out = capsys.readouterr().out
    assert "arc:mc" in out and "mmlu:mc" not in out and "smol-ft@step20" in out


def test_parent_run_ids_name_their_task_runs(mixed_store) -> None:
    _, uri, ids, parents = mixed_store
    under_suite = resolve(parents["suite"], tracking_uri=uri)
    assert sorted(r.info.mlflow_run_id for r in under_suite) == sorted(
        ids[("smol-ft@step20", s)] for s in ("mmlu:mc", "arc:mc"))
    under_sweep = resolve(parents["sweep"], tracking_uri=uri)
    assert sorted(r.info.task_spec for r in under_sweep) == ["arc:mc", "mmlu:mc"]
    assert {r.info.model_label for r in under_sweep} == {"smol"}
    for what in ("training", "killed"):
        with pytest.raises(CompareError, match="is no evaluation run"):
            resolve(parents[what], tracking_uri=uri)


def test_selectors_never_pick_parents(mixed_store) -> None:
    _, uri, ids, _ = mixed_store
    chosen = resolve("model.checkpoint=base", experiment="synthetic", tracking_uri=uri)
    assert sorted(r.info.mlflow_run_id for r in chosen) == sorted(ids[("smol", s)] for s in ("mmlu:mc", "arc:mc"))


def test_record_kind_in_run_folders_old_and_new(tmp_path: Path) -> None:
    p = make_suite_pair(tmp_path)
    run_dir = p.job_a / "mmlu__mc"
    data = json.loads((run_dir / "experiment.json").read_text())
    assert data["kind"] == TASK_RUN
    legacy = {k: v for k, v in data.items() if k != "kind"}
    assert RunRecord.model_validate(legacy).kind == TASK_RUN
    external = {**legacy, "config": {**legacy["config"], "task": {"name": "mmlu", "external": {"wrapper": "lm_eval"}}}}
    assert RunRecord.model_validate(external).kind == EXTERNAL_RUN
    (run_dir / "experiment.json").write_text(json.dumps(external))
    assert record_kind(run_dir / "experiment.json") == EXTERNAL_RUN
    (p.job_a / "suite.json").write_text(json.dumps({"suite": "core"}))  # written before suite records had a kind
    (p.root / "sweep.json").write_text(json.dumps({"kind": SWEEP_RUN, "sweep_id": "s", "sweep_dir": "x", "jobs": {}}))
    runs, suites, empty = collect([p.root])
    assert len(runs) == 4 and suites == [p.job_a] and empty == []


def test_suite_row_shows_the_suites_recorded_scores(tmp_path: Path) -> None:
    """With a best-of task the suite's A and B are the runs' suite scores (olmes counted once), not
    the mean over every task run compared: the table, the CSV rows and the JSON agree."""
    from engine.compare.synthetic import write_run
    from engine.config.schema import SuiteConfig

    suite = {"name": "mini", "tasks": ["mmlu:olmes", "hs:rc"], "suites": [], "aggregate": "mean"}
    correct = {"A": {"mmlu:olmes:mc": [1, 0, 0, 0], "mmlu:olmes:rc": [1, 1, 0, 0], "hs:rc": [1, 1, 1, 0]},
               "B": {"mmlu:olmes:mc": [0, 0, 0, 0], "mmlu:olmes:rc": [1, 0, 0, 0], "hs:rc": [1, 1, 0, 0]}}
    sides = {}
    for side, by_spec in correct.items():
        for spec, c in by_spec.items():
            write_run(tmp_path / side / spec.replace(":", "__"), task_spec=spec, correct=c, model=f"m{side}",
                      suite="mini", suite_config=suite)
        sides[side] = [load_run(d) for d in find_run_dirs(tmp_path / side)]
    report = compare_runs(sides["A"], sides["B"]).report
    cfg = SuiteConfig.model_validate(suite)
    want_a = suite_score(cfg, [r.record for r in sides["A"]]).value
    want_b = suite_score(cfg, [r.record for r in sides["B"]]).value
    assert (want_a, want_b) == (pytest.approx((0.5 + 0.75) / 2), pytest.approx((0.25 + 0.5) / 2))
    (suite_row,) = [r for r in rows(report) if r["level"] == "suite"]
    assert (suite_row["score_a"], suite_row["score_b"]) == (want_a, want_b)
    assert (report.suite.mean_a, report.suite.mean_b) == (want_a, want_b)
    line = next(ln for ln in to_table(report).splitlines() if ln.startswith("SUITE mini (mean of 2 tasks)"))
    assert f"{want_a:.4f}" in line and f"{want_b:.4f}" in line
    assert "olmes counts once" in report.suite.explanation
