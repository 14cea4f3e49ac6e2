"""An external benchmark's output checked against the questions it was sent (docs/architecture.md,
"Boundaries"): the same rules as the engine's own responses, applied once where the output enters.

- every planned instance is answered exactly once: a planned instance with no sample is an errored
  instance of kind `missing_from_output` (the run is partial, exit 3), never silently dropped;
- a sample whose id the engine did not send, or two samples of one id, make the output unreadable
  (the run fails, naming the ids): a benchmark that evaluated other questions, or counted some twice,
  has no score of the task;
- every score, per sample and aggregate, is finite and inside its metric's declared range
  (`engine.config.names.metric_range`: 0/1 scores in [0, 1]);
- an aggregate alone (no per-sample output) covers the questions sent, at most.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

from engine.config.names import metric_range
from engine.external.base import ExternalOutput, OutputError
from engine.types import InstanceError, InstanceRecord

MISSING_FROM_OUTPUT = "missing_from_output"  # the error kind of a planned instance the benchmark did not answer
_SHOWN = 5  # ids named in a message


def _named(ids: Iterable[str]) -> str:
    ids = list(ids)
    shown = ", ".join(repr(i) for i in ids[:_SHOWN])
    return shown + (f" (and {len(ids) - _SHOWN} more)" if len(ids) > _SHOWN else "")


def _check_scores(scores: Mapping[str, float], where: str) -> None:
    for name, value in scores.items():
        low, high = metric_range(name)
        if not math.isfinite(value):
            raise OutputError(f"{where} has score {name!r} = {value!r}, not a finite number")
        if not low <= value <= high:
            raise OutputError(f"{where} has score {name!r} = {value!r}, outside its range [{low:g}, {high:g}]")


def check_output(output: ExternalOutput, planned: list[str]) -> list[str]:
    """The planned instance ids the output has no sample of; OutputError for unknown or duplicated
    ids, a score that is not finite or outside its metric's range, an aggregate over more questions
    than were sent."""
    _check_scores(output.aggregate, "the benchmark's aggregate")
    if output.samples is None:
        if output.n > len(planned):
            raise OutputError(f"the benchmark's aggregate is over {output.n} questions, but {len(planned)} were sent")
        return []
    known = set(planned)
    counts = Counter(s.instance_id for s in output.samples)
    unknown = [i for i in counts if i not in known]
    if unknown:
        raise OutputError(f"{len(unknown)} sample(s) have instance ids the engine did not send: {_named(unknown)} "
                          f"(sent: {_named(planned)}); the benchmark evaluated other questions, or its id field "
                          "(`task.external.args.id_field`) is not the task's `fields.id`")
    twice = [i for i, c in counts.items() if c > 1]
    if twice:
        raise OutputError(f"{len(twice)} instance(s) have more than one sample: "
                          + ", ".join(f"{i!r} ({counts[i]} times)" for i in twice[:_SHOWN])
                          + f"{' ...' if len(twice) > _SHOWN else ''}; each question sent must be answered once")
    for s in output.samples:
        _check_scores(s.scores, f"sample {s.instance_id!r}")
    return [i for i in planned if i not in counts]


def missing_records(missing: list[str], task_hash: str, spec: str, wrapper: str,
                    clusters: Mapping[str, str | None]) -> list[InstanceRecord]:
    """An errored record per planned instance the benchmark did not answer: counted and shown apart."""
    return [InstanceRecord(task_hash=task_hash, task_spec=spec, instance_id=i, cluster=clusters.get(i), attempts=0,
                           error=InstanceError(kind=MISSING_FROM_OUTPUT, attempts=0,
                                               message=f"{wrapper}'s per-sample output has no sample of this instance"))
            for i in missing]
