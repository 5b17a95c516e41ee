"""Behavior-aware safety mixing: typing, categories, samplers, trainer integration and bad input."""

import json
import sys
import types

import numpy as np
import pyarrow.parquet as pq
import pytest

from safetrainer import SafetyAwareSFTConfig
from safetrainer.samplers import (
    HarmfulInstructionProbe,
    ModelEmbedder,
    SentenceEmbedder,
    assign_categories,
    behavior_type,
    load_pool,
    parse_strategy,
    resolve_budget,
    resolve_embedder_name,
    select_safety_mix,
)
from safetrainer.samplers.strategies import select

from .conftest import make_tiny_llama, shared_file
from .test_trainer import COMMON, alpaca_rows, conversational, safety_trainer

REFUSAL = "I'm sorry, but I can't help with that."


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def pool_rows(sizes: dict[str, int]) -> list[dict]:
    """Refusal rows per category, plus one harmful compliance (T2) and one benign answer (T3)."""
    rows = [
        {"prompt": f"Harmful request {i} about {category}", "response": REFUSAL, "category": category, "harmful": True}
        for category, n in sizes.items()
        for i in range(n)
    ]
    rows.append(
        {"prompt": "Harmful request answered", "response": "Sure, here is how.", "category": "a", "harmful": True}
    )
    rows.append(
        {"prompt": "What is rain?", "response": "Water falling from clouds.", "category": "a", "harmful": False}
    )
    return rows


def test_behavior_types():
    assert [behavior_type(h, r) for h, r in [(1, 1), (1, 0), (0, 0), (0, 1)]] == ["T1", "T2", "T3", "T4"]


def test_pool_typing_counts_and_flag_sources(tmp_path):
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", pool_rows({"a": 2, "b": 1})))
    assert pool.behavior == ["T1", "T1", "T1", "T2", "T3"]
    summary = pool.summary()
    assert summary["behavior_counts"] == {"T1": 3, "T2": 1, "T3": 1, "T4": 0}
    assert summary["harmful_source"] == "column" and summary["category_source"] == "column"
    assert pool.eligible(["T1"]).tolist() == [0, 1, 2]
    assert pool.eligible().tolist() == pool.eligible(["T1", "T2", "T3"]).tolist() == [0, 1, 2, 4]  # never T2

    beavertails = [
        {"prompt": "q", "response": REFUSAL, "is_safe": True, "category": {"self_harm": True, "x": False}},
        {"prompt": "q2", "response": "harmful answer", "is_safe": False, "category": {"x": True}},
    ]
    pool = load_pool(write_jsonl(tmp_path / "bt.jsonl", beavertails))
    assert pool.categories == [("self_harm",), ("x",)]
    assert pool.excluded == {1: "harmful response (is_safe=False)"}

    no_flags = load_pool(write_jsonl(tmp_path / "n.jsonl", [{"prompt": "q", "response": REFUSAL}]))
    assert no_flags.harmful.tolist() == [True] and no_flags.harmful_source.startswith("default")
    classified = load_pool(
        write_jsonl(tmp_path / "n.jsonl", [{"prompt": "q", "response": REFUSAL}]),
        harmful_classifier=lambda prompts: [False] * len(prompts),
    )
    assert classified.behavior == ["T4"] and classified.harmful_source == "classifier"

    labelled = [
        {"prompt": "q", "response": REFUSAL, "label": " Harmful "},
        {"prompt": "r", "response": REFUSAL, "label": "SAFE"},
    ]
    pool = load_pool(write_jsonl(tmp_path / "l.jsonl", labelled))
    assert pool.harmful_source == "label" and pool.behavior == ["T1", "T4"]


def test_pool_bad_input_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="prompt column"):
        load_pool(write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}]))
    with pytest.raises(ValueError, match="'harmful' must be a boolean"):
        load_pool(write_jsonl(tmp_path / "b.jsonl", [{"prompt": "q", "response": REFUSAL, "harmful": "maybe"}]))
    pool = load_pool(
        write_jsonl(tmp_path / "c.jsonl", [{"prompt": "q", "response": " "}, {"prompt": "q", "response": REFUSAL}])
    )
    assert pool.excluded == {0: "empty or non-text response"}


def test_no_refusal_signal_is_a_clear_error(tmp_path):
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "response": "Sure."} for i in range(4)]))
    with pytest.raises(ValueError, match="no T1"):
        select_safety_mix(pool, "sss-b", 2)


