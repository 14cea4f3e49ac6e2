"""Issue 23 through the CLI: series noise/signal/SNR/flip rates, adjusted p across tasks, the
log-probability margin companion, anytime-valid sequential stopping and Wilson CIs on run scores.
Every figure is recomputed here independently (numpy, scipy, statsmodels)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from engine.compare import build_series, compare_runs, load_run
from engine.compare.cli import main
from engine.compare.models import verdict_of
from engine.compare.server import ViewerState, start_in_thread
from engine.compare.synthetic import write_run
from engine.scoring.metrics import aggregate_scores
from engine.stats import confidence_sequence
from engine.types import InstanceRecord


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


# A task's 0/1 correctness at 5 checkpoints (rows) over 12 questions: a known series.
SERIES = np.array([
    [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0],
    [1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0],
    [1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 1, 0],
    [1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1],
    [0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1],
], dtype=float)


def _write_series(root: Path) -> list[str]:
    dirs = []
    for step, correct in enumerate(SERIES):
        d = root / f"step{step}" / "t"
        write_run(d, task_spec="t", correct=correct, step=step or None, run_id=f"r{step}",
                  created=f"2025-01-01T00:00:0{step}")
        dirs.append(str(d))
    return dirs


def test_series_noise_signal_snr_and_flips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = _write_series(tmp_path)
    other = tmp_path / "other" / "t"
    other_correct = np.array([1.0] * 10 + [0.0] * 2)
    write_run(other, task_spec="t", correct=other_correct, model="bigger", run_id="o")
    rep = _cli(capsys, "--series", *dirs, "--signal-runs", str(other), "--noise-checkpoints", "3",
               "--format", "json")
    (task,) = rep["tasks"]
    scores = SERIES.mean(axis=1)
    tail = scores[-3:]
    noise = np.std(tail) / np.mean(tail)  # Heineman et al.: population σ over the last n, / mean
    assert task["noise"]["relative"] == pytest.approx(noise, rel=1e-12)
    assert task["noise"]["n_checkpoints"] == 3 and rep["noise_checkpoints"] == 3
    finals = np.array([scores[-1], other_correct.mean()])
    signal = (finals.max() - finals.min()) / finals.mean()
    assert task["signal"]["signal"] == pytest.approx(signal, rel=1e-12)
    assert task["signal"]["snr"] == pytest.approx(signal / noise, rel=1e-12)
    assert task["signal"]["n_models"] == 2 and len(task["signal_models"]) == 2
    flips = [int((SERIES[t] != SERIES[t + 1]).sum()) for t in range(4)]
    assert task["flips"]["flips"] == flips
    assert task["flips"]["per_step"] == pytest.approx([f / 12 for f in flips])
    # A point is flagged when checkpoint noise σ (last 3) is at least its |Δ vs the first checkpoint|.
    sigma = np.std(tail)
    for p, s in zip(task["points"][1:], scores[1:], strict=True):
        delta = s - scores[0]
        assert p["delta_vs_base"] == pytest.approx(delta)
        assert p["noise_exceeds_delta"] == (bool(sigma >= abs(delta)) if delta else None)
    # The table shows the same figures.
    assert main(["--series", *dirs, "--signal-runs", str(other), "--noise-checkpoints", "3"]) == 0
    table = capsys.readouterr().out
    assert f"noise {noise:.4f}" in table and f"SNR {signal / noise:.2f}" in table
    assert f"flip rate {np.mean([f / 12 for f in flips]):.3f}" in table


def test_series_default_noise_window_and_no_signal_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rep = _cli(capsys, "--series", *_write_series(tmp_path), "--format", "json")
    (task,) = rep["tasks"]
    scores = SERIES.mean(axis=1)
    last = scores[-3:]  # the default window: the last 3 checkpoints (issue 23)
    assert task["noise"]["relative"] == pytest.approx(np.std(last) / np.mean(last)) and task["noise"]["n_checkpoints"] == 3
    assert task["signal"] is None and any("--signal-runs" in n for n in task["notes"])
    assert main(["--series", *_write_series(tmp_path), "--noise-checkpoints", "1"]) == 2
    assert "--noise-checkpoints must be at least 2" in capsys.readouterr().err


def _three_tasks(root: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(5)
    data = {}
    for spec, lift in (("x", 0.25), ("y", 0.1), ("z", 0.0)):
        b = (rng.random(150) < 0.45).astype(float)
        a = np.where(rng.random(150) < lift, 1.0, b)
        data[spec] = (a, b)
        write_run(root / "A" / spec, task_spec=spec, correct=a, model="mA", seed=1)
        write_run(root / "B" / spec, task_spec=spec, correct=b, model="mB", seed=2)
    return root / "A", root / "B", data


@pytest.mark.parametrize("method", ["holm", "bh", "none"])
def test_adjusted_p_values_and_verdicts(tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str) -> None:
    a_dir, b_dir, data = _three_tasks(tmp_path)
    rep = _cli(capsys, str(a_dir), str(b_dir), "--adjust", method, "--format", "json")
    tasks = {t["task_spec"]: t for t in rep["tasks"]}
    raw = []
    for spec, (a, b) in data.items():
        wins, losses = int((a > b).sum()), int((a < b).sum())
        # McNemar's asymptotic test (no continuity correction)
        p = sps.chi2.sf((wins - losses) ** 2 / (wins + losses), 1) if wins + losses else 1.0
        assert tasks[spec]["stats"]["p_value"] == pytest.approx(p, rel=1e-9)
        raw.append(p)
    expected = raw if method == "none" else multipletests(raw, method={"holm": "holm", "bh": "fdr_bh"}[method])[1]
    for (spec, _), adj in zip(data.items(), expected, strict=True):
        t = tasks[spec]
        assert t["p_adjusted"] == pytest.approx(adj, rel=1e-12)
        assert t["verdict"] == verdict_of(t["stats"]["delta"], t["stats"]["mde"], adj, t["stats"]["n"])
    assert rep["adjust"] == method and rep["family_size"] == 3
    assert "outside the family of 3 task tests" in rep["suite"]["family"]
    assert main([str(a_dir), str(b_dir), "--adjust", method]) == 0
    table = capsys.readouterr().out
    assert ("Holm, k=3" in table) if method == "holm" else True
    assert ("Benjamini–Hochberg, k=3" in table) if method == "bh" else True


def _with_int_gold(run_dir: Path) -> list[dict]:
    """Make a synthetic run look like a likelihood mc task: integer gold, formulation mc."""
    rows = [json.loads(line) for line in (run_dir / "instances.jsonl").read_text().splitlines()]
    for r in rows:
        r["gold"] = "ABCD".index(r["gold"])
    (run_dir / "instances.jsonl").write_text("\n".join(InstanceRecord(**r).model_dump_json() for r in rows) + "\n")
    rec = json.loads((run_dir / "experiment.json").read_text())
    rec["config"]["task"]["formulation"] = "mc"
    (run_dir / "experiment.json").write_text(json.dumps(rec))
    return rows


def test_logprob_margin_companion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(8)
    b = (rng.random(60) < 0.4).astype(float)
    a = np.where(rng.random(60) < 0.3, 1.0, b)
    write_run(tmp_path / "A" / "t", task_spec="t", correct=a, model="mA", seed=1)
    write_run(tmp_path / "B" / "t", task_spec="t", correct=b, model="mB", seed=2)
    rows_a, rows_b = _with_int_gold(tmp_path / "A" / "t"), _with_int_gold(tmp_path / "B" / "t")

    def margins(rows: list[dict]) -> np.ndarray:
        out = []
        for r in rows:
            lp = np.array(r["logprobs"])
            out.append(lp[r["gold"]] - np.delete(lp, r["gold"]).max())
        return np.array(out)

    ma, mb = margins(rows_a), margins(rows_b)
    assert ((ma > 0) == (a == 1)).all()  # the margin is positive exactly on right answers
    rep = _cli(capsys, str(tmp_path / "A"), str(tmp_path / "B"), "--format", "json")
    (task,) = rep["tasks"]
    c = task["companion"]
    ref = sps.ttest_rel(ma, mb)
    d = ma - mb
    se = d.std(ddof=1) / np.sqrt(d.size)
    assert c["metric"] == "logprob_margin" and c["normalization"] == "none"
    assert c["delta"] == pytest.approx(d.mean()) and c["stderr"] == pytest.approx(se, rel=1e-10)
    assert c["p_value"] == pytest.approx(ref.pvalue, rel=1e-8)
    t = sps.t(d.size - 1)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((d.mean() - t.ppf(0.975) * se, d.mean() + t.ppf(0.975) * se))
    assert task["verdict_metric"] == "acc"
    assert main([str(tmp_path / "A"), str(tmp_path / "B")]) == 0
    assert "companion: t: logprob_margin" in capsys.readouterr().out


def test_sequential_stops_early_with_the_confidence_sequence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    b = (rng.random(400) < 0.3).astype(float)
    a = np.where(rng.random(400) < 0.5, 1.0, b)  # a large effect: decided well before 400
    same = (rng.random(400) < 0.5).astype(float)
    for spec, (xa, xb) in {"big": (a, b), "none": (same, same)}.items():
        write_run(tmp_path / "A" / spec, task_spec=spec, correct=xa, model="mA", seed=1)
        write_run(tmp_path / "B" / spec, task_spec=spec, correct=xb, model="mB", seed=2)
    rep = _cli(capsys, str(tmp_path / "A"), str(tmp_path / "B"), "--sequential", "--threshold", "0.1",
               "--seed", "7", "--format", "json")
    tasks = {t["task_spec"]: t for t in rep["tasks"]}
    for spec, (xa, xb) in {"big": (a, b), "none": (same, same)}.items():
        ids = [f"q{i:06d}" for i in range(400)]
        d = np.array([xa[int(i[1:])] - xb[int(i[1:])] for i in ids])
        d = d[np.random.default_rng(7).permutation(d.size)]
        low, high = confidence_sequence(d, alpha=0.05)  # the vectorized form, not the stopping loop
        decided = (low > 0) | (high < 0) | ((low > -0.1) & (high < 0.1))
        first = int(np.argmax(decided)) + 1
        t = tasks[spec]
        assert t["stopped_at"] == first and t["n_full"] == 400
        assert t["cs_low"] == pytest.approx(low[first - 1]) and t["cs_high"] == pytest.approx(high[first - 1])
        assert t["mean"] == pytest.approx(d[:first].mean())
    assert tasks["big"]["decision"] == "A better" and tasks["big"]["stopped_at"] < 200
    assert tasks["none"]["decision"] == "|Δ| < threshold"
    assert main([str(tmp_path / "A"), str(tmp_path / "B"), "--sequential"]) == 0
    assert "anytime-valid" in capsys.readouterr().out
    assert main([str(tmp_path / "A"), str(tmp_path / "B"), "--sequential", "--alpha", "2"]) == 2
    assert main([str(tmp_path / "A"), str(tmp_path / "B"), "--sequential", "--seed", "7", "--threshold", "0.1",
                 "--format", "csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("task_spec,metric,decision,stopped_at,n_full") and len(rows) == 3
    assert f",{tasks['big']['stopped_at']},400," in next(r for r in rows if r.startswith("big,"))


def test_recorded_binary_score_ci_is_wilson() -> None:
    recs = [InstanceRecord(task_hash="h", task_spec="t", instance_id=f"q{i}", scores={"acc": float(v)})
            for i, v in enumerate([1, 0])]
    s = aggregate_scores(recs)["acc"]
    low, high = proportion_confint(1, 2, alpha=0.05, method="wilson")
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high), rel=1e-9)
    assert 0 <= s.ci_low and s.ci_high <= 1  # mean ± 1.96·SE was [-0.48, 1.48]
    assert s.stderr == pytest.approx(0.5)  # the other fields are unchanged


def test_viewer_api_serves_series_statistics_and_adjusted_p(tmp_path: Path) -> None:
    dirs = _write_series(tmp_path / "s")
    series = build_series([load_run(Path(d)) for d in dirs], noise_checkpoints=3)
    a_dir, b_dir, _ = _three_tasks(tmp_path / "c")
    cmp = compare_runs([load_run(a_dir / s) for s in "xyz"], [load_run(b_dir / s) for s in "xyz"], adjust="bh")
    for state, check in ((ViewerState(series=series), "series"), (ViewerState(comparison=cmp), "report")):
        server, url = start_in_thread(state)
        try:
            with urllib.request.urlopen(url + "api/overview", timeout=10) as r:
                body = json.loads(r.read())
        finally:
            server.shutdown()
            server.server_close()
        if check == "series":
            (task,) = body["series"]["tasks"]
            tail = SERIES.mean(axis=1)[-3:]
            assert task["noise"]["relative"] == pytest.approx(np.std(tail) / np.mean(tail))
            assert task["flips"]["mean"] == pytest.approx(np.mean([(SERIES[t] != SERIES[t + 1]).mean() for t in range(4)]))
        else:
            rep = body["report"]
            assert rep["adjust"] == "bh" and rep["family_size"] == 3
            raw = [t["stats"]["p_value"] for t in rep["tasks"]]
            assert [t["p_adjusted"] for t in rep["tasks"]] == pytest.approx(list(multipletests(raw, method="fdr_bh")[1]))
