import numpy as np
import pytest
import torch

from safetrainer.data import chat_pair, tokenize_pair
from safetrainer.scoring import FeatureRequest, HiddenStateExtractor

PAIRS = [
    chat_pair("What is two plus two?", "Four."),
    chat_pair("Name a colour.", "Blue is a colour that many people like."),
    chat_pair(
        "Write a haiku about rain.", "Soft rain on the roof\nthe garden drinks quietly\nclouds drift to the east"
    ),
]


def examples(tokenizer):
    return [tokenize_pair(tokenizer, p, c, i) for i, (p, c) in enumerate(PAIRS)]


def extractor(model, tokenizer, batch_size=8):
    return HiddenStateExtractor(model, tokenizer.pad_token_id, tokenizer.all_special_ids, batch_size)


def test_tokenize_pair_matches_the_chat_template(tokenizer):
    prompt, completion = PAIRS[0]
    ex = tokenize_pair(tokenizer, prompt, completion, 7)
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    assert tokenizer.decode(list(ex.input_ids)) == full
    assert tokenizer.decode(list(ex.input_ids[: ex.prompt_len])).endswith("<|im_start|>assistant\n")
    assert ex.sample_idx == 7
    assert tokenize_pair(tokenizer, prompt, completion, max_length=ex.prompt_len) is None


def test_tokenize_pair_on_plain_strings(tokenizer):
    ex = tokenize_pair(tokenizer, "Question: hi\nAnswer:", " hello")
    assert tokenizer.decode(list(ex.input_ids[ex.prompt_len :])) == " hello"


def test_pooled_states_match_a_full_forward(tiny_model, tokenizer):
    exs = examples(tokenizer)
    request = FeatureRequest(frozenset({0, 2, 3}), frozenset({"prompt_last", "response_mean", "end_of_turn"}))
    features = extractor(tiny_model, tokenizer, batch_size=2)(exs, request)
    special = set(tokenizer.all_special_ids)
    for row, ex in enumerate(exs):
        with torch.no_grad():
            out = tiny_model(torch.tensor([ex.input_ids]), output_hidden_states=True)
        ids = np.array(ex.input_ids)
        content = [t for t in range(ex.prompt_len, len(ids)) if ids[t] not in special]
        eot = max(t for t in range(ex.prompt_len, len(ids)) if ids[t] in special)
        for layer in (0, 2, 3):
            h = out.hidden_states[layer][0].numpy()
            np.testing.assert_allclose(features.get(layer, "prompt_last")[row], h[ex.prompt_len - 1], atol=1e-4)
            np.testing.assert_allclose(features.get(layer, "response_mean")[row], h[content].mean(0), atol=1e-4)
            np.testing.assert_allclose(features.get(layer, "end_of_turn")[row], h[eot], atol=1e-4)
    assert list(features.sample_idx) == [0, 1, 2]
    assert list(features.num_tokens) == [len(e.input_ids) for e in exs]


def test_forward_stops_at_the_deepest_requested_layer(tiny_model, tokenizer):
    calls = []
    hooks = [
        tiny_model.model.layers[2].register_forward_hook(lambda *a: calls.append("block2")),
        tiny_model.lm_head.register_forward_hook(lambda *a: calls.append("lm_head")),
    ]
    request = FeatureRequest(frozenset({2}), frozenset({"response_mean"}))
    extractor(tiny_model, tokenizer)(examples(tokenizer), request)
    for h in hooks:
        h.remove()
    assert calls == []


def test_batching_and_padding_do_not_change_features(tiny_model, tokenizer):
    request = FeatureRequest(frozenset({4}), frozenset({"response_mean", "prompt_last"}))
    one = extractor(tiny_model, tokenizer, batch_size=1)(examples(tokenizer), request)
    many = extractor(tiny_model, tokenizer, batch_size=3)(examples(tokenizer), request)
    for key in one.pooled:
        np.testing.assert_allclose(one.pooled[key], many.pooled[key], atol=1e-4)


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="allowed"):
        FeatureRequest(frozenset({1}), frozenset({"max"}))


def test_extraction_restores_training_mode(tiny_model, tokenizer):
    tiny_model.train()
    extractor(tiny_model, tokenizer)(examples(tokenizer), FeatureRequest(frozenset({1}), frozenset({"prompt_last"})))
    assert tiny_model.training