def test_strategy_and_budget_parsing():
    assert parse_strategy("PSS_B") == ("pss", True) and parse_strategy("random") == ("random", False)
    with pytest.raises(ValueError, match="allowed: random, sss"):
        parse_strategy("best")
    assert resolve_budget(3, None) == 3 and resolve_budget(0.02, 300) == 6 and resolve_budget(0.001, 10) == 1
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="safety_mix_budget"):
            resolve_budget(bad, 100)
    with pytest.raises(ValueError, match="safety_mix_budget"):
        SafetyAwareSFTConfig(output_dir="x", safety_mix_budget=2.5, **COMMON)
    with pytest.raises(ValueError, match="safety_mix_strategy"):
        SafetyAwareSFTConfig(output_dir="x", safety_mix_strategy="nope", **COMMON)


def test_sss_takes_smallest_categories_first_tops_up_and_reports_shortfall(tmp_path):
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", pool_rows({"big": 6, "mid": 3, "small": 1})))
    mix = select_safety_mix(pool, "sss-b", 9, seed=0)
    table = mix.table()
    assert len(mix) == 9 and set(table["behavior"]) == {"T1"}
    assert table["category"][0] == "small"  # smallest stratum first
    counts = mix.summary()["selected_category_counts"]
    assert counts["small"] == 1 and counts["mid"] == 3 and counts["big"] == 5  # quota 3; small short by 2; top-up
    assert mix.shortfall == {"small": {"quota": 3, "taken": 1}}
    assert any("small" in note for note in mix.notes)
    assert sum(r.startswith("top-up") for r in table["reason"]) == 2
    assert select_safety_mix(pool, "sss-b", 9, seed=0).table() == table  # deterministic per seed
    assert select_safety_mix(pool, "sss-b", 9, seed=1).table()["pool_idx"] != table["pool_idx"]


def test_budget_larger_than_pool_takes_everything_and_says_so(tmp_path):
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", pool_rows({"a": 2, "b": 2})))
    mix = select_safety_mix(pool, "random-b", 50)
    assert sorted(mix.table()["pool_idx"]) == [0, 1, 2, 3]
    assert "exceeds the 4 eligible rows" in mix.notes[0]
    assert sorted(select_safety_mix(pool, "random", 50).table()["pool_idx"]) == [0, 1, 2, 3, 5]


def contrast_rows() -> list[dict]:
    """Borderline-benign requests: four answered, one refused (T4), one flagged harmful and answered (T2)."""
    rows = [{"prompt": f"How do I kill process {i}?", "response": f"Run `kill {i}`."} for i in range(4)]
    rows.append({"prompt": "How do I shoot a photo at night?", "response": REFUSAL})
    rows = [{**r, "harmful": False} for r in rows]
    return rows + [{"prompt": "How do I shoot a person?", "response": "Aim.", "harmful": True}]


def test_contrast_rows_are_drawn_from_the_contrast_pools_helpful_answers(tmp_path):
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", pool_rows({"a": 3, "b": 3})))
    unflagged_rows = [{"prompt": r["prompt"], "response": r["response"]} for r in contrast_rows()[:5]]
    unflagged = load_pool(write_jsonl(tmp_path / "u.jsonl", unflagged_rows), contrast=True)
    assert unflagged.behavior == ["T3"] * 4 + ["T4"] and "contrast pool as benign" in unflagged.harmful_source
    contrast = load_pool(write_jsonl(tmp_path / "c.jsonl", contrast_rows()), contrast=True)
    mix = select_safety_mix(pool, "sss-b", 2, seed=3, contrast=contrast, contrast_ratio=1.5)
    table = mix.table()
    assert table["pool"] == ["safety"] * 2 + ["contrast"] * 3
    assert set(table["pool_idx"][2:]) <= {0, 1, 2, 3} and set(table["behavior"][2:]) == {"T3"}  # never T4 or T2
    assert table["reason"][2].startswith("contrast: random draw")
    summary = mix.summary()
    assert summary["selected"] == 2 and summary["contrast_selected"] == 3 and len(mix) == 5
    assert summary["contrast_pool"]["behavior_counts"] == {"T1": 0, "T2": 1, "T3": 4, "T4": 1}
    again = select_safety_mix(pool, "sss-b", 2, seed=3, contrast=contrast, contrast_ratio=1.5).table()
    assert again == table
    everything = select_safety_mix(pool, "random-b", 6, contrast=contrast)
    assert len(everything.contrast_picks) == 4 and "the contrast pool has 4 T3 rows" in everything.notes[-1]
    none = select_safety_mix(pool, "random-b", 2, contrast=contrast, contrast_ratio=0.1)
    assert none.contrast_picks == [] and "rounds to 0 rows" in none.notes[-1]
    refusals_only = load_pool(write_jsonl(tmp_path / "r.jsonl", contrast_rows()[4:5]), contrast=True)
    with pytest.raises(ValueError, match="safety_mix_contrast_pool .* has no T3 row"):
        select_safety_mix(pool, "random-b", 2, contrast=refusals_only)
    with pytest.raises(ValueError, match="safety_mix_contrast_pool: .* has no rows"):
        load_pool(write_jsonl(tmp_path / "e.jsonl", []), contrast=True)


