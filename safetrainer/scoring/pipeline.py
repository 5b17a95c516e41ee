"""The filter pass: fit scorers on reference data, score every candidate in one forward pass, decide once.

Under several processes each rank scores a shard of the candidates; scores are gathered, deduplicated by
`sample_idx`, decided on rank 0 and the decision is broadcast, so every rank holds the identical kept set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ..data import TokenizedPair, tokenize_pair
from ..distributed import broadcast_object, gather_objects, rank_and_world_size
from .features import FeatureRequest, HiddenStateExtractor, HiddenStates, num_layers
from .thresholds import ThresholdDecision, decide


@dataclass
class ScoringResult:
    """Scores and the decision for every scored sample, rows sorted by `sample_idx`."""

    sample_idx: np.ndarray
    num_tokens: np.ndarray
    scores: dict[str, np.ndarray]
    decision: ThresholdDecision
    decided_on: str
    scorer_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    world_size: int = 1


def score_and_decide(
    model: nn.Module,
    tokenizer,
    candidates: Sequence[TokenizedPair],
    scorers: Sequence[Any],
    policy: str,
    value: float,
    batch_size: int = 8,
    max_length: int | None = None,
    show_progress: bool = True,
) -> ScoringResult:
    """Fit `scorers`, score `candidates` and apply the threshold policy to the first scorer's scores."""
    rank, world_size = rank_and_world_size()
    special_ids = [i for i in tokenizer.all_special_ids if i is not None]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    extractor = HiddenStateExtractor(model, pad_id, special_ids, batch_size, show_progress and rank == 0)
    depth = num_layers(model)

    def extract_pairs(pairs, request: FeatureRequest, desc: str) -> HiddenStates:
        examples = [tokenize_pair(tokenizer, p, c, i, max_length) for i, (p, c) in enumerate(pairs)]
        return extractor([e for e in examples if e is not None], request, desc)

    start = time.perf_counter()
    fitted = [scorer.fit(extract_pairs, depth) for scorer in scorers]
    # Fitting is deterministic, but rank 0's fit is what every rank scores with, so shards can never disagree.
    fitted = broadcast_object(fitted)
    fit_seconds = time.perf_counter() - start

    request = fitted[0].candidate_request()
    for scorer in fitted[1:]:
        request = request.union(scorer.candidate_request())
    start = time.perf_counter()
    shard = _shard(candidates, rank, world_size)
    features = extractor(shard, request, "Scoring samples")
    local = (features.sample_idx, features.num_tokens, {s.name: s.score(features) for s in fitted})
    sample_idx, num_tokens, scores = _merge(gather_objects(local))
    score_seconds = time.perf_counter() - start

    decided_on = fitted[0].name
    decision = decide(scores[decided_on], policy, value, sample_idx) if rank == 0 else None
    decision = broadcast_object(decision)
    return ScoringResult(
        sample_idx=sample_idx,
        num_tokens=num_tokens,
        scores=scores,
        decision=decision,
        decided_on=decided_on,
        scorer_info={s.name: s.describe() for s in fitted},
        timings={
            "fit_seconds": fit_seconds,
            "score_seconds": score_seconds,
            "seconds_per_1000_samples": 1000 * score_seconds / max(len(candidates), 1),
        },
        world_size=world_size,
    )


def _shard(examples: Sequence[TokenizedPair], rank: int, world_size: int) -> list[TokenizedPair]:
    """Rank `rank`'s share, length-balanced; every rank gets the same count (padded with repeats, deduped later)."""
    if world_size == 1:
        return list(examples)
    by_length = sorted(examples, key=lambda e: len(e.input_ids))
    shard = by_length[rank::world_size]
    per_rank = -(-len(examples) // world_size)
    return shard + [by_length[0]] * (per_rank - len(shard))


def _merge(parts: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]):
    """Concatenate per-rank results, keep one row per sample_idx, sort by sample_idx."""
    sample_idx = np.concatenate([p[0] for p in parts])
    num_tokens = np.concatenate([p[1] for p in parts])
    names = list(parts[0][2])
    scores = {name: np.concatenate([p[2][name] for p in parts]) for name in names}
    unique_idx, first = np.unique(sample_idx, return_index=True)
    return unique_idx, num_tokens[first], {name: values[first] for name, values in scores.items()}
