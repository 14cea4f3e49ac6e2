"""The terminal results table, why instances failed, and where the records are."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from engine.harness.agent_report import agent_lines
from engine.stats import number as _fmt  # the one number formatter (a missing number prints "—")
from engine.types import RunRecord

EXAMPLE_CHARS = 200  # one example message per error kind, on one line


def results_table(records: Sequence[RunRecord]) -> str:
    header = ["task spec", "model", "metric", "n", "score", "SE", "95% CI", "MDE", "errors", "time"]
    rows = []
    for r in records:
        s = r.scores.get(r.primary_metric)
        se = s.reported_stderr if s else float("nan")
        spread = s is not None and not r.aggregate_only  # an aggregate alone has no SE, CI or MDE
        rows.append([
            r.task_spec, r.model.label, r.primary_metric + (" (clustered SE)" if s and s.clustered_stderr else "")
            + (" (aggregate only)" if s and r.aggregate_only else ""),
            str(s.n if s and r.aggregate_only else r.counts.scored),
            _fmt(s.value) if s else "-", _fmt(se) if spread else "-",
            f"[{_fmt(s.ci_low)}, {_fmt(s.ci_high)}]" if s and spread else "-", _fmt(s.mde) if s and spread else "-",
            f"{r.counts.errored}" + {"failed": " FAILED", "interrupted": " (interrupted)"}.get(r.status, ""), f"{r.duration_s:.1f}s",
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False))
    agents = [text for r in records for text in agent_lines(r)]  # tool loops: what the agent did
    causes = [text for r in records for text in error_lines(r)]  # a failed or partial run says why
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows] + agents + causes)


def _errors(run_dir: Path) -> Iterator[tuple[str, str]]:
    """(kind, message) of every errored instance in a run folder's instances.jsonl."""
    with open(run_dir / "instances.jsonl", encoding="utf-8") as fh:
        for text in fh:
            error = json.loads(text).get("error") if text.strip() else None
            if error:
                yield str(error.get("kind")), str(error.get("message") or "")


def error_lines(record: RunRecord) -> list[str]:
    """Under the table, for a run with errored instances: each error kind with its count and one
    example message (docs/architecture.md, "Boundaries": a failure says why). The record counts the
    errors; the kinds and messages are in the run folder, which is always written."""
    if not record.counts.errored:
        return []
    kinds: Counter[str] = Counter()
    example: dict[str, str] = {}
    try:
        for kind, message in _errors(Path(record.run_dir)):
            kinds[kind] += 1
            example.setdefault(kind, message)
    except (OSError, ValueError) as err:  # the folder was moved or damaged since: say where the causes were
        return [f"{record.task_spec}: {record.counts.errored} errored; their causes are unreadable in "
                f"{record.run_dir}/instances.jsonl ({type(err).__name__})"]
    lines = [f"{record.task_spec}: {record.counts.errored} of {record.counts.n} errored, by kind:"]
    for kind, count in kinds.most_common():
        text = " ".join(example[kind].split())
        text = text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS - 3] + "..."
        lines.append(f"  {count} {kind}: e.g. {text!r}" if text else f"  {count} {kind}")
    return lines


def where_records_are(records: Sequence[RunRecord], tracking_uri: str | None) -> str:
    lines = []
    for r in records:
        lines.append(f"  {r.task_spec}: run folder {r.run_dir}" + (f"  (MLflow run {r.mlflow_run_id})" if r.mlflow_run_id else ""))
    if tracking_uri and any(r.mlflow_run_id for r in records):
        if tracking_uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
            lines.append(f"Browse: open {tracking_uri}")
        else:
            lines.append(f"Browse: mlflow ui --backend-store-uri {tracking_uri} --port 5000   (then open http://127.0.0.1:5000)")
    return "Records:\n" + "\n".join(lines)
