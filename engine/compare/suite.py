"""The suite row of a comparison, aggregated exactly as the run aggregates its suite.

A run's suite score (engine/scoring/suites.py) is a weighted mean of task scores: nested suites
count as one entry (mean of means) and a best-of task (olmes) contributes its better formulation.
The comparison uses that same function on each side, so its suite means equal the runs' own; Δ is
their difference, with SE² = Σ_j (w_j·SE_Δj)² over the paired task comparisons when both sides
chose the same entries, else the unpaired sqrt(SE_A² + SE_B²) (docs/architecture.md, "Statistics").
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from engine.compare.models import TaskComparison
from engine.config.schema import SuiteConfig
from engine.scoring.suites import AggregateScore, suite_score
from engine.stats import combined_stderr
from engine.types import RunRecord


def run_suite_score(records: Sequence[RunRecord]) -> AggregateScore | None:
    """The suite score the run reported (None: the runs are not one suite's)."""
    names = {r.suite for r in records}
    if len(names) != 1 or None in names:
        return None
    raw = records[0].config.get("suite")
    try:
        suite = SuiteConfig.model_validate(raw)
    except ValidationError:
        return None
    return suite_score(suite, records)


def leaves(agg: AggregateScore, weight: float = 1.0) -> dict[str, float]:
    """Task spec → its weight in the suite mean (best-of: the chosen formulation)."""
    if agg.kind == "task":
        return {agg.name: weight}
    if agg.kind == "best_of":
        return {agg.chosen or agg.name: weight}
    out: dict[str, float] = {}
    for part in agg.parts:
        for spec, w in leaves(part, weight / len(agg.parts)).items():
            out[spec] = out.get(spec, 0.0) + w
    return out


def suite_delta_se(a: AggregateScore, b: AggregateScore, tasks: Sequence[TaskComparison]) -> tuple[float, bool]:
    """(SE of mean_a − mean_b, paired?)."""
    wa, wb = leaves(a), leaves(b)
    by_spec = {t.task_spec: t for t in tasks}
    if wa == wb and all(s in by_spec and by_spec[s].alignment.n_paired for s in wa):
        return combined_stderr([by_spec[s].stats.stderr for s in wa], list(wa.values())), True
    return combined_stderr([a.stderr, b.stderr], [1.0, 1.0]), False


def explanation(suites: tuple[AggregateScore, AggregateScore] | None, paired: bool) -> str:
    """What a suite row's A, B and Δ are, for the table and the viewer alike."""
    if suites is None:
        return "Suite Δ is the mean of the task Δs, SE = sqrt(ΣSE²)/k."
    how = ("paired SE over the tasks" if paired
           else "unpaired SE sqrt(SE_A² + SE_B²): the sides chose different best-of formulations")
    return (f"Suite A and B are the suite scores the runs recorded (mean over {len(leaves(suites[0]))} entries; a "
            f"best-of task such as olmes counts once, as its better formulation); Δ = A − B, {how}.")
