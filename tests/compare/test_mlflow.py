"""Reading runs back from a real MLflow SQLite store filled in the engine's layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.compare import CompareError, resolve, resolve_experiment
from engine.compare.cli import main

from .conftest import log_runs, make_suite_pair

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mlflow")  # one store for the module: creating it takes seconds
    p = make_suite_pair(root / "data")
    uri = f"sqlite:///{root}/mlruns.db"
    ids = log_runs(uri, [p.job_a, p.job_b], root)
    return p, uri, ids


def test_run_id_and_selectors(store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p, uri, ids = store
    runs = resolve(ids[("smol-ft@step20", "mmlu:mc")], tracking_uri=uri)
    assert len(runs) == 1 and runs[0].info.task_spec == "mmlu:mc" and runs[0].info.mlflow_run_id == ids[("smol-ft@step20", "mmlu:mc")]
    # Our own run id (the evalbench.run_id tag) resolves too.
    assert resolve("smol-None-mmlu:mc", tracking_uri=uri)[0].info.model_label == "smol"
    code = main(["--tracking-uri", uri, "--experiment", "synthetic", "model.checkpoint=step20", "model.checkpoint=base", "--format", "json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    rep = json.loads(out.out)
    assert sorted(t["task_spec"] for t in rep["tasks"]) == ["arc:mc", "mmlu:mc"] and rep["suite"]["k"] == 2
    # Params are the flattened config the writer logs.
    (by_param,) = resolve("param.model.name=smol-ft,task=arc:mc", experiment="synthetic", tracking_uri=uri)
    assert by_param.info.mlflow_run_id == ids[("smol-ft@step20", "arc:mc")]
    with pytest.raises(CompareError, match="no MLflow experiment named 'nope'"):
        resolve("model=smol", experiment="nope", tracking_uri=uri)


def test_artifacts_when_run_folder_is_gone(store, tmp_path: Path) -> None:
    p, uri, ids = store
    shutil.move(p.root / "runs", p.root / "runs.moved")  # only MLflow's copy remains
    try:
        a = resolve(ids[("smol-ft@step20", "arc:mc")], tracking_uri=uri, cache_dir=tmp_path / "cache")
        b = resolve("tag.evalbench.model=smol,task=arc:mc", experiment="synthetic", tracking_uri=uri, cache_dir=tmp_path / "cache")
        assert str(tmp_path / "cache") in a[0].info.run_dir
        assert len(a[0].questions) == 90 and len(b[0].questions) == 90
        series = resolve_experiment("synthetic", tracking_uri=uri, cache_dir=tmp_path / "cache")
        assert len(series) == 4
    finally:
        shutil.move(p.root / "runs.moved", p.root / "runs")


def test_cli_run_ids(store, capsys: pytest.CaptureFixture[str]) -> None:
    p, uri, ids = store
    code = main([ids[("smol-ft@step20", "mmlu:mc")], ids[("smol", "mmlu:mc")], "--tracking-uri", uri])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "mmlu:mc" in out.out and "SUITE" not in out.out
    code = main(["--series", "--experiment", "synthetic", "--tracking-uri", uri, "--task", "mmlu:mc"])
    out = capsys.readouterr()
    assert code == 0 and "smol-ft@step20" in out.out
