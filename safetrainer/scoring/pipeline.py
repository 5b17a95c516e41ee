"""The filter pass: fit scorers on reference data, score every candidate in one forward pass, decide once.

Under several processes each rank scores a shard of the candidates; scores are gathered, deduplicated by
`sample_idx`, decided on rank 0 and the decision is broadcast, so every rank holds the identical kept set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ..data import TokenizedPair, chat_pair, tokenize_pair
from ..distributed import broadcast_object, gather_objects, rank_and_world_size
from .features import FeatureRequest, HiddenStateExtractor, HiddenStates, num_layers
from .gradients import GradientFeatures, Objective, PerExampleGradients, response_nll
from .thresholds import ThresholdDecision, decide


@dataclass
class ScoringContext:
    """What a scorer's `fit` may use: the shared feature routines, bound to the model and tokenizer being trained.

    `hidden_states(pairs, request, desc)` runs the one forward pass; `gradients(examples, objective, desc)` the one
    per-example-gradient routine (projected, seeded, identical for probes and candidates).
    """

    model: nn.Module
    tokenizer: Any
    pad_token_id: int
    num_layers: int
    max_length: int | None
    hidden_states: Callable[[Sequence[tuple[Any, Any]], FeatureRequest, str], HiddenStates]
    gradients: Callable[[Sequence[TokenizedPair], Objective, str], GradientFeatures]
    show_progress: bool = False

    def tokenize(self, pairs: Sequence[tuple[Any, Any]]) -> list[TokenizedPair]:
        """(prompt, completion) pairs as scored sequences; pairs with no response token left are skipped."""
        examples = [tokenize_pair(self.tokenizer, p, c, i, self.max_length) for i, (p, c) in enumerate(pairs)]
        return [e for e in examples if e is not None]

    def tokenize_prompts(self, prompts: Sequence[str]) -> list[TokenizedPair]:
        """User prompts rendered up to the start of the assistant's answer (chat template, generation prompt)."""
        out = []
        for i, prompt in enumerate(prompts):
            pair = tokenize_pair(self.tokenizer, *chat_pair(prompt, "."), i)
            out.append(TokenizedPair(i, pair.input_ids[: pair.prompt_len], pair.prompt_len))
        return out


@dataclass
class CandidateFeatures:
    """What the scorers see of the candidates, rows aligned with `sample_idx`."""

    sample_idx: np.ndarray
    num_tokens: np.ndarray
    hidden: HiddenStates | None = None
    gradients: GradientFeatures | None = None
    texts: list[tuple[str, str]] | None = None
    examples: list[TokenizedPair] | None = None

    def select(self, rows: np.ndarray) -> CandidateFeatures:
        """Row subset (a boolean mask)."""
        kept = np.flatnonzero(rows).tolist()
        return CandidateFeatures(
            self.sample_idx[rows], self.num_tokens[rows],
            None if self.hidden is None else self.hidden.select(rows),
            None if self.gradients is None else self.gradients.select(rows),
            None if self.texts is None else [self.texts[i] for i in kept],
            None if self.examples is None else [self.examples[i] for i in kept],
        )  # fmt: skip


@dataclass
class ScoringResult:
    """Scores and the decision for every scored sample, rows sorted by `sample_idx`.

    `unscorable` maps the sample_idx of each candidate no score could be computed for to the reason (a sequence with
    no prompt/response boundary for a scorer that needs one, hidden states or a gradient that are not finite, a zero
    gradient, a scorer's non-finite output); those samples are in neither `sample_idx` nor `scores`.
    """

    sample_idx: np.ndarray
    num_tokens: np.ndarray
    scores: dict[str, np.ndarray]
    decision: ThresholdDecision
    decided_on: str
    scorer_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    world_size: int = 1
    unscorable: dict[int, str] = field(default_factory=dict)


