"""`python -m engine.compare A B --sequential`: stop as soon as the answer is known.

Per task, the paired questions of two finished runs are read in a seeded random order (the
confidence sequence assumes exchangeable questions) and fed to engine.stats.sequential_paired, the
anytime-valid confidence sequence of Waudby-Smith & Ramdas 2023 (docs/architecture.md,
"Statistics"): it stops at the first question where the sequence excludes 0 or lies inside
(−threshold, threshold), with error ≤ α as for a single fixed-size test. The report shows how many
questions each decision needed against the full set.
"""

from __future__ import annotations

import numpy as np

from engine.compare.models import SequentialReport, SequentialTask
from engine.compare.paired import UNPAIRED, Comparison
from engine.stats import sequential_paired


def sequential_report(comparison: Comparison, alpha: float = 0.05, threshold: float = 0.0,
                      seed: int = 0) -> SequentialReport:
    table, report = comparison.table, comparison.report
    paired = table.status != UNPAIRED
    tasks: list[SequentialTask] = []
    for tix, spec in enumerate(table.task_specs):
        d = table.delta[(table.task_idx == tix) & paired]
        if d.size == 0:
            continue
        metric = next((t.metric for t in report.tasks if t.task_spec == spec), "")
        if np.abs(d).max() > 1:  # the confidence sequence needs bounded differences, d ∈ [−1, 1]
            tasks.append(SequentialTask(task_spec=spec, metric=metric, n_full=int(d.size), stopped_at=None,
                                        decision="undecided", mean=float(d.mean()), cs_low=-1.0, cs_high=1.0,
                                        full_delta=float(d.mean()),
                                        note=f"{metric} differences leave [-1, 1]: no sequential test"))
            continue
        order = np.random.default_rng(seed).permutation(d.size)
        result = sequential_paired(iter(d[order].tolist()), alpha=alpha, threshold=threshold)
        tasks.append(SequentialTask(task_spec=spec, metric=metric, n_full=int(d.size), stopped_at=result.stopped_at,
                                    decision=result.decision, mean=result.mean, cs_low=result.cs_low,
                                    cs_high=result.cs_high, full_delta=float(d.mean())))
    return SequentialReport(label_a=report.label_a, label_b=report.label_b, alpha=alpha, threshold=threshold,
                            seed=seed, tasks=tasks)
