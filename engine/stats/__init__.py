"""Statistics for eval scores (Miller 2024, "Adding Error Bars to Evals")."""

from engine.api import ScoreSummary
from engine.stats._paired import PAIRED_MDE_FACTOR, PairedComparison, paired_compare, verdict_of
from engine.stats._summary import Z_95, Z_POWER_80, summarize, summarize_macro, summarize_means

__all__ = [
    "Z_95",
    "Z_POWER_80",
    "ScoreSummary",
    "summarize",
    "summarize_macro",
    "summarize_means",
    "PairedComparison",
    "paired_compare",
    "verdict_of",
    "PAIRED_MDE_FACTOR",
]
