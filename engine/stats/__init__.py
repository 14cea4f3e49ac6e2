"""Statistics for eval scores (docs/architecture.md, "Statistics"): every formula of the engine.

Miller 2024 ("Adding Error Bars to Evals") with small-sample-correct intervals: `summarize` (a
run's reported score), `paired_compare` / `paired_interval` (A − B on the same questions);
multiple comparisons, checkpoint signal and noise, the log-probability margin, the anytime-valid
sequential comparison and the one number formatter of tables: the modules below.
"""

from engine.stats._distributions import Z_95, Z_POWER_80
from engine.stats._paired import (
    PAIRED_MDE_FACTOR,
    PairedComparison,
    comparison_of,
    paired_compare,
    verdict_of,
    wald_z,
)
from engine.stats._summary import MDE_FACTOR, summarize, summarize_means, summary_of
from engine.stats.companion import MARGIN_METRIC, gold_margin
from engine.stats.display import number
from engine.stats.intervals import (
    MIN_CLUSTERS,
    ClusteredSE,
    PairedDelta,
    PairedInterval,
    ScoreInterval,
    cr1_clustered_se,
    paired_interval,
    score_interval,
    usable_clusters,
)
from engine.stats.multiple import AdjustedPValues, adjust_pvalues
from engine.stats.recorded import NormalTest, combined_stderr, normal_test
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
    "MDE_FACTOR",
    "summarize",
    "summarize_means",
    "summary_of",
    "PairedComparison",
    "paired_compare",
    "comparison_of",
    "wald_z",
    "verdict_of",
    "PAIRED_MDE_FACTOR",
    "MIN_CLUSTERS",
    "ClusteredSE",
    "ScoreInterval",
    "PairedDelta",
    "PairedInterval",
    "cr1_clustered_se",
    "score_interval",
    "paired_interval",
    "usable_clusters",
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
    "combined_stderr",
    "NOISE_CHECKPOINTS",
    "number",
]
