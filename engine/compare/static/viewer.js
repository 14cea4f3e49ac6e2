"use strict";
// evalbench compare viewer: overview, per-question side by side, checkpoint series. No dependencies.
const state = { overview: null, page: 1, selectedRow: null };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
const svgNS = "http://www.w3.org/2000/svg";
function sv(tag, attrs, ...children) {
  const e = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}
const fmt = (x, d = 4) => (x === null || x === undefined || Number.isNaN(x)) ? "—" : Number(x).toFixed(d);
const sgn = (x, d = 4) => (x === null || x === undefined) ? "—" : (x >= 0 ? "+" : "") + Number(x).toFixed(d);
const pfmt = (x) => (x === null || x === undefined) ? "—" : (x < 1e-4 ? "<1e-4" : Number(x).toFixed(4));
const verdictClass = (v) => v === "improved" ? "improved" : v === "regressed" ? "regressed" : "noise";
const verdictText = (v, p) => v !== "within noise" ? v :
  "within noise: |Δ| below the MDE" + (p !== null && p !== undefined && p < 0.05 ? " (p < 0.05: too few questions to call it)" : "");
const badge = (v, p) => el("span", { class: "badge " + verdictClass(v), "data-verdict": v }, verdictText(v, p));

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function showTab(name) {
  for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== name;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  if (name === "questions") loadQuestions();
}

