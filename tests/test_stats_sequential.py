"""The anytime-valid paired comparison (engine/stats/sequential.py): its time-uniform coverage by
simulation, its formula against a plain loop written from the paper, and its decisions.

Simulations use fixed seeds (deterministic). The bound checked is the guarantee itself,
P(∃t ≤ T: Δ ∉ C_t) ≤ α, on 2000 sequences; the CS is conservative (about 1% observed), so the
check has a wide margin and cannot flake.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from engine.stats.sequential import confidence_sequence, sequential_paired

ALPHA = 0.05
SEQUENCES, LENGTH = 2000, 400


def _paper_loop(d: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Waudby-Smith & Ramdas (2023), Theorem 2 (PrPl-EB), term by term, for X = (d + 1)/2."""
    x = (d + 1) / 2
    lows, highs, low, high = [], [], 0.0, 1.0
    for t in range(1, len(x) + 1):
        past = x[: t - 1]
        mu = [(0.5 + past[:i].sum()) / (i + 1) for i in range(t)]  # μ̂_0 .. μ̂_{t−1}
        sigma2_prev = (0.25 + sum((past[i] - mu[i + 1]) ** 2 for i in range(t - 1))) / t  # σ̂²_{t−1}
        lams = []
        for i in range(1, t + 1):
            mu_i = [(0.5 + x[:j].sum()) / (j + 1) for j in range(i)]
            s2 = (0.25 + sum((x[j] - mu_i[j + 1]) ** 2 for j in range(i - 1))) / i
            lams.append(min(math.sqrt(2 * math.log(2 / alpha) / (s2 * i * math.log(1 + i))), 0.5))
        lam = np.array(lams)
        psi = (-np.log(1 - lam) - lam) / 4
        v = 4 * (x[:t] - np.array(mu)) ** 2
        centre = (lam * x[:t]).sum() / lam.sum()
        margin = (math.log(2 / alpha) + (v * psi).sum()) / lam.sum()
        low, high = max(low, min(max(centre - margin, 0), 1)), min(high, max(min(centre + margin, 1), 0))
        lows.append(2 * low - 1)
        highs.append(2 * high - 1)
        assert sigma2_prev > 0
    return np.array(lows), np.array(highs)


def test_formula_matches_a_loop_written_from_the_paper() -> None:
    d = np.random.default_rng(0).choice([-1.0, 0.0, 0.5, 1.0], size=40)
    low, high = confidence_sequence(d, ALPHA)
    ref_low, ref_high = _paper_loop(d, ALPHA)
    assert low == pytest.approx(ref_low, abs=1e-12) and high == pytest.approx(ref_high, abs=1e-12)
    streamed = sequential_paired(iter(d), ALPHA)
    assert streamed.decision == "undecided" and streamed.n_seen == 40
    assert (streamed.cs_low, streamed.cs_high) == pytest.approx((low[-1], high[-1]), abs=1e-12)


@pytest.mark.parametrize(("probs", "delta"), [
    ((0.2, 0.6, 0.2), 0.0),  # d ∈ {−1, 0, 1}: two 0/1 runs that differ on 40% of questions
    ((0.1, 0.6, 0.3), 0.2),
    ((0.02, 0.9, 0.08), 0.06),  # rare discordance: the low-variance case a CS must not undercover
])
def test_miscoverage_at_any_time_is_at_most_alpha(probs: tuple[float, float, float], delta: float) -> None:
    rng = np.random.default_rng(7)
    d = rng.choice([-1.0, 0.0, 1.0], p=probs, size=(SEQUENCES, LENGTH))
    low, high = confidence_sequence(d, ALPHA)
    ever_missed = ((low > delta) | (high < delta)).any(axis=1).mean()
    assert ever_missed <= ALPHA
    assert (high - low)[:, -1].mean() < 0.5  # and it does narrow


def test_peeking_at_a_fixed_n_interval_is_what_this_prevents() -> None:
    """The check above can fail: the fixed-n t-interval, looked at after every pair, misses far more."""
    rng = np.random.default_rng(7)
    d = rng.choice([-1.0, 0.0, 1.0], p=(0.2, 0.6, 0.2), size=(SEQUENCES, LENGTH))
    t = np.arange(1, LENGTH + 1)
    mean = np.cumsum(d, axis=1) / t
    var = (np.cumsum(d**2, axis=1) - t * mean**2) / np.maximum(t - 1, 1)
    half = sps.t.ppf(0.975, np.maximum(t - 1, 1)) * np.sqrt(var / t)
    looked = slice(9, None)  # from n = 10 on
    naive_missed = ((np.abs(mean) > half)[:, looked]).any(axis=1).mean()
    assert naive_missed > 3 * ALPHA


def test_decisions_and_their_error_rate() -> None:
    rng = np.random.default_rng(11)
    wrong_direction = 0
    for _ in range(300):  # Δ = 0: any direction is an error
        d = rng.choice([-1.0, 0.0, 1.0], p=(0.2, 0.6, 0.2), size=600)
        r = sequential_paired(iter(d), ALPHA)
        wrong_direction += r.decision in ("A better", "B better")
    assert wrong_direction / 300 <= ALPHA
    better = sequential_paired(iter(rng.choice([-1.0, 0.0, 1.0], p=(0.05, 0.55, 0.4), size=2000)), ALPHA)
    assert better.decision == "A better" and better.stopped_at is not None and better.stopped_at < 2000
    assert better.cs_low > 0 and better.n_seen == better.stopped_at  # stopped reading there
    worse = sequential_paired((-x for x in rng.choice([-1.0, 0.0, 1.0], p=(0.05, 0.55, 0.4), size=2000)), ALPHA)
    assert worse.decision == "B better" and worse.cs_high < 0
    same = sequential_paired(iter(np.zeros(5000)), ALPHA, threshold=0.1)
    assert same.decision == "|Δ| < threshold" and -0.1 < same.cs_low and same.cs_high < 0.1


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        sequential_paired(iter([0.5, 2.0]))
    with pytest.raises(ValueError, match="alpha"):
        sequential_paired(iter([0.0]), alpha=0.0)
    empty = sequential_paired(iter([]))
    assert empty.decision == "undecided" and empty.n_seen == 0 and math.isnan(empty.mean)
