"""Read run folders (experiment.json, instances.jsonl) into per-question scores.

A question's score for a metric is the mean over its scored samples (K samples: sample_index > 0).
A question none of whose samples was scored is *errored*; it is kept and reported, never dropped.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# 3-5x faster than json on large instances.jsonl files
from orjson import JSONDecodeError as _OrjsonError
from orjson import loads as _loads
from pydantic import ValidationError

from engine.compare.models import RunInfo
from engine.types import RunRecord

RUN_FILE = "experiment.json"
INSTANCES_FILE = "instances.jsonl"


class CompareError(Exception):
    """Bad input: reported to the user as one paragraph (exit code 2), never as a traceback."""


class Question:
    """All samples of one instance in one run."""

    __slots__ = ("instance_id", "samples", "scores", "errored", "cluster")

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.samples: list[dict[str, Any]] = []
        self.scores: dict[str, float] = {}
        self.errored = False
        self.cluster: str | None = None

    def finish(self) -> None:
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        scored = 0
        for s in self.samples:
            if s.get("error") is not None:
                continue
            scored += 1
            for m, v in (s.get("scores") or {}).items():
                if v is None:
                    continue
                sums[m] = sums.get(m, 0.0) + float(v)
                counts[m] = counts.get(m, 0) + 1
        self.scores = {m: sums[m] / counts[m] for m in sums}
        self.errored = scored == 0
        self.samples.sort(key=lambda s: int(s.get("sample_index") or 0))
        self.cluster = self.samples[0].get("cluster") if self.samples else None

    @property
    def first(self) -> dict[str, Any]:
        return self.samples[0]

    def error_message(self) -> str:
        for s in self.samples:
            err = s.get("error")
            if err:
                return f"{err.get('kind', 'error')}: {err.get('message', '')}"
        return ""


@dataclass(frozen=True)
class RunData:
    info: RunInfo
    record: RunRecord
    questions: dict[str, Question] = field(repr=False)


def is_run_dir(path: Path) -> bool:
    return (path / RUN_FILE).is_file()


def find_run_dirs(root: Path) -> list[Path]:
    """Run folders at or below `root` (a run folder, a Hydra job dir, or a multirun dir)."""
    if is_run_dir(root):
        return [root]
    return sorted(p.parent for p in root.rglob(RUN_FILE))


def read_record(run_dir: Path) -> RunRecord:
    path = run_dir / RUN_FILE
    try:
        return RunRecord.model_validate_json(path.read_bytes())
    except FileNotFoundError as e:
        raise CompareError(f"{run_dir} is not a run folder: it has no {RUN_FILE}.") from e
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise CompareError(
            f"{path} is not a valid run record ({e.error_count()} problem(s); first: {where}: "
            f"{first['msg']})."
        ) from e


def run_info(record: RunRecord, run_dir: Path, mlflow_run_id: str | None = None) -> RunInfo:
    return RunInfo(
        run_id=record.run_id,
        run_dir=str(run_dir),
        mlflow_run_id=mlflow_run_id or record.mlflow_run_id,
        model_label=record.model.label,
        checkpoint_step=record.model.checkpoint_step,
        task_spec=record.task_spec,
        task_name=record.task_name,
        task_hash=record.task_hash,
        harness=record.harness,
        suite=record.suite,
        experiment_name=record.experiment_name,
        primary_metric=record.primary_metric,
        created=record.created,
    )


def parse_instances(lines: Iterable[bytes | str], source: str = "") -> dict[str, Question]:
    # Hundreds of thousands of new dicts would trigger the cyclic GC over and over (5-10x slower);
    # records hold no cycles, so pause it while parsing.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(lines, source)
    finally:
        if was_enabled:
            gc.enable()


def _parse(lines: Iterable[bytes | str], source: str) -> dict[str, Question]:
    questions: dict[str, Question] = {}
    loads = _loads
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = loads(line)
            iid = str(rec["instance_id"])
        except (ValueError, _OrjsonError, KeyError, TypeError) as e:
            raise CompareError(
                f"{source} line {lineno} is not an instance record ({type(e).__name__}: {e})."
            ) from e
        q = questions.get(iid)
        if q is None:
            q = questions[iid] = Question(iid)
        q.samples.append(rec)
    for q in questions.values():
        q.finish()
    return questions


def load_run(run_dir: Path, mlflow_run_id: str | None = None) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CompareError(f"Run folder {run_dir} does not exist.")
    record = read_record(run_dir)
    path = run_dir / INSTANCES_FILE
    if not path.is_file():
        raise CompareError(f"Run folder {run_dir} has no {INSTANCES_FILE}: nothing to compare.")
    with path.open("rb") as f:
        questions = parse_instances(f.read().splitlines(), str(path))
    return RunData(info=run_info(record, run_dir, mlflow_run_id), record=record, questions=questions)
