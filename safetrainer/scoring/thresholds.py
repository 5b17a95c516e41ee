"""Threshold policies: turn scores (higher = riskier) into keep/drop decisions. Shared by every scorer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ThresholdDecision:
    """`keep[i]` for each score; `threshold` is the lowest dropped score (inf when nothing is dropped)."""

    keep: np.ndarray
    threshold: float
    policy: str

    @property
    def num_dropped(self) -> int:
        return int((~self.keep).sum())


def decide(scores: np.ndarray, policy: str, value: float, sample_idx: np.ndarray | None = None) -> ThresholdDecision:
    """Apply a threshold policy to finite scores; non-finite scores (unscorable samples) are always kept.

    - `top_fraction`: drop the floor(value * n) highest scores.
    - `top_k`: drop the `value` highest scores (all of them when fewer).
    - `absolute`: drop every score >= value.

    Ties in the ranked policies are broken by `sample_idx` (lower first), so the decision is deterministic.
    """
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    n = int(finite.sum())
    if policy == "absolute":
        drop = finite & (scores >= value)
    elif policy in ("top_fraction", "top_k"):
        k = math.floor(value * n) if policy == "top_fraction" else min(int(value), n)
        ties = np.arange(len(scores)) if sample_idx is None else np.asarray(sample_idx)
        # lexsort sorts by the last key first: highest score, then lowest sample_idx.
        ranked = np.lexsort((ties, -np.where(finite, scores, -np.inf)))
        drop = np.zeros(len(scores), dtype=bool)
        drop[ranked[:k]] = True
    else:
        raise ValueError(f"Unknown threshold policy {policy!r}; allowed: top_fraction, top_k, absolute.")
    threshold = float(scores[drop].min()) if drop.any() else math.inf
    return ThresholdDecision(keep=~drop, threshold=threshold, policy=f"{policy}={value:g}")
