"""Per-example gradients from one batched backward equal a per-sample loop; the projection is seeded and linear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from safetrainer.data import chat_pair, tokenize_pair
from safetrainer.data.tokenization import pad_right
from safetrainer.scoring.gradients import (
    CountSketchProjector,
    PerExampleGradients,
    first_token_logit_gap,
    gradient_modules,
    response_nll,
)
from tests.conftest import make_tiny_llama

PAIRS = [
    ("How do I bake bread?", "Mix flour, water, salt and yeast, knead, let it rise, then bake at 230 C."),
    ("Name a prime number.", "Seven."),
    ("Write a haiku about rain.", "Soft rain on the roof / the garden drinks quietly / puddles hold the sky"),
    ("What is 2 + 2?", "2 + 2 = 4."),
]


def lora_model(tokenizer, warm: bool = True):
    model = make_tiny_llama(tokenizer)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.1))
    if warm:  # a trained adapter: B != 0, so A's gradients are non-zero too
        torch.manual_seed(1)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data.normal_(0, 0.05)
    return model


def examples(tokenizer):
    return [tokenize_pair(tokenizer, *chat_pair(p, r), i) for i, (p, r) in enumerate(PAIRS)]


def loop_gradients(model, tokenizer, batch, objective):
    """The oracle: one backward per sample through .grad."""
    params = [m.weight for _, m in gradient_modules(model)]
    model.eval()
    out = []
    for example in batch:
        ids = torch.tensor([example.input_ids])
        mask = torch.ones_like(ids)
        model.zero_grad()
        objective(model(input_ids=ids, attention_mask=mask).logits, ids, mask, [example]).sum().backward()
        out.append(torch.cat([p.grad.flatten() for p in params]))
    model.zero_grad()
    return torch.stack(out)


@pytest.mark.parametrize("warm", [True, False])
def test_batched_per_example_gradients_match_a_per_sample_loop(tokenizer, warm):
    model = lora_model(tokenizer, warm)
    batch = examples(tokenizer)
    grads = PerExampleGradients(model, tokenizer.pad_token_id, dim=0, batch_size=4)
    batched = torch.from_numpy(grads(batch).vectors().astype(np.float32))
    expected = loop_gradients(model, tokenizer, batch, response_nll)
    assert torch.allclose(batched, expected, rtol=1e-2, atol=1e-4)
    assert expected.abs().sum() > 0
    # A fresh LoRA's A matrices have exactly zero gradient, so they are left out; a trained adapter keeps them.
    has_a = any(".lora_A." in n for n in grads.module_names)
    assert has_a == warm


def test_last_blocks_restricts_the_gradient_modules(tokenizer):
    model = lora_model(tokenizer)
    names = PerExampleGradients(model, tokenizer.pad_token_id, dim=0, last_blocks=2).module_names
    assert names and all(".layers.2." in n or ".layers.3." in n for n in names)
    with pytest.raises(ValueError, match="safety_gradient_blocks: must be in 1..4"):
        gradient_modules(model, last_blocks=5)


def test_logit_gap_objective_matches_loop(tokenizer):
    model = lora_model(tokenizer)
    prompts = [tokenize_pair(tokenizer, *chat_pair(p, "x"), i) for i, (p, _) in enumerate(PAIRS)]
    prompts = [type(e)(e.sample_idx, e.input_ids[: e.prompt_len], e.prompt_len) for e in prompts]
    objective = first_token_logit_gap(5, 7)
    batched = PerExampleGradients(model, tokenizer.pad_token_id, dim=0)(prompts, objective).vectors()
    expected = loop_gradients(model, tokenizer, prompts, objective)
    assert torch.allclose(torch.from_numpy(batched.astype(np.float32)), expected, rtol=1e-2, atol=1e-4)


def test_objectives_read_only_the_logits_from_the_last_prompt_position_on(tokenizer):
    """The batched routine asks the model for the logits of the last K positions only (`logits_to_keep`); both
    objectives must give the same losses from that window as from the full logits."""
    model = lora_model(tokenizer)
    batch = examples(tokenizer)
    prompts = [type(e)(e.sample_idx, e.input_ids[: e.prompt_len], e.prompt_len) for e in batch]
    for rows, objective in ((batch, response_nll), (prompts, first_token_logit_gap(5, 7))):
        input_ids, attention_mask = pad_right(rows, tokenizer.pad_token_id)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        first = min(e.prompt_len for e in rows) - 1
        assert first > 0  # the window really is narrower than the sequence
        full = objective(logits, input_ids, attention_mask, rows)
        torch.testing.assert_close(objective(logits[:, first:], input_ids, attention_mask, rows), full)


def test_projection_is_seeded_linear_and_preserves_inner_products():
    torch.manual_seed(0)
    blocks = [torch.randn(3, 5000), torch.randn(3, 7000)]
    a = CountSketchProjector([5000, 7000], dim=4096, seed=3)(blocks)
    b = CountSketchProjector([5000, 7000], dim=4096, seed=3)(blocks)
    assert torch.equal(a, b)
    c = CountSketchProjector([5000, 7000], dim=4096, seed=4)(blocks)
    assert not torch.equal(a, c)
    doubled = CountSketchProjector([5000, 7000], dim=4096, seed=3)([2 * x for x in blocks])
    assert torch.allclose(doubled, 2 * a)
    full = torch.cat(blocks, 1)
    x, y = full[0], full[0] + 0.5 * full[1]
    px, py = a[0], a[0] + 0.5 * a[1]
    assert abs(float(px @ py) - float(x @ y)) / float(x.norm() * y.norm()) < 0.05
    with pytest.raises(ValueError, match="safety_projection_dim"):
        CountSketchProjector([10], dim=-1)


def test_model_without_lora_uses_the_last_blocks(tokenizer):
    model = make_tiny_llama(tokenizer)
    names = [n for n, _ in gradient_modules(model, last_blocks=1)]
    assert names and all(n.startswith("model.layers.3.") for n in names)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="No trainable linear"):
        gradient_modules(model)
