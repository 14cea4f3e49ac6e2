"""The one number formatter of every table evalbench prints (runs, suites, comparisons, series).

Four decimals, so that a score, its SE and a Δ line up; "—" for a number that does not exist
(None or NaN: no SE from one question, no p without a test), never "nan" beside real numbers;
p-values below 1e-4 as "<1e-4" (the tests' precision ends well before the digits would).
"""

from __future__ import annotations

import math

MISSING = "—"


def number(x: float | None, digits: int = 4, sign: bool = False, p_value: bool = False) -> str:
    """`x` with `digits` decimals (`sign`: always with + or −); `p_value`: "<1e-4" below 1e-4."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    if p_value and x < 1e-4:
        return "<1e-4"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"
