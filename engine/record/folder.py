"""The run folder: experiment.json, instances.jsonl, metrics.json (always written, MLflow or not).

The folder is the source of truth (MLflow is a view of it that `python -m engine.sync` can
rebuild). Every file is written atomically (engine/record/atomic.py), experiment.json last: a
folder with an experiment.json has complete instances and metrics.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from engine.api import InstanceRecord, RunRecord
from engine.record.atomic import atomic_write_lines, atomic_write_text


def spec_dirname(task_spec: str) -> str:
    return task_spec.replace(":", "__").replace("/", "_")


def write_run_folder(run_dir: Path, record: RunRecord, instances: Iterable[InstanceRecord]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_lines(run_dir / "instances.jsonl", (inst.model_dump_json() for inst in instances))
    write_run_record(run_dir, record)


def write_run_record(run_dir: Path, record: RunRecord) -> None:
    metrics = {k: v.model_dump() for k, v in record.scores.items()}
    atomic_write_text(run_dir / "metrics.json", json.dumps({"primary_metric": record.primary_metric, **metrics}, indent=2))
    atomic_write_text(run_dir / "experiment.json", record.model_dump_json(indent=2))


def read_run_folder(run_dir: Path) -> tuple[RunRecord, list[InstanceRecord]]:
    record = RunRecord.model_validate_json((run_dir / "experiment.json").read_text())
    with open(run_dir / "instances.jsonl") as fh:
        instances = [InstanceRecord.model_validate_json(line) for line in fh if line.strip()]
    return record, instances
