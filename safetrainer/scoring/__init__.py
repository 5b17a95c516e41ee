"""Scoring: shared features (one forward pass, one per-example-gradient routine), one file per scorer, threshold
policies and the filter pipeline.

Every scorer follows one small interface: `fit(context)` on its reference data (a `ScoringContext` gives the shared
feature routines), `candidate_request()` naming the hidden states it needs (None for none), `score(candidates)`
returning one float per sample (higher = riskier), and `describe()` for the report. Optional attributes:
`needs_gradients` (per-example gradients of the candidates), `needs_texts` (decoded prompt/response), `needs_prompt`
(the score compares prompt and response, so sequences with no prompt/response boundary are unscorable for it),
`transductive` (scores need every candidate at once). Deciding is a separate step (`thresholds.decide`).
"""

from ..config import SCORER_NAMES
from ..data import load_data
from .baselines import ClassifierScorer, RandomScorer, ReferenceSimilarityScorer
from .datashield import DataShieldScorer
from .features import FeatureRequest, HiddenStateExtractor, HiddenStates
from .fihs import FIHSScorer
from .gradients import GradientFeatures, PerExampleGradients
from .pipeline import CandidateFeatures, ScoringContext, ScoringResult, rank_average, score_and_decide
from .saft import SAFTScorer
from .seal import SEALScorer
from .thresholds import ThresholdDecision, adaptive_threshold, decide

SCORERS = {
    "datashield": DataShieldScorer,
    "saft": SAFTScorer,
    "fihs": FIHSScorer,
    "seal": SEALScorer,
    "ref_similarity": ReferenceSimilarityScorer,
    "random": RandomScorer,
    "classifier": ClassifierScorer,
}
assert tuple(SCORERS) == SCORER_NAMES, "config.SCORER_NAMES and scoring.SCORERS must list the same scorers"


def build_scorers(args, names: list[str] | None = None) -> list:
    """Instantiate the scorers named in `names` (default: `args.safety_scorers`) with their reference data, in that
    order."""
    loaded: dict[str, object] = {}

    def data(path: str | None, split: str = "train"):
        if path not in loaded:
            loaded[path] = load_data(path, split=split)
        return loaded[path]

    def reference():
        return data(args.safety_reference_dataset, args.safety_reference_split)

    def probe_prompts() -> list[str]:
        probes = data(args.safety_probe_dataset)
        if "prompt" not in probes.column_names:
            raise ValueError(f"safety_probe_dataset: needs a `prompt` column (found {probes.column_names}).")
        harmful = probes["harmful"] if "harmful" in probes.column_names else [True] * len(probes)
        return [p for p, h in zip(probes["prompt"], harmful, strict=True) if h in (True, 1, "true", "True")]

    builders = {
        "datashield": lambda: DataShieldScorer(reference(), layer=args.safety_layer),
        "saft": lambda: SAFTScorer(
            data(args.safety_validation_dataset) if args.safety_validation_dataset else None,
            layer=args.safety_saft_layer,
            k=args.safety_saft_k,
        ),
        "fihs": lambda: FIHSScorer(
            probe_prompts() if args.safety_fihs_probe == "logit_gap" else [],
            reference() if args.safety_fihs_probe != "logit_gap" else None,
            probe=args.safety_fihs_probe,
            tokens=tuple(args.safety_fihs_tokens),
            similarity=args.safety_fihs_similarity,
        ),
        "seal": lambda: SEALScorer(
            data(args.safety_seal_safe_dataset),
            epochs=args.safety_seal_epochs,
            model_lr=args.safety_seal_model_lr,
            selector_lr=args.safety_seal_selector_lr,
            lambda_step=args.safety_seal_lambda_step,
            batch_size=args.safety_scoring_batch_size,
            seed=args.seed,
        ),
        "ref_similarity": lambda: ReferenceSimilarityScorer(reference(), layer=args.safety_layer),
        "random": lambda: RandomScorer(args.seed),
        "classifier": lambda: ClassifierScorer(args.safety_classifier),
    }
    return [builders[name]() for name in (args.safety_scorers if names is None else names)]


__all__ = [
    "SCORERS",
    "CandidateFeatures",
    "ClassifierScorer",
    "DataShieldScorer",
    "FIHSScorer",
    "FeatureRequest",
    "GradientFeatures",
    "HiddenStateExtractor",
    "HiddenStates",
    "PerExampleGradients",
    "RandomScorer",
    "ReferenceSimilarityScorer",
    "SAFTScorer",
    "SEALScorer",
    "ScoringContext",
    "ScoringResult",
    "ThresholdDecision",
    "adaptive_threshold",
    "build_scorers",
    "decide",
    "rank_average",
    "score_and_decide",
]
