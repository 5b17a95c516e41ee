"""Harm categories for a safety pool: from its own column, or inferred by nearest prototype or k-means."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..config import MIX_CATEGORY_METHODS as CATEGORY_METHODS
from ..config import check_category_min_similarity
from ..data import load_data
from .embedding import Embedder, normalize
from .pool import UNCATEGORIZED, SafetyPool

DEFAULT_CATEGORY_REFERENCE = "builtin:harm_categories"
# A second category is assigned when its similarity is within this of the best one (multi-label, as in BeaverTails).
MULTI_LABEL_MARGIN = 0.02


def category_prototypes(reference: str, embedder: Embedder, center: np.ndarray) -> dict[str, np.ndarray]:
    """Per category, the unit mean of its reference prompts' centered instruction embeddings.

    `reference`: a dataset with `prompt` and `category` columns (default: short example requests for the 14
    BeaverTails categories, `builtin:harm_categories`). Rows with several categories are left out, so each prototype
    stands for one category.
    """
    data = load_data(reference)
    missing = [c for c in ("prompt", "category") if c not in data.column_names]
    if missing:
        raise ValueError(
            f"safety_mix_category_reference: {reference!r} needs prompt and category columns; missing {missing}."
        )
    by_category: dict[str, list[str]] = defaultdict(list)
    for row in data:
        category = row["category"]
        if isinstance(category, str) and category.strip():
            by_category[category.strip()].append(row["prompt"])
    if not by_category:
        raise ValueError(f"safety_mix_category_reference: {reference!r} has no row with a single category.")
    prototypes = {}
    for category, prompts in sorted(by_category.items()):
        vectors = normalize(embedder(prompts, [""] * len(prompts), instruction_only=True) - center)
        prototypes[category] = normalize(vectors.mean(0, keepdims=True))[0]
    return prototypes


def needs_inference(pool: SafetyPool, method: str) -> bool:
    """Whether `method` infers categories from embeddings (rather than reading the pool's column)."""
    return not (method in ("auto", "column") and pool.category_source == "column")


def pool_embeddings(pool: SafetyPool, embedder: Embedder | None, why: str) -> tuple[np.ndarray, np.ndarray]:
    """(unit centered instruction embeddings, their center) of every pool row. Centering on the pool's mean removes
    the direction every hidden state shares, which otherwise makes all cosines near 1."""
    if embedder is None:
        raise ValueError(f"{why} needs an embedder (the training model or a named one).")
    vectors = embedder(pool.prompts, pool.responses, instruction_only=True)
    center = vectors.mean(0)
    return normalize(vectors - center), center


def assign_categories(
    pool: SafetyPool,
    method: str,
    embedder: Embedder | None,
    reference: str = DEFAULT_CATEGORY_REFERENCE,
    num_clusters: int = 14,
    min_similarity: float | None = None,
    seed: int = 0,
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Fill `pool.categories` and `pool.category_source` in place.

    `auto` keeps the pool's own category column when any row has one, else infers by `nearest`. `nearest` assigns each
    instruction the category whose prototype is most similar (cosine of centered embeddings) plus any within
    `MULTI_LABEL_MARGIN` of it; with `min_similarity`, a best similarity below it makes the row `uncategorized`.
    `kmeans` clusters the instruction embeddings into `num_clusters` strata named `cluster_<i>`. Rows without a
    category after a `column` assignment become `uncategorized`. `embeddings`: the pool's `pool_embeddings`, when the
    caller has them already.
    """
    if method not in CATEGORY_METHODS:
        raise ValueError(f"safety_mix_categories: got {method!r}; allowed: {', '.join(CATEGORY_METHODS)}.")
    check_category_min_similarity(min_similarity)
    if method == "column" and pool.category_source != "column":
        raise ValueError(
            f"safety_mix_categories='column', but the pool {pool.source!r} has no category values; use 'nearest' or "
            "'kmeans' to infer them."
        )
    if not needs_inference(pool, method):
        pool.categories = [cats or (UNCATEGORIZED,) for cats in pool.categories]
        return
    centered, center = embeddings or pool_embeddings(pool, embedder, f"safety_mix_categories={method!r}")
    if method == "kmeans":
        from sklearn.cluster import KMeans

        k = min(num_clusters, len(pool))
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(centered)
        pool.categories = [(f"cluster_{label}",) for label in labels]
        pool.category_source = f"kmeans (k={k})"
        return
    prototypes = category_prototypes(reference, embedder, center)
    names = list(prototypes)
    similarity = centered @ np.stack([prototypes[n] for n in names]).T
    categories = []
    for row in similarity:
        best = row.max()
        if min_similarity is not None and best < min_similarity:
            categories.append((UNCATEGORIZED,))
        else:
            categories.append(tuple(names[j] for j in np.flatnonzero(row >= best - MULTI_LABEL_MARGIN)))
    pool.categories = categories
    minimum = "" if min_similarity is None else f", uncategorized below cosine {min_similarity:g}"
    pool.category_source = f"nearest prototype ({reference}{minimum})"
