"use strict";
// Overview plots of the compare viewer (helpers el, sv, fmt, sgn, verdictText come from viewer.js):
// a forest plot (per task Δ with its 95% CI against ±MDE) and, for a sweep, a task × checkpoint
// heatmap of Δ vs the first checkpoint with non-significant cells greyed.

const significant = (v) => v === "improved" || v === "regressed";
const verdictColor = (v) => v === "improved" ? "#15803d" : v === "regressed" ? "#b91c1c" : "#6b7280";

// rows: [{label, delta, lo, hi, mde, verdict, p}]; one row each, the suite last.
function forestPlot(rows, title, id) {
  const W = 760, rowH = 26, L = 220, R = 150, T = 26, B = 30;
  const H = T + B + rowH * rows.length;
  const ext = Math.max(1e-3, ...rows.flatMap((r) => [Math.abs(r.lo ?? r.delta ?? 0), Math.abs(r.hi ?? r.delta ?? 0), r.mde || 0]));
  const x0 = -ext * 1.1, x1 = ext * 1.1;
  const X = (v) => L + (v - x0) / (x1 - x0) * (W - L - R);
  const svg = sv("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, id, class: "forest", "data-rows": rows.length });
  svg.append(sv("text", { x: L, y: 14, "font-size": 12, "font-weight": 600 }, title));
  svg.append(sv("line", { x1: X(0), y1: T - 4, x2: X(0), y2: H - B, stroke: "#374151", class: "zero" }));
  for (const v of [x0 / 1.1, x0 / 2.2, x1 / 2.2, x1 / 1.1]) {
    svg.append(sv("text", { x: X(v), y: H - B + 14, "text-anchor": "middle", "font-size": 10 }, sgn(v, 3)));
  }
  svg.append(sv("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", "font-size": 11 }, "Δ with 95% CI; shaded: ±MDE"));
  rows.forEach((r, i) => {
    const y = T + rowH * i + rowH / 2;
    const g = sv("g", { class: "forest-row" + (r.suite ? " suite" : ""), "data-task-spec": r.label, "data-delta": r.delta, "data-verdict": r.verdict });
    g.append(sv("text", { x: L - 8, y: y + 4, "text-anchor": "end", "font-size": 12, "font-weight": r.suite ? 600 : 400 }, r.label));
    if (r.mde) g.append(sv("rect", { x: X(-r.mde), y: y - rowH / 2 + 3, width: X(r.mde) - X(-r.mde), height: rowH - 6, fill: "#e5e7eb", class: "mde-band" }));
    if (r.delta === null || r.delta === undefined) {
      g.append(sv("text", { x: X(0) + 6, y: y + 4, "font-size": 11, fill: "#6b7280" }, "no paired data"));
    } else {
      const c = verdictColor(r.verdict);
      if (r.lo !== null && r.lo !== undefined) g.append(sv("line", { x1: X(r.lo), y1: y, x2: X(r.hi), y2: y, stroke: c, "stroke-width": 2, class: "ci" }));
      const shape = r.suite
        ? sv("rect", { x: X(r.delta) - 5, y: y - 5, width: 10, height: 10, fill: c, class: "delta-point" })
        : sv("circle", { cx: X(r.delta), cy: y, r: 4.5, fill: significant(r.verdict) ? c : "#fff", stroke: c, "stroke-width": 2, class: "delta-point" });
      shape.append(sv("title", {}, `${r.label}: Δ ${sgn(r.delta)} [${sgn(r.lo)}, ${sgn(r.hi)}], MDE ${fmt(r.mde)}: ${verdictText(r.verdict, r.p)}`));
      g.append(shape);
    }
    g.append(sv("text", { x: W - R + 8, y: y + 4, "font-size": 11, fill: verdictColor(r.verdict) }, `${sgn(r.delta, 3)} (${r.verdict || "—"})`));
    svg.append(g);
  });
  return svg;
}

function renderForest(rep) {
  const rows = rep.tasks.map((t) => ({ label: t.task_spec, delta: t.stats.delta, lo: t.stats.ci_low, hi: t.stats.ci_high,
    mde: t.stats.mde, verdict: t.verdict, p: t.stats.p_value }));
  const u = rep.suite;
  if (u) rows.push({ label: `suite ${u.name}`, delta: u.delta, lo: u.ci_low, hi: u.ci_high, mde: u.mde, verdict: u.verdict, p: u.p_value, suite: true });
  document.getElementById("forest").replaceChildren(forestPlot(rows, "Δ (A − B) per task", "forest-svg"));
}

// A diverging fill for significant cells: green up, red down, stronger with |Δ|.
function heatFill(delta, maxAbs, verdict) {
  if (!significant(verdict)) return "#e5e7eb";
  const a = Math.min(1, Math.abs(delta) / (maxAbs || 1));
  const [r, g, b] = delta >= 0 ? [21, 128, 61] : [185, 28, 28];
  const mix = (c) => Math.round(255 - (255 - c) * (0.25 + 0.75 * a));
  return `rgb(${mix(r)},${mix(g)},${mix(b)})`;
}