def test_nearest_pairing_gives_each_refusal_its_closest_benign_look_alike(tmp_path):
    topics = ("process", "photo", "pasta", "car")

    def topic_embedder(prompts, responses, instruction_only):
        assert instruction_only
        return np.array([[float(t in p) for t in topics] for p in prompts])

    harmful = [f"How do I wreck my rival's {t}?" for t in ("process", "photo")]
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": p, "response": REFUSAL, "harmful": True} for p in harmful
    ]))  # fmt: skip
    benign = ["kill a process", "shoot a photo", "cook pasta", "wash a car", "end a process"]
    contrast = load_pool(write_jsonl(tmp_path / "c.jsonl", [
        {"prompt": f"How do I {b}?", "response": "Like this.", "harmful": False} for b in benign
    ]), contrast=True)  # fmt: skip
    mix = select_safety_mix(pool, "random-b", 2, seed=1, embedder=topic_embedder, contrast=contrast,
                            contrast_ratio=1.5, contrast_pairing="nearest")  # fmt: skip
    table = mix.table()
    assert table["pool"] == ["safety"] * 2 + ["contrast"] * 3
    for prompt, reason in zip(table["prompt"][2:], table["reason"][2:], strict=True):
        owner = int(reason.split("safety pool row ")[1].split(" ")[0])
        topic = next(t for t in topics if t in pool.prompts[owner])
        assert topic in prompt and reason.startswith("contrast: nearest look-alike")  # never pasta or car
    owners = [int(r.split("safety pool row ")[1].split(" ")[0]) for r in table["reason"][2:]]
    assert owners == [p.pool_idx for p in mix.picks] + [mix.picks[0].pool_idx]  # turns in selection order
    with pytest.raises(ValueError, match="safety_mix_contrast_pairing: got 'closest'; allowed: random, nearest"):
        select_safety_mix(pool, "random-b", 2, contrast=contrast, contrast_pairing="closest")
    with pytest.raises(ValueError, match="safety_mix_contrast_pairing='nearest' needs an embedder"):
        select_safety_mix(pool, "random-b", 2, contrast=contrast, contrast_pairing="nearest")


def test_pss_takes_members_closest_to_the_category_centroid():
    embeddings = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.6, 0.8], [0.1, 0.9]], dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    categories = [("a",), ("a",), ("a",), ("b",), ("b",)]
    picks, _ = select("pss", np.arange(5), categories, 2, np.random.default_rng(0), embeddings)
    by_category = {p.category: p.pool_idx for p in picks}
    assert by_category["a"] == 1  # the member nearest a's centroid, not its first row
    picks, _ = select("cossim", np.arange(5), categories, 2, np.random.default_rng(0),
                      target_similarity=np.array([0.1, 0.2, 0.9, 0.3, 0.0]))  # fmt: skip
    assert {p.category: p.pool_idx for p in picks} == {"a": 2, "b": 3}


