"""Recognise the user's dataset format, check every row, convert to a format TRL trains on, and number the rows.

Formats SFTTrainer accepts pass through unchanged, so training on them is exactly what SFTTrainer does: pre-tokenized
rows (`input_ids`, optionally `labels`, `assistant_masks`, `completion_mask`), rows for a `formatting_func`,
`prompt`/`completion`, `messages` (or ShareGPT `conversations` with from/value), and text under `dataset_text_field`.
Alpaca-style `instruction`/`input`/`output` and `prompt`/`response` rows, which SFTTrainer cannot train on, are
converted to conversational `prompt`/`completion`, which TRL renders with the model's chat template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from .tokenization import chat_pair, tokenize_pair

SAMPLE_IDX = "sample_idx"
PREVIEW_CHARS = 160
# Formats SFTTrainer cannot train on, which `prepare_input` converts to conversational prompt/completion.
CONVERTED_FORMATS = ("alpaca", "prompt_response")
_TOKEN_COLUMNS = ("labels", "assistant_masks", "completion_mask")
_PREVIEW_TOKENS = 64
# Roles of the assistant's turns: ChatML's, and ShareGPT's (TRL keeps its from values as roles).
ASSISTANT_ROLES = ("assistant", "gpt")


@dataclass
class PreparedInput:
    """The user's training rows after format conversion and row checks.

    `dataset` holds the valid rows with a `sample_idx` column (0-based index of the row in the user's dataset);
    `rejected` maps the sample_idx of every left-out row to its reason; `previews` has one prompt preview per input row.
    `raw_format` is the format of the columns a `formatting_func` reads, when they are one safetrainer knows (else
    None); for every other input it equals `input_format`.
    """

    dataset: Dataset
    input_format: str
    num_rows: int
    rejected: dict[int, str] = field(default_factory=dict)
    previews: list[str] = field(default_factory=list)
    raw_format: str | None = None


def input_format(column_names: list[str], text_field: str = "text", formatting_func: bool = False) -> str | None:
    """The format SFTTrainer (or, for the converted formats, safetrainer) reads rows with these columns as, checked in
    TRL's order; None when neither can train on them.

    `tokenized` (an `input_ids` column: TRL skips its own tokenization), `formatted` (a formatting function is given),
    `prompt_completion`, `prompt_response`, `messages` (also ShareGPT `conversations`), `text` (`text_field`),
    `alpaca`.
    """
    columns = set(column_names)
    if "input_ids" in columns:
        return "tokenized"
    if formatting_func:
        return "formatted"
    if "prompt" in columns:  # TRL takes any row with a prompt as prompt-completion
        return "prompt_completion" if "completion" in columns else "prompt_response" if "response" in columns else None
    if columns & {"messages", "conversations"}:
        return "messages"
    if text_field in columns:
        return "text"
    if {"instruction", "output"} <= columns:
        return "alpaca"
    return None


def detect_format(column_names: list[str], text_field: str = "text", formatting_func: bool = False) -> str:
    """`input_format`, raising a ValueError that lists the accepted column sets when no format fits."""
    found = input_format(column_names, text_field, formatting_func)
    if found is None:
        accepted = (
            f"input_ids (pre-tokenized); prompt+completion; prompt+response; messages; conversations; {text_field}; "
            "instruction+output; or any columns with a formatting_func"
        )
        raise ValueError(
            f"train_dataset has no usable text or conversation column: found {sorted(column_names)}; accepted column "
            f"sets: {accepted}."
        )
    return found


def prepare_input(
    dataset: Dataset,
    invalid_rows: str = "error",
    text_field: str = "text",
    formatting_func: Callable[[dict], str] | None = None,
    tokenizer=None,
) -> PreparedInput:
    """Check every row, convert Alpaca and prompt/response rows, and add `sample_idx`.

    With `invalid_rows="error"` the first invalid row raises a ValueError naming the row and the field; with
    `"reject"` invalid rows are left out and recorded in `PreparedInput.rejected`. A dataset with no valid row
    always raises. Pre-tokenized rows' previews are decoded with `tokenizer` when one is given.
    """
    if SAMPLE_IDX in dataset.column_names:
        raise ValueError(f"train_dataset: the column name {SAMPLE_IDX!r} is reserved by safetrainer; rename it.")
    if len(dataset) == 0:
        raise ValueError("train_dataset is empty.")
    fmt = detect_format(dataset.column_names, text_field, formatting_func is not None)
    raw_format = input_format(dataset.column_names, text_field) if fmt == "formatted" else fmt
    rejected: dict[int, str] = {}
    previews: list[str] = []
    for idx, row in enumerate(dataset):
        if fmt == "formatted":
            reason, preview = _formatted_row(row, formatting_func)
        else:
            reason = _ROW_CHECKS[fmt](row, text_field)
            preview = _preview(row, fmt, text_field, tokenizer) if reason is None or fmt != "tokenized" else ""
        if reason is not None:
            if invalid_rows == "error":
                raise ValueError(
                    f"train_dataset row {idx}: {reason}. Fix the data, or set safety_invalid_rows='reject' to leave "
                    "such rows out (they are listed in the safety report)."
                )
            rejected[idx] = f"invalid input: {reason}"
        previews.append(preview_text(preview))
    if len(rejected) == len(dataset):
        first = next(iter(rejected.items()))
        raise ValueError(f"train_dataset: every row is invalid (e.g. row {first[0]}: {first[1]}).")

    dataset = dataset.add_column(SAMPLE_IDX, list(range(len(dataset))))
    if rejected:
        dataset = dataset.select([i for i in range(len(dataset)) if i not in rejected])
    dataset = _convert(dataset, fmt)
    return PreparedInput(dataset, fmt, len(previews), rejected, previews, raw_format)


def response_text(row: dict[str, Any], raw_format: str | None) -> str | None:
    """The response string of a raw row in `raw_format` (the last assistant message of a conversation), or None."""
    if raw_format in ("prompt_completion", "prompt_response", "alpaca"):
        value = row[{"prompt_completion": "completion", "prompt_response": "response", "alpaca": "output"}[raw_format]]
        if isinstance(value, list):
            value = next((m.get("content") for m in reversed(value) if isinstance(m, dict)), None)
        return value if isinstance(value, str) else None
    if raw_format == "messages":
        messages = row.get("messages") or row.get("conversations") or []
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role", message.get("from")) in ASSISTANT_ROLES:
                content = message.get("content", message.get("value"))
                return content if isinstance(content, str) else None
    return None


def to_prompt_completion(row: dict[str, Any]) -> tuple[Any, Any] | None:
    """Split a prepared row into (prompt, completion) for scoring, or None when it has no response to score.

    Conversational rows give message lists, standard rows strings. A `messages` row is split before its last
    assistant message; a `text` row has no prompt/response boundary.
    """
    if "prompt" in row and "completion" in row:
        return row["prompt"], row["completion"]
    if "messages" in row:
        messages = row["messages"]
        if messages and messages[-1].get("role") == "assistant":
            return messages[:-1], messages[-1:]
    return None


def _convert(dataset: Dataset, input_format: str) -> Dataset:
    if input_format == "alpaca":
        drop = [c for c in ("instruction", "input", "output") if c in dataset.column_names]
        return dataset.map(_alpaca_to_conversation, remove_columns=drop, desc="Converting Alpaca rows")
    if input_format == "prompt_response":
        return dataset.map(
            _prompt_response_to_conversation, remove_columns=["prompt", "response"], desc="Converting prompt/response"
        )
    return dataset


def _alpaca_prompt(row: dict[str, Any]) -> str:
    extra = row.get("input") or ""
    return f"{row['instruction']}\n{extra}" if extra.strip() else row["instruction"]


def _alpaca_to_conversation(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": _alpaca_prompt(row)}],
        "completion": [{"role": "assistant", "content": row["output"]}],
    }


def _prompt_response_to_conversation(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "completion": [{"role": "assistant", "content": row["response"]}],
    }


def _check_text(value: Any, name: str, allow_empty: bool = False) -> str | None:
    if not isinstance(value, str):
        return f"field {name!r} is {type(value).__name__}, expected a string"
    if not allow_empty and not value.strip():
        return f"field {name!r} is empty or whitespace-only"
    return None


def _check_messages(messages: Any, name: str, need_assistant: bool) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f"field {name!r} must be a non-empty list of {{'role', 'content'}} messages"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            return f"field {name!r} message {i} must be a dict with 'role' and 'content'"
        reason = _check_text(message["role"], f"{name}[{i}].role") or _check_text(
            message["content"], f"{name}[{i}].content", allow_empty=message["role"] not in ASSISTANT_ROLES
        )
        if reason:
            return reason
    if need_assistant and not any(m["role"] in ASSISTANT_ROLES for m in messages):
        return f"field {name!r} has no assistant message to train on"
    return None


def _messages_field(row: dict[str, Any]) -> tuple[str, Any]:
    """(column name, messages) of a conversation row; ShareGPT from/value messages read as role/content."""
    if "messages" in row:
        return "messages", row["messages"]
    messages = row["conversations"]
    if isinstance(messages, list) and all(isinstance(m, dict) and {"from", "value"} <= set(m) for m in messages):
        messages = [{"role": m["from"], "content": m["value"]} for m in messages]
    return "conversations", messages


def _check_messages_row(row: dict[str, Any], _: str) -> str | None:
    name, messages = _messages_field(row)
    if name == "conversations" and isinstance(messages, list) and messages and "role" not in messages[0]:
        return "field 'conversations' must hold ShareGPT from/value messages (name role/content messages 'messages')"
    return _check_messages(messages, name, need_assistant=True)


def _check_prompt_completion_row(row: dict[str, Any], _: str) -> str | None:
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list) or isinstance(completion, list):
        return _check_messages(prompt, "prompt", need_assistant=False) or _check_messages(
            completion, "completion", need_assistant=True
        )
    return _check_text(prompt, "prompt") or _check_text(completion, "completion")


def _check_prompt_response_row(row: dict[str, Any], _: str) -> str | None:
    return _check_text(row["prompt"], "prompt") or _check_text(row["response"], "response")


def _check_alpaca_row(row: dict[str, Any], _: str) -> str | None:
    extra = row.get("input")
    return (
        _check_text(row["instruction"], "instruction")
        or (None if extra is None else _check_text(extra, "input", allow_empty=True))
        or _check_text(row["output"], "output")
    )


def _check_text_row(row: dict[str, Any], text_field: str) -> str | None:
    return _check_text(row[text_field], text_field)


def _check_tokenized_row(row: dict[str, Any], _: str) -> str | None:
    ids = row["input_ids"]
    if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and t >= 0 for t in ids):
        return "field 'input_ids' must be a non-empty list of non-negative token ids"
    for name in _TOKEN_COLUMNS:
        values = row.get(name)
        if values is not None and (not isinstance(values, list) or len(values) != len(ids)):
            return f"field {name!r} must be a list as long as 'input_ids' ({len(ids)} tokens)"
    return None


def _formatted_row(row: dict[str, Any], formatting_func: Callable[[dict], str]) -> tuple[str | None, str]:
    """(reason the row is unusable or None, its formatted text) for a row that `formatting_func` renders."""
    try:
        text = formatting_func(dict(row))
    except Exception as err:  # a user function: any failure makes this row unusable, named with the row
        return f"formatting_func raised {type(err).__name__}: {err}", ""
    return _check_text(text, "formatting_func(row)"), text if isinstance(text, str) else repr(text)


_ROW_CHECKS = {
    "tokenized": _check_tokenized_row,
    "messages": _check_messages_row,
    "prompt_completion": _check_prompt_completion_row,
    "prompt_response": _check_prompt_response_row,
    "alpaca": _check_alpaca_row,
    "text": _check_text_row,
}


def _first_user_content(messages: Any) -> Any:
    messages = messages if isinstance(messages, list) else []
    return next((m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"), "")


def _preview(row: dict[str, Any], input_format: str, text_field: str, tokenizer=None) -> str:
    if input_format == "alpaca":
        text = _alpaca_prompt(row) if isinstance(row.get("instruction"), str) else row.get("instruction")
    elif input_format == "messages":
        text = _first_user_content(_messages_field(row)[1])
    elif input_format == "text":
        text = row[text_field]
    elif input_format == "tokenized":
        ids, labels = row["input_ids"], row.get("labels")
        prompt_len = next((i for i, label in enumerate(labels) if label != -100), 0) if labels else 0
        shown = ids[: prompt_len or _PREVIEW_TOKENS]
        text = tokenizer.decode(shown, skip_special_tokens=True) if tokenizer is not None else f"token ids {shown}"
    else:
        text = row["prompt"]
        if isinstance(text, list):
            text = _first_user_content(text)
    return text if isinstance(text, str) else repr(text)


def preview_text(text: str) -> str:
    """A prompt's preview in the report: whitespace collapsed, cut to PREVIEW_CHARS characters."""
    return " ".join(text.split())[:PREVIEW_CHARS]


def mixed_row_format(prepared: PreparedInput) -> str:
    """The format safety samples are mixed into this training data in (see `rows_like`); a ValueError naming the
    input type when there is none."""
    formatted = prepared.input_format == "formatted"
    fmt = prepared.raw_format if formatted else prepared.input_format
    plain_strings = fmt == "prompt_completion" and not isinstance(prepared.dataset[0].get("prompt"), list)
    if fmt in (None, "text") or (plain_strings and not formatted):
        what = {
            None: "formatted by a formatting_func from columns safetrainer cannot fill (it fills prompt/response, "
            "prompt/completion, instruction/output or messages)",
            "text": "plain text" + (" under a formatting_func" if formatted else ""),
        }.get(fmt, "prompt/completion with plain strings")
        raise ValueError(
            f"safety_mix_pool: the training data is {what}, and mixed samples are rendered in the training data's "
            "own format, which is unknown here; give conversational training data (messages, prompt/completion "
            "message lists, prompt/response or Alpaca rows), pre-tokenized rows, or a formatting_func over "
            "prompt/response, prompt/completion, instruction/output or messages columns; or leave safety_mix_pool "
            "unset."
        )
    return fmt


def rows_like(
    prepared: PreparedInput, prompts: list[str], responses: list[str], first_idx: int, tokenizer=None
) -> Dataset:
    """Single-turn (prompt, response) pairs as rows of the training data's format, numbered from `first_idx`.

    `messages` rows for a conversation dataset; conversational prompt/completion for prompt/completion message lists
    and the converted formats; for pre-tokenized data, `input_ids` rendered with `tokenizer`'s chat template and
    `labels` that train on the response only; for a `formatting_func`, rows in the columns the function reads (so it
    renders them in the user's own template). Plain-string prompt/completion and `text` data have no format a
    conversation can be rendered into without guessing the user's template, so they raise a ValueError.
    """
    fmt = mixed_row_format(prepared)
    strings = prepared.input_format == "formatted" and not isinstance(prepared.dataset[0].get("prompt", ""), list)
    rows = []
    for offset, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        user, assistant = {"role": "user", "content": prompt}, {"role": "assistant", "content": response}
        if fmt == "tokenized":
            pair = tokenize_pair(tokenizer, *chat_pair(prompt, response))
            row = {"input_ids": list(pair.input_ids),
                   "labels": [-100] * pair.prompt_len + list(pair.input_ids[pair.prompt_len :])}  # fmt: skip
        elif fmt == "messages":
            row = {"messages": [user, assistant]}
        elif strings:  # raw columns for the user's formatting_func
            row = {
                "prompt_completion": {"prompt": prompt, "completion": response},
                "prompt_response": {"prompt": prompt, "response": response},
                "alpaca": {"instruction": prompt, "input": "", "output": response},
            }[fmt]
        else:
            row = {"prompt": [user], "completion": [assistant]}
        rows.append({**row, SAMPLE_IDX: first_idx + offset})
    return Dataset.from_list(rows)


def pair_texts(prepared: PreparedInput) -> tuple[list[str], list[str]]:
    """(prompts, responses) as plain text of every prepared row that has a response (message contents joined)."""

    def text(value: Any) -> str:
        return value if isinstance(value, str) else "\n".join(m["content"] for m in value)

    pairs = [pair for pair in map(to_prompt_completion, prepared.dataset) if pair is not None]
    return [text(p) for p, _ in pairs], [text(c) for _, c in pairs]
