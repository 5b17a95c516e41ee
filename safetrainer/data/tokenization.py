"""Tokenizing (prompt, response) pairs the way TRL's prompt-completion path does, for scoring and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TokenizedPair:
    """One tokenized sequence: `input_ids[:prompt_len]` is the prompt, the rest the response.

    `response_mask`, when given, marks the response tokens the scorers read (those the training's loss covers, or the
    final assistant turn); unset, every token from `prompt_len` on is a response token. `prompt_len == 0` means the
    sequence has no known prompt/response boundary (plain text, trained on every token): only scorers that read the
    trained tokens alone (FIHS, SEAL, random, classifier) can score it.
    """

    sample_idx: int
    input_ids: tuple[int, ...]
    prompt_len: int
    response_mask: tuple[bool, ...] | None = None


def tokenize_pair(
    tokenizer, prompt: Any, completion: Any, sample_idx: int = -1, max_length: int | None = None
) -> TokenizedPair | None:
    """Tokenize a (prompt, completion) pair the way TRL's prompt-completion path does.

    Message lists go through the chat template (the prompt with the generation prompt); strings are tokenized as
    they are. The response starts where the prompt and prompt+completion token ids diverge. Returns None when no
    response token is left after truncation to `max_length`.
    """
    if isinstance(prompt, list):
        prompt_ids = chat_token_ids(tokenizer, prompt, add_generation_prompt=True)
        full_ids = chat_token_ids(tokenizer, prompt + completion, add_generation_prompt=False)
    else:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    prompt_len = common_prefix_length(prompt_ids, full_ids)
    if max_length is not None:
        full_ids = full_ids[:max_length]
    if prompt_len == 0 or prompt_len >= len(full_ids):
        return None
    return TokenizedPair(sample_idx, tuple(full_ids), prompt_len)


def chat_pair(prompt: str, response: str) -> tuple[list[dict], list[dict]]:
    """A single-turn (prompt, completion) pair in conversational form."""
    return [{"role": "user", "content": prompt}], [{"role": "assistant", "content": response}]


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Number of leading token ids `a` and `b` share (where a rendered prompt stops matching the full sequence)."""
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def chat_token_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    """Token ids of `messages` rendered with the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "The tokenizer has no chat template, but the data is conversational. Use a chat model's tokenizer, set "
            "`tokenizer.chat_template`, or give plain-string prompt/completion data."
        )
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def response_positions(batch: list[TokenizedPair], length: int):
    """[B, length] bool tensor: True at each example's response tokens (padding excluded)."""
    import torch

    mask = torch.zeros(len(batch), length, dtype=torch.bool)
    for row, example in enumerate(batch):
        if example.response_mask is None:
            mask[row, example.prompt_len : len(example.input_ids)] = True
        else:
            mask[row, : len(example.input_ids)] = torch.tensor(example.response_mask, dtype=torch.bool)
    return mask


def pad_right(batch: list[TokenizedPair], pad_token_id: int):
    """Right-padded `input_ids` and `attention_mask` tensors [B, longest] for a batch of tokenized pairs."""
    import torch

    lengths = torch.tensor([len(e.input_ids) for e in batch])
    input_ids = torch.full((len(batch), int(lengths.max())), pad_token_id, dtype=torch.long)
    for row, example in enumerate(batch):
        input_ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
    attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
    return input_ids, attention_mask
