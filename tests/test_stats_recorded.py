"""A run's reported scores (experiment.json, metrics.json, MLflow, the results table) carry the CR1
clustered SE with t quantiles on G − 1 df, the plain SE with a note below MIN_CLUSTERS clusters,
Wilson intervals for 0/1 scores and an MDE from the same SE and quantiles (docs/architecture.md,
"Statistics"). Every figure is recomputed another way: statsmodels' cluster-robust OLS/WLS on a
constant (CR1), scipy's t distribution, statsmodels' Wilson interval, or the Wilson score test
inverted by root finding."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import statsmodels.api as sm
from mlflow.tracking import MlflowClient
from scipy import optimize
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from engine.config.schema import TrackingConfig
from engine.record.publish import record_and_log
from engine.report import results_table
from engine.scoring.metrics import aggregate_scores
from engine.scoring.suites import aggregate_report
from engine.stats import MIN_CLUSTERS
from engine.stats.bootstrap import bootstrap_summary
from engine.types import InstanceRecord
from tests.reliability.records import make_record

Z = float(sps.norm.ppf(0.975))


def _instances(correct: np.ndarray, groups: np.ndarray, margin: np.ndarray | None = None) -> list[InstanceRecord]:
    out = []
    for i, (c, g) in enumerate(zip(correct, groups, strict=True)):
        scores = {"acc": float(c)} if margin is None else {"acc": float(c), "logprob_margin": float(margin[i])}
        out.append(InstanceRecord(task_hash="th", task_spec="mmlu:mc", instance_id=f"q{i:04d}", cluster=f"s{g}",
                                  gold="A", extracted_answer="A" if c else "B", scores=scores))
    return out


def _clustered_data(k: int = 12, seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(k), rng.integers(2, 9, k))
    p = (0.15 + 0.7 * rng.random(k))[groups]
    correct = (rng.random(groups.size) < p).astype(float)
    margin = rng.normal(size=groups.size) + 2 * rng.normal(size=k)[groups]
    return correct, groups, margin


def _cr1(y: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None):
    model = sm.OLS(y, np.ones(len(y))) if weights is None else sm.WLS(y, np.ones(len(y)), weights=weights)
    return model.fit(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)


def _wilson_by_root_finding(p: float, n: float, q: float) -> tuple[float, float]:
    """{p0 : |p − p0| ≤ q·sqrt(p0(1 − p0)/n)}: the score test inverted numerically."""
    def excess(p0: float) -> float:
        return abs(p - p0) - q * math.sqrt(p0 * (1 - p0) / n)
    return optimize.brentq(excess, 1e-300, p), optimize.brentq(excess, p, 1 - 1e-16)


@pytest.mark.parametrize("macro", [False, True])
def test_a_clustered_run_records_the_cr1_se_t_quantiles_and_the_same_mde(macro: bool) -> None:
    correct, groups, margin = _clustered_data()
    scores = aggregate_scores(_instances(correct, groups, margin), aggregation="macro" if macro else "mean")
    k = 12
    w = 1.0 / np.bincount(groups)[groups] if macro else None
    q, q80 = float(sps.t.ppf(0.975, k - 1)), float(sps.t.ppf(0.8, k - 1))
    # 0/1 accuracy: CR1 SE, Wilson on the effective n (n / design effect) with the t_{G−1} quantile
    acc, ref = scores["acc"], _cr1(correct, groups, w)
    se = float(ref.bse[0])
    assert acc.value == pytest.approx(float(ref.params[0]))
    assert acc.clustered_stderr == pytest.approx(se, rel=1e-10) and acc.reported_stderr == acc.clustered_stderr
    assert acc.n_clusters == k and acc.df == k - 1 and acc.note is None and acc.ci_method == "wilson-clustered"
    n_eff = min(float(correct.size), acc.value * (1 - acc.value) / se**2)
    assert (acc.ci_low, acc.ci_high) == pytest.approx(_wilson_by_root_finding(acc.value, n_eff, q), abs=1e-9)
    assert acc.mde == pytest.approx((q + q80) * math.sqrt(2) * se, rel=1e-9)
    # a continuous score (the log-probability margin): mean ± t_{G−1}·CR1, statsmodels' own interval
    lm, ref = scores["logprob_margin"], _cr1(margin, groups, w)
    assert lm.clustered_stderr == pytest.approx(float(ref.bse[0]), rel=1e-10) and lm.ci_method == "t-clustered"
    assert (lm.ci_low, lm.ci_high) == pytest.approx(tuple(ref.conf_int()[0]), rel=1e-9)
    assert lm.mde == pytest.approx((q + q80) * math.sqrt(2) * float(ref.bse[0]), rel=1e-9)


def test_too_few_clusters_record_the_plain_se_with_a_note() -> None:
    correct, groups, _ = _clustered_data(k=MIN_CLUSTERS - 1, seed=3)
    acc = aggregate_scores(_instances(correct, groups))["acc"]
    n, hits = correct.size, int(correct.sum())
    assert acc.clustered_stderr is None and acc.n_clusters == MIN_CLUSTERS - 1 and acc.df is None
    assert acc.note and f"only {MIN_CLUSTERS - 1} clusters" in acc.note and "plain SE" in acc.note
    assert acc.stderr == acc.reported_stderr == pytest.approx(float(sps.sem(correct)))
    assert (acc.ci_low, acc.ci_high) == pytest.approx(proportion_confint(hits, n, method="wilson"), abs=1e-12)
    assert acc.mde == pytest.approx((Z + sps.norm.ppf(0.8)) * math.sqrt(2) * float(sps.sem(correct)))


def test_a_clustered_bootstrap_se_agrees_with_cr1_and_falls_back_below_min_clusters() -> None:
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(30), 6)
    y = rng.normal(size=groups.size) + rng.normal(size=30)[groups]
    boot = bootstrap_summary(lambda idx: float(np.mean(y[list(idx)])), y.size, list(groups), replicates=4000)
    ref = _cr1(y, groups)
    assert boot.clustered_stderr == pytest.approx(float(ref.bse[0]), rel=0.1)  # a bootstrap: within 10%
    assert boot.df == 29 and boot.ci_method == "bootstrap-clustered"
    q = float(sps.t.ppf(0.975, 29))
    assert (boot.ci_low, boot.ci_high) == pytest.approx((y.mean() - q * boot.clustered_stderr,
                                                         y.mean() + q * boot.clustered_stderr))
    few = bootstrap_summary(lambda idx: float(np.mean(y[list(idx)])), 24, list(groups[:24] // 2))
    assert few.clustered_stderr is None and few.n_clusters == 2 and few.note and few.df is None


def test_the_folder_mlflow_and_table_carry_the_cr1_figures(tmp_path: Path) -> None:
    correct, groups, _ = _clustered_data()
    insts = _instances(correct, groups)
    record = make_record(tmp_path / "runs" / "mmlu", insts=insts)
    record = record.model_copy(update={"scores": aggregate_scores(insts)})
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    logged = record_and_log(TrackingConfig(tracking_uri=uri), record, insts, tmp_path / "runs" / "mmlu")
    se, q = float(_cr1(correct, groups).bse[0]), float(sps.t.ppf(0.975, 11))
    mde = (q + float(sps.t.ppf(0.8, 11))) * math.sqrt(2) * se
    folder = json.loads((tmp_path / "runs" / "mmlu" / "experiment.json").read_text())["scores"]["acc"]
    metrics_json = json.loads((tmp_path / "runs" / "mmlu" / "metrics.json").read_text())["acc"]
    for saved in (folder, metrics_json):
        assert saved["clustered_stderr"] == pytest.approx(se, rel=1e-10) and saved["df"] == 11
        assert saved["mde"] == pytest.approx(mde, rel=1e-9) and saved["ci_method"] == "wilson-clustered"
    logged_metrics = MlflowClient(tracking_uri=uri).get_run(logged.mlflow_run_id).data.metrics
    assert logged_metrics["acc.reported_stderr"] == pytest.approx(se, rel=1e-10)
    assert logged_metrics["acc.clustered_stderr"] == pytest.approx(se, rel=1e-10)
    assert logged_metrics["acc.df"] == 11 and logged_metrics["acc.mde"] == pytest.approx(mde, rel=1e-9)
    table = results_table([logged])
    assert "acc (clustered SE)" in table and f"{se:.4f}" in table and f"{mde:.4f}" in table
    # below MIN_CLUSTERS: the table shows the plain SE, and the note under it says why
    few_insts = _instances(*_clustered_data(k=3, seed=1)[:2])
    few = record.model_copy(update={"scores": aggregate_scores(few_insts)})
    assert "(clustered SE)" not in results_table([few])
    assert "note: mmlu:mc acc: only 3 clusters (fewer than 5)" in aggregate_report([few], None)
    assert "note:" not in aggregate_report([logged], None)
