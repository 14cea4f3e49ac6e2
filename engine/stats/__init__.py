"""Statistics for eval scores (docs/architecture.md, "Statistics").

Miller 2024 ("Adding Error Bars to Evals"): summarize, paired_compare (normal quantiles, as recorded
in runs). Small-sample-correct intervals, multiple comparisons, checkpoint signal and noise, the
log-probability margin and the anytime-valid sequential comparison: the modules below.
"""

from engine.stats._paired import PAIRED_MDE_FACTOR, PairedComparison, paired_compare, verdict_of
from engine.stats._summary import Z_95, Z_POWER_80, summarize, summarize_macro, summarize_means
from engine.stats.companion import MARGIN_METRIC, gold_margin
from engine.stats.intervals import (
    MIN_CLUSTERS,
    ClusteredSE,
    PairedInterval,
    ScoreInterval,
    cr1_clustered_se,
    paired_interval,
    score_interval,
)
from engine.stats.multiple import AdjustedPValues, adjust_pvalues
from engine.stats.recorded import NormalTest, combined_stderr, normal_test, summarize_scores
from engine.stats.sequential import SequentialResult, confidence_sequence, sequential_paired
from engine.stats.series import (
    NOISE_CHECKPOINTS,
    CheckpointNoise,
    FlipRates,
    SignalToNoise,
    checkpoint_noise,
    flip_rates,
    signal_to_noise,
)
from engine.types import ScoreSummary

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
    "MIN_CLUSTERS",
    "ClusteredSE",
    "ScoreInterval",
    "PairedInterval",
    "cr1_clustered_se",
    "score_interval",
    "paired_interval",
    "AdjustedPValues",
    "adjust_pvalues",
    "CheckpointNoise",
    "SignalToNoise",
    "FlipRates",
    "checkpoint_noise",
    "signal_to_noise",
    "flip_rates",
    "MARGIN_METRIC",
    "gold_margin",
    "SequentialResult",
    "confidence_sequence",
    "sequential_paired",
    "NormalTest",
    "normal_test",
    "summarize_scores",
    "combined_stderr",
    "NOISE_CHECKPOINTS",
]
