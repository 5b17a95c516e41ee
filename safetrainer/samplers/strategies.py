"""Budgeted selection of safety samples: random, SSS (stratified), PSS (prototypical), Cossim (similarity), each with
a "-b" variant restricted to behavior type T1 (harmful instruction + refusal).

Every category-aware strategy gives each category a quota q = budget // #categories (1 when the budget is smaller
than the number of categories, smallest categories first), keeps one global chosen set (multi-label rows count for
each of their categories) and tops up to the budget: at random for SSS and PSS, by best similarity for Cossim. A
category with fewer members than q is taken whole and its shortfall recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..config import MIX_BASE_STRATEGIES as BASE_STRATEGIES
from ..config import MIX_STRATEGIES as STRATEGIES
from ..config import check_most_harmful_first

CATEGORY_STRATEGIES = ("sss", "pss", "cossim")


@dataclass(frozen=True)
class Pick:
    """One selected pool row, the category quota it filled ("" for random picks and top-ups), and why."""

    pool_idx: int
    category: str
    reason: str


def parse_strategy(name: str) -> tuple[str, bool]:
    """(base strategy, T1 only) from a name such as `pss-b` (`pss_b` is accepted too)."""
    normalized = name.strip().lower().replace("_", "-")
    if normalized not in STRATEGIES:
        raise ValueError(f"safety_mix_strategy: got {name!r}; allowed: {', '.join(STRATEGIES)}.")
    return normalized.removesuffix("-b"), normalized.endswith("-b")


def resolve_budget(budget: float, num_train: int | None) -> int:
    """A budget given as a count (an integer >= 1) or as a fraction in (0, 1) of the training set, as a count >= 1."""
    if budget >= 1:
        if budget != int(budget):
            raise ValueError(f"safety_mix_budget: {budget} is neither a count (integer >= 1) nor a fraction in (0, 1).")
        return int(budget)
    if not 0 < budget < 1:
        raise ValueError(f"safety_mix_budget: must be a count >= 1 or a fraction in (0, 1), got {budget}.")
    if num_train is None:
        raise ValueError(f"safety_mix_budget: a fraction ({budget}) needs the training set to take it of.")
    return max(1, round(budget * num_train))


def select(
    strategy: str,
    candidates: np.ndarray,
    categories: Sequence[tuple[str, ...]],
    budget: int,
    rng: np.random.Generator,
    embeddings: np.ndarray | None = None,
    target_similarity: np.ndarray | dict[str, np.ndarray] | None = None,
    harmfulness: np.ndarray | None = None,
) -> tuple[list[Pick], dict[str, dict[str, int]]]:
    """Pick up to `budget` of `candidates` (pool row indices). Returns the picks in selection order and, per category
    short of its quota, {"quota", "taken"}.

    `embeddings` (unit rows, indexed by pool row) serve PSS. Cossim ranks by `target_similarity`, indexed by pool
    row: one array shared by all categories (similarity to the fine-tuning data), or one per category (similarity to
    the category's references; a category without references uses each row's best similarity). With `harmfulness`
    (P(harmful instruction) per pool row), random and SSS take the most harmful rows first, in each quota and in the
    top-up, instead of drawing them.
    """
    if harmfulness is not None:
        check_most_harmful_first(strategy)
    if strategy == "random":
        if harmfulness is None:
            return [Pick(int(i), "", "random draw") for i in rng.permutation(candidates)[:budget]], {}
        order = candidates[np.argsort(-harmfulness[candidates], kind="stable")][:budget]
        return [Pick(int(i), "", _most_harmful("", harmfulness[i])) for i in order], {}
    strata = _strata(candidates, categories)
    names = sorted(strata, key=lambda c: (len(strata[c]), c))
    quota = max(1, budget // len(names))
    if strategy == "sss":
        rank = _random_rank(rng) if harmfulness is None else _similarity_rank(_per_category(harmfulness))
    elif strategy == "pss":
        if embeddings is None:
            raise ValueError("PSS needs embeddings of the pool instructions.")
        rank = _prototype_rank(embeddings)
    elif strategy == "cossim":
        if target_similarity is None:
            raise ValueError("Cossim needs similarities to the fine-tuning data or to category references.")
        similarity = _per_category(target_similarity)
        rank = _similarity_rank(similarity)
    else:
        raise ValueError(f"Unknown strategy {strategy!r}; allowed: {', '.join(BASE_STRATEGIES)}.")

    chosen: set[int] = set()
    picks: list[Pick] = []
    shortfall: dict[str, dict[str, int]] = {}
    for name in names:
        if len(picks) >= budget:
            break
        members = [i for i in rank(strata[name], name) if i not in chosen]
        take = members[: min(quota, budget - len(picks))]
        if len(members) < quota:
            shortfall[name] = {"quota": quota, "taken": len(members)}
        for i in take:
            chosen.add(i)
            why = f"{strategy} quota {quota} of category {name!r}"
            picks.append(Pick(i, name, why if harmfulness is None else _most_harmful(why, harmfulness[i])))
    rest = np.array([i for i in candidates.tolist() if i not in chosen], dtype=np.int64)
    if harmfulness is not None:
        top_up = rest[np.argsort(-harmfulness[rest], kind="stable")][: budget - len(picks)]
        return picks + [Pick(int(i), "", _most_harmful("top-up", harmfulness[i])) for i in top_up], shortfall
    if strategy == "cossim":
        top_up = rest[np.argsort(-similarity("")[rest], kind="stable")]
        why = "top-up: best similarity"
    else:
        top_up = rng.permutation(rest)
        why = "top-up: random draw"
    picks += [Pick(int(i), "", why) for i in top_up[: budget - len(picks)]]
    return picks, shortfall


def _most_harmful(why: str, probability: float) -> str:
    return f"{why}{': ' if why else ''}most harmful first (P(harmful instruction) {probability:.3f})"


def _strata(candidates: np.ndarray, categories: Sequence[tuple[str, ...]]) -> dict[str, np.ndarray]:
    strata: dict[str, list[int]] = {}
    for i in candidates.tolist():
        for category in categories[i]:
            strata.setdefault(category, []).append(i)
    if not strata:
        raise ValueError("The category-aware strategies need at least one category among the eligible pool rows.")
    return {c: np.array(members, dtype=np.int64) for c, members in strata.items()}


def _random_rank(rng: np.random.Generator) -> Callable[[np.ndarray, str], list[int]]:
    return lambda members, _: rng.permutation(members).tolist()


def _prototype_rank(embeddings: np.ndarray) -> Callable[[np.ndarray, str], list[int]]:
    """Members closest (cosine) to their category's centroid first."""

    def rank(members: np.ndarray, _: str) -> list[int]:
        vectors = embeddings[members]
        centroid = vectors.mean(0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        return members[np.argsort(-(vectors @ centroid), kind="stable")].tolist()

    return rank


def _per_category(similarity: np.ndarray | dict[str, np.ndarray]) -> Callable[[str], np.ndarray]:
    if isinstance(similarity, np.ndarray):
        return lambda _: similarity
    best = np.max(np.stack(list(similarity.values())), axis=0)
    return lambda name: similarity.get(name, best)


def _similarity_rank(similarity: Callable[[str], np.ndarray]) -> Callable[[np.ndarray, str], list[int]]:
    """Members most similar to their category's target first."""
    return lambda members, name: members[np.argsort(-similarity(name)[members], kind="stable")].tolist()
