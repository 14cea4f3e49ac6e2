"""Scorers (one instance → values), the judge, execution scoring, metrics (many → aggregate)."""

from engine.scoring.metrics import aggregate_scores
from engine.scoring.registry import SCORERS, Scorer, scorer
from engine.scoring.scorers import score_choice, score_generation, score_response

__all__ = ["SCORERS", "Scorer", "aggregate_scores", "score_choice", "score_generation", "score_response", "scorer"]
