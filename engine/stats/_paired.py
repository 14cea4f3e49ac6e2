"""Paired comparison of two runs on the same questions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from pydantic import BaseModel, ConfigDict

from engine.stats._summary import Z_95, Z_POWER_80

PAIRED_MDE_FACTOR = Z_95 + Z_POWER_80  # ≈ 2.80


def exact_mcnemar(wins: int, discordant: int) -> float:
    """Two-sided exact binomial test of `wins` of `discordant` at p = 0.5 (scipy's `binomtest`
    p-value; symmetric, so twice the smaller tail, capped at 1). Integers: exact for any n."""
    k = min(wins, discordant - wins)
    tail = sum(math.comb(discordant, i) for i in range(k + 1))
    return min(1.0, float(2 * tail / 2**discordant))


def verdict_of(delta: float, mde: float, p_value: float, n: int) -> str:
    """Plain verdict: a change counts only when it is significant and at least the paired MDE."""
    if n < 2 or math.isnan(p_value) or math.isnan(mde):
        return "not enough data"
    if abs(delta) < mde or p_value >= 0.05:
        return "within noise"
    return "improved" if delta > 0 else "regressed"


class PairedComparison(BaseModel):
    """A − B on aligned questions."""

    model_config = ConfigDict(frozen=True)

    n: int
    mean_a: float
    mean_b: float
    delta: float
    stderr: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float
    mde: float
    wins: int
    losses: int
    ties: int
    mcnemar_p: float | None = None

    @property
    def verdict(self) -> str:
        return verdict_of(self.delta, self.mde, self.p_value, self.n)


def paired_compare(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedComparison:
    """Paired statistics of run A against run B (docs/architecture.md, "Statistics")."""
    sa, sb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if sa.shape != sb.shape:
        raise ValueError(f"paired scores must align: {sa.shape} vs {sb.shape}")
    n = int(sa.size)
    d = sa - sb
    delta = float(d.mean()) if n else float("nan")
    se = float(math.sqrt(((d - delta) ** 2).sum() / (n * (n - 1)))) if n > 1 else float("nan")
    if n > 1 and se > 0:
        z = delta / se
        p = 2 * NormalDist().cdf(-abs(z))
    elif n > 1:  # identical differences everywhere: no noise at all
        z = 0.0 if delta == 0 else math.copysign(math.inf, delta)
        p = 1.0 if delta == 0 else 0.0
    else:
        z, p = float("nan"), float("nan")
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    mcnemar = None
    binary = bool(np.isin(sa, (0.0, 1.0)).all() and np.isin(sb, (0.0, 1.0)).all())
    if binary and n:
        discordant = wins + losses
        mcnemar = exact_mcnemar(wins, discordant) if discordant else 1.0
    return PairedComparison(
        n=n,
        mean_a=float(sa.mean()) if n else float("nan"),
        mean_b=float(sb.mean()) if n else float("nan"),
        delta=delta,
        stderr=se,
        ci_low=delta - Z_95 * se,
        ci_high=delta + Z_95 * se,
        z=z,
        p_value=p,
        mde=PAIRED_MDE_FACTOR * se,
        wins=wins,
        losses=losses,
        ties=n - wins - losses,
        mcnemar_p=mcnemar,
    )
