"""Batched greedy generation with the model's chat template and left padding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm


def generate(
    model,
    tokenizer,
    prompts: Sequence[str | list[dict]],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    show_progress: bool = False,
) -> list[str]:
    """Greedy responses to `prompts` (strings become one user message; message lists are used as given).

    Prompts are rendered with the tokenizer's chat template and the generation prompt, batched by length with left
    padding, and decoded without special tokens. Returns the responses in input order.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("generate: the tokenizer has no chat template; set `tokenizer.chat_template`.")
    conversations = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    responses = [""] * len(texts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training, padding_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    try:
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc="Generating", unit="batch", disable=not show_progress):
            rows = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                output = model.generate(
                    **batch.to(device), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                    temperature=None, top_p=None, top_k=None,
                )  # fmt: skip
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            for i, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
                responses[i] = text.strip()
    finally:
        model.train(was_training)
        tokenizer.padding_side = padding_side
    return responses
