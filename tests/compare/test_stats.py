"""Paired statistics per task and per suite, checked against independent scipy/numpy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from engine.compare import compare_runs, find_run_dirs, load_run
from engine.compare.models import verdict_of
from engine.stats import paired_compare, summarize

from .conftest import SuitePair

Z = sps.norm.ppf(0.975)
PAIRED_MDE = sps.norm.ppf(0.975) + sps.norm.ppf(0.80)


def _load(job):
    return [load_run(d) for d in find_run_dirs(job)]


def _scipy_paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    t = sps.ttest_rel(a, b)
    delta = float(np.mean(a - b))
    se = delta / float(t.statistic)  # ttest_rel: t = mean(d) / (sd(d)/sqrt(n))
    return {"delta": delta, "se": se, "p": float(2 * sps.norm.sf(abs(delta / se)))}


def _mmlu_expected(p: SuitePair) -> tuple[np.ndarray, np.ndarray]:
    keep = [i for i in range(len(p.mmlu_b) - 3) if i not in (10, 11, 12)]
    return p.mmlu_a[keep], p.mmlu_b[keep]


def test_paired_compare_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(500), rng.random(500) * 0.9
    pc = paired_compare(a, b)
    ref = sps.ttest_rel(a, b)  # continuous scores: the paired t-test, t_{n−1}
    delta, se = float(np.mean(a - b)), float(sps.sem(a - b))
    assert pc.delta == pytest.approx(delta, rel=1e-12)
    assert pc.stderr == pytest.approx(se, rel=1e-10)
    assert pc.z == pytest.approx(float(ref.statistic), rel=1e-10)
    assert pc.p_value == pytest.approx(float(ref.pvalue), rel=1e-8)
    assert (pc.ci_low, pc.ci_high) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
    assert pc.mde == pytest.approx((sps.t.ppf(0.975, 499) + sps.t.ppf(0.8, 499)) * se)
    # SE_Δ² = SE_A² + SE_B² − 2·Cov(a, b)/n (docs/architecture.md, "Statistics")
    n = len(a)
    se2 = np.var(a, ddof=1) / n + np.var(b, ddof=1) / n - 2 * np.cov(a, b, ddof=1)[0, 1] / n
    assert pc.stderr == pytest.approx(math.sqrt(se2), rel=1e-10)


def test_task_statistics_match_scipy(suite_pair: SuitePair) -> None:
    cmp = compare_runs(_load(suite_pair.job_a), _load(suite_pair.job_b))
    mmlu = next(t for t in cmp.report.tasks if t.task_spec == "mmlu:mc")
    a, b = _mmlu_expected(suite_pair)
    ref = _scipy_paired(a, b)
    s = mmlu.stats
    assert s.n == len(a) == 234
    assert (s.mean_a, s.mean_b) == pytest.approx((a.mean(), b.mean()))
    assert s.delta == pytest.approx(ref["delta"])
    assert s.stderr == pytest.approx(ref["se"], rel=1e-10)
    assert s.mde == pytest.approx(PAIRED_MDE * ref["se"])  # 0/1 scores, no clusters: normal quantiles
    # p: McNemar's asymptotic test without continuity correction (the test Tango's interval inverts);
    # the exact one (a two-sided binomial test on the discordant pairs) is kept as mcnemar_p.
    table = sps.contingency.crosstab(a, b).count
    b01, b10 = table[1, 0], table[0, 1]  # A right & B wrong, A wrong & B right
    assert s.p_value == pytest.approx(mcnemar(table, exact=False, correction=False).pvalue, rel=1e-8)
    assert s.mcnemar_p == pytest.approx(sps.binomtest(int(b01), int(b01 + b10), 0.5).pvalue, rel=1e-12)
    assert (s.wins, s.losses, s.ties) == (b01, b10, len(a) - b01 - b10)
    assert mmlu.clustered is False and mmlu.plain_stderr == s.stderr
    assert mmlu.method == "tango" and mmlu.test == "mcnemar" and mmlu.df is None
    assert -1 <= s.ci_low < s.delta < s.ci_high <= 1
    # Holm over the 2 tasks of the comparison; the verdict uses the adjusted p.
    ps = [t.stats.p_value for t in cmp.report.tasks]
    holm = multipletests(ps, method="holm")[1]
    assert [t.p_adjusted for t in cmp.report.tasks] == pytest.approx(list(holm), rel=1e-12)
    assert mmlu.verdict == verdict_of(s.delta, s.mde, mmlu.p_adjusted, s.n)
    assert cmp.report.adjust == "holm" and cmp.report.family_size == 2


def test_alignment_reports_everything(suite_pair: SuitePair) -> None:
    cmp = compare_runs(_load(suite_pair.job_a), _load(suite_pair.job_b))
    al = next(t for t in cmp.report.tasks if t.task_spec == "mmlu:mc").alignment
    assert (al.n_a, al.n_b, al.n_paired) == (239, 240, 234)
    assert (al.only_in_a, al.only_in_b, al.errored_a, al.errored_b) == (2, 3, 2, 1)
    assert sorted(al.example_only_in_a) == ["extra1", "extra2"]
    assert al.example_only_in_b == ["q000237", "q000238", "q000239"]
    t = cmp.table
    assert len(t) == 239 + 3 + 90  # every question of both sides has a row
    unpaired = [(t.ids[i], t.notes[i]) for i in range(len(t)) if t.status[i] == 5]
    assert len(unpaired) == 2 + 3 + 3
    assert ("q000010", "errored in A: timeout: provider timed out") in unpaired
    assert ("q000012", "errored in B: timeout: provider timed out") in unpaired


def test_k_samples_averaged_and_clustered_se(suite_pair: SuitePair) -> None:
    cmp = compare_runs(_load(suite_pair.job_a), _load(suite_pair.job_b))
    arc = next(t for t in cmp.report.tasks if t.task_spec == "arc:mc")
    a, b = suite_pair.arc_a, suite_pair.arc_b
    assert arc.stats.n == 90
    assert arc.stats.mean_a == pytest.approx(a.mean()) and arc.stats.mean_b == pytest.approx(b.mean())
    assert arc.stats.mcnemar_p is None  # not binary: means over 3 samples
    assert arc.plain_stderr == pytest.approx(_scipy_paired(a, b)["se"], rel=1e-10)
    # Clustered SE (cluster = passage of 3 questions), CR1: √(G/(G−1))·(1/n) sqrt( Σ_c (Σ_{i∈c} (d_i − d̄))² )
    d = a - b
    resid = (d - d.mean()).reshape(30, 3).sum(axis=1)
    se_c = math.sqrt(30 / 29) * math.sqrt((resid**2).sum()) / len(d)
    # the same from statsmodels: OLS on an intercept with cluster-robust covariance
    groups = np.repeat(np.arange(30), 3)
    ols = sm.OLS(d, np.ones(len(d))).fit(cov_type="cluster", cov_kwds={"groups": groups})
    assert se_c == pytest.approx(float(ols.bse[0]), rel=1e-10)
    assert arc.clustered and arc.n_clusters == 30 and arc.method == "t-clustered" and arc.df == 29
    assert arc.stats.stderr == pytest.approx(se_c, rel=1e-10)
    t29 = sps.t(29)
    assert arc.stats.mde == pytest.approx((t29.ppf(0.975) + t29.ppf(0.80)) * se_c, rel=1e-8)
    assert arc.stats.p_value == pytest.approx(2 * t29.sf(abs(d.mean() / se_c)), rel=1e-8)
    assert (arc.stats.ci_low, arc.stats.ci_high) == pytest.approx(
        (d.mean() - t29.ppf(0.975) * se_c, d.mean() + t29.ppf(0.975) * se_c), rel=1e-8)


def test_suite_is_mean_of_task_deltas(suite_pair: SuitePair) -> None:
    cmp = compare_runs(_load(suite_pair.job_a), _load(suite_pair.job_b))
    suite = cmp.report.suite
    assert suite is not None and suite.name == "core" and suite.k == 2
    ma, mb = _mmlu_expected(suite_pair)
    d_arc = suite_pair.arc_a - suite_pair.arc_b
    resid = (d_arc - d_arc.mean()).reshape(30, 3).sum(axis=1)
    se_arc = math.sqrt(30 / 29) * math.sqrt((resid**2).sum()) / len(d_arc)  # ARC's effective (CR1) SE
    se_mmlu = _scipy_paired(ma, mb)["se"]
    delta = ((ma - mb).mean() + d_arc.mean()) / 2
    se = math.sqrt(se_mmlu**2 + se_arc**2) / 2
    assert suite.delta == pytest.approx(delta)
    assert suite.stderr == pytest.approx(se, rel=1e-10)
    assert suite.p_value == pytest.approx(2 * sps.norm.sf(abs(delta / se)))
    assert suite.mde == pytest.approx(PAIRED_MDE * se)
    # Pooled alternative: all paired questions, clustered by task; 2 tasks are fewer than the 5
    # clusters a CR1 SE needs, so the plain SE, with a note.
    d = np.r_[ma - mb, d_arc]
    pooled_se = float(np.std(d, ddof=1)) / math.sqrt(len(d))
    assert suite.pooled_note and "only 2 clusters" in suite.pooled_note
    assert suite.pooled_n == len(d)
    assert suite.pooled_delta == pytest.approx(d.mean())
    assert suite.pooled_stderr == pytest.approx(pooled_se, rel=1e-10)


def test_clustered_se_with_singleton_clusters() -> None:
    # every question its own cluster: no clustering (CR1 would equal the plain SE), the plain t interval
    d = np.random.default_rng(3).normal(size=50)
    s = summarize(d, clusters=list(range(50)))
    assert s.clustered_stderr is None and s.stderr == pytest.approx(float(sps.sem(d)))
    assert (s.ci_low, s.ci_high) == pytest.approx(tuple(sps.t.interval(0.95, 49, d.mean(), sps.sem(d))))


def test_verdicts() -> None:
    assert verdict_of(0.05, 0.03, 0.001, 100) == "improved"
    assert verdict_of(-0.05, 0.03, 0.001, 100) == "regressed"
    assert verdict_of(0.02, 0.03, 0.04, 100) == "within noise"  # significant but below the MDE
    assert verdict_of(0.02, float("nan"), float("nan"), 1) == "not enough data"


def test_macro_task_matches_independent_computation(tmp_path) -> None:
    """A task aggregated as a macro average (MMLU over subjects): Δ, means and SE are macro ones."""
    import pandas as pd

    from engine.compare.synthetic import write_run

    rng = np.random.default_rng(11)
    n = 300
    subj = [f"s{int(x)}" for x in rng.integers(0, 40, n)]  # uneven sizes, some singletons
    b = (rng.random(n) < 0.4).astype(float)
    a = np.where(rng.random(n) < 0.2, 1.0, b)
    for side, c in (("A", a), ("B", b)):
        write_run(tmp_path / side / "mmlu", task_spec="mmlu", correct=c, clusters=subj, aggregation="macro",
                  model=side, seed=1 if side == "A" else 2)
    cmp = compare_runs([load_run(tmp_path / "A" / "mmlu")], [load_run(tmp_path / "B" / "mmlu")])
    t = cmp.report.tasks[0]
    df = pd.DataFrame({"a": a, "b": b, "d": a - b, "c": subj})
    means = df.groupby("c")[["a", "b", "d"]].mean()
    assert t.aggregation == "macro" and t.n_clusters == means.shape[0]
    assert t.stats.mean_a == pytest.approx(means["a"].mean())
    assert t.stats.mean_b == pytest.approx(means["b"].mean())
    assert t.stats.delta == pytest.approx(means["d"].mean())
    # CR1 SE of the weighted mean: sqrt( k/(k−1) Σ_c (Σ_{i∈c} w_i (d_i − m))² ), w_i = 1/(k n_c)
    k = means.shape[0]
    w = 1.0 / (k * df.groupby("c")["d"].transform("size"))
    se = math.sqrt(k / (k - 1) * ((w * (df["d"] - means["d"].mean())).groupby(df["c"]).sum() ** 2).sum())
    # statsmodels: WLS of d on an intercept, weights w, cluster-robust covariance, is the same number
    wls = sm.WLS(df["d"].to_numpy(), np.ones(n), weights=w.to_numpy()).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(df["c"])[0]})
    assert se == pytest.approx(float(wls.bse[0]), rel=1e-8)
    assert t.stats.stderr == pytest.approx(se, rel=1e-10)
    tk = sps.t(k - 1)
    assert t.method == "tango-clustered" and t.df == k - 1
    assert t.stats.mde == pytest.approx((tk.ppf(0.975) + tk.ppf(0.80)) * se, rel=1e-8)
    assert -1 <= t.stats.ci_low < t.stats.delta < t.stats.ci_high <= 1
    assert t.stats.wins == int((a > b).sum()) and t.stats.losses == int((a < b).sum())


def test_suite_row_aggregates_like_the_run_best_of_and_nesting(tmp_path):
    """The suite Δ is the difference of the suite scores the runs report (best-of formulation,
    mean of task entries), not the mean over every task run compared."""
    from engine.compare.synthetic import write_run
    from engine.config.schema import SuiteConfig
    from engine.scoring.suites import suite_score

    rng = np.random.default_rng(3)
    suite = {"name": "mini", "tasks": ["a", "b:olmes"], "suites": [], "aggregate": "mean"}
    sides = {}
    for side, shift in (("A", 0.15), ("B", 0.0)):
        job = tmp_path / side
        p = {"a": 0.5 + shift, "b:olmes:mc": 0.3, "b:olmes:rc": 0.6 + shift}
        for spec, prob in p.items():
            write_run(job / spec.replace(":", "__"), task_spec=spec, correct=(rng.random(120) < prob).astype(float),
                      model=f"m{side}", suite="mini", suite_config=suite, seed=len(spec))
        sides[side] = _load(job)
    cmp = compare_runs(sides["A"], sides["B"])
    s = cmp.report.suite
    cfg = SuiteConfig.model_validate(suite)
    run_a = suite_score(cfg, [r.record for r in sides["A"]])
    run_b = suite_score(cfg, [r.record for r in sides["B"]])
    assert s.mean_a == pytest.approx(run_a.value) and s.mean_b == pytest.approx(run_b.value)
    assert s.delta == pytest.approx(run_a.value - run_b.value)
    assert s.k == 2
    by = {t.task_spec: t for t in cmp.report.tasks}
    if run_a.parts[1].chosen == run_b.parts[1].chosen:  # paired: SE over the chosen entries, weights 1/2
        chosen = run_a.parts[1].chosen
        want = math.sqrt((by["a"].stats.stderr / 2) ** 2 + (by[chosen].stats.stderr / 2) ** 2)
        assert s.paired and s.stderr == pytest.approx(want)
    naive = sum(t.stats.delta for t in cmp.report.tasks) / 3
    assert s.delta != pytest.approx(naive)
