"""Real records for the reliability tests, built without a model (what a finished task run hands
to engine/record), and a child process that records one of them, for tests of many processes."""

from __future__ import annotations

import datetime as dt
import sys
import time
import uuid
from pathlib import Path

from engine.config.schema import TrackingConfig
from engine.stats import summarize
from engine.types import InstanceRecord, ModelIdentity, RunCounts, RunRecord, ScoreSummary


def instances(spec: str, n: int = 6) -> list[InstanceRecord]:
    return [InstanceRecord(task_hash="th", task_spec=spec, instance_id=f"q{i}", gold="A", cluster=f"c{i // 3}",
                           extracted_answer="A" if i % 2 else "B", scores={"acc": float(i % 2)})
            for i in range(n)]


def make_record(run_dir: Path, spec: str = "mmlu:mc", experiment: str = "reliability",
                tracking_uri: str = "sqlite:///mlruns.db", insts: list[InstanceRecord] | None = None) -> RunRecord:
    insts = insts if insts is not None else instances(spec)
    acc: ScoreSummary = summarize([r.scores["acc"] for r in insts], clusters=[r.cluster for r in insts])
    return RunRecord(
        run_id=uuid.uuid4().hex[:16], experiment_id="e" * 16, experiment_name=experiment,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), engine_version="0.1.0",
        git_revision=None, config={"task": {"name": spec.split(":")[0]}, "tracking": {"tracking_uri": tracking_uri}},
        model=ModelIdentity(name="smollm2-135m-instruct", provider="hf"), task_spec=spec,
        task_name=spec.split(":")[0], task_hash="th", harness="single_turn", suite=None, seeds={"seed": 1},
        status="finished", duration_s=1.0, counts=RunCounts(n=len(insts), scored=len(insts), errored=0),
        primary_metric="acc", scores={"acc": acc}, run_dir=str(run_dir.resolve()),
    )


def _child(mode: str, root: str, uri: str, index: str) -> None:
    """`record`: wait for the start signal, record one run. `start-and-hang`: create the MLflow run
    and write the folder, print the run id, then wait to be killed. `helper-start-and-hang`: the
    tracking helper creates the run; print its id and the helper's pid, then wait to be killed."""
    from engine.record.folder import write_run_folder
    from engine.record.mlflow_writer import run_tags, start_mlflow_run
    from engine.record.publish import record_and_log, run_name

    base = Path(root)
    run_dir = base / "runs" / f"task{index}"
    insts = instances(f"task{index}:mc")
    record = make_record(run_dir, f"task{index}:mc", tracking_uri=uri, insts=insts)
    tracking = TrackingConfig(tracking_uri=uri)
    if mode == "record":
        (base / f"ready-{index}").touch()
        while not (base / "go").exists():  # all processes hit the store together
            time.sleep(0.01)
        record_and_log(tracking, record, insts, run_dir)
        print("recorded", index)
        return
    if mode == "helper-start-and-hang":  # the run created by the tracking helper, as a task run does
        from engine.record import sidecar
        from engine.record.lifecycle import owner_tags

        with sidecar.session(tracking):
            run_id = sidecar.call(start_mlflow_run, tracking, record.experiment_name, run_name(record), {}, owner_tags())
            helper = sidecar.helper(uri)
            print(run_id, helper.proc.pid if helper else 0, flush=True)
            time.sleep(600)
    run_id = start_mlflow_run(tracking, record.experiment_name, run_name(record), run_tags(record))
    write_run_folder(run_dir, record.model_copy(update={"mlflow_run_id": run_id}), insts)
    print(run_id, flush=True)
    time.sleep(600)


if __name__ == "__main__":
    _child(*sys.argv[1:5])
