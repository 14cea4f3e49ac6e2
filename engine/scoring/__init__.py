"""Scorers (one instance → values) and metrics (many instances → aggregate with error bars)."""

from engine.scoring.metrics import aggregate_scores
from engine.scoring.scorers import score_choice, score_generation

__all__ = ["aggregate_scores", "score_choice", "score_generation"]
