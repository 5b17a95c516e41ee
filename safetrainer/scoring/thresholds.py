"""Threshold policies: turn scores (higher = riskier) into keep/drop decisions. Shared by every scorer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ThresholdDecision:
    """`keep[i]` for each score; `threshold` is the lowest dropped score (inf when nothing is dropped)."""

    keep: np.ndarray
    threshold: float
    policy: str
    detail: dict = field(default_factory=dict)

    @property
    def num_dropped(self) -> int:
        return int((~self.keep).sum())


def decide(
    scores: np.ndarray,
    policy: str,
    value: float,
    sample_idx: np.ndarray | None = None,
    gmm_margin: float = 10.0,
    seed: int = 0,
) -> ThresholdDecision:
    """Apply a threshold policy to finite scores; non-finite scores (unscorable samples) are always kept.

    - `top_fraction`: drop the floor(value * n) highest scores.
    - `top_k`: drop the `value` highest scores (all of them when fewer).
    - `absolute`: drop every score >= value.
    - `adaptive`: GradShield's rule, no contamination rate needed (`value` is unused); see `adaptive_threshold`.

    Ties in the ranked policies are broken by `sample_idx` (lower first), so the decision is deterministic.
    """
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    n = int(finite.sum())
    if policy == "absolute":
        drop = finite & (scores >= value)
    elif policy == "adaptive":
        threshold, detail = adaptive_threshold(scores[finite], gmm_margin, seed)
        drop = finite & (scores > threshold)
        return ThresholdDecision(keep=~drop, threshold=threshold, policy=f"adaptive ({detail['rule']})", detail=detail)
    elif policy in ("top_fraction", "top_k"):
        k = math.floor(value * n) if policy == "top_fraction" else min(int(value), n)
        ties = np.arange(len(scores)) if sample_idx is None else np.asarray(sample_idx)
        # lexsort sorts by the last key first: highest score, then lowest sample_idx.
        ranked = np.lexsort((ties, -np.where(finite, scores, -np.inf)))
        drop = np.zeros(len(scores), dtype=bool)
        drop[ranked[:k]] = True
    else:
        raise ValueError(f"Unknown threshold policy {policy!r}; allowed: top_fraction, top_k, absolute, adaptive.")
    threshold = float(scores[drop].min()) if drop.any() else math.inf
    return ThresholdDecision(keep=~drop, threshold=threshold, policy=f"{policy}={value:g}")


MIN_ADAPTIVE_SAMPLES = 10


def adaptive_threshold(scores: np.ndarray, margin: float = 10.0, seed: int = 0) -> tuple[float, dict]:
    """GradShield's adaptive cut: one Gaussian vs a two-component mixture, by log-likelihood ratio.

    Both models are fitted to the scores winsorized at the 1st/99th percentiles (a few outliers would otherwise get
    a component of their own). When the mixture's total log-likelihood beats the single Gaussian's by more than
    `margin`, the scores are bimodal and the cut is the largest score assigned to the lower-mean component;
    otherwise it is mean + 2 std. Samples scoring above the cut are dropped.

    Fallbacks, recorded in `detail["rule"]`: fewer than 10 finite scores or zero spread keep everything
    (threshold inf); a mixture that fails to fit falls back to mean + 2 std.
    """
    from sklearn.mixture import GaussianMixture

    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < MIN_ADAPTIVE_SAMPLES or np.ptp(scores) == 0:
        return math.inf, {"rule": f"kept all: {len(scores)} scores, too few or constant to fit"}
    low, high = np.percentile(scores, [1, 99])
    x = np.clip(scores, low, high).reshape(-1, 1)
    mean, std = float(x.mean()), float(x.std())
    gauss_loglik = float(np.sum(-0.5 * ((x - mean) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))))
    fallback = mean + 2 * std
    try:
        gmm = GaussianMixture(2, n_init=5, random_state=seed).fit(x)
    except (ValueError, np.linalg.LinAlgError) as error:
        return fallback, {"rule": f"mean+2std (mixture failed to fit: {error})", "mean": mean, "std": std}
    ratio = float(gmm.score(x) * len(x)) - gauss_loglik
    detail = {"mean": mean, "std": std, "log_likelihood_ratio": ratio, "margin": margin,
              "component_means": sorted(float(m) for m in gmm.means_.ravel())}  # fmt: skip
    if ratio > margin:
        lower = int(np.argmin(gmm.means_.ravel()))
        in_lower = gmm.predict(x) == lower
        if in_lower.any():
            return float(scores[in_lower].max()), {**detail, "rule": "bimodal: top of the lower component"}
    return fallback, {**detail, "rule": "unimodal: mean+2std"}