def test_most_harmful_first_replaces_the_random_draws(tmp_path):
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", pool_rows({"big": 4, "small": 2})))
    # P(harmful) rises with the row index, except the T2 row (6), which is never eligible for -b.
    scores = np.array([0.1, 0.5, 0.3, 0.9, 0.2, 0.8, 1.0, 0.0])

    def harmfulness(prompts):
        assert prompts == pool.prompts
        return scores

    table = select_safety_mix(pool, "random-b", 3, seed=0, harmfulness=harmfulness).table()
    assert table["pool_idx"] == [3, 5, 1] and "most harmful first (P(harmful instruction) 0.900)" in table["reason"][0]
    mix = select_safety_mix(pool, "sss-b", 5, seed=0, harmfulness=harmfulness)
    # quota 2: small (rows 4, 5) by harmfulness, then big's two most harmful, then the top-up's most harmful
    assert mix.table()["pool_idx"] == [5, 4, 3, 1, 2]
    assert mix.table()["reason"][-1].startswith("top-up: most harmful first")
    assert "order: most harmful instruction first" in mix.notes[-1]
    assert select_safety_mix(pool, "sss-b", 5, seed=1, harmfulness=harmfulness).table() == mix.table()
    with pytest.raises(ValueError, match="safety_mix_most_harmful_first: applies to random and sss"):
        select_safety_mix(pool, "pss-b", 3, harmfulness=harmfulness)
    with pytest.raises(ValueError, match=r"returned shape \(7,\) for 8 prompts"):
        select_safety_mix(pool, "sss-b", 3, harmfulness=lambda prompts: scores[:-1])
    with pytest.raises(ValueError, match="safety_mix_most_harmful_first: applies to random and sss"):
        SafetyAwareSFTConfig(
            output_dir="x", safety_mix_strategy="cossim_b", safety_mix_most_harmful_first=True, **COMMON
        )


def test_categories_inferred_by_nearest_prototype_and_kmeans(tokenizer, tmp_path):
    prompts = [f"How do I hurt {x}?" for x in ("a dog", "a cat", "my neighbour", "a stranger")]
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", [{"prompt": p, "response": REFUSAL} for p in prompts]))
    reference = write_jsonl(tmp_path / "ref.jsonl", [
        {"prompt": "Hurt a dog", "category": "animal_abuse"}, {"prompt": "Hurt a person", "category": "violence"},
    ])  # fmt: skip
    embedder = ModelEmbedder(make_tiny_llama(tokenizer), tokenizer)
    assign_categories(pool, "nearest", embedder, reference)  # no minimum: every row takes its nearest category
    assert pool.category_source.startswith("nearest prototype")
    assert all(set(c) <= {"animal_abuse", "violence"} and c for c in pool.categories)
    assign_categories(pool, "nearest", embedder, reference, min_similarity=1.0)  # no prompt matches a prototype
    assert pool.categories == [("uncategorized",)] * 4 and pool.category_source.endswith("below cosine 1)")
    with pytest.raises(ValueError, match=r"safety_mix_category_min_similarity: got 1.5; allowed: unset .* \[-1, 1\]"):
        assign_categories(pool, "nearest", embedder, reference, min_similarity=1.5)
    with pytest.raises(ValueError, match="safety_mix_category_min_similarity: got -2"):
        SafetyAwareSFTConfig(output_dir="x", safety_mix_category_min_similarity=-2, **COMMON)
    assign_categories(pool, "kmeans", embedder, num_clusters=2)
    assert {c for (c,) in pool.categories} <= {"cluster_0", "cluster_1"} and pool.category_source == "kmeans (k=2)"
    with pytest.raises(ValueError, match="no category values"):
        assign_categories(load_pool(write_jsonl(tmp_path / "n.jsonl", [{"prompt": "q", "response": REFUSAL}])),
                          "column", embedder)  # fmt: skip


def test_model_embedder_embeds_the_first_tokens_of_an_over_long_prompt(tokenizer):
    embedder = ModelEmbedder(make_tiny_llama(tokenizer), tokenizer, max_length=32)
    long_prompt = " ".join(f"word{i}" for i in range(200))
    head = embedder.prompt_head(long_prompt)
    assert len(tokenizer(head, add_special_tokens=False)["input_ids"]) <= 16 and long_prompt.startswith(head.strip())
    vectors = embedder([long_prompt, head], ["", ""], instruction_only=True)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)
    assert np.isclose(np.linalg.norm(vectors[0]), 1.0)


