"""`compare(a, b)`: the paired comparison A − B of two named sides, as `python -m engine.compare A B`
computes it (docs/architecture.md, "The public API"). The CLI and `from engine import compare` call
this one function, so both refuse the same inputs with the same messages."""

from __future__ import annotations

from pathlib import Path

from engine.compare.loading import CompareError, RunData
from engine.compare.models import ComparisonReport
from engine.compare.paired import AdjustChoice, Comparison, compare_runs
from engine.compare.resolve import resolve


def one_model(runs: list[RunData], spec: str, side: str) -> list[RunData]:
    """A side's runs, refused when they hold more than one model (a sweep's selector too wide)."""
    labels = sorted({r.info.model_label for r in runs})
    if len(labels) > 1:
        raise CompareError(
            f"{side} ({spec}) names runs of {len(labels)} models ({', '.join(labels[:6])}): a side of a "
            "comparison must be one model. Pass one job dir of the sweep, or narrow the selector (e.g. add "
            ",model.checkpoint=step20)."
        )
    return runs


def compare_sides(a: str | Path, b: str | Path, *, experiment: str | None = None, tracking_uri: str | None = None,
                  runs_root: str | Path | None = None, metric: str | None = None,
                  adjust: AdjustChoice = "holm") -> Comparison:
    """Resolve A and B (run folders, job dirs, MLflow run ids, or selectors within `experiment`) and
    compare them question by question; `.report` is what the CLI prints."""
    root = Path(runs_root) if runs_root is not None else None
    a_spec, b_spec = str(a), str(b)
    runs_a = one_model(resolve(a_spec, experiment=experiment, tracking_uri=tracking_uri, runs_root=root), a_spec, "A")
    runs_b = one_model(resolve(b_spec, experiment=experiment, tracking_uri=tracking_uri, runs_root=root), b_spec, "B")
    if {r.info.run_id for r in runs_a} == {r.info.run_id for r in runs_b}:
        raise CompareError(f"A ({a_spec}) and B ({b_spec}) are the same run(s) "
                           f"({', '.join(sorted(r.info.run_id for r in runs_a))}): a run compared with itself differs "
                           "by 0 on every question by construction. Fix: give two different runs, e.g. the run "
                           "folders of two checkpoints.")
    return compare_runs(runs_a, runs_b, metric=metric, adjust=adjust)


def compare(a: str | Path, b: str | Path, *, experiment: str | None = None, tracking_uri: str | None = None,
            runs_root: str | Path | None = None, metric: str | None = None,
            adjust: AdjustChoice = "holm") -> ComparisonReport:
    """The paired comparison A − B that `python -m engine.compare A B` prints (`.model_dump_json()` is
    its `--format json`); `from engine import compare` calls this (the package is callable)."""
    return compare_sides(a, b, experiment=experiment, tracking_uri=tracking_uri, runs_root=runs_root,
                         metric=metric, adjust=adjust).report
