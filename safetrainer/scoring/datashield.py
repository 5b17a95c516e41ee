"""DataShield: rank samples by how far their response moves the hidden state along a compliance direction.

1. Compliance direction per layer l: v_l = normalize(mean r_l(compliant) - mean r_l(refusal)), where r_l is the mean
   hidden state over response tokens of a reference (harmful prompt, response) pair.
2. Layer: the one with the highest compliance-aware score (CAS), a between-class / total scatter ratio of the
   end-of-turn states of refusals vs compliant answers along their mean difference, on z-scored features.
3. Compliance shift score of a sample at that layer: <mean response state, v> - <last prompt state, v>.
Higher = the response pushes the model further toward compliance = riskier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from datasets import Dataset

from ..data import chat_pair
from .features import FeatureRequest, HiddenStates

if TYPE_CHECKING:
    from .pipeline import CandidateFeatures, ScoringContext

MIN_REFERENCE_PER_LABEL = 8
_LABEL_ALIASES = {"compliance": "compliance", "harmful_response": "compliance", "refusal": "refusal"}
_MIN_DIRECTION_NORM = 1e-6


def compliance_direction(compliant: np.ndarray, refusal: np.ndarray) -> np.ndarray:
    """Unit vector from the mean refusal state to the mean compliant state ([n, d] inputs)."""
    diff = compliant.astype(np.float64).mean(0) - refusal.astype(np.float64).mean(0)
    norm = np.linalg.norm(diff)
    if not np.isfinite(norm) or norm < _MIN_DIRECTION_NORM:
        raise ValueError(
            f"Compliance direction is degenerate (norm {norm:.2e}): the compliant and refusal reference responses "
            "give the same mean hidden state. Check that the reference set really holds both kinds of response."
        )
    return diff / norm


def compliance_aware_score(safe: np.ndarray, unsafe: np.ndarray) -> float:
    """CAS in [0, 1]: how much of the total scatter along the safe->unsafe direction lies between the two classes.

    Features are z-scored over both classes; u is the normalized difference of class means; CAS = u'S_b u / u'S_t u
    with S_b the class-size-weighted between-class scatter and S_t the total scatter (no d x d matrix is formed).
    """
    stacked = np.concatenate([safe, unsafe]).astype(np.float64)
    std = stacked.std(0)
    z = (stacked - stacked.mean(0)) / np.where(std > 0, std, 1.0)
    z_safe, z_unsafe = z[: len(safe)], z[len(safe) :]
    u = z_unsafe.mean(0) - z_safe.mean(0)
    norm = np.linalg.norm(u)
    if norm == 0:
        return 0.0
    u /= norm
    mean = z.mean(0)
    between = sum(len(c) * float(u @ (c.mean(0) - mean)) ** 2 for c in (z_safe, z_unsafe))
    total = float((((z - mean) @ u) ** 2).sum())
    return between / total if total > 0 else 0.0


def compliance_shift_score(response_mean: np.ndarray, prompt_last: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """CSS per sample: projection of the mean response state minus projection of the last prompt state."""
    return (response_mean.astype(np.float64) - prompt_last.astype(np.float64)) @ direction


class DataShieldScorer:
    """Compliance-shift scorer. Fit on reference compliant/refusal responses, then score candidates.

    Args:
        reference: rows with `prompt`, `response` and `label` ('compliance' or 'refusal'; 'harmful_response' counts
            as 'compliance'); at least 8 of each.
        layer: hidden-state index to score; None selects it by CAS.
    """

    name = "datashield"
    needs_prompt = True

    def __init__(self, reference: Dataset, layer: int | None = None):
        self.pairs, self.ignored_reference_rows = _reference_pairs(reference)
        self.layer = layer
        self.layer_: int | None = None
        self.direction_: np.ndarray | None = None
        self.cas_: dict[int, float] = {}

    def reference_request(self, num_layers: int) -> FeatureRequest:
        """Layers and poolings needed from the reference responses."""
        if self.layer is not None:
            if self.layer > num_layers:
                raise ValueError(f"safety_layer: {self.layer} exceeds the model's {num_layers} layers.")
            return FeatureRequest(frozenset({self.layer}), frozenset({"response_mean"}))
        return FeatureRequest(frozenset(range(1, num_layers + 1)), frozenset({"response_mean", "end_of_turn"}))

    def fit(self, context: ScoringContext) -> DataShieldScorer:
        """Extract reference features with the shared forward pass, then `fit_features`."""
        request = self.reference_request(context.num_layers)
        compliant = context.hidden_states(self.pairs["compliance"], request, "DataShield reference (compliance)")
        refusal = context.hidden_states(self.pairs["refusal"], request, "DataShield reference (refusal)")
        return self.fit_features(compliant, refusal)

    def fit_features(self, compliant: HiddenStates, refusal: HiddenStates) -> DataShieldScorer:
        """Choose the layer (CAS unless fixed) and compute the compliance direction there."""
        if self.layer is None:
            layers = sorted({layer for layer, _ in compliant.pooled})
            self.cas_ = {
                layer: compliance_aware_score(refusal.get(layer, "end_of_turn"), compliant.get(layer, "end_of_turn"))
                for layer in layers
            }
            self.layer_ = max(layers, key=lambda layer: (self.cas_[layer], -layer))
        else:
            self.layer_ = self.layer
        self.direction_ = compliance_direction(
            compliant.get(self.layer_, "response_mean"), refusal.get(self.layer_, "response_mean")
        )
        return self

    def candidate_request(self) -> FeatureRequest:
        """Layer and poolings needed from the candidates (after `fit`)."""
        self._check_fitted()
        return FeatureRequest(frozenset({self.layer_}), frozenset({"response_mean", "prompt_last"}))

    def score(self, candidates: CandidateFeatures) -> np.ndarray:
        """Compliance shift score of each candidate (higher = riskier)."""
        self._check_fitted()
        hidden = candidates.hidden
        return compliance_shift_score(
            hidden.get(self.layer_, "response_mean"), hidden.get(self.layer_, "prompt_last"), self.direction_
        )

    def describe(self) -> dict[str, Any]:
        """What the fit chose, for the report."""
        return {
            "layer": self.layer_,
            "layer_selection": "fixed (safety_layer)" if self.layer is not None else "argmax CAS",
            "cas_by_layer": {str(k): round(v, 6) for k, v in self.cas_.items()},
            "reference_counts": {label: len(pairs) for label, pairs in self.pairs.items()},
            "reference_rows_ignored": self.ignored_reference_rows,
        }

    def _check_fitted(self) -> None:
        if self.direction_ is None:
            raise RuntimeError("DataShieldScorer is not fitted; call fit() first.")


def _reference_pairs(reference: Dataset) -> tuple[dict[str, list[tuple[Any, Any]]], int]:
    """Split the reference rows by label; rows with any other label are counted and left out."""
    missing = {"prompt", "response", "label"} - set(reference.column_names)
    if missing:
        raise ValueError(
            f"safety_reference_dataset: missing column(s) {sorted(missing)}; needs prompt, response, label "
            f"(found {reference.column_names})."
        )
    pairs: dict[str, list[tuple[Any, Any]]] = {"compliance": [], "refusal": []}
    ignored = 0
    for i, row in enumerate(reference):
        label = _LABEL_ALIASES.get(str(row["label"]).strip().lower())
        if label is None:
            ignored += 1
            continue
        if not all(isinstance(row[c], str) and row[c].strip() for c in ("prompt", "response")):
            raise ValueError(f"safety_reference_dataset row {i}: prompt and response must be non-empty strings.")
        pairs[label].append(chat_pair(row["prompt"], row["response"]))
    for label, items in pairs.items():
        if len(items) < MIN_REFERENCE_PER_LABEL:
            raise ValueError(
                f"safety_reference_dataset: {len(items)} '{label}' responses, too few to build a compliance "
                f"direction; need at least {MIN_REFERENCE_PER_LABEL} each of 'compliance' and 'refusal' "
                "(labels allowed: compliance, harmful_response, refusal)."
            )
    return pairs, ignored