function renderOverview(rep) {
  document.getElementById("labels").textContent = `A = ${rep.label_a}   vs   B = ${rep.label_b}   (metric: ${rep.metric || "primary per task"})`;
  const head = ["task", "n", "A", "B", "Δ (A−B)", "95% CI", "p", "adj. p", "MDE", "wins/losses/ties", "unpaired", "verdict"];
  const table = document.getElementById("overview-table");
  table.tHead.replaceChildren(el("tr", {}, head.map((h) => el("th", {}, h))));
  const tbody = table.tBodies[0];
  tbody.replaceChildren();
  rep.tasks.forEach((t, i) => {
    const s = t.stats, a = t.alignment;
    const unpaired = a.only_in_a + a.only_in_b + a.errored_a + a.errored_b + a.missing_metric_a + a.missing_metric_b;
    tbody.append(el("tr", { "data-task": i, "data-task-spec": t.task_spec, onclick: () => openTask(i) },
      el("td", { title: `A: ${t.run_a.run_dir}${t.run_a.mlflow_run_id ? " (MLflow " + t.run_a.mlflow_run_id + ")" : ""}\nB: ${t.run_b.run_dir}${t.run_b.mlflow_run_id ? " (MLflow " + t.run_b.mlflow_run_id + ")" : ""}` },
        t.task_spec + (t.aggregation === "macro" ? ` (macro over ${t.n_clusters} clusters)` : t.clustered ? ` (clustered SE, ${t.n_clusters} clusters)` : "")), el("td", { class: "n" }, s.n),
      el("td", { class: "mean-a" }, fmt(s.mean_a)), el("td", { class: "mean-b" }, fmt(s.mean_b)),
      el("td", { class: "delta" }, sgn(s.delta)), el("td", {}, `[${sgn(s.ci_low)}, ${sgn(s.ci_high)}]`),
      el("td", { class: "p", title: `${t.method} interval, ${t.test} test${t.df ? `, t on ${t.df} df` : ""}; exact McNemar p ${pfmt(s.mcnemar_p)}` }, pfmt(s.p_value)),
      el("td", { class: "p-adjusted" }, pfmt(t.p_adjusted)), el("td", { class: "mde" }, fmt(s.mde)),
      el("td", {}, `${s.wins}/${s.losses}/${s.ties}`), el("td", {}, unpaired), el("td", {}, badge(t.verdict, t.p_adjusted ?? s.p_value))));
  });
  const u = rep.suite;
  if (u) {
    const n = rep.tasks.reduce((acc, t) => acc + t.stats.n, 0);
    tbody.append(el("tr", { class: "suite", "data-suite": u.name },
      el("td", {}, `suite ${u.name} (mean of ${u.k} tasks)`), el("td", {}, n),
      el("td", { class: "mean-a" }, u.mean_a == null ? "" : fmt(u.mean_a)), el("td", { class: "mean-b" }, u.mean_b == null ? "" : fmt(u.mean_b)),
      el("td", { class: "delta" }, sgn(u.delta)), el("td", {}, `[${sgn(u.ci_low)}, ${sgn(u.ci_high)}]`),
      el("td", { class: "p" }, pfmt(u.p_value)), el("td", {}, "—"), el("td", { class: "mde" }, fmt(u.mde)),
      el("td", {}, `${u.wins}/${u.losses}/${u.ties}`), el("td", {}, ""), el("td", {}, badge(u.verdict, u.p_value))));
    document.getElementById("suite-explain").textContent =
      `${u.explanation} Pooled over ${u.pooled_n} questions with the task as cluster: ` +
      `Δ ${sgn(u.pooled_delta)}, SE ${fmt(u.pooled_stderr)}, MDE ${fmt(u.pooled_mde)} (${verdictText(u.pooled_verdict)})` +
      (u.pooled_note ? ` (${u.pooled_note}).` : ".") + ` ${u.family}.`;
  }
  const notes = document.getElementById("notes");
  notes.replaceChildren();
  const adjustName = { holm: "Holm", bh: "Benjamini–Hochberg", none: "no adjustment" }[rep.adjust] || rep.adjust;
  notes.append(el("li", { class: "family" }, rep.family_size > 1 && rep.adjust !== "none"
    ? `p adjusted for ${rep.family_size} task tests (${adjustName}, k=${rep.family_size}); verdicts use the adjusted p.`
    : "p not adjusted."));
  for (const t of rep.tasks) {
    const c = t.companion;
    if (c) notes.append(el("li", { class: "companion" }, `${t.task_spec}: companion ${c.metric} (${c.normalization}): Δ ${sgn(c.delta)} ` +
      `[${sgn(c.ci_low)}, ${sgn(c.ci_high)}], p ${pfmt(c.p_value)} → ${verdictText(c.verdict, c.p_value)}; the verdict is on ${t.verdict_metric}.`));
    else if (t.companion_note) notes.append(el("li", { class: "companion" }, `${t.task_spec}: ${t.companion_note}.`));
    if (t.note) notes.append(el("li", {}, `${t.task_spec}: ${t.note}.`));
  }
  for (const t of rep.tasks) if (t.aggregation === "macro") notes.append(el("li", {},
    `${t.task_spec}: A, B and Δ are macro averages over ${t.n_clusters} clusters (as the run reports its score), SE clustered; wins/losses/ties and McNemar count questions.`));
  for (const t of rep.tasks) {
    const a = t.alignment, parts = [];
    if (a.only_in_a) parts.push(`${a.only_in_a} only in A`);
    if (a.only_in_b) parts.push(`${a.only_in_b} only in B`);
    if (a.errored_a || a.errored_b) parts.push(`errored: ${a.errored_a} in A, ${a.errored_b} in B`);
    if (a.missing_metric_a || a.missing_metric_b) parts.push(`missing ${t.metric}: ${a.missing_metric_a} in A, ${a.missing_metric_b} in B`);
    if (parts.length) notes.append(el("li", {}, `${t.task_spec}: ${parts.join("; ")} — listed under “unpaired / errored”, not in the statistics.`));
  }
  for (const m of rep.unmatched) notes.append(el("li", {}, `task ${m.task_spec} not compared: ${m.reason}`));
  for (const w of rep.warnings) notes.append(el("li", {}, "warning: " + w));
  const sel = document.getElementById("task");
  sel.replaceChildren(el("option", { value: "" }, "all tasks"), ...rep.tasks.map((t, i) => el("option", { value: i }, t.task_spec)));
}

function openTask(i) {
  document.getElementById("task").value = String(i);
  state.page = 1;
  showTab("questions");
}

function questionParams() {
  return new URLSearchParams({
    task: document.getElementById("task").value, filter: document.getElementById("filter").value,
    q: document.getElementById("search").value, sort: document.getElementById("sort").value,
  });
}

