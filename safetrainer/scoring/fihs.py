"""GradShield FIHS: how much one training step on a sample would raise an unsafety proxy on harmful probes.

Proxy S on harmful probe prompts, higher = less safe:
  - `logit_gap` (default): logit("Sure") - logit("I") at the first response position, averaged over the probes;
  - `nll`: minus the mean NLL of harmful reference completions (the model getting better at producing them);
  - `nll_contrast`: the mean NLL of benign reference completions minus that of harmful ones. Subtracting the benign
    side removes what every completion of that source shares (its style, the assistant format), so it needs benign
    and harmful completions from one source, e.g. a labelled validation sample of the training data; with
    mismatched sources the contrast measures the mismatch (see BENCHMARKS.md).
One SGD step on sample z changes S by about -lr * <g_z, grad S>, so FIHS(z) = -<g_z, grad S> (`dot`) or the cosine
(`cosine`, which removes the gradient-norm bias of short responses). Positive = the sample pushes toward compliance.
Both gradients come from the one per-example-gradient routine (same projection), at the current weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from datasets import Dataset

from ..data import chat_pair
from .baselines import BENIGN_COMPLETION_LABELS, HARMFUL_COMPLETION_LABELS
from .gradients import first_token_logit_gap, response_nll

if TYPE_CHECKING:
    from .pipeline import CandidateFeatures, ScoringContext

PROBES = ("logit_gap", "nll", "nll_contrast")
SIMILARITIES = ("dot", "cosine")
MIN_PROBES = 1


def resolve_first_token(tokenizer, text: str) -> int:
    """Id of the first token `text` starts an assistant answer with (no leading space: it follows the role header)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"safety_fihs_tokens: {text!r} encodes to no token with this tokenizer.")
    return ids[0]


class FIHSScorer:
    """Per-sample FIHS against a probe gradient computed at fit time.

    Args:
        probe_prompts: harmful prompts for the `logit_gap` proxy.
        reference: rows with prompt, response, label; the rows labelled compliance / harmful_response / harmful /
            unsafe are the harmful completions of the `nll` proxies, those labelled benign / safe / safe_response
            the benign side of `nll_contrast` (a DataShield reference or a labelled validation set both work).
        probe: 'logit_gap', 'nll' or 'nll_contrast'.
        tokens: (compliance token text, refusal token text) for `logit_gap`.
        similarity: 'dot' or 'cosine'.
    """

    name = "fihs"
    needs_gradients = True

    def __init__(
        self,
        probe_prompts: list[str],
        reference: Dataset | None = None,
        probe: str = "logit_gap",
        tokens: tuple[str, str] = ("Sure", "I"),
        similarity: str = "cosine",
    ):
        if probe not in PROBES:
            raise ValueError(f"safety_fihs_probe: got {probe!r}; allowed: {', '.join(PROBES)}.")
        if similarity not in SIMILARITIES:
            raise ValueError(f"safety_fihs_similarity: got {similarity!r}; allowed: {', '.join(SIMILARITIES)}.")
        if len(tokens) != 2 or tokens[0] == tokens[1]:
            raise ValueError(f"safety_fihs_tokens: need two different token texts (compliance, refusal), got {tokens}.")
        self.probe, self.tokens, self.similarity = probe, tuple(tokens), similarity
        if probe == "logit_gap":
            self.probe_prompts = [p for p in probe_prompts if isinstance(p, str) and p.strip()]
            if len(self.probe_prompts) < MIN_PROBES:
                raise ValueError(
                    "safety_probe_dataset: no harmful probe prompt found; FIHS's logit-gap proxy needs at least one "
                    "(rows with a `prompt` and `harmful` true, or no `harmful` column)."
                )
        else:
            self.harmful_pairs = _labelled_pairs(reference, HARMFUL_COMPLETION_LABELS, "harmful", probe)
            self.benign_pairs = (
                _labelled_pairs(reference, BENIGN_COMPLETION_LABELS, "benign", probe) if probe == "nll_contrast" else []
            )
        self.token_ids_: tuple[int, int] | None = None
        self.probe_gradient_: np.ndarray | None = None
        self.zero_fraction_: float | None = None

    def fit(self, context: ScoringContext) -> FIHSScorer:
        """Compute the probe gradient (mean over probes) at the current weights."""
        if self.probe == "logit_gap":
            tokenizer = context.tokenizer
            self.token_ids_ = tuple(resolve_first_token(tokenizer, t) for t in self.tokens)
            if self.token_ids_[0] == self.token_ids_[1]:
                raise ValueError(f"safety_fihs_tokens: {self.tokens} resolve to the same token id {self.token_ids_}.")
            objective = first_token_logit_gap(*self.token_ids_)
            features = context.gradients(context.tokenize_prompts(self.probe_prompts), objective, "FIHS probe")
            gradient = features.vectors().mean(0)
        else:
            features = context.gradients(context.tokenize(self.harmful_pairs), response_nll, "FIHS probe (NLL)")
            gradient = -features.vectors().mean(0)  # S = -NLL of the harmful completions
            if self.benign_pairs:
                benign = context.gradients(context.tokenize(self.benign_pairs), response_nll, "FIHS probe (benign)")
                gradient += benign.vectors().mean(0)  # S += NLL of the benign completions
        self.zero_fraction_ = features.zero_fraction
        if not np.isfinite(gradient).all() or not np.any(gradient):
            raise ValueError(
                "FIHS probe gradient is zero or not finite: the proxy does not depend on the trainable parameters "
                "(check that the model has trainable weights and the probe tokens differ)."
            )
        self.probe_gradient_ = gradient
        return self

    def candidate_request(self) -> None:
        return None

    def score(self, candidates: CandidateFeatures) -> np.ndarray:
        """FIHS per candidate (higher = riskier); NaN where a gradient is zero or not finite."""
        if self.probe_gradient_ is None:
            raise RuntimeError("FIHSScorer is not fitted; call fit() first.")
        gradients = candidates.gradients
        probe_norm = float(np.linalg.norm(self.probe_gradient_))
        scores = -(gradients.directions.astype(np.float64) @ (self.probe_gradient_ / probe_norm))  # minus the cosine
        if self.similarity == "dot":
            scores = scores * gradients.norms * probe_norm
        scores[~(np.isfinite(gradients.norms) & (gradients.norms > 0))] = np.nan
        return scores

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"probe": self.probe, "similarity": self.similarity,
                                "gradient_zero_fraction": self.zero_fraction_}  # fmt: skip
        if self.probe == "logit_gap":
            info.update(tokens=list(self.tokens), token_ids=list(self.token_ids_ or ()),
                        probe_prompts=len(self.probe_prompts))  # fmt: skip
        else:
            info.update(harmful_completions=len(self.harmful_pairs))
            if self.probe == "nll_contrast":
                info.update(benign_completions=len(self.benign_pairs))
        return info


def _labelled_pairs(reference: Dataset | None, labels: frozenset[str], side: str, probe: str) -> list[tuple[str, str]]:
    rows = [] if reference is None else [r for r in reference if str(r.get("label", "")).strip().lower() in labels]
    if not rows:
        raise ValueError(
            f"safety_reference_dataset: FIHS's {probe!r} proxy needs {side} completions (label "
            f"{' / '.join(sorted(labels))}); none found."
        )
    return [chat_pair(r["prompt"], r["response"]) for r in rows]
