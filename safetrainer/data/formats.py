"""Recognise the user's dataset format, check every row, convert to a format TRL trains on, and number the rows.

Formats SFTTrainer accepts (`messages`, `prompt`/`completion`, `text`) pass through unchanged, so training on them is
exactly what SFTTrainer does. Alpaca-style `instruction`/`input`/`output` and `prompt`/`response` rows are converted to
conversational `prompt`/`completion`, which TRL renders with the model's chat template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

SAMPLE_IDX = "sample_idx"
PREVIEW_CHARS = 160

# Checked in this order; the first whose columns are all present wins.
_FORMATS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("messages", ("messages",)),
    ("prompt_completion", ("prompt", "completion")),
    ("prompt_response", ("prompt", "response")),
    ("alpaca", ("instruction", "output")),
    ("text", ("text",)),
)


@dataclass
class PreparedInput:
    """The user's training rows after format conversion and row checks.

    `dataset` holds the valid rows with a `sample_idx` column (0-based index of the row in the user's dataset);
    `rejected` maps the sample_idx of every left-out row to its reason; `previews` has one prompt preview per input row.
    """

    dataset: Dataset
    input_format: str
    num_rows: int
    rejected: dict[int, str] = field(default_factory=dict)
    previews: list[str] = field(default_factory=list)


def detect_format(column_names: list[str], text_field: str = "text") -> str:
    """Name of the dataset format given its columns; raises a ValueError listing accepted column sets."""
    formats = [(name, (text_field,) if name == "text" else cols) for name, cols in _FORMATS]
    for name, cols in formats:
        if all(col in column_names for col in cols):
            return name
    accepted = "; ".join("+".join(cols) for _, cols in formats)
    raise ValueError(
        f"train_dataset has no usable text or conversation column: found {sorted(column_names)}; accepted column "
        f"sets: {accepted}."
    )


def prepare_input(dataset: Dataset, invalid_rows: str = "error", text_field: str = "text") -> PreparedInput:
    """Check every row, convert Alpaca and prompt/response rows, and add `sample_idx`.

    With `invalid_rows="error"` the first invalid row raises a ValueError naming the row and the field; with
    `"reject"` invalid rows are left out and recorded in `PreparedInput.rejected`. A dataset with no valid row
    always raises.
    """
    if SAMPLE_IDX in dataset.column_names:
        raise ValueError(f"train_dataset: the column name {SAMPLE_IDX!r} is reserved by safetrainer; rename it.")
    if len(dataset) == 0:
        raise ValueError("train_dataset is empty.")
    input_format = detect_format(dataset.column_names, text_field)
    check_row = _ROW_CHECKS[input_format]
    rejected: dict[int, str] = {}
    previews: list[str] = []
    for idx, row in enumerate(dataset):
        reason = check_row(row, text_field)
        if reason is not None:
            if invalid_rows == "error":
                raise ValueError(
                    f"train_dataset row {idx}: {reason}. Fix the data, or set safety_invalid_rows='reject' to leave "
                    "such rows out (they are listed in the safety report)."
                )
            rejected[idx] = f"invalid input: {reason}"
        previews.append(_preview(row, input_format, text_field))
    if len(rejected) == len(dataset):
        first = next(iter(rejected.items()))
        raise ValueError(f"train_dataset: every row is invalid (e.g. row {first[0]}: {first[1]}).")

    dataset = dataset.add_column(SAMPLE_IDX, list(range(len(dataset))))
    if rejected:
        dataset = dataset.select([i for i in range(len(dataset)) if i not in rejected])
    dataset = _convert(dataset, input_format)
    return PreparedInput(dataset, input_format, len(previews), rejected, previews)


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
            message["content"], f"{name}[{i}].content", allow_empty=message["role"] != "assistant"
        )
        if reason:
            return reason
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        return f"field {name!r} has no assistant message to train on"
    return None


def _check_messages_row(row: dict[str, Any], _: str) -> str | None:
    return _check_messages(row["messages"], "messages", need_assistant=True)


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


_ROW_CHECKS = {
    "messages": _check_messages_row,
    "prompt_completion": _check_prompt_completion_row,
    "prompt_response": _check_prompt_response_row,
    "alpaca": _check_alpaca_row,
    "text": _check_text_row,
}


def _preview(row: dict[str, Any], input_format: str, text_field: str) -> str:
    if input_format == "alpaca":
        text = _alpaca_prompt(row) if isinstance(row.get("instruction"), str) else row.get("instruction")
    elif input_format == "messages":
        messages = row["messages"] if isinstance(row["messages"], list) else []
        text = next((m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"), "")
    elif input_format == "text":
        text = row[text_field]
    else:
        text = row["prompt"]
        if isinstance(text, list):
            text = next((m.get("content") for m in text if isinstance(m, dict) and m.get("role") == "user"), "")
    return preview_text(text if isinstance(text, str) else repr(text))


def preview_text(text: str) -> str:
    """A prompt's preview in the report: whitespace collapsed, cut to PREVIEW_CHARS characters."""
    return " ".join(text.split())[:PREVIEW_CHARS]


def rows_like(prepared: PreparedInput, prompts: list[str], responses: list[str], first_idx: int) -> Dataset:
    """Single-turn (prompt, response) pairs as rows of the prepared training data's format, numbered from
    `first_idx`: `messages` rows for a messages dataset, conversational prompt/completion otherwise.

    Plain-string prompt/completion and `text` data have no format a conversation can be rendered into without
    guessing the user's template, so they raise a ValueError.
    """
    sample = prepared.dataset[0]
    conversational = prepared.input_format == "messages" or isinstance(sample.get("prompt"), list)
    if not conversational:
        raise ValueError(
            f"safety_mix_pool: the training data is {prepared.input_format!r} with plain strings, and mixed samples "
            "are chat turns rendered with the model's chat template; give conversational training data (messages, "
            "prompt/completion message lists, prompt/response or Alpaca rows) or leave safety_mix_pool unset."
        )
    rows = []
    for offset, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        user, assistant = {"role": "user", "content": prompt}, {"role": "assistant", "content": response}
        if prepared.input_format == "messages":
            rows.append({"messages": [user, assistant], SAMPLE_IDX: first_idx + offset})
        else:
            rows.append({"prompt": [user], "completion": [assistant], SAMPLE_IDX: first_idx + offset})
    return Dataset.from_list(rows)


def pair_texts(prepared: PreparedInput) -> tuple[list[str], list[str]]:
    """(prompts, responses) as plain text of every prepared row that has a response (message contents joined)."""

    def text(value: Any) -> str:
        return value if isinstance(value, str) else "\n".join(m["content"] for m in value)

    pairs = [pair for pair in map(to_prompt_completion, prepared.dataset) if pair is not None]
    return [text(p) for p, _ in pairs], [text(c) for _, c in pairs]
