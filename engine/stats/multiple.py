"""Adjusted p-values for a family of comparisons (docs/architecture.md, "Statistics").

Comparing two checkpoints on k tasks makes k tests; at α = 0.05 each, about one in twenty
unchanged tasks reads as a change. Holm (1979, "A simple sequentially rejective multiple test
procedure") controls the family-wise error rate under any dependence and is the default;
Benjamini & Hochberg (1995) control the false discovery rate (valid for independent or positively
dependent tests). Both return adjusted p-values: reject where adjusted p < α.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

AdjustMethod = Literal["holm", "bh"]


class AdjustedPValues(BaseModel):
    """Raw and adjusted p-values, in the order given. NaN (no test) stays NaN and is not in the family."""

    model_config = ConfigDict(frozen=True)

    method: AdjustMethod
    family_size: int  # the number of finite p-values adjusted together
    raw: tuple[float, ...]
    adjusted: tuple[float, ...]

    def rejected(self, alpha: float = 0.05) -> tuple[bool, ...]:
        return tuple(p < alpha for p in self.adjusted)  # NaN < α is False


def _holm(p: np.ndarray) -> np.ndarray:
    # sorted ascending p_(1..m): adj_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def _benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    # sorted ascending: adj_(i) = min_{j ≥ i} min(1, m·p_(j)/j)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = m * p[order] / np.arange(1, m + 1)
    stepped = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def adjust_pvalues(p_values: Sequence[float], method: AdjustMethod = "holm") -> AdjustedPValues:
    """Holm (default) or Benjamini–Hochberg adjusted p-values of one family of tests."""
    raw = np.asarray(p_values, dtype=float)
    if raw.ndim != 1:
        raise ValueError("p-values must be a flat sequence")
    finite = ~np.isnan(raw)
    if ((raw[finite] < 0) | (raw[finite] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {raw[finite].tolist()}")
    adjusted = np.full(raw.size, math.nan)
    if finite.any():
        adjust = _holm if method == "holm" else _benjamini_hochberg
        adjusted[finite] = adjust(raw[finite])
    return AdjustedPValues(method=method, family_size=int(finite.sum()), raw=tuple(raw.tolist()),
                           adjusted=tuple(adjusted.tolist()))
