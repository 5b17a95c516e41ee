"""Scoring never yields NaN or inf and never crashes: every row is scored with finite scores or rejected with the
reason. Property tests over random text (unicode, chat-template markers, empty and whitespace spans), lengths up to and
past max_length, and every scorer; then the root causes one at a time."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer
from safetrainer.data import SAMPLE_IDX, chat_pair, tokenize_pair, trained_example
from safetrainer.data.tokenization import response_positions
from safetrainer.scoring import (
    ClassifierScorer,
    DataShieldScorer,
    FIHSScorer,
    RandomScorer,
    SAFTScorer,
    score_and_decide,
)
from safetrainer.scoring.features import decoder_layers
from safetrainer.scoring.gradients import GradientFeatures
from safetrainer.scoring.pipeline import CandidateFeatures

from .conftest import make_tiny_llama

MAX_LENGTH = 48
PIECES = ["", " ", "\n\n", "<|im_end|>", "<|im_start|>assistant\n", "ß", "🙂", "\u200b", "\x00", "word ", "日本語",
          "Sure, here is how: ", "I can't help with that."]  # fmt: skip
TEXT = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(PIECES), max_size=20).map("".join),
    # Past max_length: a prompt that alone fills it (TRL drops the row), a response cut by truncation.
    st.tuples(st.sampled_from(["word ", "🙂 ", "abc\n", "<|im_end|>"]), st.integers(0, 120)).map(lambda t: t[0] * t[1]),
)
ROWS = st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=10)
ALL_SCORERS = ["datashield", "saft", "fihs", "seal", "ref_similarity", "random"]
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
# The only errors a random training set may end in: clear ones about the data as a whole.
CLEAR_ERRORS = ("every row is invalid", "could be scored", "would drop all")


@SETTINGS
@given(pairs=ROWS)
def test_every_row_is_scored_finite_or_rejected_with_its_reason(tokenizer, tmp_path_factory, pairs):
    """End to end, every scorer: the report holds each input row once; rejected rows carry a reason and no score;
    every other row has a finite score from every scorer."""
    out = tmp_path_factory.mktemp("robust")
    benign = [(f"Tell me about topic {i}.", f"Topic {i} is interesting.") for i in range(4)]  # always valid rows
    rows = [{"prompt": p, "response": r} for p, r in benign + pairs]
    args = SafetyAwareSFTConfig(
        output_dir=str(out), report_to="none", bf16=False, activation_checkpointing=False, disable_tqdm=True,
        max_length=MAX_LENGTH, per_device_train_batch_size=2, safety_scorers=ALL_SCORERS, safety_ensemble=True,
        safety_threshold_value=0.2, safety_invalid_rows="reject", safety_projection_dim=64, safety_seal_epochs=1,
    )  # fmt: skip
    try:
        trainer = SafetyAwareSFTTrainer(
            make_tiny_llama(tokenizer), args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
        )
        trainer.filter_train_dataset()
    except ValueError as err:
        assert any(what in str(err) for what in CLEAR_ERRORS), err
        return
    table = pq.read_table(out / "safety_report" / "scores.parquet").to_pydict()
    assert table["sample_idx"] == list(range(len(rows)))
    score_columns = [f"score_{name}" for name in [*ALL_SCORERS, "ensemble"]]
    for i, decision in enumerate(table["decision"]):
        scores = [table[c][i] for c in score_columns]
        if decision == "rejected":
            assert table["reason"][i] and all(s is None for s in scores), (i, table["reason"][i], scores)
        else:
            assert decision in ("kept", "dropped") and all(s is not None and np.isfinite(s) for s in scores), scores
    kept = {i for i, d in enumerate(table["decision"]) if d == "kept"}
    assert set(trainer.train_dataset[SAMPLE_IDX]) == kept
    summary = json.loads((out / "safety_report" / "summary.json").read_text())
    assert sum(summary["counts"][d] for d in ("kept", "dropped", "rejected")) == len(rows)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    ids=st.lists(st.integers(0, 500), min_size=1, max_size=80),
    masked_prefix=st.integers(0, 90),
    holes=st.sets(st.integers(0, 90), max_size=10),
    max_length=st.one_of(st.none(), st.integers(1, 100)),
)
def test_trained_example_has_a_response_within_max_length_or_a_reason(ids, masked_prefix, holes, max_length):
    labels = [-100 if t < masked_prefix or t in holes else token for t, token in enumerate(ids)]
    example = trained_example({"input_ids": ids, "labels": labels, SAMPLE_IDX: 0}, tokenizer=None,
                              max_length=max_length)  # fmt: skip
    if isinstance(example, str):
        assert example.startswith(("no trained token", "no response token"))
        return
    assert len(example.input_ids) <= (max_length or len(ids))
    response = response_positions([example], len(example.input_ids))[0].tolist()
    assert any(response[1:]), "a response token after position 0 (position 0 is never predicted)"
    trained = [label != -100 for label in labels[: len(example.input_ids)]]
    assert response == trained  # exactly the trained tokens: labels with holes keep their holes
    assert example.prompt_len == trained.index(True)


def candidates(tokenizer, pairs):
    return [e for i, (p, r) in enumerate(pairs) if (e := tokenize_pair(tokenizer, *chat_pair(p, r), i, MAX_LENGTH))]


REFERENCE = Dataset.from_list(
    [{"prompt": f"How do I do harmful thing {i}?", "response": f"Sure, here is how to do thing {i}.",
      "label": "compliance"} for i in range(8)]
    + [{"prompt": f"How do I do harmful thing {i}?", "response": "I can't help with that.", "label": "refusal"}
       for i in range(8)]
)  # fmt: skip


def test_a_sample_whose_hidden_states_overflow_is_unscorable_and_spares_the_others(tokenizer):
    """Overflow in the forward pass (as float16 can produce) makes one sample's states inf: that sample is reported
    unscorable; the transductive SAFT subspace is computed without it, so every other score stays finite."""
    model = make_tiny_llama(tokenizer)
    marker = tokenizer.encode(" overflow", add_special_tokens=False)[0]
    seen = {}

    def remember(_module, _args, kwargs):
        seen["input_ids"] = kwargs["input_ids"]

    def overflow(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[(seen["input_ids"] == marker).any(1)] = float("inf")

    pairs = [(f"Question {i}?", f"Answer {i}.") for i in range(12)] + [("Question overflow?", "A.")]
    examples = candidates(tokenizer, pairs)
    handles = [model.register_forward_pre_hook(remember, with_kwargs=True),
               decoder_layers(model)[1].register_forward_hook(overflow)]  # fmt: skip
    try:
        result = score_and_decide(model, tokenizer, examples, [SAFTScorer(layer=2), DataShieldScorer(REFERENCE, 2)],
                                  "top_k", 1)  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
    assert list(result.unscorable) == [12] and result.unscorable[12].startswith("hidden state not finite (layer 2")
    assert 12 not in result.sample_idx and all(np.isfinite(v).all() for v in result.scores.values())
    assert len(result.sample_idx) == 12


def test_a_scorer_output_that_is_not_finite_rejects_only_that_row(tokenizer):
    def moderation(prompts, responses):
        return [float("nan") if "bad" in r else 0.1 for r in responses]

    examples = candidates(tokenizer, [("Q?", "fine"), ("Q?", "bad answer"), ("Q?", "also fine")])
    result = score_and_decide(make_tiny_llama(tokenizer), tokenizer, examples,
                              [ClassifierScorer(moderation), RandomScorer(0)], "top_k", 1)  # fmt: skip
    assert result.unscorable == {1: "classifier score is not finite"}
    assert result.sample_idx.tolist() == [0, 2]


def test_boundary_free_sequences_are_unscorable_only_for_scorers_that_compare_prompt_and_response(tokenizer):
    examples = candidates(tokenizer, [(f"Q{i}?", f"A{i}.") for i in range(3)])
    whole = type(examples[0])(99, examples[0].input_ids, 0)  # trained on every token: no boundary
    model = make_tiny_llama(tokenizer)
    result = score_and_decide(model, tokenizer, [*examples, whole], [DataShieldScorer(REFERENCE, 2)], "top_k", 1)
    assert result.unscorable == {99: "no prompt/response boundary, which datashield compare"}
    result = score_and_decide(model, tokenizer, [*examples, whole], [RandomScorer(0)], "top_k", 1)
    assert not result.unscorable and 99 in result.sample_idx


@pytest.mark.parametrize("scale", [1e-9, 1e-3, 1.0, 1e6])
def test_gradient_features_keep_direction_and_norm_at_any_scale(scale):
    """Stored as float16 vectors, gradients of 1e-9 flushed to zero (a NaN cosine) and of 1e6 overflowed to inf;
    unit directions in float16 with float64 norms keep both, so FIHS is the same at every scale."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 256)) * scale
    features = GradientFeatures.from_vectors(np.arange(5), np.ones(5), vectors)
    assert np.isfinite(features.directions.astype(np.float64)).all() and (features.norms > 0).all()
    np.testing.assert_allclose(features.vectors(), vectors, rtol=2e-3, atol=2e-3 * scale)
    fihs = FIHSScorer(["probe"], similarity="cosine")
    fihs.probe_gradient_ = rng.normal(size=256)
    cosine = fihs.score(CandidateFeatures(np.arange(5), np.ones(5), gradients=features))
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(fihs.probe_gradient_)
    expected = -(vectors @ fihs.probe_gradient_) / norms
    np.testing.assert_allclose(cosine, expected, atol=2e-3)
    zero = GradientFeatures.from_vectors(np.arange(1), np.ones(1), np.zeros((1, 256)))
    assert np.isnan(fihs.score(CandidateFeatures(np.arange(1), np.ones(1), gradients=zero))).all()
