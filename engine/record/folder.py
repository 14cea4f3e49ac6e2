"""The run folder: experiment.json, instances.jsonl, metrics.json (always written, MLflow or not).

The folder is the source of truth (MLflow is a view of it that `python -m engine.sync` can
rebuild). Every file is written atomically (engine/record/atomic.py), experiment.json last: a
folder with an experiment.json has complete instances and metrics.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from engine.record.atomic import atomic_write_lines, atomic_write_text
from engine.types import RUN_KINDS, SUITE_RUN, InstanceRecord, RunKind, RunRecord, legacy_run_kind

RUN_FILE = "experiment.json"  # a task or external run's record (RunRecord)
SUITE_FILE = "suite.json"  # a suite parent's record (engine/record/suite.py SuiteRecord)


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


def record_kind(path: Path) -> RunKind | None:
    """The run kind a record file declares (docs/architecture.md, "Run kinds"); None when the file
    is unreadable or no evalbench record. Files written before records carried a kind: an
    experiment.json is a task (or external) run, a suite.json a suite parent."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("kind")
    if kind is None:
        if path.name == RUN_FILE:
            return legacy_run_kind(data.get("config") or {})
        return SUITE_RUN if path.name == SUITE_FILE else None
    return next((k for k in RUN_KINDS if k == kind), None)