def score_and_decide(
    model: nn.Module,
    tokenizer,
    candidates: Sequence[TokenizedPair],
    scorers: Sequence[Any],
    policy: str | None,
    value: float,
    batch_size: int = 8,
    max_length: int | None = None,
    show_progress: bool = True,
    ensemble: bool = False,
    projection_dim: int = 8192,
    projection_seed: int = 0,
    gmm_margin: float = 10.0,
    gradient_blocks: int | None = None,
) -> ScoringResult:
    """Fit `scorers`, score `candidates` and apply the threshold policy.

    The decision uses the first scorer's scores, or with `ensemble` (and several scorers) the mean of each scorer's
    percentile rank, reported as score `ensemble`. `policy=None` scores only: every sample is kept (the caller
    decides, e.g. online filtering over scores gathered across re-scores). Candidates that cannot be scored never get
    a score: they are listed in `ScoringResult.unscorable` with the reason, and no other sample's score depends on
    them.
    """
    rank, world_size = rank_and_world_size()
    show = show_progress and rank == 0
    special_ids = [i for i in tokenizer.all_special_ids if i is not None]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    extractor = HiddenStateExtractor(model, pad_id, special_ids, batch_size, show)
    gradient_routine: list[PerExampleGradients] = []

    def gradients(examples, objective, desc: str) -> GradientFeatures:
        if not gradient_routine:  # built on first use: hidden-state-only runs never touch the gradient modules
            gradient_routine.append(
                PerExampleGradients(model, pad_id, projection_dim, projection_seed, batch_size, show, gradient_blocks)
            )
        return gradient_routine[0](examples, objective, desc)

    context = ScoringContext(
        model, tokenizer, pad_id, num_layers(model), max_length,
        lambda pairs, request, desc: extractor(context.tokenize(pairs), request, desc), gradients, show,
    )  # fmt: skip

    timings: dict[str, float] = {}
    fitted = []
    for scorer in scorers:
        start = time.perf_counter()
        fitted.append(scorer.fit(context))
        timings[f"fit_seconds/{scorer.name}"] = time.perf_counter() - start
    # Fitting is deterministic, but rank 0's fit is what every rank scores with, so shards can never disagree.
    fitted = broadcast_object(fitted)
    timings["fit_seconds"] = sum(timings.values())

    start = time.perf_counter()
    unscorable: dict[int, str] = {}
    boundary_scorers = [s.name for s in fitted if getattr(s, "needs_prompt", False)]
    if boundary_scorers:
        why = f"no prompt/response boundary, which {', '.join(boundary_scorers)} compare"
        unscorable = {e.sample_idx: why for e in candidates if e.prompt_len == 0}
        candidates = [e for e in candidates if e.prompt_len > 0]
    shard = _shard(candidates, rank, world_size)
    local = _candidate_features(shard, fitted, extractor, gradients, tokenizer, timings)
    usable, local_unscorable = _usable_rows(local)
    local = local.select(usable)
    local_scores = {s.name: s.score(local) for s in fitted if not getattr(s, "transductive", False)}
    transductive = [s for s in fitted if getattr(s, "transductive", False)]
    # Transductive scorers (SAFT, SEAL) need every candidate at once: gather what they use, score on rank 0.
    shared = None
    if transductive:
        requests = [r for r in (s.candidate_request() for s in transductive) if r is not None]
        keys = {(layer, pooling) for r in requests for layer in r.layers for pooling in r.poolings}
        shared = {
            "hidden": {k: v for k, v in local.hidden.pooled.items() if k in keys} if keys else {},
            "examples": local.examples if any(getattr(s, "needs_examples", False) for s in transductive) else None,
        }
    parts = gather_objects((local.sample_idx, local.num_tokens, local_scores, shared, local_unscorable))
    sample_idx, num_tokens, scores, first = _merge(parts)
    for part in parts:
        unscorable.update(part[4])
    info = {s.name: s.describe() for s in fitted if s not in transductive}
    if transductive:
        found = None
        if rank == 0:
            pooled = {k: np.concatenate([p[3]["hidden"][k] for p in parts])[first] for k in shared["hidden"]}
            merged = CandidateFeatures(sample_idx, num_tokens, HiddenStates(sample_idx, num_tokens, pooled))
            if shared["examples"] is not None:
                merged.examples = [e for p in parts for e in p[3]["examples"]]
                merged.examples = [merged.examples[i] for i in first]
            found = ({s.name: s.score(merged) for s in transductive}, {s.name: s.describe() for s in transductive})
        found = broadcast_object(found)
        scores.update(found[0])
        info.update(found[1])
    scores = {s.name: np.asarray(scores[s.name], dtype=np.float64) for s in fitted}
    info = {s.name: info[s.name] for s in fitted}
    finite = np.ones(len(sample_idx), dtype=bool)
    for name, values in scores.items():
        for i in sample_idx[finite & ~np.isfinite(values)].tolist():
            unscorable[int(i)] = f"{name} score is not finite"
        finite &= np.isfinite(values)
    sample_idx, num_tokens = sample_idx[finite], num_tokens[finite]
    scores = {name: values[finite] for name, values in scores.items()}
    score_seconds = time.perf_counter() - start

    decided_on = fitted[0].name
    if ensemble and len(fitted) > 1:
        scores["ensemble"] = rank_average(list(scores.values()))
        decided_on = "ensemble"
    decision = ThresholdDecision(np.ones(len(sample_idx), dtype=bool), math.inf, "none (scores only)")
    if policy is not None:
        if rank == 0:
            decision = decide(scores[decided_on], policy, value, sample_idx, gmm_margin, projection_seed)
        decision = broadcast_object(decision)
    timings["score_seconds"] = score_seconds
    timings["seconds_per_1000_samples"] = 1000 * score_seconds / max(len(candidates), 1)
    return ScoringResult(
        sample_idx=sample_idx,
        num_tokens=num_tokens,
        scores=scores,
        decision=decision,
        decided_on=decided_on,
        scorer_info=info,
        timings=timings,
        world_size=world_size,
        unscorable=dict(sorted(unscorable.items())),
    )


