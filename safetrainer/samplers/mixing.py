"""Behavior-aware safety mixing: choose a budget of pool rows to add to the training set, and say why each one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import MIX_CONTRAST_PAIRINGS as CONTRAST_PAIRINGS
from ..config import check_most_harmful_first
from .categories import (
    DEFAULT_CATEGORY_REFERENCE,
    assign_categories,
    category_prototypes,
    needs_inference,
    pool_embeddings,
)
from .embedding import Embedder, normalize
from .pool import SafetyPool
from .strategies import CATEGORY_STRATEGIES, Pick, parse_strategy, resolve_budget, select

MIX_COLUMNS = ("pool_idx", "category", "behavior", "prompt", "response", "reason", "pool", "judge_unsure")


@dataclass
class SafetyMix:
    """The selected rows of a pool, in selection order, with the selection's settings and its shortfalls; then the
    contrast rows drawn from a contrast pool, if one was given."""

    pool: SafetyPool
    strategy: str
    budget: int
    seed: int
    picks: list[Pick]
    shortfall: dict[str, dict[str, int]]
    notes: list[str]
    contrast: SafetyPool | None = None
    contrast_picks: list[Pick] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.picks) + len(self.contrast_picks)

    def table(self) -> dict[str, list]:
        """One row per selected sample: `pool_idx` (in its pool), `category` (all of the row's categories,
        "; "-joined), `behavior`, `prompt`, `response`, `reason`, `pool` ("safety" or "contrast"), `judge_unsure` (the
        refusal judge was unsure of the row's behavior type)."""
        sources = [("safety", self.pool, self.picks)]
        if self.contrast is not None:
            sources.append(("contrast", self.contrast, self.contrast_picks))
        table: dict[str, list] = {column: [] for column in MIX_COLUMNS}
        for name, pool, picks in sources:
            behavior = pool.behavior
            table["pool_idx"] += [p.pool_idx for p in picks]
            table["category"] += ["; ".join(pool.categories[p.pool_idx]) for p in picks]
            table["behavior"] += [behavior[p.pool_idx] for p in picks]
            table["prompt"] += [pool.prompts[p.pool_idx] for p in picks]
            table["response"] += [pool.responses[p.pool_idx] for p in picks]
            table["reason"] += [p.reason for p in picks]
            table["pool"] += [name] * len(picks)
            table["judge_unsure"] += [pool.unsure(p.pool_idx) for p in picks]
        return table

    def summary(self) -> dict[str, Any]:
        """The pool's typing and category counts, the selection's counts per behavior and category, how many selected
        rows the refusal judge was unsure of, shortfalls, and the contrast pool's typing counts (None without one)."""
        table = self.table()
        return {
            "strategy": self.strategy,
            "budget": self.budget,
            "selected": len(self.picks),
            "contrast_selected": len(self.contrast_picks),
            "seed": self.seed,
            "pool": self.pool.summary(),
            "selected_behavior_counts": dict(Counter(table["behavior"])),
            "selected_judge_unsure": sum(table["judge_unsure"]),
            "selected_category_counts": dict(
                sorted(Counter(c for p in self.picks for c in self.pool.categories[p.pool_idx]).items())
            ),
            "shortfall": self.shortfall,
            "notes": self.notes,
            "contrast_pool": None if self.contrast is None else self.contrast.summary(),
        }

    def write(self, output_dir: str | Path) -> Path:
        """Write `mix.parquet` (the table) and `mix_summary.json` into `output_dir`; returns the parquet path."""
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / "mix.parquet"
        schema = pa.schema(
            [("pool_idx", pa.int64())] + [(c, pa.string()) for c in MIX_COLUMNS[1:-1]] + [("judge_unsure", pa.bool_())]
        )
        pq.write_table(pa.table(self.table(), schema=schema), path)
        (output_dir / "mix_summary.json").write_text(json.dumps(self.summary(), indent=2, default=str))
        return path


def select_safety_mix(
    pool: SafetyPool,
    strategy: str,
    budget: float,
    num_train: int | None = None,
    seed: int = 0,
    embedder: Embedder | None = None,
    train_pairs: tuple[Sequence[str], Sequence[str]] | None = None,
    categories: str = "auto",
    category_reference: str | None = None,
    num_clusters: int = 14,
    category_min_similarity: float | None = None,
    harmfulness: Callable[[list[str]], np.ndarray] | None = None,
    contrast: SafetyPool | None = None,
    contrast_ratio: float = 1.0,
    contrast_pairing: str = "random",
) -> SafetyMix:
    """Choose `budget` rows of `pool` with `strategy` (see `safetrainer.samplers.STRATEGIES`).

    `budget` is a count or a fraction of `num_train`. Category-aware strategies assign categories first
    (`categories`: auto / column / nearest / kmeans, `category_min_similarity`; see `assign_categories`). PSS and
    Cossim embed with `embedder`; Cossim compares (instruction + response) embeddings with the centroid of
    `train_pairs` (prompts, responses) when given, else instruction embeddings with the category references.
    `harmfulness` maps instructions to P(harmful) (such as `HarmfulInstructionProbe.probability`): random and SSS then
    take the most harmful instructions first instead of drawing. With a `contrast` pool, `contrast_ratio` contrast rows
    per selected row are taken from its T3 rows (benign instruction, compliance): drawn at random, or with
    `contrast_pairing="nearest"` each selected row in turn takes its nearest unused look-alike (see
    `_nearest_look_alikes`). Deterministic for a seed.
    """
    base, t1_only = parse_strategy(strategy)
    if contrast_pairing not in CONTRAST_PAIRINGS:
        raise ValueError(
            f"safety_mix_contrast_pairing: got {contrast_pairing!r}; allowed: {', '.join(CONTRAST_PAIRINGS)}."
        )
    if contrast is not None and contrast_pairing == "nearest" and embedder is None:
        raise ValueError("safety_mix_contrast_pairing='nearest' needs an embedder (the training model or a named one).")
    if harmfulness is not None:
        check_most_harmful_first(strategy)
    count = resolve_budget(budget, num_train)
    candidates = pool.eligible(["T1"] if t1_only else ["T1", "T3", "T4"])
    if len(candidates) == 0:
        counts = pool.summary()["behavior_counts"]
        need = "T1 (harmful instruction + refusal)" if t1_only else "T1, T3 or T4"
        raise ValueError(
            f"safety_mix_pool {pool.source!r} has no {need} row to mix in (behavior counts {counts}, "
            f"{len(pool.excluded)} excluded): the judge found no refusal, or every row is excluded. Give a pool of "
            "refusals, or another judge (safety_mix_judge)."
        )
    notes = []
    if count > len(candidates):
        notes.append(f"budget {count} exceeds the {len(candidates)} eligible rows: all of them are mixed in")
    reference = category_reference or DEFAULT_CATEGORY_REFERENCE
    # One embedding pass over the pool serves category inference, PSS and Cossim.
    embedded = None
    if base in ("pss", "cossim") or (base in CATEGORY_STRATEGIES and needs_inference(pool, categories)):
        embedded = pool_embeddings(pool, embedder, f"safety_mix_strategy={strategy!r}")
    if base in CATEGORY_STRATEGIES:
        assign_categories(
            pool, categories, embedder, reference, num_clusters, category_min_similarity, seed, embeddings=embedded
        )
    rng = np.random.default_rng(seed)
    embeddings = similarity = None
    if base in ("pss", "cossim"):
        embeddings, center = embedded
        if base == "cossim":
            similarity = _cossim_targets(pool, embedder, embeddings, center, train_pairs, reference, notes)
    scores = None
    if harmfulness is not None:
        scores = np.asarray(harmfulness(pool.prompts), dtype=np.float64)
        if scores.shape != (len(pool),):
            raise ValueError(
                f"safety_mix_most_harmful_first: the harmfulness scorer returned shape {scores.shape} for "
                f"{len(pool)} prompts; it must return one P(harmful) per prompt."
            )
        notes.append("order: most harmful instruction first, by P(harmful instruction)")
    picks, shortfall = select(base, candidates, pool.categories, count, rng, embeddings, similarity, scores)
    for category, gap in shortfall.items():
        notes.append(f"category {category!r} had {gap['taken']} of its quota {gap['quota']}; topped up elsewhere")
    contrast_picks = []
    if contrast is not None:
        wanted = round(contrast_ratio * len(picks))
        benign_rows = _contrast_candidates(contrast, wanted, notes)
        if contrast_pairing == "nearest":
            contrast_picks = _nearest_look_alikes(pool, picks, contrast, benign_rows, wanted, embedder)
        else:
            why = "contrast: random draw (benign instruction answered helpfully)"
            contrast_picks = [Pick(int(i), "", why) for i in rng.permutation(benign_rows)[:wanted]]
    return SafetyMix(pool, strategy, count, seed, picks, shortfall, notes, contrast, contrast_picks)


def _contrast_candidates(contrast: SafetyPool, wanted: int, notes: list[str]) -> np.ndarray:
    """The contrast pool's T3 rows: refusals there would teach refusing benign requests, and a harmful instruction
    answered helpfully (T2) is never added."""
    candidates = contrast.eligible(["T3"])
    if len(candidates) == 0:
        counts = contrast.summary()["behavior_counts"]
        raise ValueError(
            f"safety_mix_contrast_pool {contrast.source!r} has no T3 row (benign instruction answered helpfully) "
            f"to mix in (behavior counts {counts}, {len(contrast.excluded)} excluded). Give borderline-benign requests "
            "with helpful answers."
        )
    if wanted == 0:
        notes.append("contrast: safety_mix_contrast_ratio x the selected samples rounds to 0 rows: none mixed in")
    if wanted > len(candidates):
        notes.append(f"contrast: {wanted} rows asked, the contrast pool has {len(candidates)} T3 rows: all mixed in")
    return candidates


def _nearest_look_alikes(
    pool: SafetyPool,
    picks: list[Pick],
    contrast: SafetyPool,
    candidates: np.ndarray,
    wanted: int,
    embedder: Embedder,
) -> list[Pick]:
    """Up to `wanted` contrast rows: the selected safety rows take turns (in selection order, round after round)
    claiming the unused candidate whose instruction is most similar to theirs.

    Similarity is the cosine of instruction embeddings centered on the mean of both sets, which removes the
    direction every hidden state shares and leaves what the requests are about."""
    wanted = min(wanted, len(candidates))
    if wanted == 0:
        return []
    refusals = embedder([pool.prompts[p.pool_idx] for p in picks], [""] * len(picks), instruction_only=True)
    benign = embedder([contrast.prompts[i] for i in candidates], [""] * len(candidates), instruction_only=True)
    center = np.concatenate([refusals, benign]).mean(0)
    similarity = normalize(refusals - center) @ normalize(benign - center).T
    taken = np.zeros(len(candidates), dtype=bool)
    chosen = []
    for turn in range(wanted):
        owner = turn % len(picks)
        nearest = int(np.argmax(np.where(taken, -np.inf, similarity[owner])))
        taken[nearest] = True
        why = (
            f"contrast: nearest look-alike of safety pool row {picks[owner].pool_idx} "
            f"(cosine {similarity[owner, nearest]:.2f}; benign instruction answered helpfully)"
        )
        chosen.append(Pick(int(candidates[nearest]), "", why))
    return chosen


def _cossim_targets(pool, embedder, instruction_embeddings, center, train_pairs, reference, notes):
    if train_pairs is not None and len(train_pairs[0]):
        pool_pairs = embedder(pool.prompts, pool.responses, instruction_only=False)
        train = embedder(*train_pairs, instruction_only=False)
        pair_center = pool_pairs.mean(0)
        centroid = normalize((train - pair_center).mean(0, keepdims=True))[0]
        notes.append(f"cossim target: centroid of {len(train_pairs[0])} training rows")
        return normalize(pool_pairs - pair_center) @ centroid
    prototypes = category_prototypes(reference, embedder, center)
    notes.append(f"cossim target: category references ({reference})")
    return {name: instruction_embeddings @ vector for name, vector in prototypes.items()}
