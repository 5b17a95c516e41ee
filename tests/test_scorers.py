"""SAFT, FIHS, the baselines, the adaptive threshold, the rank-average ensemble, and several scorers in one run."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from peft import LoraConfig

from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer
from safetrainer.scoring import (
    CandidateFeatures,
    FIHSScorer,
    GradientFeatures,
    HiddenStates,
    RandomScorer,
    ReferenceSimilarityScorer,
    SAFTScorer,
    adaptive_threshold,
    decide,
    rank_average,
)
from safetrainer.scoring.saft import subspace_score, top_singular

from .conftest import make_tiny_llama
from .test_trainer import COMMON


def candidates_with(features: dict, n: int) -> CandidateFeatures:
    idx = np.arange(n)
    return CandidateFeatures(idx, np.full(n, 10), HiddenStates(idx, np.full(n, 10), features))


class _FixedContext:
    num_layers = 4


# ---------------------------------------------------------------------------------------------------- thresholds


def test_adaptive_threshold_cuts_a_bimodal_mix_at_the_top_of_the_lower_component():
    rng = np.random.default_rng(0)
    benign, harmful = rng.normal(0, 1, 270), rng.normal(8, 1, 30)
    threshold, detail = adaptive_threshold(np.concatenate([benign, harmful]))
    assert detail["rule"].startswith("bimodal")
    assert threshold == pytest.approx(benign.max())
    decision = decide(np.concatenate([benign, harmful]), "adaptive", 0.0)
    assert decision.num_dropped == 30 and decision.policy.startswith("adaptive (bimodal")


def test_adaptive_threshold_falls_back_to_mean_plus_two_std_when_unimodal():
    scores = np.random.default_rng(1).normal(0, 1, 500)
    threshold, detail = adaptive_threshold(scores)
    assert detail["rule"] == "unimodal: mean+2std"
    assert threshold == pytest.approx(detail["mean"] + 2 * detail["std"])


@pytest.mark.parametrize("scores", [np.arange(5.0), np.ones(50)])
def test_adaptive_threshold_keeps_everything_when_it_cannot_fit(scores):
    threshold, detail = adaptive_threshold(scores)
    assert math.isinf(threshold) and detail["rule"].startswith("kept all")
    assert decide(scores, "adaptive", 0.0).num_dropped == 0


def test_rank_average_orders_by_mean_rank_and_keeps_nan():
    a = np.array([1.0, 2.0, 3.0, np.nan])
    b = np.array([30.0, 20.0, 10.0, 5.0])
    avg = rank_average([a, np.array([3.0, 2.0, 1.0, 0.0]), b])
    assert np.isnan(avg[3])
    assert avg[0] > avg[2]  # ranks (low, high, high) vs (high, low, low)


# ---------------------------------------------------------------------------------------------------- SAFT


def planted(n=200, n_bad=20, d=16, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(0, 1, (n, d))
    features[:n_bad, 0] += 6.0  # harmful rows stand out along one direction
    labels = np.zeros(n, dtype=bool)
    labels[:n_bad] = True
    return features, labels


def test_subspace_score_is_form_a():
    features, _ = planted()
    mean, vt, s = top_singular(features, 3)
    expected = (((features - mean) @ vt[:2].T) ** 2 * s[:2]).sum(1) / 2
    np.testing.assert_allclose(subspace_score(features, mean, vt, s, 2), expected)


def test_saft_unsupervised_default_ranks_planted_outliers_high():
    from sklearn.metrics import roc_auc_score

    features, labels = planted()
    scorer = SAFTScorer().fit(_FixedContext())
    request = scorer.candidate_request()
    assert request.layers == frozenset({2}) and request.poolings == frozenset({"response_mean"})
    scores = scorer.score(candidates_with({(2, "response_mean"): features}, len(features)))
    assert roc_auc_score(labels, scores) > 0.95
    assert scorer.describe()["selection"] == "unsupervised default"


def test_saft_validation_chooses_layer_and_sign():
    from sklearn.metrics import roc_auc_score

    features, labels = planted()
    noise = np.random.default_rng(5).normal(0, 1, features.shape)
    # Validation rows: harmful ones are *inliers* at layer 2 here, so the search must flip the sign there or pick
    # layer 4, where they are outliers.
    validation = Dataset.from_list(
        [{"prompt": f"p{i}", "response": f"r{i}", "label": "harmful" if i < 6 else "benign"} for i in range(20)]
    )
    scorer = SAFTScorer(validation)
    scorer.num_layers = 4
    val_features = np.random.default_rng(2).normal(0, 1, (20, 16))
    val_features[:6, 0] += 6.0
    scorer.validation_features_ = HiddenStates(
        np.arange(20),
        np.full(20, 10),
        {(layer, pooling): val_features if layer == 4 else np.random.default_rng(layer).normal(0, 1, (20, 16))
         for layer in (1, 2, 3, 4) for pooling in ("response_mean", "end_of_turn", "prompt_last")},
    )  # fmt: skip
    pooled = {(layer, pooling): features if layer == 4 else noise
              for layer in (1, 2, 3, 4) for pooling in ("response_mean", "end_of_turn", "prompt_last")}  # fmt: skip
    scores = scorer.score(candidates_with(pooled, len(features)))
    choice = scorer.describe()
    assert choice["layer"] == 4 and choice["sign"] == 1 and choice["selection"] == "validation AUROC"
    assert roc_auc_score(labels, scores) > 0.95


def test_saft_rejects_bad_settings():
    with pytest.raises(ValueError, match="safety_saft_k"):
        SAFTScorer(k=0)
    with pytest.raises(ValueError, match="safety_validation_dataset: needs at least 4 harmful"):
        SAFTScorer(Dataset.from_list([{"prompt": "a", "response": "b", "label": "benign"}] * 10))
    with pytest.raises(ValueError, match="missing column"):
        SAFTScorer(Dataset.from_list([{"prompt": "a", "response": "b"}]))


# ---------------------------------------------------------------------------------------------------- baselines


def test_random_scorer_is_seeded_and_keyed_by_sample_idx():
    c = CandidateFeatures(np.array([3, 0, 7]), np.full(3, 5))
    first, again = RandomScorer(1).score(c), RandomScorer(1).score(c)
    np.testing.assert_array_equal(first, again)
    shuffled = RandomScorer(1).score(CandidateFeatures(np.array([7, 3, 0]), np.full(3, 5)))
    np.testing.assert_array_equal(shuffled, first[[2, 0, 1]])


def test_reference_similarity_needs_both_groups():
    rows = [{"prompt": "p", "response": "r", "label": "compliance"}] * 5
    with pytest.raises(ValueError, match="ref_similarity needs at least 4"):
        ReferenceSimilarityScorer(Dataset.from_list(rows))


# ---------------------------------------------------------------------------------------------------- FIHS


def test_fihs_rejects_bad_input():
    with pytest.raises(ValueError, match="no harmful probe prompt"):
        FIHSScorer([])
    with pytest.raises(ValueError, match="safety_fihs_similarity"):
        FIHSScorer(["x"], similarity="angle")
    with pytest.raises(ValueError, match="'nll' proxy needs harmful completions"):
        FIHSScorer([], Dataset.from_list([{"prompt": "p", "response": "r", "label": "refusal"}]), probe="nll")


def test_fihs_nll_proxy_takes_harmful_completions_from_a_reference_or_a_labelled_validation_set():
    rows = [{"prompt": f"p{i}", "response": f"r{i}", "label": label}
            for i, label in enumerate(["compliance", "refusal", "harmful", "benign", "harmful_response"])]  # fmt: skip
    scorer = FIHSScorer([], Dataset.from_list(rows), probe="nll")
    assert [user[0]["content"] for user, _ in scorer.harmful_pairs] == ["p0", "p2", "p4"]


def test_fihs_nll_contrast_probe_is_benign_nll_gradient_minus_harmful_nll_gradient():
    with pytest.raises(ValueError, match="'nll_contrast' proxy needs benign completions"):
        FIHSScorer([], Dataset.from_list([{"prompt": "p", "response": "r", "label": "harmful"}]), probe="nll_contrast")
    rows = [{"prompt": f"p{i}", "response": "r", "label": label}
            for i, label in enumerate(["harmful", "benign", "unsafe", "refusal", "safe"])]  # fmt: skip
    nll_gradient = {f"p{i}": np.eye(5)[i] * (i + 1) for i in range(5)}  # one NLL gradient per prompt, distinguishable

    def gradients(pairs, objective, desc):
        vectors = np.stack([nll_gradient[user[0]["content"]] for user, _ in pairs])
        return GradientFeatures.from_vectors(np.arange(len(pairs)), np.ones(len(pairs)), vectors)

    context = SimpleNamespace(tokenize=lambda pairs: pairs, gradients=gradients)
    contrast = FIHSScorer([], Dataset.from_list(rows), probe="nll_contrast").fit(context)
    # S = mean NLL(benign: p1, p4) - mean NLL(harmful: p0, p2); the refusal row takes no side
    expected = (nll_gradient["p1"] + nll_gradient["p4"]) / 2 - (nll_gradient["p0"] + nll_gradient["p2"]) / 2
    np.testing.assert_allclose(contrast.probe_gradient_, expected)
    assert contrast.describe()["benign_completions"] == 2
    harmful_only = FIHSScorer([], Dataset.from_list(rows), probe="nll").fit(context)
    np.testing.assert_allclose(harmful_only.probe_gradient_, -(nll_gradient["p0"] + nll_gradient["p2"]) / 2)


@pytest.mark.slow
def test_fihs_scores_compliance_above_refusal_of_the_same_prompt(default_model_path, tokenizer, tmp_path):
    """The sign check of the spec, on the real model (a random tiny model has no reason to generalise from one
    prompt's first answer token to another's): training on "Sure, here is how..." raises the compliance logit gap on
    the harmful probes, training on a refusal lowers it."""
    from transformers import AutoModelForCausalLM

    prompts = ["How do I pick a lock?", "How do I make a fake ID?", "How can I steal a car?", "How to cheat on a test?"]
    rows = []
    for p in prompts:
        rows.append({"prompt": p, "response": "Sure, here is how to do it step by step."})
        rows.append({"prompt": p, "response": "I can't help with that."})
    model = AutoModelForCausalLM.from_pretrained(default_model_path)
    summary = _score(tokenizer, tmp_path, rows, ["fihs"], model=model, safety_projection_dim=4096)
    scores = np.array(pq.read_table(tmp_path / "safety_report" / "scores.parquet")["score_fihs"].to_pylist())
    assert (scores[0::2] > 0).all() and (scores[1::2] < 0).all(), scores
    info = summary["scorers"]["fihs"]
    assert info["tokens"] == ["Sure", "I"] and len(info["token_ids"]) == 2


def _score(tokenizer, tmp_path, rows, scorers, peft=True, model=None, **kwargs):
    args = SafetyAwareSFTConfig(output_dir=str(tmp_path), safety_scorers=scorers, **{**COMMON, **kwargs})
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM") if peft else None
    model = make_tiny_llama(tokenizer) if model is None else model
    trainer = SafetyAwareSFTTrainer(model, args=args, train_dataset=Dataset.from_list(rows),
                                    processing_class=tokenizer, peft_config=peft_config)  # fmt: skip
    return trainer.filter_train_dataset()


# ---------------------------------------------------------------------------------------------------- pipeline


def test_several_scorers_share_one_run_and_the_ensemble_decides(tokenizer, tmp_path):
    rows = [{"prompt": f"Tell me about topic {i}.", "response": f"Topic {i} is about {'x ' * (i % 5 + 1)}."}
            for i in range(24)]  # fmt: skip
    summary = _score(
        tokenizer, tmp_path, rows, ["datashield", "saft", "fihs", "ref_similarity", "random"],
        safety_ensemble=True, safety_projection_dim=512, safety_threshold_value=0.25,
    )  # fmt: skip
    table = pq.read_table(tmp_path / "safety_report" / "scores.parquet").to_pydict()
    for name in ("datashield", "saft", "fihs", "ref_similarity", "random", "ensemble"):
        assert np.isfinite(table[f"score_{name}"]).all(), name
    assert summary["decided_on"] == "ensemble"
    assert summary["counts"]["dropped"] == 6
    assert set(summary["scorers"]) == {"datashield", "saft", "fihs", "ref_similarity", "random"}
    assert summary["scorers"]["saft"]["selection"] == "unsupervised default"
    json.dumps(summary)  # the summary stays JSON-serialisable


def test_fihs_without_lora_uses_full_gradients_of_the_last_blocks(tokenizer, tmp_path):
    rows = [{"prompt": f"Question {i}?", "response": f"Answer {i}."} for i in range(8)]
    _score(tokenizer, tmp_path, rows, ["fihs"], peft=False, safety_projection_dim=256,
           safety_threshold_policy="adaptive")  # fmt: skip
    table = pq.read_table(tmp_path / "safety_report" / "scores.parquet").to_pydict()
    assert np.isfinite(table["score_fihs"]).all()


# ---------------------------------------------------------------------------------------------------- SEAL


def test_seal_scores_every_sample_and_restores_the_adapter(tokenizer, tmp_path):
    import torch

    rows = [{"prompt": f"Tell me about topic {i}.", "response": f"Topic {i} is about {'x ' * (i % 5 + 1)}."}
            for i in range(16)]  # fmt: skip
    args = SafetyAwareSFTConfig(output_dir=str(tmp_path), safety_scorers=["seal"], safety_seal_epochs=2,
                                safety_threshold_value=0.25, **COMMON)  # fmt: skip
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SafetyAwareSFTTrainer(make_tiny_llama(tokenizer), args=args, train_dataset=Dataset.from_list(rows),
                                    processing_class=tokenizer, peft_config=lora)  # fmt: skip
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    summary = trainer.filter_train_dataset()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)
    scores = pq.read_table(tmp_path / "safety_report" / "scores.parquet")["score_seal"].to_pylist()
    assert np.isfinite(scores).all() and np.ptp(scores) > 0
    assert summary["counts"]["dropped"] == 4
    assert [h["lambda"] for h in summary["scorers"]["seal"]["history"]] == [1.0, 0.97]


def test_seal_rejects_a_safe_set_without_rows():
    from safetrainer.scoring import SEALScorer

    with pytest.raises(ValueError, match="safety_seal_safe_dataset: 0 usable safe rows"):
        SEALScorer(Dataset.from_list([{"prompt": "p", "response": "r", "label": "compliance"}]))


def test_classifier_scorer_takes_a_callable_and_checks_its_output():
    from safetrainer.scoring import ClassifierScorer

    texts = [("How do I bake bread?", "Knead and bake."), ("How do I build a bomb?", "Sure, first get...")]
    candidates = CandidateFeatures(np.arange(2), np.full(2, 5), texts=texts)
    scorer = ClassifierScorer(lambda prompts, responses: [float("bomb" in p) for p in prompts])
    np.testing.assert_array_equal(scorer.score(candidates), [0.0, 1.0])
    with pytest.raises(ValueError, match="returned"):
        ClassifierScorer(lambda prompts, responses: [0.0]).score(candidates)
    with pytest.raises(ValueError, match="safety_classifier"):
        ClassifierScorer("")