def rank_average(score_lists: Sequence[np.ndarray]) -> np.ndarray:
    """Mean percentile rank (0..1, higher = riskier) over scorers; NaN where any scorer could not score."""
    ranks = []
    for scores in score_lists:
        scores = np.asarray(scores, dtype=np.float64)
        finite = np.isfinite(scores)
        r = np.full(len(scores), np.nan)
        order = np.argsort(np.argsort(scores[finite], kind="stable"), kind="stable")
        r[finite] = (order + 0.5) / max(int(finite.sum()), 1)
        ranks.append(r)
    return np.mean(ranks, axis=0)


def _candidate_features(shard, scorers, extractor, gradients, tokenizer, timings: dict) -> CandidateFeatures:
    """Run only the passes some scorer needs: one forward for all hidden-state scorers, one gradient pass.

    Each pass's wall time goes into `timings` (hidden_state_seconds, gradient_seconds)."""
    requests = [r for r in (s.candidate_request() for s in scorers) if r is not None]
    features = CandidateFeatures(
        np.array([e.sample_idx for e in shard], dtype=np.int64),
        np.array([len(e.input_ids) for e in shard], dtype=np.int64),
        examples=list(shard),
    )
    if requests:
        request = requests[0]
        for other in requests[1:]:
            request = request.union(other)
        start = time.perf_counter()
        features.hidden = extractor(shard, request, "Scoring samples")
        timings["hidden_state_seconds"] = time.perf_counter() - start
    if any(getattr(s, "needs_gradients", False) for s in scorers):
        start = time.perf_counter()
        features.gradients = gradients(shard, response_nll, "Per-example gradients")
        timings["gradient_seconds"] = time.perf_counter() - start
    if any(getattr(s, "needs_texts", False) for s in scorers):
        features.texts = [
            (tokenizer.decode(e.input_ids[: e.prompt_len], skip_special_tokens=True),
             tokenizer.decode(e.input_ids[e.prompt_len :], skip_special_tokens=True))
            for e in shard
        ]  # fmt: skip
    return features


def _usable_rows(features: CandidateFeatures) -> tuple[np.ndarray, dict[int, str]]:
    """Rows whose features every scorer can use, and the reason for each other row: a hidden state that is not
    finite (numeric overflow in the forward pass, e.g. under float16), a per-example gradient that is zero or not
    finite. Left in, one such row would turn a transductive scorer's subspace or selector into NaN for every row."""
    usable = np.ones(len(features.sample_idx), dtype=bool)
    reasons: dict[int, str] = {}

    def exclude(rows: np.ndarray, why: str) -> None:
        for i in features.sample_idx[usable & rows].tolist():
            reasons[int(i)] = why
        usable[rows] = False

    if features.hidden is not None:
        for (layer, pooling), values in sorted(features.hidden.pooled.items()):
            exclude(~np.isfinite(values).all(1), f"hidden state not finite (layer {layer}, {pooling})")
    if features.gradients is not None:
        norms = features.gradients.norms
        exclude(~np.isfinite(norms), "per-example gradient not finite")
        exclude(norms == 0, "per-example gradient is zero")
    return usable, reasons


def _shard(examples: Sequence[TokenizedPair], rank: int, world_size: int) -> list[TokenizedPair]:
    """Rank `rank`'s share, length-balanced; every rank gets the same count (padded with repeats, deduped later)."""
    if world_size == 1 or not examples:
        return list(examples)
    by_length = sorted(examples, key=lambda e: len(e.input_ids))
    shard = by_length[rank::world_size]
    per_rank = -(-len(examples) // world_size)
    return shard + [by_length[0]] * (per_rank - len(shard))


def _merge(parts: list[tuple]):
    """Concatenate per-rank results, keep one row per sample_idx, sort by sample_idx; also return the kept rows."""
    sample_idx = np.concatenate([p[0] for p in parts])
    num_tokens = np.concatenate([p[1] for p in parts])
    names = list(parts[0][2])
    scores = {name: np.concatenate([p[2][name] for p in parts]) for name in names}
    unique_idx, first = np.unique(sample_idx, return_index=True)
    return unique_idx, num_tokens[first], {name: values[first] for name, values in scores.items()}, first
