"""Baseline scorers: random, reference similarity, and an external classifier (a moderation model you plug in)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from datasets import Dataset

from ..data import chat_pair
from .datashield import compliance_aware_score
from .features import FeatureRequest

if TYPE_CHECKING:
    from .pipeline import CandidateFeatures, ScoringContext

# Reference labels of a harmful completion (a harmful request answered) and of a benign one; shared with FIHS's
# `nll` and `nll_contrast` proxies.
HARMFUL_COMPLETION_LABELS = frozenset({"compliance", "harmful_response", "harmful", "unsafe"})
BENIGN_COMPLETION_LABELS = frozenset({"benign", "safe", "safe_response"})
MIN_REFERENCE = 4


class RandomScorer:
    """Uniform random scores, seeded and keyed by `sample_idx` (identical on every rank): the floor to beat."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, context: ScoringContext) -> RandomScorer:
        return self

    def candidate_request(self) -> None:
        return None

    def score(self, candidates: CandidateFeatures) -> np.ndarray:
        idx = candidates.sample_idx
        if len(idx) == 0:
            return np.zeros(0)
        return np.random.default_rng(self.seed).random(int(idx.max()) + 1)[idx]

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed}


class ReferenceSimilarityScorer:
    """cos(sample, harmful reference centroid) - cos(sample, contrast centroid) on mean response states.

    Harmful references are the reference rows labelled compliance / harmful_response; the contrast is the benign rows
    (label benign / safe) when the reference has at least 4, else the refusals. Features are centred on the mean of
    all reference responses, at the layer where the two reference groups separate best (CAS, as in DataShield)
    unless `layer` is given.
    """

    name = "ref_similarity"
    needs_prompt = True

    def __init__(self, reference: Dataset, layer: int | None = None):
        groups: dict[str, list] = {"harmful": [], "benign": [], "refusal": []}
        for row in reference:
            label = str(row.get("label", "")).strip().lower()
            if label in HARMFUL_COMPLETION_LABELS:
                label = "harmful"
            elif label in BENIGN_COMPLETION_LABELS:
                label = "benign"
            if label in groups:
                groups[label].append(chat_pair(row["prompt"], row["response"]))
        self.contrast_label = "benign" if len(groups["benign"]) >= MIN_REFERENCE else "refusal"
        self.harmful, self.contrast = groups["harmful"], groups[self.contrast_label]
        if len(self.harmful) < MIN_REFERENCE or len(self.contrast) < MIN_REFERENCE:
            raise ValueError(
                f"safety_reference_dataset: ref_similarity needs at least {MIN_REFERENCE} harmful (compliance) and "
                f"{MIN_REFERENCE} benign or refusal responses; found {len(self.harmful)} and {len(self.contrast)}."
            )
        self.layer = layer
        self.layer_: int | None = None
        self.center_ = self.harmful_centroid_ = self.contrast_centroid_ = None

    def fit(self, context: ScoringContext) -> ReferenceSimilarityScorer:
        layers = range(1, context.num_layers + 1) if self.layer is None else [self.layer]
        request = FeatureRequest(frozenset(layers), frozenset({"response_mean"}))
        harmful = context.hidden_states(self.harmful, request, "ref_similarity reference (harmful)")
        contrast = context.hidden_states(self.contrast, request, f"ref_similarity reference ({self.contrast_label})")
        if self.layer is None:
            cas = {la: compliance_aware_score(contrast.get(la, "response_mean"), harmful.get(la, "response_mean"))
                   for la in layers}  # fmt: skip
            self.layer_ = max(layers, key=lambda la: (cas[la], -la))
        else:
            self.layer_ = self.layer
        h = harmful.get(self.layer_, "response_mean").astype(np.float64)
        c = contrast.get(self.layer_, "response_mean").astype(np.float64)
        self.center_ = np.concatenate([h, c]).mean(0)
        self.harmful_centroid_ = (h - self.center_).mean(0)
        self.contrast_centroid_ = (c - self.center_).mean(0)
        return self

    def candidate_request(self) -> FeatureRequest:
        return FeatureRequest(frozenset({self.layer_}), frozenset({"response_mean"}))

    def score(self, candidates: CandidateFeatures) -> np.ndarray:
        f = candidates.hidden.get(self.layer_, "response_mean").astype(np.float64) - self.center_
        return _cosine(f, self.harmful_centroid_) - _cosine(f, self.contrast_centroid_)

    def describe(self) -> dict[str, Any]:
        counts = {"harmful": len(self.harmful), self.contrast_label: len(self.contrast)}
        return {"layer": self.layer_, "contrast": self.contrast_label, "reference_counts": counts}


class ClassifierScorer:
    """An external safety classifier: a callable, or a Hugging Face text-classification model id.

    A callable gets (prompts, responses) lists and returns one unsafe probability (or any riskier-is-higher score)
    per pair. A model id is run as a `text-classification` pipeline on "prompt\\nresponse"; the score is the
    probability of the first label whose name contains one of `unsafe_labels`.
    """

    name = "classifier"
    needs_texts = True

    def __init__(
        self,
        classifier: str | Callable[[list[str], list[str]], Sequence[float]],
        unsafe_labels: Sequence[str] = ("unsafe", "harmful", "toxic", "label_1"),
        batch_size: int = 16,
    ):
        if not (callable(classifier) or (isinstance(classifier, str) and classifier.strip())):
            raise ValueError("safety_classifier: give a Hugging Face model id or a callable(prompts, responses).")
        self.classifier = classifier
        self.unsafe_labels = tuple(label.lower() for label in unsafe_labels)
        self.batch_size = batch_size
        self._pipeline = None

    def fit(self, context: ScoringContext) -> ClassifierScorer:
        return self

    def candidate_request(self) -> None:
        return None

    def score(self, candidates: CandidateFeatures) -> np.ndarray:
        prompts = [p for p, _ in candidates.texts]
        responses = [r for _, r in candidates.texts]
        if callable(self.classifier):
            scores = np.asarray(self.classifier(prompts, responses), dtype=np.float64)
        else:
            scores = self._run_model([f"{p}\n{r}" for p, r in candidates.texts])
        if scores.shape != (len(prompts),):
            raise ValueError(f"safety_classifier returned {scores.shape} scores for {len(prompts)} samples.")
        return scores

    def _run_model(self, texts: list[str]) -> np.ndarray:
        if self._pipeline is None:
            from transformers import pipeline

            self._pipeline = pipeline("text-classification", model=self.classifier, top_k=None, truncation=True)
        out = []
        for result in self._pipeline(texts, batch_size=self.batch_size):
            match = [r["score"] for r in result if any(u in r["label"].lower() for u in self.unsafe_labels)]
            if not match:
                labels = [r["label"] for r in result]
                raise ValueError(
                    f"safety_classifier: none of the labels {labels} names an unsafe class "
                    f"(looked for {list(self.unsafe_labels)})."
                )
            out.append(match[0])
        return np.asarray(out, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        name = self.classifier if isinstance(self.classifier, str) else getattr(self.classifier, "__name__", "callable")
        return {"classifier": name}

    def __getstate__(self):  # the loaded pipeline is not sent to other ranks; each loads its own
        return {**self.__dict__, "_pipeline": None}


def _cosine(rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(vector)
    return np.divide(rows @ vector, norms, out=np.zeros(len(rows)), where=norms > 0)
