"""From a training row as TRL prepared it to the example the scorers read: score what training will train on.

Every input type ends up, after SFTTrainer's preparation, as `input_ids` with `labels` (-100 on tokens the loss skips),
so the scored tokens are exactly the trained ones, after TRL's own truncation. The prompt/response boundary comes from
the labels when they mask a prefix (prompt/completion data, assistant masks, your own labels). Where every token is
trained, it comes from the row's structure: the final assistant turn of a conversation, a `completion_mask`, or, for
a `formatting_func`, the last place the row's response text occurs in the formatted text. Plain text and
pre-tokenized rows without masks have no boundary (`prompt_len == 0`).
"""

from __future__ import annotations

from typing import Any

from .formats import ASSISTANT_ROLES, SAMPLE_IDX, response_text
from .tokenization import TokenizedPair, chat_token_ids, common_prefix_length

_IGNORE_INDEX = -100


def trained_example(
    row: dict[str, Any],
    tokenizer,
    max_length: int | None = None,
    formatted: bool = False,
    raw_format: str | None = None,
) -> TokenizedPair | str:
    """The scoring example of a prepared training row, or the reason it cannot be scored.

    `formatted`: the row's text came from a `formatting_func`; `raw_format` is then the format of the columns it read
    (see `PreparedInput.raw_format`), which says where the row's response text is. Sequences are cut to `max_length`
    tokens (TRL has already cut them, except before packing).
    """
    ids = list(row["input_ids"])
    labels = row.get("labels")
    trained = [label != _IGNORE_INDEX for label in labels] if labels is not None else [True] * len(ids)
    if not any(trained):
        return "no trained token: every label is -100"
    first = trained.index(True)
    if first > 0:
        prompt_len, mask = first, trained
    else:
        span = _response_span(row, ids, tokenizer, formatted, raw_format)
        if span is None:
            prompt_len, mask = 0, trained
        else:
            prompt_len, mask = span[0], [span[0] <= t < span[1] for t in range(len(ids))]
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    # Position 0 is never predicted, so a response must hold a token after it.
    if not any(mask[max(prompt_len, 1) :]):
        return f"no response token left within max_length={max_length}"
    default = [t >= prompt_len for t in range(len(ids))]
    return TokenizedPair(row[SAMPLE_IDX], tuple(ids), prompt_len, None if mask == default else tuple(mask))


def _response_span(
    row: dict[str, Any], ids: list[int], tokenizer, formatted: bool, raw_format: str | None
) -> tuple[int, int] | None:
    """[start, end) token span of the response in a row trained on every token, or None when it is unknown."""
    completion_mask = list(row.get("completion_mask") or [])
    if any(completion_mask) and not completion_mask[0]:
        return completion_mask.index(1), len(completion_mask) - completion_mask[::-1].index(1)
    # TRL tokenizes conversations and prompt/completion rows from their own columns even under a formatting_func.
    if formatted and raw_format not in ("messages", "prompt_completion"):
        return _formatted_span(row, ids, tokenizer, raw_format)
    messages = row.get("messages")
    if isinstance(messages, list):
        return _last_assistant_span(messages, ids, tokenizer)
    return None


def _last_assistant_span(messages: list[dict], ids: list[int], tokenizer) -> tuple[int, int] | None:
    turns = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") in ASSISTANT_ROLES]
    if not turns:
        return None
    k = turns[-1]
    start = common_prefix_length(chat_token_ids(tokenizer, messages[:k], add_generation_prompt=True), ids)
    end = common_prefix_length(chat_token_ids(tokenizer, messages[: k + 1], add_generation_prompt=False), ids)
    return (start, end) if 0 < start < end else None


def _formatted_span(row: dict[str, Any], ids: list[int], tokenizer, raw_format: str | None) -> tuple[int, int] | None:
    text, response = row.get("text"), response_text(row, raw_format)
    if not isinstance(text, str) or not response:
        return None
    at = text.rfind(response)
    if at <= 0:
        return None
    start = common_prefix_length(tokenizer(text[:at])["input_ids"], ids)
    return (start, len(ids)) if 0 < start < len(ids) else None