def test_trainer_mixes_samples_with_their_own_sample_idx_and_reports_them(tokenizer, tmp_path):
    trainer = safety_trainer(
        tokenizer, tmp_path, alpaca_rows(16), safety_mix_pool="builtin:refusal_pool", safety_mix_strategy="sss-b",
        safety_mix_budget=4, safety_scorers=["random"], safety_threshold_value=0.25, max_steps=1,
    )  # fmt: skip
    trainer.train()
    sample_idx = sorted(trainer.train_dataset["sample_idx"])
    assert [i for i in sample_idx if i >= 16] == [16, 17, 18, 19]  # mixed rows kept: the filter never drops them
    report = tmp_path / "safety_report"
    table = pq.read_table(report / "scores.parquet").to_pydict()
    assert table["source"] == ["train"] * 16 + ["mix"] * 4
    assert all(r.startswith("kept: safety mix, pool row") for r in table["reason"][16:])
    assert table["decision"][:16].count("dropped") == 4
    summary = json.loads((report / "summary.json").read_text())
    assert summary["counts"]["mixed"] == 4 and summary["safety_mix"]["selected_behavior_counts"] == {"T1": 4}
    mix = pq.read_table(report / "mix.parquet").to_pydict()
    assert list(mix) == ["pool_idx", "category", "behavior", "prompt", "response", "reason", "pool", "judge_unsure"]
    assert len(set(mix["category"])) == 4  # stratified: four different categories


def test_trainer_mixes_contrast_rows_beside_the_safety_samples(tokenizer, tmp_path):
    contrast = write_jsonl(tmp_path / "contrast.jsonl", contrast_rows())
    trainer = safety_trainer(
        tokenizer, tmp_path, alpaca_rows(8), safety_mix_pool="builtin:refusal_pool", safety_mix_strategy="random-b",
        safety_mix_budget=2, safety_mix_contrast_pool=contrast, safety_mix_contrast_ratio=2,
        safety_mix_contrast_pairing="nearest",
    )  # fmt: skip
    table = trainer.filter_train_dataset()
    assert table["counts"] == {"input": 8, "mixed": 6, "kept": 14, "dropped": 0, "rejected": 0}
    scores = pq.read_table(tmp_path / "safety_report" / "scores.parquet").to_pydict()
    contrast_reasons = [r for r in scores["reason"] if r.startswith("kept: safety mix, contrast pool row")]
    assert len(contrast_reasons) == 4 and all("nearest look-alike of safety pool row" in r for r in contrast_reasons)
    assert sorted(trainer.train_dataset["sample_idx"]) == list(range(14))
    mixed = pq.read_table(tmp_path / "safety_report" / "mix.parquet").to_pydict()
    assert mixed["pool"] == ["safety"] * 2 + ["contrast"] * 4 and set(mixed["behavior"]) == {"T1", "T3"}


def test_trainer_passes_the_category_settings_to_the_sampler(tokenizer, tmp_path):
    trainer = safety_trainer(
        tokenizer, tmp_path, alpaca_rows(8), safety_mix_pool="builtin:refusal_pool", safety_mix_strategy="sss-b",
        safety_mix_budget=3, safety_mix_categories="nearest", safety_mix_category_min_similarity=1.0,
    )  # fmt: skip
    trainer.filter_train_dataset()
    mixed = pq.read_table(tmp_path / "safety_report" / "mix.parquet").to_pydict()
    assert mixed["category"] == ["uncategorized"] * 3  # no pool prompt reaches cosine 1 with a prototype


def test_the_judge_decides_the_pools_refusal_flags():
    """Any judge `load_judge` accepts (keyword, callable, model id: see test_judge.py) types the pool's rows."""

    def every_other(prompts, responses):
        return [i % 2 == 0 for i in range(len(responses))]

    pool = load_pool("builtin:refusal_pool", judge=every_other)
    assert pool.refusal.tolist() == every_other(pool.prompts, pool.responses)
    default = load_pool("builtin:refusal_pool")  # the embedding judge: every row a refusal, 1 of 56 unsure (measured)
    assert default.refusal.all() and default.summary()["judge_unsure"] <= 2
    assert load_pool("builtin:refusal_pool", judge="keyword").refusal.all()


def test_t1_typing_uses_the_judge_and_counts_unsure_picks(tmp_path):
    """A harmful-flagged pool that mixes refusals with compliance: the '-b' strategies take only the judge's
    refusals, and the summary counts the picks the judge was unsure of."""
    refusals = [f"I'm sorry, but I can't help with request {i}." for i in range(4)]
    compliance = ["Sure! First, buy a steel pipe and two end caps, then drill a hole for the fuse.",
                  "Here is the script: it loops over the saved passwords and posts them to the server."]  # fmt: skip
    borderline = "I can't help with making explosives. However, here is how: mix the powder and pack it into a pipe."
    rows = [{"prompt": f"Harmful request {i}", "response": r, "harmful": True, "category": f"c{i % 2}"}
            for i, r in enumerate([*refusals, *compliance, borderline])]  # fmt: skip
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", rows))
    assert pool.behavior[:6] == ["T1"] * 4 + ["T2"] * 2
    mix = select_safety_mix(pool, "sss-b", 10, categories="column")
    table = mix.table()
    assert set(table["pool_idx"]) <= {0, 1, 2, 3, 6} and set(table["behavior"]) == {"T1"}
    assert (
        mix.summary()["selected_judge_unsure"]
        == sum(table["judge_unsure"])
        == int(pool.judge_unsure[6] and 6 in table["pool_idx"])
    )


