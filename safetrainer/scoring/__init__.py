"""Scoring: shared hidden-state features, scorers (one file each), threshold policies and the filter pipeline.

Every scorer follows one small interface: `fit(extract, num_layers)` on its reference data, `candidate_request()`
naming the features it needs, `score(features)` returning one float per sample (higher = riskier), and `describe()`
for the report. Deciding is a separate step (`thresholds.decide`).
"""

from ..config import SCORER_NAMES
from ..data import load_data
from .datashield import DataShieldScorer
from .features import FeatureRequest, HiddenStateExtractor, HiddenStates
from .pipeline import ScoringResult, score_and_decide
from .thresholds import ThresholdDecision, decide

SCORERS = {"datashield": DataShieldScorer}
assert tuple(SCORERS) == SCORER_NAMES, "config.SCORER_NAMES and scoring.SCORERS must list the same scorers"


def build_scorers(args) -> list:
    """Instantiate the scorers named in `args.safety_scorers` with their reference data."""
    scorers = []
    for name in args.safety_scorers:
        if name == "datashield":
            reference = load_data(args.safety_reference_dataset, split=args.safety_reference_split)
            scorers.append(DataShieldScorer(reference, layer=args.safety_layer))
    return scorers


__all__ = [
    "SCORERS",
    "DataShieldScorer",
    "FeatureRequest",
    "HiddenStateExtractor",
    "HiddenStates",
    "ScoringResult",
    "ThresholdDecision",
    "build_scorers",
    "decide",
    "score_and_decide",
]
