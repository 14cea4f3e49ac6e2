"""Pairwise per-question comparison of runs: statistics, CLI, web viewer (docs/architecture.md, "Statistics")."""

import sys
import types
from pathlib import Path
from typing import Any

from engine.compare.loading import CompareError, RunData, find_run_dirs, load_run
from engine.compare.models import (
    Alignment,
    ComparisonReport,
    QuestionPage,
    QuestionRow,
    RunInfo,
    SeriesPoint,
    SeriesReport,
    SeriesTask,
    SuiteComparison,
    TaskComparison,
    UnmatchedTask,
    verdict_of,
)
from engine.compare.paired import Comparison, compare_runs, suite_comparison
from engine.compare.pairwise import compare, compare_sides
from engine.compare.resolve import resolve, resolve_experiment
from engine.compare.series import build_series

__all__ = [
    "Alignment",
    "CompareError",
    "Comparison",
    "ComparisonReport",
    "QuestionPage",
    "QuestionRow",
    "RunData",
    "RunInfo",
    "SeriesPoint",
    "SeriesReport",
    "SeriesTask",
    "SuiteComparison",
    "TaskComparison",
    "UnmatchedTask",
    "build_series",
    "compare",
    "compare_runs",
    "compare_sides",
    "find_run_dirs",
    "load_run",
    "resolve",
    "resolve_experiment",
    "suite_comparison",
    "verdict_of",
]


class _CallablePackage(types.ModuleType):
    """`from engine import compare; compare(a, b)`: the public API's `compare` is this package itself,
    called (its name is taken by the package that `python -m engine.compare` runs)."""

    def __call__(self, a: str | Path, b: str | Path, **options: Any) -> ComparisonReport:
        return compare(a, b, **options)


sys.modules[__name__].__class__ = _CallablePackage