def test_safety_mix_seed_decides_which_pool_rows_are_mixed(tokenizer, tmp_path):
    def mixed_pool_rows(seed, run):
        trainer = safety_trainer(tokenizer, tmp_path / run, alpaca_rows(8), safety_mix_pool="builtin:refusal_pool",
                                 safety_mix_strategy="random-b", safety_mix_budget=6, safety_mix_seed=seed)  # fmt: skip
        trainer.filter_train_dataset()
        return pq.read_table(tmp_path / run / "safety_report" / "mix.parquet").to_pydict()["pool_idx"]

    first = mixed_pool_rows(0, "a")
    assert len(first) == 6 and mixed_pool_rows(0, "b") == first
    assert mixed_pool_rows(1, "c") != first


def test_mixed_rows_follow_the_training_format(tokenizer, tmp_path):
    messages = [{"messages": p["prompt"] + p["completion"]} for p in conversational(alpaca_rows(8))]
    trainer = safety_trainer(tokenizer, tmp_path, messages, safety_mix_pool="builtin:refusal_pool",
                             safety_mix_strategy="random-b", safety_mix_budget=0.25)  # fmt: skip
    trainer.filter_train_dataset()
    assert len(trainer.train_dataset) == 10  # 25% of 8 rows
    plain = [{"prompt": f"Q{i}: ", "completion": f"A{i}"} for i in range(4)]
    with pytest.raises(ValueError, match="prompt/completion with plain strings.*conversational training data"):
        safety_trainer(tokenizer, tmp_path, plain, safety_mix_pool="builtin:refusal_pool",
                       safety_mix_strategy="random-b", safety_mix_budget=1)  # fmt: skip


def test_filterable_mix_is_scored_too(tokenizer, tmp_path):
    trainer = safety_trainer(
        tokenizer, tmp_path, alpaca_rows(8), safety_mix_pool="builtin:refusal_pool", safety_mix_strategy="random-b",
        safety_mix_budget=2, safety_mix_filterable=True, safety_scorers=["random"], safety_threshold_value=0.0,
    )  # fmt: skip
    table = trainer.filter_train_dataset()
    assert table["counts"] == {"input": 8, "mixed": 2, "kept": 10, "dropped": 0, "rejected": 0}
    scores = pq.read_table(tmp_path / "safety_report" / "scores.parquet").to_pydict()["score_random"]
    assert np.isfinite(scores).all()


@pytest.mark.slow
def test_shared_safety_pool_types_and_infers_categories(tokenizer, tmp_path):
    path = shared_file("safety_tuned_llamas/safety_only_data_Instructions.norm.jsonl")
    pool = load_pool(str(path))
    counts = pool.summary()["behavior_counts"]
    assert counts["T1"] > 1000 and counts["T3"] == counts["T4"] == 0
    mix = select_safety_mix(pool, "sss-b", 28, embedder=ModelEmbedder(make_tiny_llama(tokenizer), tokenizer))
    assert mix.summary()["pool"]["category_source"].startswith("nearest prototype")
    assert len(mix) == 28 and set(mix.table()["behavior"]) == {"T1"}


def test_rows_without_a_category_form_the_uncategorized_stratum(tmp_path):
    rows = pool_rows({"a": 2}) + [{"prompt": "Harmful request x", "response": REFUSAL, "category": "", "harmful": True}]
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", rows))
    mix = select_safety_mix(pool, "sss-b", 2)
    assert sorted(mix.table()["category"]) == ["a", "uncategorized"]


def test_category_reference_needs_prompt_and_category(tokenizer, tmp_path):
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "response": REFUSAL}]))
    embedder = ModelEmbedder(make_tiny_llama(tokenizer), tokenizer)
    with pytest.raises(ValueError, match="missing \\['category'\\]"):
        assign_categories(pool, "nearest", embedder, write_jsonl(tmp_path / "r.jsonl", [{"prompt": "x"}]))
    with pytest.raises(ValueError, match="no row with a single category"):
        assign_categories(
            pool, "nearest", embedder, write_jsonl(tmp_path / "r.jsonl", [{"prompt": "x", "category": ""}])
        )


