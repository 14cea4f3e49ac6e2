"""A continuous companion to 0/1 accuracy for likelihood (mc/rc) tasks (docs/architecture.md, "Statistics").

Accuracy only says whether the gold choice ranked first; the margin says by how much:
margin = ℓ_gold − max_{j ≠ gold} ℓ_j, where ℓ_j is choice j's normalized log-probability (the
log-probability the task ranks by: raw, or divided by the choice's length in characters or
tokens when `lengths` is given). margin > 0 exactly when the question is answered right (ties
count as wrong), so its mean moves smoothly where accuracy moves in 1/n steps — a checkpoint's
progress on questions it still gets wrong shows in the margin first (Heineman et al. 2025,
"Signal and Noise", arXiv:2508.13144, find continuous metrics less noisy than accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def normalized_logprobs(logprobs: Sequence[float], lengths: Sequence[float] | None = None) -> list[float]:
    """ℓ_j = logprob_j, or logprob_j / length_j (per-character or per-token normalization)."""
    if lengths is None:
        return [float(x) for x in logprobs]
    if len(lengths) != len(logprobs):
        raise ValueError(f"one length per choice: {len(lengths)} lengths for {len(logprobs)} choices")
    if any(length <= 0 for length in lengths):
        raise ValueError(f"choice lengths must be positive, got {list(lengths)}")
    return [float(x) / float(length) for x, length in zip(logprobs, lengths, strict=True)]


MARGIN_METRIC = "logprob_margin"  # the per-question score name of `gold_margin` in records and MLflow


def gold_margin(logprobs: Sequence[float], gold: int, lengths: Sequence[float] | None = None) -> float:
    """ℓ_gold − max_{j ≠ gold} ℓ_j for one question (positive: the gold choice ranks first)."""
    if len(logprobs) < 2:
        raise ValueError(f"a margin needs at least 2 choices, got {len(logprobs)}")
    if not 0 <= gold < len(logprobs):
        raise ValueError(f"gold index {gold} is not one of the {len(logprobs)} choices")
    scores = normalized_logprobs(logprobs, lengths)
    if not all(math.isfinite(s) for s in scores):
        raise ValueError(f"log-probabilities must be finite, got {scores}")
    best_other = max(s for j, s in enumerate(scores) if j != gold)
    return scores[gold] - best_other
