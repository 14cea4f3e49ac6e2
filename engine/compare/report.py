"""Render a ComparisonReport / SeriesReport as a terminal table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import math

from engine.compare.models import ComparisonReport, SequentialReport, SeriesReport, SeriesTask, verdict_text
from engine.stats import number

CSV_FIELDS = [
    "level", "task_spec", "metric", "n", "score_a", "score_b", "delta", "stderr", "ci_low", "ci_high",
    "z", "p_value", "mcnemar_p", "mde", "wins", "losses", "ties", "only_in_a", "only_in_b",
    "errored_a", "errored_b", "aggregation", "clustered", "verdict",
    # added with issue 23 (after the old columns, so readers by position keep working)
    "p_adjusted", "adjust", "method", "df", "note", "margin_delta", "margin_ci_low", "margin_ci_high",
    "margin_p_value", "margin_verdict",
]
ADJUST_NAMES = {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "no adjustment"}


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
            p_adjusted=t.p_adjusted, adjust=report.adjust, method=t.method, df=t.df, note=t.note,
            margin_delta=t.companion.delta if t.companion else None,
            margin_ci_low=t.companion.ci_low if t.companion else None,
            margin_ci_high=t.companion.ci_high if t.companion else None,
            margin_p_value=t.companion.p_value if t.companion else None,
            margin_verdict=t.companion.verdict if t.companion else None,
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
            clustered=False, verdict=u.verdict, p_adjusted=None, adjust="none (own test)", method="normal",
            df=None, note=u.family,
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
    head = ["task", "n", "A", "B", "Δ (A−B)", "95% CI", "p", "adj. p", "MDE", "W/L/T", "unpaired", "verdict"]
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
            name, str(r["n"]), number(r["score_a"]), number(r["score_b"]), number(r["delta"], sign=True),  # type: ignore[arg-type]
            f"[{number(r['ci_low'], sign=True)}, {number(r['ci_high'], sign=True)}]", number(r["p_value"], p_value=True),  # type: ignore[arg-type]
            number(r["p_adjusted"], p_value=True), number(r["mde"]), f"{r['wins']}/{r['losses']}/{r['ties']}", str(unpaired),  # type: ignore[arg-type]
            verdict_text(r["verdict"], r["p_value"] if r["p_adjusted"] is None else r["p_adjusted"]),  # type: ignore[arg-type]
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
    out.append(_family_line(report))
    if report.suite is not None:
        u = report.suite
        out.append(
            f"{u.explanation} {u.family[0].upper() + u.family[1:]}. Pooled over {u.pooled_n} questions "
            f"with {'task-clustered SE (CR1, t on k−1 df)' if u.pooled_method.endswith('clustered') else 'plain SE'}: "
            f"Δ {number(u.pooled_delta, sign=True)}, SE {number(u.pooled_stderr)}, "
            f"p {number(u.pooled_p_value, p_value=True)}, MDE {number(u.pooled_mde)} → {verdict_text(u.pooled_verdict)} "
            + (f"({u.pooled_note}; trust the suite row)." if u.pooled_note else "(with few tasks the clustered "
               "SE sees only the spread between task means: trust the suite row).")
        )
    out.extend(_companion_lines(report))
    for t in report.tasks:
        if t.note:
            out.append(f"note: {t.task_spec}: {t.note}.")
    for t in report.tasks:
        if t.aggregation == "macro":
            out.append(f"note: {t.task_spec}: A, B and Δ are macro averages over {t.n_clusters} clusters (as the run "
                       f"reports its score), SE {'clustered (CR1)' if t.clustered else 'plain'}; W/L/T and McNemar count questions.")
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


def _family_line(report: ComparisonReport) -> str:
    methods = sorted({t.method for t in report.tasks if t.method})
    how = (f"p adjusted for {report.family_size} task tests ({ADJUST_NAMES[report.adjust]}, k={report.family_size}); "
           "verdicts use the adjusted p" if report.family_size > 1 and report.adjust != "none"
           else "p not adjusted" + (" (one task)" if report.family_size <= 1 else " (--adjust none)"))
    return (f"Intervals: {', '.join(methods) or '—'} (tango: Tango's score interval, p = McNemar's test; t: "
            f"t quantiles; -clustered: CR1 SE, t on G−1 df). {how}.")


def _companion_lines(report: ComparisonReport) -> list[str]:
    out = []
    for t in report.tasks:
        c = t.companion
        if c is not None:
            out.append(f"companion: {t.task_spec}: {c.metric} ({c.normalization}) A {number(c.mean_a)} B {number(c.mean_b)} "
                       f"Δ {number(c.delta, sign=True)} [{number(c.ci_low, sign=True)}, {number(c.ci_high, sign=True)}] "
                       f"p {number(c.p_value, p_value=True)} → {verdict_text(c.verdict, c.p_value)}; the verdict above is on "
                       f"{t.verdict_metric}.")
        elif t.companion_note:
            out.append(f"companion: {t.task_spec}: {t.companion_note}.")
    return out


def _series_summary(t: SeriesTask, last: int) -> str:
    parts = []
    if t.noise is not None:
        parts.append(f"noise {number(t.noise.relative)} (σ {number(t.noise.std)} over the last {t.noise.n_checkpoints} of "
                     f"n={last} checkpoints)")
    if t.signal is not None:
        parts.append(f"signal {number(t.signal.signal)} over {t.signal.n_models} models, SNR {number(t.signal.snr, 2)}")
    if t.flips is not None:
        parts.append(f"flip rate {number(t.flips.mean, 3)} (per step {', '.join(number(r, 3) for r in t.flips.per_step)})")
    flagged = [p.step for p in t.points if p.noise_exceeds_delta]
    if flagged:
        parts.append(f"⚠ checkpoint noise ≥ |Δ vs first| at step {', '.join(map(str, flagged))}")
    lines = ["  " + "; ".join(parts)] if parts else []
    return "\n".join(lines + [f"  note: {n}" for n in t.notes])


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
                f"  {p.step:>6}  {p.model_label:<{w}} {number(p.value):>7}  "
                f"[{number(p.ci_low)}, {number(p.ci_high)}]  {number(p.mde):>6}  {number(p.delta_vs_base, sign=True):>10}  "
                f"{verdict_text(p.verdict_vs_base, p.p_value_vs_base) if p.verdict_vs_base else '(first)'}"
                f"{'  ⚠ within checkpoint noise' if p.noise_exceeds_delta else ''}"
            )
        summary = _series_summary(t, report.noise_checkpoints)
        if summary:
            out.append(summary)
    out.extend(f"warning: {w}" for w in report.warnings)
    return "\n".join(out)


def series_csv(report: SeriesReport) -> str:
    buf = io.StringIO()
    fields = ["task_spec", "metric", "step", "model_label", "value", "n", "stderr", "ci_low", "ci_high", "mde",
              "delta_vs_base", "paired_mde_vs_base", "p_value_vs_base", "verdict_vs_base", "ci_low_vs_base",
              "ci_high_vs_base", "run_dir", "noise_exceeds_delta", "noise", "noise_std", "signal", "snr",
              "flip_rate_to_next", "mlflow_run_id"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for t in report.tasks:
        for p in t.points:
            d = p.model_dump()
            i = t.points.index(p)
            d.update(task_spec=t.task_spec, metric=t.metric,
                     noise=t.noise.relative if t.noise else None, noise_std=t.noise.std if t.noise else None,
                     signal=t.signal.signal if t.signal else None, snr=t.signal.snr if t.signal else None,
                     flip_rate_to_next=t.flips.per_step[i] if t.flips and i < len(t.flips.per_step) else None)
            w.writerow({k: ("" if d.get(k) is None else d.get(k)) for k in fields})
    return buf.getvalue()


def sequential_table(report: SequentialReport) -> str:
    out = [f"A = {report.label_a}    B = {report.label_b}    anytime-valid (Waudby-Smith & Ramdas 2023), "
           f"α = {report.alpha}, threshold = {report.threshold}, question order seed {report.seed}"]
    head = f"{'task':<28} {'decision':<16} {'questions':>15}  {'Δ so far':>9}  {'confidence sequence':>21}  {'Δ (all)':>8}"
    out += [head, "-" * len(head)]
    for t in report.tasks:
        used = f"{t.stopped_at if t.stopped_at is not None else t.n_full}/{t.n_full}"
        cs = f"[{number(t.cs_low, sign=True)}, {number(t.cs_high, sign=True)}]"
        out.append(f"{t.task_spec:<28} {t.decision:<16} {used:>15}  {number(t.mean, sign=True):>9}  {cs:>21}  "
                   f"{number(t.full_delta, sign=True):>8}")
        if t.note:
            out.append(f"note: {t.task_spec}: {t.note}.")
    out.append("A decision is wrong with probability ≤ α however early it stops; 'undecided' read every question.")
    return "\n".join(out)


def sequential_csv(report: SequentialReport) -> str:
    buf = io.StringIO()
    fields = ["task_spec", "metric", "decision", "stopped_at", "n_full", "mean", "cs_low", "cs_high", "full_delta", "note"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for t in report.tasks:
        d = t.model_dump()
        w.writerow({k: ("" if d.get(k) is None else d.get(k)) for k in fields})
    return buf.getvalue()
