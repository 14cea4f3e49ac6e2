"""The run folder: experiment.json, instances.jsonl, metrics.json (always written, MLflow or not)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from engine.api import InstanceRecord, RunRecord


def spec_dirname(task_spec: str) -> str:
    return task_spec.replace(":", "__").replace("/", "_")


def write_run_folder(run_dir: Path, record: RunRecord, instances: Iterable[InstanceRecord]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "instances.jsonl", "w") as fh:
        for inst in instances:
            fh.write(inst.model_dump_json() + "\n")
    write_run_record(run_dir, record)


def write_run_record(run_dir: Path, record: RunRecord) -> None:
    (run_dir / "experiment.json").write_text(record.model_dump_json(indent=2))
    metrics = {k: v.model_dump() for k, v in record.scores.items()}
    (run_dir / "metrics.json").write_text(json.dumps({"primary_metric": record.primary_metric, **metrics}, indent=2))


def read_run_folder(run_dir: Path) -> tuple[RunRecord, list[InstanceRecord]]:
    record = RunRecord.model_validate_json((run_dir / "experiment.json").read_text())
    with open(run_dir / "instances.jsonl") as fh:
        instances = [InstanceRecord.model_validate_json(line) for line in fh if line.strip()]
    return record, instances
