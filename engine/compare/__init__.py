"""Pairwise per-question comparison of runs: statistics, CLI, web viewer (docs/architecture.md, "Statistics")."""

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
    "compare_runs",
    "find_run_dirs",
    "load_run",
    "resolve",
    "resolve_experiment",
    "suite_comparison",
    "verdict_of",
]
