"""SAFT: harmful samples in an unlabelled mix stand out along the top singular directions of its hidden states.

Centre the candidates' features f at one layer and pooling, take the top-k right singular vectors v_j with singular
values s_j, and score
  form A: zeta = (1/k) sum_j s_j <f - mean, v_j>^2     (outlyingness; immune to the sign of each v_j)
  form B: zeta = sign * (1/k) sum_j s_j <f - mean, v_j>   (HaloScope's signed projection; needs a sign)
The fit is transductive: the subspace comes from the candidates themselves, so every candidate's features are
gathered before scoring.

With a small labelled validation set (harmful and benign (prompt, response) rows) the form, layer, pooling, k and
sign are chosen by validation AUROC, the validation rows projected with the candidates' mean and subspace. Without
one the documented default below is used (form A) and the report says so; it then assumes harmful samples are the
outliers, which need not hold (the detection benchmark measures it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from datasets import Dataset

from ..data import chat_pair
from .features import POOLINGS, FeatureRequest

if TYPE_CHECKING:
    from .pipeline import CandidateFeatures, ScoringContext

_HARMFUL = {"harmful", "unsafe", "compliance", "harmful_response", "1", "true"}
_BENIGN = {"benign", "safe", "safe_response", "0", "false"}
MIN_VALIDATION_PER_CLASS = 4
# Unsupervised default, as a fraction of the model's depth: see BENCHMARKS.md (detection) for how it measures.
DEFAULT_DEPTH_FRACTION = 0.5
DEFAULT_POOLING = "response_mean"
# The poolings the validation search tries (prompt_mean, added for embeddings, was never measured as a risk signal).
SEARCHED_POOLINGS = ("prompt_last", "response_mean", "end_of_turn")
DEFAULT_K = 1


FORMS = ("A", "B")


def subspace_score(
    features: np.ndarray, mean: np.ndarray, vt: np.ndarray, s: np.ndarray, k: int, form: str = "A"
) -> np.ndarray:
    """Form A: (1/k) sum_{j<k} s_j <f - mean, v_j>^2; form B: (1/k) sum_{j<k} s_j <f - mean, v_j> (unsigned)."""
    projections = (features.astype(np.float64) - mean) @ vt[:k].T
    if form == "B":
        return (projections * s[:k]).sum(1) / k
    return (projections**2 * s[:k]).sum(1) / k


def top_singular(features: np.ndarray, max_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, top right singular vectors [k, d], singular values [k]) of the centred features."""
    f = features.astype(np.float64)
    mean = f.mean(0)
    _, s, vt = np.linalg.svd(f - mean, full_matrices=False)
    return mean, vt[:max_k], s[:max_k]