let loadSeq = 0;
async function loadQuestions() {
  const params = questionParams();
  document.getElementById("export-questions").href = "/export/questions.csv?" + params;
  params.set("page", state.page);
  params.set("per_page", document.getElementById("per-page").value);
  const seq = ++loadSeq;
  const data = await getJSON("/api/questions?" + params);
  if (seq !== loadSeq) return;  // a newer request superseded this one
  state.page = data.page;
  document.getElementById("page-info").textContent = `page ${data.page} of ${data.pages} · ${data.total} questions`;
  document.getElementById("page-info").dataset.total = data.total;
  const tbody = document.querySelector("#questions-table tbody");
  tbody.replaceChildren(...data.rows.map((r) => el("tr", {
      "data-key": r.key, "data-status": r.status, class: r.key === state.selectedRow ? "selected" : "",
      onclick: (ev) => openQuestion(r, ev.currentTarget) },
    el("td", {}, r.task_spec), el("td", { class: "iid" }, r.instance_id), el("td", {}, fmt(r.score_a, 3)),
    el("td", {}, fmt(r.score_b, 3)), el("td", {}, r.delta === null ? "—" : sgn(r.delta, 3)),
    el("td", {}, el("span", { class: "badge " + r.status, title: r.note }, r.status.replace("_", " "))),
    el("td", { class: "text", title: r.prompt }, r.prompt))));
  document.body.dataset.loaded = String(loadSeq);
}

async function openQuestion(row, tr) {
  state.selectedRow = row.key;
  for (const x of document.querySelectorAll("#questions-table tr.selected")) x.classList.remove("selected");
  tr.classList.add("selected");
  renderDetail(await getJSON("/api/question?row=" + row.row));
}

function choiceTable(d) {
  const choices = d.choices;
  const lpA = d.a && d.a.samples[0] ? d.a.samples[0].logprobs : null;
  const lpB = d.b && d.b.samples[0] ? d.b.samples[0].logprobs : null;
  if (!choices && !lpA && !lpB) return null;
  const n = Math.max(choices ? choices.length : 0, lpA ? lpA.length : 0, lpB ? lpB.length : 0);
  const argmax = (lp) => lp ? lp.indexOf(Math.max(...lp)) : -1;
  const ma = argmax(lpA), mb = argmax(lpB);
  const rows = [];
  for (let i = 0; i < n; i++) {
    const c = choices ? choices[i] : String(i);
    const isGold = d.gold !== null && (String(d.gold) === String(c) || String(d.gold) === String(i));
    rows.push(el("tr", { class: isGold ? "gold" : "" }, el("td", {}, c + (isGold ? " ✓ gold" : "")),
      el("td", { class: "lp-a" + (i === ma ? " argmax" : "") }, lpA ? fmt(lpA[i], 3) : "—"),
      el("td", { class: "lp-b" + (i === mb ? " argmax" : "") }, lpB ? fmt(lpB[i], 3) : "—")));
  }
  return el("table", { class: "grid", id: "choice-logprobs" },
    el("thead", {}, el("tr", {}, el("th", {}, "choice"), el("th", {}, "logprob A"), el("th", {}, "logprob B"))), el("tbody", {}, rows));
}

function sideBlock(name, s) {
  if (!s) return el("div", { class: "side", id: "side-" + name.toLowerCase() }, el("h4", {}, name), el("p", {}, "(not in this run)"));
  const scores = Object.entries(s.scores).map(([k, v]) => `${k} = ${fmt(v, 4)}`).join(", ") || (s.errored ? "errored" : "—");
  return el("div", { class: "side", id: "side-" + name.toLowerCase() }, el("h4", {}, name),
    el("div", { class: "scores" }, "scores: ", el("b", { class: "score-value" }, scores)),
    s.samples.map((x) => el("div", { class: "sample" },
      s.samples.length > 1 ? el("div", {}, `sample ${x.sample_index}`) : null,
      x.error ? el("pre", { class: "error" }, `${x.error.kind}: ${x.error.message} (attempts ${x.error.attempts})`) : null,
      el("pre", { class: "output" }, x.output_text ?? ""),
      el("div", {}, `extracted: ${x.extracted_answer ?? "—"}`),
      x.trajectory && x.trajectory.length ? el("details", { class: "traj", open: "" }, el("summary", {}, `trajectory (${x.trajectory.length} steps)`),
        el("ol", {}, x.trajectory.map((t) => el("li", {}, el("b", {}, t.type), " ", el("code", {}, JSON.stringify(t.content)))))) : null)));
}

