"""Anytime-valid paired comparison: a confidence sequence for the mean paired difference.

A fixed-n interval is valid only if you look once; checking it after every question and stopping
when it excludes 0 makes false "wins" far likelier than α. A confidence sequence (C_t) covers the
true mean at every t at once, P(∃t: Δ ∉ C_t) ≤ α, so a decision may be taken whenever it looks
decisive. This one is the predictable plug-in empirical-Bernstein CS of Waudby-Smith & Ramdas
(2023, "Estimating means of bounded random variables by betting", JRSS-B 86:1, Theorem 2,
"PrPl-EB"), for X_i = (d_i + 1)/2 ∈ [0, 1], d_i ∈ [−1, 1] (docs/architecture.md, "Statistics"):

  μ̂_t = (1/2 + Σ_{i≤t} X_i)/(t + 1),  σ̂²_t = (1/4 + Σ_{i≤t} (X_i − μ̂_i)²)/(t + 1)
  λ_t = min( sqrt(2·log(2/α) / (σ̂²_{t−1}·t·log(1 + t))), 1/2 )
  C_t = Σλ_iX_i/Σλ_i ± (log(2/α) + Σ 4(X_i − μ̂_{i−1})²·ψ(λ_i)) / Σλ_i,  ψ(λ) = (−log(1 − λ) − λ)/4

intersected with [0, 1] and with every earlier C_s (still a CS), then mapped back: Δ ∈ 2·C_t − 1.
The guarantee assumes each d_i has the same conditional mean Δ given the past: feed questions in
a random order (the questions are a sample of the task's population, as in Miller 2024).
The `confseq` package (Howard & Waudby-Smith) has this CS but ships only a source build needing
Boost, so it is written out here; tests/test_stats_sequential.py checks coverage by simulation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

_LAMBDA_CAP = 0.5  # c in the paper: any c ∈ (0, 1) is valid; 1/2 is its recommendation

Decision = Literal["A better", "B better", "|Δ| < threshold", "undecided"]


class SequentialResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    decision: Decision
    stopped_at: int | None  # pairs seen when the decision was taken; None: never decisive
    n_seen: int
    mean: float  # mean of the d_i seen
    cs_low: float  # the confidence sequence at the stop (or after the last pair)
    cs_high: float
    alpha: float
    threshold: float


def confidence_sequence(d: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(low_t, high_t) for Δ after each of t = 1..T pairs; `d` is (T,) or (m, T) for m sequences."""
    x = (np.asarray(d, dtype=float) + 1.0) / 2.0
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError("paired differences must lie in [-1, 1]")
    t = np.arange(1, x.shape[-1] + 1, dtype=float)
    mu = (0.5 + np.cumsum(x, axis=-1)) / (t + 1)  # μ̂_t
    sigma2 = (0.25 + np.cumsum((x - mu) ** 2, axis=-1)) / (t + 1)  # σ̂²_t
    mu_prev = np.concatenate([np.full(x.shape[:-1] + (1,), 0.5), mu[..., :-1]], axis=-1)
    sigma2_prev = np.concatenate([np.full(x.shape[:-1] + (1,), 0.25), sigma2[..., :-1]], axis=-1)
    log_term = math.log(2.0 / alpha)
    lam = np.minimum(np.sqrt(2.0 * log_term / (sigma2_prev * t * np.log1p(t))), _LAMBDA_CAP)
    psi = (-np.log1p(-lam) - lam) / 4.0
    lam_sum = np.cumsum(lam, axis=-1)
    centre = np.cumsum(lam * x, axis=-1) / lam_sum
    margin = (log_term + np.cumsum(4.0 * (x - mu_prev) ** 2 * psi, axis=-1)) / lam_sum
    low = np.maximum.accumulate(np.clip(centre - margin, 0.0, 1.0), axis=-1)
    high = np.minimum.accumulate(np.clip(centre + margin, 0.0, 1.0), axis=-1)
    return 2.0 * low - 1.0, 2.0 * high - 1.0


def decide(cs_low: float, cs_high: float, threshold: float) -> Decision:
    """What the interval allows one to say: a direction when it excludes 0, equivalence when it lies
    inside (−threshold, threshold). Each is wrong only if the CS misses Δ, so P(wrong) ≤ α."""
    if cs_low > 0:
        return "A better"
    if cs_high < 0:
        return "B better"
    if -threshold < cs_low and cs_high < threshold:
        return "|Δ| < threshold"
    return "undecided"


def sequential_paired(d_iter: Iterable[float], alpha: float = 0.05, threshold: float = 0.0) -> SequentialResult:
    """Read paired differences d_i = s_A,i − s_B,i ∈ [−1, 1] one at a time and stop at the first
    decisive one; the iterator is not read past that point (so it may run the evaluation lazily)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if threshold < 0:
        raise ValueError(f"threshold must be ≥ 0, got {threshold}")
    log_term = math.log(2.0 / alpha)
    t, sum_x, sum_sq, lam_sum, lam_x, penalty = 0, 0.0, 0.0, 0.0, 0.0, 0.0
    mu_prev, sigma2_prev, low, high = 0.5, 0.25, 0.0, 1.0
    for value in d_iter:
        d = float(value)
        if not -1.0 <= d <= 1.0:
            raise ValueError(f"paired differences must lie in [-1, 1], got {d} at pair {t + 1}")
        t += 1
        x = (d + 1.0) / 2.0
        lam = min(math.sqrt(2.0 * log_term / (sigma2_prev * t * math.log1p(t))), _LAMBDA_CAP)
        lam_sum += lam
        lam_x += lam * x
        penalty += 4.0 * (x - mu_prev) ** 2 * (-math.log1p(-lam) - lam) / 4.0
        sum_x += x
        mu = (0.5 + sum_x) / (t + 1)
        sum_sq += (x - mu) ** 2
        mu_prev, sigma2_prev = mu, (0.25 + sum_sq) / (t + 1)
        centre, margin = lam_x / lam_sum, (log_term + penalty) / lam_sum
        low, high = max(low, min(max(centre - margin, 0.0), 1.0)), min(high, max(min(centre + margin, 1.0), 0.0))
        decision = decide(2 * low - 1, 2 * high - 1, threshold)
        if decision != "undecided":
            return SequentialResult(decision=decision, stopped_at=t, n_seen=t, mean=2 * sum_x / t - 1,
                                    cs_low=2 * low - 1, cs_high=2 * high - 1, alpha=alpha, threshold=threshold)
    mean = 2 * sum_x / t - 1 if t else math.nan
    return SequentialResult(decision="undecided", stopped_at=None, n_seen=t, mean=mean, cs_low=2 * low - 1,
                            cs_high=2 * high - 1, alpha=alpha, threshold=threshold)
