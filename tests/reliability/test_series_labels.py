"""The checkpoint series table never cuts labels so that two different ones look alike."""

from __future__ import annotations

from engine.compare.models import SeriesPoint, SeriesReport, SeriesTask
from engine.compare.report import series_table


def _point(step: int, label: str, value: float) -> SeriesPoint:
    return SeriesPoint(step=step, model_label=label, run_dir=f"runs/{step}", value=value, n=100, stderr=0.01,
                       ci_low=value - 0.02, ci_high=value + 0.02, mde=0.04)


def test_long_checkpoint_labels_stay_distinct():
    base = "HuggingFaceTB/SmolLM2-135M-Instruct"  # longer than the old 28-character column
    labels = [f"{base}@step100", f"{base}@step200", f"{base}@step1000"]
    report = SeriesReport(tasks=[SeriesTask(task_spec="mmlu:mc", task_hash="h", metric="acc",
                                            points=[_point(i + 1, lab, 0.3) for i, lab in enumerate(labels)])])
    lines = series_table(report).splitlines()
    for label in labels:
        assert sum(f" {label} " in line for line in lines) == 1, label
    # the value column stays aligned: every data row puts the value at the same offset
    rows = lines[2:]
    assert len({row.index("0.3000") for row in rows}) == 1
