"""The log-probability margin next to accuracy for likelihood tasks (docs/architecture.md, "Statistics").

A run records each likelihood question's margin as its score `logprob_margin` (engine/scoring/
scorers.py `score_choice`, under the normalization that ranks the choices; its mean with SE and CI
is in the run record and MLflow). For records written before that, it is recomputed from the
per-choice log-probabilities (`logprobs`), the gold index (`gold`) and the choice texts
(`choices`): mc raw, rc per character; per-token and unconditional normalizations need token
counts / unconditional log-probabilities those records do not keep: no margin then.
"""

from __future__ import annotations

import math

import numpy as np

from engine.compare.loading import Question, RunData
from engine.compare.models import CompanionComparison, verdict_of
from engine.stats import MARGIN_METRIC as MARGIN
from engine.stats import gold_margin, paired_interval


def normalization_of(run: RunData) -> str | None:
    """The normalization the task ranks choices by, or None when it is not a likelihood choice task."""
    task = run.record.config.get("task")
    if not isinstance(task, dict) or task.get("formulation") not in ("mc", "rc"):
        return None
    return "none" if task.get("formulation") == "mc" else str(task.get("normalization") or "none")


def margin_of(q: Question, normalization: str) -> float:
    """The question's margin (NaN when its record lacks log-probabilities, gold or choices)."""
    s = q.first
    recorded = (s.get("scores") or {}).get(MARGIN) if isinstance(s.get("scores"), dict) else None
    if isinstance(recorded, int | float):  # the run recorded it (every normalization): use that
        return float(recorded)
    lps, gold, choices = s.get("logprobs"), s.get("gold"), s.get("choices")
    if not isinstance(lps, list) or len(lps) < 2 or not isinstance(gold, int) or not 0 <= gold < len(lps):
        return math.nan
    lengths = None
    if normalization == "per_char":
        if not isinstance(choices, list) or len(choices) != len(lps):
            return math.nan
        lengths = [max(len(str(c)), 1) for c in choices]
    try:
        return gold_margin(lps, gold, lengths)
    except ValueError:  # non-finite log-probabilities
        return math.nan


def compare_margin(ra: RunData, rb: RunData, ids: list[str]) -> tuple[CompanionComparison | None, str | None]:
    """The paired margin comparison over the questions the accuracy comparison paired."""
    norm = normalization_of(ra)
    if norm is None or normalization_of(rb) != norm:
        return None, None
    ma = np.array([margin_of(ra.questions[i], norm) for i in ids], dtype=float)
    mb = np.array([margin_of(rb.questions[i], norm) for i in ids], dtype=float)
    ok = ~(np.isnan(ma) | np.isnan(mb))
    if ok.sum() < 2 and norm not in ("none", "per_char"):  # older records, which hold no margin
        return None, f"no {MARGIN}: the task ranks choices {norm}, which the records cannot recompute"
    if ok.sum() < 2:
        return None, f"no {MARGIN}: fewer than 2 questions carry per-choice log-probabilities on both sides"
    pi = paired_interval(ma[ok], mb[ok])  # not clipped: margins are unbounded
    return CompanionComparison(
        metric=MARGIN, normalization=norm, n=pi.n, mean_a=pi.mean_a, mean_b=pi.mean_b, delta=pi.delta,
        stderr=pi.stderr, ci_low=pi.ci_low, ci_high=pi.ci_high, p_value=pi.p_value, mde=pi.mde, df=pi.df,
        method=pi.method, verdict=verdict_of(pi.delta, pi.mde, pi.p_value, pi.n),
    ), None
