"""Render a ComparisonReport / SeriesReport as a terminal table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import math

from engine.compare.models import ComparisonReport, SeriesReport, verdict_text

CSV_FIELDS = [
    "level", "task_spec", "metric", "n", "score_a", "score_b", "delta", "stderr", "ci_low", "ci_high",
    "z", "p_value", "mcnemar_p", "mde", "wins", "losses", "ties", "only_in_a", "only_in_b",
    "errored_a", "errored_b", "aggregation", "clustered", "verdict",
]


def _f(x: float | None, digits: int = 4, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "—"
    return "<1e-4" if x < 1e-4 else f"{x:.4f}"


def rows(report: ComparisonReport) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for t in report.tasks:
        s, al = t.stats, t.alignment
        out.append(dict(
            level="task", task_spec=t.task_spec, metric=t.metric, n=s.n, score_a=s.mean_a, score_b=s.mean_b,
            delta=s.delta, stderr=s.stderr, ci_low=s.ci_low, ci_high=s.ci_high, z=s.z, p_value=s.p_value,
            mcnemar_p=s.mcnemar_p, mde=s.mde, wins=s.wins, losses=s.losses, ties=s.ties,
            only_in_a=al.only_in_a, only_in_b=al.only_in_b, errored_a=al.errored_a, errored_b=al.errored_b,
            aggregation=t.aggregation, clustered=t.clustered, verdict=t.verdict,
        ))
    if report.suite is not None:
        u = report.suite
        n = sum(t.stats.n for t in report.tasks)
        out.append(dict(
            level="suite", task_spec=u.name, metric=report.metric, n=n,
            score_a=_macro(report, "a") if u.mean_a is None else u.mean_a,  # the run's own suite score
            score_b=_macro(report, "b") if u.mean_b is None else u.mean_b, delta=u.delta, stderr=u.stderr,
            ci_low=u.ci_low, ci_high=u.ci_high, z=u.z, p_value=u.p_value, mcnemar_p=None, mde=u.mde,
            wins=u.wins, losses=u.losses, ties=u.ties,
            only_in_a=sum(t.alignment.only_in_a for t in report.tasks),
            only_in_b=sum(t.alignment.only_in_b for t in report.tasks),
            errored_a=sum(t.alignment.errored_a for t in report.tasks),
            errored_b=sum(t.alignment.errored_b for t in report.tasks), aggregation="mean of tasks",
            clustered=False, verdict=u.verdict,
        ))
    return out


def _macro(report: ComparisonReport, side: str) -> float:
    tasks = [t for t in report.tasks if t.stats.n]
    vals = [t.stats.mean_a if side == "a" else t.stats.mean_b for t in tasks]
    return sum(vals) / len(vals) if vals else math.nan


def to_csv(report: ComparisonReport) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows(report):
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def to_table(report: ComparisonReport) -> str:
    head = ["task", "n", "A", "B", "Δ (A−B)", "95% CI", "p", "McNemar p", "MDE", "W/L/T", "unpaired", "verdict"]
    body: list[list[str]] = []
    for r in rows(report):
        unpaired = int(r["only_in_a"]) + int(r["only_in_b"]) + int(r["errored_a"]) + int(r["errored_b"])  # type: ignore[call-overload]
        name = str(r["task_spec"])
        if r["aggregation"] == "macro":
            name += " (macro)"
        elif r["clustered"]:
            name += " (clustered)"
        if r["level"] == "suite":
            name = f"SUITE {name} (mean of {report.suite.k if report.suite else 0} tasks)"
        body.append([
            name, str(r["n"]), _f(r["score_a"]), _f(r["score_b"]), _f(r["delta"], sign=True),  # type: ignore[arg-type]
            f"[{_f(r['ci_low'], sign=True)}, {_f(r['ci_high'], sign=True)}]", _p(r["p_value"]),  # type: ignore[arg-type]
            _p(r["mcnemar_p"]), _f(r["mde"]), f"{r['wins']}/{r['losses']}/{r['ties']}", str(unpaired),  # type: ignore[arg-type]
            verdict_text(r["verdict"], r["p_value"]),  # type: ignore[arg-type]
        ])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = "  ".join("-" * w for w in widths)
    out = [f"A = {report.label_a}    B = {report.label_b}    metric = {report.metric or 'per task (primary)'}"]
    out.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    out.append(line)
    for i, b in enumerate(body):
        if report.suite is not None and i == len(body) - 1:
            out.append(line)
        out.append("  ".join(c.ljust(w) if j == 0 or j == len(b) - 1 else c.rjust(w) for j, (c, w) in enumerate(zip(b, widths, strict=True))))
    if report.suite is not None:
        u = report.suite
        out.append(
            f"{u.explanation} Pooled over {u.pooled_n} questions "
            f"with task-clustered SE: Δ {_f(u.pooled_delta, sign=True)}, SE {_f(u.pooled_stderr)}, "
            f"p {_p(u.pooled_p_value)}, MDE {_f(u.pooled_mde)} → {verdict_text(u.pooled_verdict)} (with few "
            "tasks the clustered SE sees only the spread between task means: trust the suite row)."
        )
    for t in report.tasks:
        if t.aggregation == "macro":
            out.append(f"note: {t.task_spec}: A, B and Δ are macro averages over {t.n_clusters} clusters (as the run "
                       "reports its score), SE clustered; W/L/T and McNemar count questions.")
    for t in report.tasks:
        al = t.alignment
        parts = []
        if al.only_in_a:
            parts.append(f"{al.only_in_a} only in A (e.g. {', '.join(al.example_only_in_a[:3])})")
        if al.only_in_b:
            parts.append(f"{al.only_in_b} only in B (e.g. {', '.join(al.example_only_in_b[:3])})")
        if al.errored_a or al.errored_b:
            parts.append(f"errored: {al.errored_a} in A, {al.errored_b} in B")
        if al.missing_metric_a or al.missing_metric_b:
            parts.append(f"no {t.metric} score: {al.missing_metric_a} in A, {al.missing_metric_b} in B")
        if parts:
            out.append(f"note: {t.task_spec}: " + "; ".join(parts) + " — not in the statistics.")
    for um in report.unmatched:
        out.append(f"note: task {um.task_spec} [{um.task_hash[:12]}] not compared: {um.reason}.")
    for w in report.warnings:
        out.append(f"warning: {w}")
    return "\n".join(out)


def series_table(report: SeriesReport) -> str:
    out = []
    for t in report.tasks:
        # The model column is as wide as its longest label: checkpoint labels differ only at the end
        # (`…@step100` / `…@step200`), so cutting them would make two points look alike.
        w = max([len("model"), *(len(p.model_label) for p in t.points)])
        out.append(f"{t.task_spec}  ({t.metric})")
        out.append(f"  {'step':>6}  {'model':<{w}} {'value':>7}  {'95% CI':>17}  {'MDE':>6}  {'Δ vs first':>10}  verdict")
        for p in t.points:
            out.append(
                f"  {p.step:>6}  {p.model_label:<{w}} {_f(p.value):>7}  "
                f"[{_f(p.ci_low)}, {_f(p.ci_high)}]  {_f(p.mde):>6}  {_f(p.delta_vs_base, sign=True):>10}  "
                f"{verdict_text(p.verdict_vs_base, p.p_value_vs_base) if p.verdict_vs_base else '(first)'}"
            )
    out.extend(f"warning: {w}" for w in report.warnings)
    return "\n".join(out)


def series_csv(report: SeriesReport) -> str:
    buf = io.StringIO()
    fields = ["task_spec", "metric", "step", "model_label", "value", "n", "stderr", "ci_low", "ci_high", "mde",
              "delta_vs_base", "paired_mde_vs_base", "p_value_vs_base", "verdict_vs_base", "ci_low_vs_base",
              "ci_high_vs_base", "run_dir"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for t in report.tasks:
        for p in t.points:
            d = p.model_dump()
            d.update(task_spec=t.task_spec, metric=t.metric)
            w.writerow({k: ("" if d.get(k) is None else d.get(k)) for k in fields})
    return buf.getvalue()