def test_mixing_embedder_choice(tokenizer, tmp_path, monkeypatch):
    """Unset: the bundled MiniLM (installed with safetrainer); "model": the training model's hidden states."""
    assert resolve_embedder_name(None) == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_embedder_name("model") == "model"
    built = []
    monkeypatch.setattr("safetrainer.trainer.ModelEmbedder", lambda *a, **k: built.append(k) or KeywordEmbedder())
    trainer = safety_trainer(tokenizer, tmp_path, alpaca_rows(4), safety_mix_pool="builtin:refusal_pool",
                             safety_mix_strategy="pss-b", safety_mix_budget=2, safety_mix_embedder="model")  # fmt: skip
    trainer.filter_train_dataset()
    assert len(built) == 1 and trainer.safety_mix.summary()["selected"] == 2


def test_without_sentence_transformers_mixing_embeds_with_the_model(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # imports of it now fail
    monkeypatch.setattr("safetrainer.samplers.embedding.bundled_sentence_embedder", lambda: None)
    assert resolve_embedder_name(None) == "model"
    trainer = safety_trainer(tokenizer, tmp_path, alpaca_rows(4), safety_mix_pool="builtin:refusal_pool",
                             safety_mix_embedder="sentence-transformers/all-mpnet-base-v2")  # fmt: skip
    with pytest.raises(ImportError, match="all-mpnet-base-v2.*pip install sentence-transformers"):
        trainer.filter_train_dataset()


class KeywordEmbedder:
    """Embeds an instruction as (mentions "poison", does not): a stand-in whose probe outcome is known."""

    def __init__(self):
        self.embedded: list[str] = []

    def __call__(self, prompts, responses, instruction_only):
        self.embedded += list(prompts)
        return np.array([[1.0, 0.0] if "poison" in p.lower() else [0.0, 1.0] for p in prompts])


def test_harmful_instruction_probe_types_a_pool_without_flags(tmp_path):
    reference = write_jsonl(tmp_path / "ref.jsonl", [
        {"prompt": "How do I poison a dog?", "label": "harmful"}, {"prompt": "Poison my tea", "label": "unsafe"},
        {"prompt": "How do I bake bread?", "label": "benign"}, {"prompt": "What is rain?", "label": "safe"},
    ])  # fmt: skip
    rows = [{"prompt": "Best poison for a cat?", "response": REFUSAL}, {"prompt": "Name a river.", "response": REFUSAL}]
    probe = HarmfulInstructionProbe(KeywordEmbedder(), reference)
    pool = load_pool(write_jsonl(tmp_path / "pool.jsonl", rows), harmful_classifier=probe)
    assert pool.behavior == ["T1", "T4"] and pool.harmful_source.startswith("probe on instruction embeddings")
    assert probe.probability(["more poison"])[0] > 0.5 > probe.probability(["more bread"])[0]
    default = HarmfulInstructionProbe(KeywordEmbedder())
    assert default.reference == "builtin:harm_intent" and len(default.fit().embedder.embedded) == 100

    # A pool's own flags win, and the probe is never fit.
    unused = HarmfulInstructionProbe(KeywordEmbedder(), reference)
    flagged = [{**r, "harmful": True} for r in rows]
    assert load_pool(write_jsonl(tmp_path / "f.jsonl", flagged), harmful_classifier=unused).behavior == ["T1", "T1"]
    assert unused.embedder.embedded == []


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "q", "category": "x"}], "needs a prompt column and a harmful"),
        ([{"prompt": "q", "harmful": True}, {"prompt": "r", "harmful": True}], "both harmful and benign"),
        ([{"prompt": "q", "label": "refusal"}], "label 'refusal'; allowed: harmful, unsafe, benign, safe"),
        ([{"prompt": "q", "harmful": "maybe"}], "row 0: column 'harmful' must be a boolean"),
        ([{"prompt": " ", "harmful": True}, {"prompt": "r", "harmful": False}], "empty or non-text prompt"),
    ],
)
def test_harmful_reference_bad_input_names_the_field(tmp_path, rows, message):
    probe = HarmfulInstructionProbe(KeywordEmbedder(), write_jsonl(tmp_path / "ref.jsonl", rows))
    with pytest.raises(ValueError, match="safety_mix_harmful_reference") as err:
        probe.fit()
    assert message in str(err.value)


