"""Multiple comparisons, checkpoint series statistics and the log-probability margin, each recomputed
independently: statsmodels' multipletests, the formulas of Heineman et al.'s own code written out
with numpy, brute-force loops, and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from engine.stats.companion import gold_margin
from engine.stats.multiple import adjust_pvalues
from engine.stats.series import checkpoint_noise, flip_rates, relative_dispersion, signal_to_noise


@pytest.mark.parametrize(("method", "sm_method"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjusted_p_values_match_statsmodels(method: str, sm_method: str) -> None:
    rng = np.random.default_rng(1)
    for k in (1, 2, 5, 17):
        p = rng.random(k) ** 3
        p[rng.integers(0, k)] = p[0]  # ties
        ref_reject, ref_adjusted, _, _ = multipletests(p, alpha=0.05, method=sm_method)
        r = adjust_pvalues(p.tolist(), method)  # type: ignore[arg-type]
        assert r.method == method and r.family_size == k and r.raw == tuple(p.tolist())
        assert r.adjusted == pytest.approx(ref_adjusted.tolist(), abs=1e-15)
        assert r.rejected(0.05) == tuple(bool(x) for x in ref_reject)


def test_holm_by_hand_and_nan_is_outside_the_family() -> None:
    # sorted 0.01, 0.02, 0.04 → 3·0.01, max(0.03, 2·0.02), max(0.04, 1·0.04)
    r = adjust_pvalues([0.04, float("nan"), 0.01, 0.02])
    assert r.family_size == 3
    assert math.isnan(r.adjusted[1]) and not r.rejected()[1]
    assert [r.adjusted[i] for i in (0, 2, 3)] == pytest.approx([0.04, 0.03, 0.04])
    # BH: m·p/rank = 0.03, 0.03, 0.04, then the running minimum from the top
    assert [adjust_pvalues([0.04, 0.01, 0.02], "bh").adjusted[i] for i in (0, 1, 2)] == pytest.approx([0.04, 0.03, 0.03])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([1.2])


def _heineman_snr(signal_scores: list[float], noise_scores: list[float]) -> float:
    """signal_to_noise_ratio of allenai/signal-and-noise (snr/metrics.py), written out."""
    dispersion = max(abs(a - b) for a in signal_scores for b in signal_scores)
    return (dispersion / float(np.mean(signal_scores))) / (float(np.std(noise_scores)) / float(np.mean(noise_scores)))


def test_signal_noise_and_snr_follow_heineman_et_al() -> None:
    finals = [0.42, 0.55, 0.47, 0.61]
    series = [0.20, 0.31, 0.40, 0.44, 0.43, 0.46, 0.45, 0.47]
    r = signal_to_noise(finals, series, last=5)
    last5 = series[-5:]
    assert r.noise.n_checkpoints == 5
    assert r.noise.std == pytest.approx(float(np.std(last5)))  # population σ, ddof = 0
    assert r.noise.relative == pytest.approx(float(np.std(last5) / np.mean(last5)))
    assert r.dispersion == pytest.approx(0.61 - 0.42)
    assert r.signal == pytest.approx((0.61 - 0.42) / np.mean(finals))
    assert r.snr == pytest.approx(_heineman_snr(finals, last5))
    # fewer checkpoints than `last`: all of them
    assert checkpoint_noise([0.5, 0.6, 0.55], last=5).n_checkpoints == 3
    one = checkpoint_noise([0.5])
    assert math.isnan(one.std) and not one.exceeds(0.0)
    with pytest.raises(ValueError, match="at least 2 models"):
        relative_dispersion([0.5])


def test_noise_flags_an_effect_it_could_explain() -> None:
    noise = checkpoint_noise([0.50, 0.54, 0.48, 0.53, 0.50])  # σ ≈ 0.0228
    assert noise.exceeds(0.02) and noise.exceeds(-0.02)
    assert not noise.exceeds(0.05)
    assert noise.exceeds(0.03, factor=2.0)
    assert signal_to_noise([0.4, 0.5], [0.45, 0.45, 0.45]).snr == math.inf  # flat checkpoints


def test_flip_rates_match_a_brute_force_count() -> None:
    rng = np.random.default_rng(4)
    table = (rng.random((5, 60)) < 0.5).astype(float)
    table[2, :7] = np.nan  # not scored at checkpoint 2
    r = flip_rates(table)
    for t in range(4):
        pairs = [(table[t, i], table[t + 1, i]) for i in range(60)
                 if not (math.isnan(table[t, i]) or math.isnan(table[t + 1, i]))]
        assert r.questions[t] == len(pairs)
        assert r.gained[t] == sum(1 for x, y in pairs if (x, y) == (0, 1))
        assert r.lost[t] == sum(1 for x, y in pairs if (x, y) == (1, 0))
        assert r.per_step[t] == pytest.approx(sum(x != y for x, y in pairs) / len(pairs))
    assert r.mean == pytest.approx(sum(r.per_step) / 4)
    # a flat score can hide churn: half the questions swap, the accuracy stays 0.5
    churn = flip_rates([[1, 1, 0, 0], [0, 0, 1, 1]])
    assert churn.per_step == (1.0,) and churn.gained == (2,) and churn.lost == (2,)
    with pytest.raises(ValueError, match="0/1"):
        flip_rates([[0.5, 1], [1, 1]])
    with pytest.raises(ValueError, match="≥ 2 rows"):
        flip_rates([[1, 0]])


def test_gold_margin_by_hand_and_sign_equals_correctness() -> None:
    assert gold_margin([-1.0, -3.0, -2.5], gold=0) == pytest.approx(1.5)
    assert gold_margin([-1.0, -3.0, -2.5], gold=2) == pytest.approx(-1.5)
    # per-length normalization: -6/3 = -2 beats -3/1 = -3, though -6 < -3 raw
    assert gold_margin([-6.0, -3.0], gold=0, lengths=[3, 1]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        lp = (-rng.random(4) * 10).tolist()
        gold = int(rng.integers(0, 4))
        correct = all(lp[gold] > lp[j] for j in range(4) if j != gold)
        assert (gold_margin(lp, gold) > 0) == correct
        others = max(x for j, x in enumerate(lp) if j != gold)
        assert gold_margin(lp, gold) == pytest.approx(lp[gold] - others)
    for bad in (([-1.0], 0), ([-1.0, -2.0], 2), ([-1.0, float("nan")], 0)):
        with pytest.raises(ValueError):
            gold_margin(*bad)