function renderDetail(d) {
  const box = document.getElementById("detail");
  box.hidden = false;
  const samePrompt = !d.a || !d.b || d.a.prompt === d.b.prompt;
  box.replaceChildren(...[
    el("h3", {}, `${d.task_spec} · ${d.instance_id} `, el("span", { class: "badge " + d.status }, d.status.replace("_", " "))),
    d.note ? el("p", { class: "unpaired" }, d.note) : null,
    el("div", {}, `score A `, el("b", { id: "detail-score-a" }, fmt(d.score_a)), `   score B `, el("b", { id: "detail-score-b" }, fmt(d.score_b)),
      `   Δ `, el("b", { id: "detail-delta" }, d.delta === null ? "—" : sgn(d.delta))),
    el("h4", {}, "prompt" + (samePrompt ? "" : " (A; B's differs)")), el("pre", { id: "detail-prompt" }, d.prompt_full),
    el("div", {}, "gold: ", el("b", { id: "detail-gold" }, d.gold === null ? "—" : JSON.stringify(d.gold))),
    choiceTable(d),
    el("div", { class: "sides" }, sideBlock("A", d.a), sideBlock("B", d.b))].filter((x) => x));
}

function svgChart(task) {
  const W = 440, H = 240, L = 48, R = 12, T = 12, B = 32;
  const pts = task.points;
  const steps = pts.map((p) => p.step);
  const lows = pts.map((p) => p.ci_low ?? p.value), highs = pts.map((p) => p.ci_high ?? p.value);
  const base = pts[0];
  const mdes = pts.slice(1).map((p) => p.paired_mde_vs_base).filter((x) => x !== null && x !== undefined);
  const mde = mdes.length ? mdes.sort((a, b) => a - b)[Math.floor(mdes.length / 2)] : base.mde;
  let y0 = Math.min(...lows, base.value - (mde || 0)), y1 = Math.max(...highs, base.value + (mde || 0));
  if (y1 - y0 < 1e-6) { y0 -= 0.05; y1 += 0.05; }
  const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
  const x0 = Math.min(...steps), x1 = Math.max(...steps) === x0 ? x0 + 1 : Math.max(...steps);
  const X = (s) => L + (s - x0) / (x1 - x0) * (W - L - R), Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const svg = sv("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-task": task.task_spec });
  svg.append(sv("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#9ca3af" }), sv("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#9ca3af" }));
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4;
    svg.append(sv("text", { x: L - 4, y: Y(v) + 4, "text-anchor": "end", "font-size": 10 }, v.toFixed(3)));
  }
  for (const s of steps) svg.append(sv("text", { x: X(s), y: H - B + 14, "text-anchor": "middle", "font-size": 10 }, String(s)));
  svg.append(sv("text", { x: (L + W) / 2, y: H - 4, "text-anchor": "middle", "font-size": 11 }, "training step"));
  const band = pts.map((p) => `${X(p.step)},${Y(p.ci_high ?? p.value)}`).concat(pts.slice().reverse().map((p) => `${X(p.step)},${Y(p.ci_low ?? p.value)}`));
  svg.append(sv("polygon", { points: band.join(" "), fill: "#93c5fd", "fill-opacity": 0.45, class: "ci-band" }));
  if (mde) for (const [sgnv, lab] of [[1, "+MDE"], [-1, "−MDE"]]) {
    const y = Y(base.value + sgnv * mde);
    svg.append(sv("line", { x1: L, y1: y, x2: W - R, y2: y, stroke: "#dc2626", "stroke-dasharray": "5,4", class: "mde-line" }),
      sv("text", { x: W - R - 2, y: y - 3, "text-anchor": "end", "font-size": 10, fill: "#dc2626" }, `${lab} ${mde.toFixed(3)}`));
  }
  svg.append(sv("polyline", { points: pts.map((p) => `${X(p.step)},${Y(p.value)}`).join(" "), fill: "none", stroke: "#1d4ed8", "stroke-width": 2 }));
  for (const p of pts) {
    const sig = p.verdict_vs_base === "improved" || p.verdict_vs_base === "regressed";
    const c = sv("circle", { cx: X(p.step), cy: Y(p.value), r: 4, fill: sig ? "#1d4ed8" : "#fff", stroke: "#1d4ed8", "stroke-width": 2, class: "point", "data-step": p.step, "data-value": p.value });
    c.append(sv("title", {}, `step ${p.step}: ${p.value.toFixed(4)} [${fmt(p.ci_low)}, ${fmt(p.ci_high)}], n=${p.n}` + (p.delta_vs_base !== null ? `, Δ vs first ${sgn(p.delta_vs_base)} (MDE ${fmt(p.paired_mde_vs_base)}): ${verdictText(p.verdict_vs_base, p.p_value_vs_base)}` : "")));
    svg.append(c);
  }
  return svg;
}