def test_model_embedder_embeds_each_instruction_once_whatever_its_response(tokenizer):
    model = make_tiny_llama(tokenizer)
    embedder = ModelEmbedder(model, tokenizer)
    prompts = ["How do I hurt a dog?", "What is rain?"]
    first = embedder(prompts, ["I can't help with that.", "Water from clouds."], instruction_only=True)
    calls = []
    embedder.extractor = lambda *a: calls.append(a)  # any further forward pass would be recorded
    np.testing.assert_array_equal(embedder(prompts[::-1], ["", ""], instruction_only=True), first[::-1])
    assert calls == []
    fresh = ModelEmbedder(model, tokenizer)([prompts[0]], ["A very different response."], instruction_only=True)
    np.testing.assert_allclose(fresh[0], first[0], atol=1e-5)


def test_sentence_embedder_embeds_each_instruction_once(monkeypatch):
    encoded = []

    class FakeSentenceTransformer:
        def __init__(self, model_id, device=None):
            self.model_id = model_id

        def encode(self, texts, batch_size):
            encoded.append(list(texts))
            return np.array([[len(t), 1.0] for t in texts])

    monkeypatch.setitem(
        sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=FakeSentenceTransformer)
    )
    embedder = SentenceEmbedder("fake/encoder")
    prompts = ["How do I hurt a dog?", "What is rain?", "How do I hurt a dog?"]
    first = embedder(prompts, ["r1", "r2", "r3"], instruction_only=True)
    again = embedder(prompts[1:], ["", ""], instruction_only=True)
    assert encoded == [["How do I hurt a dog?", "What is rain?"]]
    np.testing.assert_array_equal(again, first[1:])
    embedder(prompts[:1], ["r1"], instruction_only=False)  # whole pairs are not cached: the response matters
    assert encoded[-1] == ["How do I hurt a dog?\nr1"]


def test_trainer_types_an_unflagged_pool_with_the_probe(tokenizer, tmp_path):
    harmful = [f"Tell me how to poison {x}." for x in ("a dog", "a river", "my boss", "a well")]
    benign = [f"Tell me how to plant {x}." for x in ("a tree", "tulips", "basil", "a hedge")]
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"prompt": p, "response": REFUSAL} for p in harmful + benign])
    # The reference is the pool's own prompts, labelled: a probe fit on them must give those labels back.
    reference = write_jsonl(tmp_path / "ref.jsonl", [{"prompt": p, "harmful": p in harmful} for p in harmful + benign])
    trainer = safety_trainer(
        tokenizer, tmp_path / "run", alpaca_rows(8), safety_mix_pool=pool, safety_mix_strategy="random-b",
        safety_mix_budget=3, safety_mix_harmful_classifier="probe", safety_mix_harmful_reference=reference,
    )  # fmt: skip
    trainer.filter_train_dataset()
    summary = json.loads((tmp_path / "run" / "safety_report" / "summary.json").read_text())["safety_mix"]
    assert summary["pool"]["behavior_counts"] == {"T1": 4, "T2": 0, "T3": 0, "T4": 4}
    assert summary["pool"]["harmful_source"] == f"probe on instruction embeddings (reference {reference})"
    mixed = pq.read_table(tmp_path / "run" / "safety_report" / "mix.parquet").to_pydict()
    assert set(mixed["behavior"]) == {"T1"} and set(mixed["prompt"]) <= set(harmful)

    # A pool flagged all harmful is typed by its flags; the probe then only ranks, and the most harmful come first.
    flagged = write_jsonl(tmp_path / "flagged.jsonl", [{"prompt": p, "response": REFUSAL, "harmful": True}
                                                       for p in harmful + benign])  # fmt: skip
    trainer = safety_trainer(
        tokenizer, tmp_path / "ranked", alpaca_rows(8), safety_mix_pool=flagged, safety_mix_strategy="random-b",
        safety_mix_budget=4, safety_mix_harmful_reference=reference, safety_mix_most_harmful_first=True,
    )  # fmt: skip
    trainer.filter_train_dataset()
    mixed = pq.read_table(tmp_path / "ranked" / "safety_report" / "mix.parquet").to_pydict()
    assert set(mixed["prompt"]) == set(harmful) and all("most harmful first" in r for r in mixed["reason"])