function heatmap(series) {
  const steps = [...new Set(series.tasks.flatMap((t) => t.points.map((p) => p.step)))].sort((a, b) => a - b);
  const cw = 64, ch = 26, L = 220, T = 40;
  const W = Math.max(L + cw * steps.length + 10, L + 460), H = T + ch * series.tasks.length + 24;
  const deltas = series.tasks.flatMap((t) => t.points.map((p) => p.delta_vs_base).filter((d) => d !== null && d !== undefined));
  const maxAbs = Math.max(1e-9, ...deltas.map(Math.abs));
  const svg = sv("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, id: "heatmap-svg", class: "heatmap",
    "data-rows": series.tasks.length, "data-cols": steps.length });
  svg.append(sv("text", { x: L, y: 14, "font-size": 12, "font-weight": 600 }, "Δ vs the first checkpoint (grey: not significant or below the MDE)"));
  steps.forEach((s, j) => svg.append(sv("text", { x: L + cw * j + cw / 2, y: T - 6, "text-anchor": "middle", "font-size": 11 }, `step ${s}`)));
  series.tasks.forEach((t, i) => {
    const y = T + ch * i;
    const g = sv("g", { class: "heat-row", "data-task-spec": t.task_spec });
    g.append(sv("text", { x: L - 8, y: y + ch / 2 + 4, "text-anchor": "end", "font-size": 12 }, `${t.task_spec} (${t.metric})`));
    const byStep = new Map(t.points.map((p, k) => [p.step, { p, base: k === 0 }]));
    steps.forEach((s, j) => {
      const hit = byStep.get(s);
      const x = L + cw * j;
      let fill = "#fff", label = "", cls = "heat-cell missing", title = `${t.task_spec}, step ${s}: no run`;
      const attrs = { "data-step": s, "data-task-spec": t.task_spec };
      if (hit && hit.base) {
        fill = "#dbeafe"; label = fmt(hit.p.value, 3); cls = "heat-cell base";
        title = `${t.task_spec}, step ${s} (baseline): ${fmt(hit.p.value)} [${fmt(hit.p.ci_low)}, ${fmt(hit.p.ci_high)}]`;
      } else if (hit && hit.p.delta_vs_base !== null && hit.p.delta_vs_base !== undefined) {
        const p = hit.p;
        fill = heatFill(p.delta_vs_base, maxAbs, p.verdict_vs_base); label = sgn(p.delta_vs_base, 3);
        cls = "heat-cell " + (significant(p.verdict_vs_base) ? "sig" : "ns");
        attrs["data-delta"] = p.delta_vs_base; attrs["data-verdict"] = p.verdict_vs_base;
        title = `${t.task_spec}, step ${s}: ${fmt(p.value)}, Δ ${sgn(p.delta_vs_base)} (MDE ${fmt(p.paired_mde_vs_base)}): ${verdictText(p.verdict_vs_base, p.p_value_vs_base)}`;
      } else if (hit) {
        label = fmt(hit.p.value, 3); cls = "heat-cell ns"; fill = "#e5e7eb"; title = `${t.task_spec}, step ${s}: no shared question with the first checkpoint`;
      }
      const rect = sv("rect", { x: x + 1, y: y + 1, width: cw - 2, height: ch - 2, fill, stroke: "#d1d5db", class: cls, ...attrs });
      rect.append(sv("title", {}, title));
      const dark = cls.endsWith(" sig") && Math.abs(hit.p.delta_vs_base) > maxAbs / 2;
      g.append(rect, sv("text", { x: x + cw / 2, y: y + ch / 2 + 4, "text-anchor": "middle", "font-size": 11,
        fill: dark ? "#fff" : "#111827", "pointer-events": "none" }, label));
    });
    svg.append(g);
  });
  return svg;
}

function renderSweepPlots(series) {
  document.getElementById("heatmap").replaceChildren(heatmap(series));
  // The forest of the sweep: each task's last checkpoint against its first.
  const rows = series.tasks.filter((t) => t.points.length > 1).map((t) => {
    const p = t.points[t.points.length - 1];
    return { label: `${t.task_spec} @ step ${p.step}`, delta: p.delta_vs_base, lo: p.ci_low_vs_base, hi: p.ci_high_vs_base,
      mde: p.paired_mde_vs_base, verdict: p.verdict_vs_base, p: p.p_value_vs_base };
  });
  document.getElementById("series-forest").replaceChildren(
    ...(rows.length ? [forestPlot(rows, "Δ of each task's last checkpoint vs its first", "series-forest-svg")] : []));
}