function renderSeries(series) {
  const box = document.getElementById("charts");
  box.replaceChildren(...series.tasks.map((t) => el("div", { class: "chart" }, el("h3", {}, `${t.task_spec} (${t.metric})`), svgChart(t),
    el("p", { class: "series-stats" }, seriesStats(t)),
    el("table", { class: "grid series-table" }, el("thead", {}, el("tr", {}, ["step", "value", "95% CI", "Δ vs first", "paired MDE", "verdict"].map((h) => el("th", {}, h)))),
      el("tbody", {}, t.points.map((p) => el("tr", {}, el("td", {}, p.step), el("td", {}, fmt(p.value)), el("td", {}, `[${fmt(p.ci_low)}, ${fmt(p.ci_high)}]`),
        el("td", {}, p.delta_vs_base === null ? "—" : sgn(p.delta_vs_base)), el("td", {}, fmt(p.paired_mde_vs_base)),
        el("td", {}, p.verdict_vs_base ? badge(p.verdict_vs_base, p.p_value_vs_base) : "(first)",
          p.noise_exceeds_delta ? el("span", { class: "noise-flag", title: "checkpoint noise σ ≥ |Δ vs first|" }, " ⚠ within checkpoint noise") : ""))))))));
}

// Heineman et al. 2025: noise over the last checkpoints, signal over ≥ 2 models' final scores, SNR; flip rates.
function seriesStats(t) {
  const parts = [];
  if (t.noise) parts.push(`noise ${fmt(t.noise.relative)} (σ ${fmt(t.noise.std)}, last ${t.noise.n_checkpoints} checkpoints)`);
  if (t.signal) parts.push(`signal ${fmt(t.signal.signal)} over ${t.signal.n_models} models, SNR ${fmt(t.signal.snr)}`);
  if (t.flips) parts.push(`flip rate ${fmt(t.flips.mean)} per step`);
  return parts.concat(t.notes || []).join("; ");
}

async function init() {
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
  const refresh = () => { state.page = 1; loadQuestions(); };
  for (const id of ["task", "filter", "sort", "per-page"]) document.getElementById(id).addEventListener("change", refresh);
  let timer = null;
  document.getElementById("search").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 200); });
  document.getElementById("prev").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); loadQuestions(); });
  document.getElementById("next").addEventListener("click", () => { state.page += 1; loadQuestions(); });
  const ov = await getJSON("/api/overview");
  state.overview = ov;
  if (ov.report) { renderOverview(ov.report); renderForest(ov.report); }
  if (ov.series) { renderSeries(ov.series); renderSweepPlots(ov.series); }
  document.getElementById("tab-overview").hidden = !ov.report;
  document.getElementById("tab-questions").hidden = !ov.report;
  document.getElementById("tab-series").hidden = !ov.series;
  showTab(ov.report ? "overview" : "series");
  document.body.dataset.ready = "1";
}
init().catch((e) => { document.body.append(el("pre", { class: "error" }, String(e))); });