class SAFTScorer:
    """Singular-subspace outlier score over the candidates.

    Args:
        validation: optional rows with prompt, response and label (harmful/unsafe/compliance vs benign/safe).
        layer, pooling, k: fix any of them; unset ones are searched on validation (with the form and sign), else
            take the defaults (form A, layer = half the depth, mean response state, k = 1).
        max_k: largest k searched.
    """

    name = "saft"
    needs_prompt = True
    transductive = True

    def __init__(
        self,
        validation: Dataset | None = None,
        layer: int | None = None,
        pooling: str | None = None,
        k: int | None = None,
        max_k: int = 10,
    ):
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"safety_saft_pooling: got {pooling!r}; allowed: {', '.join(POOLINGS)}.")
        if k is not None and k < 1:
            raise ValueError(f"safety_saft_k: must be >= 1, got {k}.")
        self.layer, self.pooling, self.k, self.max_k = layer, pooling, k, max(max_k, k or 1)
        self.validation_pairs, self.validation_labels = _validation_rows(validation) if validation else ([], None)
        self.num_layers: int | None = None
        self.validation_features_ = None
        self.choice_: dict[str, Any] = {}

    @property
    def supervised(self) -> bool:
        return self.validation_labels is not None

    def fit(self, context: ScoringContext) -> SAFTScorer:
        self.num_layers = context.num_layers
        if self.layer is not None and self.layer > context.num_layers:
            raise ValueError(f"safety_saft_layer: {self.layer} exceeds the model's {context.num_layers} layers.")
        if self.supervised:
            self.validation_features_ = context.hidden_states(
                self.validation_pairs, self.candidate_request(), "SAFT validation"
            )
        return self

    def candidate_request(self) -> FeatureRequest:
        if self.num_layers is None:
            raise RuntimeError("SAFTScorer is not fitted; call fit() first.")
        if self.layer is not None:
            layers = {self.layer}
        elif self.supervised:
            step = max(1, self.num_layers // 10)
            layers = set(range(step, self.num_layers + 1, step))
        else:
            layers = {max(1, round(DEFAULT_DEPTH_FRACTION * self.num_layers))}
        if self.pooling is not None:
            poolings = {self.pooling}
        elif self.supervised:
            poolings = set(SEARCHED_POOLINGS)
        else:
            poolings = {DEFAULT_POOLING}
        return FeatureRequest(frozenset(layers), frozenset(poolings))

    def score(self, candidates: CandidateFeatures) -> np.ndarray:
        """Scores for all candidates at once (transductive; higher = riskier)."""
        request = self.candidate_request()
        best: tuple | None = None
        for layer in sorted(request.layers):
            for pooling in sorted(request.poolings):
                mean, vt, s = top_singular(candidates.hidden.get(layer, pooling), self.max_k)
                if not self.supervised:
                    best = (None, "A", layer, pooling, min(self.k or DEFAULT_K, len(s)), 1, mean, vt, s)
                    continue
                validation = self.validation_features_.get(layer, pooling)
                for form in FORMS:
                    for k in [self.k] if self.k is not None else range(1, len(s) + 1):
                        auroc = _auroc(self.validation_labels, subspace_score(validation, mean, vt, s, k, form))
                        sign = 1 if auroc >= 0.5 else -1
                        quality = max(auroc, 1 - auroc)
                        if best is None or quality > best[0]:
                            best = (quality, form, layer, pooling, k, sign, mean, vt, s)
        quality, form, layer, pooling, k, sign, mean, vt, s = best
        self.choice_ = {"form": form, "layer": layer, "pooling": pooling, "k": k, "sign": sign,
                        "selection": "validation AUROC" if self.supervised else "unsupervised default",
                        "validation_auroc": quality, "validation_rows": len(self.validation_pairs)}  # fmt: skip
        return sign * subspace_score(candidates.hidden.get(layer, pooling), mean, vt, s, k, form)

    def describe(self) -> dict[str, Any]:
        return dict(self.choice_) or {"selection": "not scored yet"}


def _validation_rows(validation: Dataset) -> tuple[list, np.ndarray]:
    missing = {"prompt", "response", "label"} - set(validation.column_names)
    if missing:
        raise ValueError(
            f"safety_validation_dataset: missing column(s) {sorted(missing)}; needs prompt, response, label."
        )
    pairs, labels = [], []
    for row in validation:
        label = str(row["label"]).strip().lower()
        if label in _HARMFUL or label in _BENIGN:
            pairs.append(chat_pair(row["prompt"], row["response"]))
            labels.append(label in _HARMFUL)
    labels = np.array(labels, dtype=bool)
    if labels.sum() < MIN_VALIDATION_PER_CLASS or (~labels).sum() < MIN_VALIDATION_PER_CLASS:
        raise ValueError(
            f"safety_validation_dataset: needs at least {MIN_VALIDATION_PER_CLASS} harmful and "
            f"{MIN_VALIDATION_PER_CLASS} benign rows (labels harmful/unsafe/compliance vs benign/safe); found "
            f"{int(labels.sum())} and {int((~labels).sum())}."
        )
    return pairs, labels


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))
