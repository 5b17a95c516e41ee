"""Every input SFTTrainer accepts, through `SFTTrainer` and `SafetyAwareSFTTrainer` (safety off) with the same
assertions: the same prepared rows, the same losses, the same eval loss, or the same error; then each input type with
the filter and the mix on."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer
from safetrainer.data import SAMPLE_IDX, chat_pair, tokenize_pair
from safetrainer.data.tokenization import response_positions

from .conftest import make_tiny_llama
from .test_trainer import COMMON as TRAINER_COMMON

COMMON = {**TRAINER_COMMON, "max_steps": 3, "max_length": 64}
TOPICS = ["cats", "rivers", "stars", "maps", "bread", "trains", "clouds", "songs"]
# ChatML with generation markers, for assistant_only_loss (SmolLM2's own template has none).
GENERATION_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}"
    "{{ m['content'] + '<|im_end|>\\n' }}{% endgeneration %}{% else %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chats(n=8):
    return [
        [{"role": "user", "content": f"Tell me about {t}."}, {"role": "assistant", "content": f"{t} are fine, {i}."}]
        for i, t in enumerate(TOPICS[:n])
    ]


def tokenized(tokenizer, with_labels=None, n=8):
    """Pre-tokenized chat rows: input_ids, plus `labels` (-100 on the prompt), `assistant_masks` or
    `completion_mask` (0 on the prompt) when asked."""
    rows = []
    for messages in chats(n):
        pair = tokenize_pair(tokenizer, messages[:1], messages[1:])
        ids, p = list(pair.input_ids), pair.prompt_len
        row = {"input_ids": ids}
        if with_labels == "labels":
            row["labels"] = [-100] * p + ids[p:]
        elif with_labels is not None:
            row[with_labels] = [0] * p + [1] * (len(ids) - p)
        rows.append(row)
    return rows


def format_qa(row):
    return f"### Question: {row['q']}\n### Answer: {row['a']}"


def format_alpaca(row):
    return f"### Instruction: {row['instruction']}\n### Response: {row['output']}"


def input_cases(tokenizer):
    """name -> (rows, config fields, trainer kwargs, eval rows or None). Every input type SFTTrainer trains on."""
    plain = [{"prompt": f"Question about {t}: ", "completion": f"{t} are fine."} for t in TOPICS]
    return {
        "messages": ([{"messages": m} for m in chats()], {}, {}, [{"messages": m} for m in chats(4)]),
        "sharegpt conversations": (
            [{"conversations": [{"from": m["role"], "value": m["content"]} for m in c]} for c in chats()],
            {},
            {},
            None,
        ),
        "prompt/completion conversational": (
            [{"prompt": m[:1], "completion": m[1:]} for m in chats()],
            {},
            {},
            {
                "a": [{"prompt": m[:1], "completion": m[1:]} for m in chats(2)],
                "b": [{"prompt": m[:1], "completion": m[1:]} for m in chats(4)],
            },
        ),  # fmt: skip
        "prompt/completion plain": (plain, {}, {}, None),
        "prompt/completion, completion_only_loss off": (plain, {"completion_only_loss": False}, {}, None),
        "text": ([{"text": f"{t} are fine."} for t in TOPICS], {}, {}, [{"text": "maps are fine."}] * 2),
        "text under dataset_text_field": (
            [{"body": f"{t} are fine.", "text": 1} for t in TOPICS],
            {"dataset_text_field": "body"},
            {},
            None,
        ),
        "formatting_func": (
            [{"q": f"what about {t}?", "a": f"{t} are fine."} for t in TOPICS],
            {},
            {"formatting_func": format_qa},
            None,
        ),  # fmt: skip
        "formatting_func over alpaca columns": (
            [{"instruction": f"Tell me about {t}.", "input": "", "output": f"{t} are fine."} for t in TOPICS],
            {},
            {"formatting_func": format_alpaca},
            None,
        ),  # fmt: skip
        "pre-tokenized": (tokenized(tokenizer), {}, {}, None),
        "pre-tokenized + labels": (tokenized(tokenizer, "labels"), {}, {}, tokenized(tokenizer, "labels", 2)),
        "pre-tokenized + assistant_masks": (tokenized(tokenizer, "assistant_masks"), {}, {}, None),
        "pre-tokenized + completion_mask": (tokenized(tokenizer, "completion_mask"), {}, {}, None),
        "skip_prepare_dataset with labels": (
            tokenized(tokenizer, "labels"),
            {"dataset_kwargs": {"skip_prepare_dataset": True}},
            {},
            None,
        ),
        "assistant_only_loss": ([{"messages": m} for m in chats()], {"assistant_only_loss": True}, {}, None),
        "packing bfd": ([{"messages": m} for m in chats()], {"packing": True}, {}, None),
        "packing wrapped": (
            [{"messages": m} for m in chats()],
            {"packing": True, "packing_strategy": "wrapped"},
            {},
            None,
        ),  # fmt: skip
        "padding_free": ([{"messages": m} for m in chats()], {"padding_free": True, "max_length": None}, {}, None),
        "iterable dataset": ([{"messages": m} for m in chats()], {"iterable": True}, {}, None),
    }


ERROR_CASES = {
    "unknown columns": ([{"question": "q", "answer": "a"}] * 4, {}),
    "prompt without completion": ([{"prompt": "q"}] * 4, {}),
    "masks without labels, preparation skipped": (
        [{"input_ids": [1, 2, 3], "assistant_masks": [0, 1, 1]}] * 4,
        {"dataset_kwargs": {"skip_prepare_dataset": True}},
    ),
    "role/content conversations under dataset_text_field": (
        [{"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 4,
        {"dataset_text_field": "conversations"},
    ),
}


def build(trainer_cls, config_cls, tokenizer, tmp_path, rows, fields, kwargs, eval_rows=None, **safety):
    fields = dict(fields)
    iterable = fields.pop("iterable", False)
    tok = tokenizer
    if fields.get("assistant_only_loss"):
        tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
        tok.chat_template = GENERATION_TEMPLATE
    dataset = Dataset.from_list(rows)
    if iterable:
        dataset = dataset.to_iterable_dataset()
    if isinstance(eval_rows, dict):
        eval_dataset = {k: Dataset.from_list(v) for k, v in eval_rows.items()}
    else:
        eval_dataset = None if eval_rows is None else Dataset.from_list(eval_rows)
    args = config_cls(output_dir=str(tmp_path), **{**COMMON, **fields}, **safety)
    return trainer_cls(
        make_tiny_llama(tokenizer), args=args, train_dataset=dataset, eval_dataset=eval_dataset,
        processing_class=tok, **kwargs,
    )  # fmt: skip


def outcome(trainer_cls, config_cls, tokenizer, tmp_path, rows, fields, kwargs, eval_rows):
    """What a user sees: the prepared rows, the collator's type, the losses and the eval loss."""
    trainer = build(trainer_cls, config_cls, tokenizer, tmp_path, rows, fields, kwargs, eval_rows)
    prepared = trainer.train_dataset
    rows_seen = prepared.to_list() if isinstance(prepared, Dataset) else None
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    evaluated = trainer.evaluate() if eval_rows is not None else {}
    return {
        "rows": rows_seen,
        "collator": type(trainer.data_collator).__name__,
        "losses": losses,
        "eval": {k: v for k, v in evaluated.items() if k.endswith("_loss")},
    }


CASE_NAMES = [
    "messages",
    "sharegpt conversations",
    "prompt/completion conversational",
    "prompt/completion plain",
    "prompt/completion, completion_only_loss off",
    "text",
    "text under dataset_text_field",
    "formatting_func",
    "formatting_func over alpaca columns",
    "pre-tokenized",
    "pre-tokenized + labels",
    "pre-tokenized + assistant_masks",
    "pre-tokenized + completion_mask",
    "skip_prepare_dataset with labels",
    "assistant_only_loss",
    "packing bfd",
    "packing wrapped",
    "padding_free",
    "iterable dataset",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_safety_off_is_sfttrainer_for_every_input_type(tokenizer, tmp_path, case):
    rows, fields, kwargs, eval_rows = input_cases(tokenizer)[case]
    plain = outcome(SFTTrainer, SFTConfig, tokenizer, tmp_path / "sft", rows, fields, kwargs, eval_rows)
    ours = outcome(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path / "ours", rows, fields, kwargs,
                   eval_rows)  # fmt: skip
    assert len(plain["losses"]) == 3 and all(np.isfinite(plain["losses"]))
    assert ours == plain
    assert not (tmp_path / "ours" / "safety_report").exists()


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_safety_off_raises_sfttrainers_own_errors(tokenizer, tmp_path, case):
    rows, fields = ERROR_CASES[case]
    errors = []
    for trainer_cls, config_cls in ((SFTTrainer, SFTConfig), (SafetyAwareSFTTrainer, SafetyAwareSFTConfig)):
        with pytest.raises(Exception) as err:
            build(trainer_cls, config_cls, tokenizer, tmp_path, rows, fields, {}).train()
        errors.append((type(err.value), str(err.value)))
    assert errors[0] == errors[1]


# ----------------------------------------------------------------------------------------------------------------
# Safety on

FILTER = dict(safety_scorers=["datashield"], safety_threshold_policy="top_k", safety_threshold_value=2)
MIX = dict(safety_mix_pool="builtin:refusal_pool", safety_mix_strategy="random-b", safety_mix_budget=2)


def report(tmp_path):
    table = pq.read_table(tmp_path / "safety_report" / "scores.parquet").to_pydict()
    return table, json.loads((tmp_path / "safety_report" / "summary.json").read_text())


def responses_of(trainer, tokenizer) -> dict[int, str]:
    examples, unscorable = trainer._scoring_candidates(trainer.train_dataset[SAMPLE_IDX])
    assert not unscorable
    return {
        e.sample_idx: tokenizer.decode(
            [t for t, r in zip(e.input_ids, response_positions([e], len(e.input_ids))[0], strict=True) if r]
        )  # fmt: skip
        for e in examples
    }


@pytest.mark.parametrize(
    "case",
    ["messages", "sharegpt conversations", "prompt/completion conversational", "prompt/completion plain",
     "prompt/completion, completion_only_loss off", "formatting_func over alpaca columns", "pre-tokenized + labels",
     "pre-tokenized + assistant_masks", "pre-tokenized + completion_mask", "skip_prepare_dataset with labels",
     "assistant_only_loss", "packing bfd", "packing wrapped"],
)  # fmt: skip
def test_filter_scores_the_trained_response_of_every_input_type(tokenizer, tmp_path, case):
    rows, fields, kwargs, eval_rows = input_cases(tokenizer)[case]
    trainer = build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path, rows, fields, kwargs, eval_rows,
                    **FILTER)  # fmt: skip
    responses = responses_of(trainer, tokenizer)
    for idx, topic in enumerate(TOPICS):
        assert f"{topic} are fine" in responses[idx], (case, responses[idx])
        assert "Tell me about" not in responses[idx] and "Question" not in responses[idx]
    trainer.train()
    table, summary = report(tmp_path)
    assert summary["counts"] == {"input": 8, "mixed": 0, "kept": 6, "dropped": 2, "rejected": 0}
    assert all(np.isfinite(table["score_datashield"]))
    if fields.get("packing"):
        assert summary["packing"]["strategy"] == fields.get("packing_strategy", "bfd")
        assert SAMPLE_IDX not in trainer.train_dataset.column_names  # packed after the pass


@pytest.mark.parametrize("case", ["text", "text under dataset_text_field", "pre-tokenized"])
def test_data_without_a_boundary_refuses_boundary_scorers_and_takes_fihs(tokenizer, tmp_path, case):
    rows, fields, kwargs, _ = input_cases(tokenizer)[case]
    trainer = build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path / "ds", rows, fields, kwargs,
                    **FILTER)  # fmt: skip
    with pytest.raises(ValueError, match="datashield compare the prompt with the response.*no prompt/response bound"):
        trainer.train()
    trainer = build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path / "fihs", rows, fields, kwargs,
                    **{**FILTER, "safety_scorers": ["fihs"], "safety_projection_dim": 64})  # fmt: skip
    trainer.train()
    table, summary = report(tmp_path / "fihs")
    assert summary["counts"]["dropped"] == 2 and all(np.isfinite(table["score_fihs"]))


@pytest.mark.parametrize(
    "case",
    ["messages", "sharegpt conversations", "prompt/completion conversational", "formatting_func over alpaca columns",
     "pre-tokenized + labels", "packing bfd"],
)  # fmt: skip
def test_mixing_renders_safety_samples_in_the_training_format(tokenizer, tmp_path, case):
    rows, fields, kwargs, _ = input_cases(tokenizer)[case]
    trainer = build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path, rows, fields, kwargs, **MIX)
    summary = trainer.filter_train_dataset()
    assert summary["counts"] == {"input": 8, "mixed": 2, "kept": 10, "dropped": 0, "rejected": 0}
    if fields.get("packing"):
        return  # packed: the rows below are gone into packed sequences
    mixed = [r for r in trainer.train_dataset if r[SAMPLE_IDX] >= 8]
    assert len(mixed) == 2
    for row in mixed:
        text = tokenizer.decode(row["input_ids"])
        trained = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True)
                                    if label != -100])  # fmt: skip
        if case == "formatting_func over alpaca columns":
            assert text.startswith("### Instruction: ") and "\n### Response: " in text  # the user's own template
        else:
            assert "<|im_start|>assistant\n" in text
        if case in ("prompt/completion conversational", "pre-tokenized + labels"):
            assert "<|im_start|>user" not in trained  # a refusal is trained on, never its harmful prompt


@pytest.mark.parametrize("case", ["text", "prompt/completion plain", "formatting_func"])
def test_mixing_refuses_formats_it_cannot_render_into_naming_the_input(tokenizer, tmp_path, case):
    rows, fields, kwargs, _ = input_cases(tokenizer)[case]
    expected = {
        "text": "plain text",
        "prompt/completion plain": "prompt/completion with plain strings",
        "formatting_func": "formatted by a formatting_func from columns safetrainer cannot fill",
    }[case]
    with pytest.raises(ValueError, match=f"safety_mix_pool: the training data is {expected}"):
        build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path, rows, fields, kwargs, **MIX)


def test_safety_features_refuse_an_iterable_dataset_naming_the_features(tokenizer, tmp_path):
    rows, fields, kwargs, _ = input_cases(tokenizer)["iterable dataset"]
    with pytest.raises(TypeError, match="safety_scorers, safety_mix_pool: need a map-style"):
        build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path, rows, fields, kwargs, **FILTER, **MIX)


def test_eval_dataset_with_the_filter_on(tokenizer, tmp_path):
    rows, fields, kwargs, eval_rows = input_cases(tokenizer)["prompt/completion conversational"]
    trainer = build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path, rows, fields, kwargs, eval_rows,
                    **FILTER)  # fmt: skip
    trainer.train()
    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_a_loss"]) and np.isfinite(metrics["eval_b_loss"])


def test_alpaca_eval_rows_are_converted_like_the_training_rows(tokenizer, tmp_path):
    alpaca = [{"instruction": f"Tell me about {t}.", "input": "", "output": f"{t} are fine."} for t in TOPICS]
    trainer = build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path, alpaca, {}, {}, alpaca[:2])
    trainer.train()
    assert np.isfinite(trainer.evaluate()["eval_loss"])


def test_packing_drops_before_packing_and_packs_only_kept_tokens(tokenizer, tmp_path):
    rows = [{"messages": m} for m in chats()]
    trainer = build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path, rows,
                    {"packing": True, "max_length": 256}, {}, **FILTER)  # fmt: skip
    lengths = {r[SAMPLE_IDX]: len(r["input_ids"]) for r in trainer.train_dataset}
    assert len(lengths) == 8  # unpacked until the pass has run
    trainer.filter_train_dataset()
    table, summary = report(tmp_path)
    kept = [i for i, d in enumerate(table["decision"]) if d == "kept"]
    packed = trainer.train_dataset
    assert SAMPLE_IDX not in packed.column_names and len(packed) < len(kept)
    assert sum(len(ids) for ids in packed["input_ids"]) == sum(lengths[i] for i in kept)


def test_online_filtering_refuses_packing(tokenizer):
    with pytest.raises(ValueError, match="safety_online_every_steps: online dropping .* packing=True"):
        SafetyAwareSFTConfig(output_dir="x", packing=True, safety_online_every_steps=2, **COMMON)


def test_tokenized_rows_are_checked_naming_row_and_field(tokenizer, tmp_path):
    rows = tokenized(tokenizer, "labels")
    rows[3]["labels"] = rows[3]["labels"][:-1]
    with pytest.raises(ValueError, match="row 3: field 'labels' must be a list as long as 'input_ids'"):
        build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path, rows, {}, {}, **FILTER)


def test_formatting_func_failures_are_rejected_with_the_row(tokenizer, tmp_path):
    rows = [{"q": f"what about {t}?", "a": f"{t} are fine."} for t in TOPICS]
    rows[2]["a"] = None
    trainer = build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path, rows, {},
                    {"formatting_func": lambda r: "### Q: " + r["q"] + "\n### A: " + r["a"]},
                    **{**FILTER, "safety_scorers": ["fihs"], "safety_projection_dim": 64,
                       "safety_invalid_rows": "reject"})  # fmt: skip
    summary = trainer.filter_train_dataset()
    assert summary["counts"]["rejected"] == 1
    (reason,) = summary["rejected_reasons"]
    assert reason.startswith("invalid input: formatting_func raised TypeError")


def test_chat_pair_tokens_equal_trls_for_conversational_rows(tokenizer, tmp_path):
    """The scored sequence of a prompt/completion row is the one tokenize_pair gives (what TRL trains on)."""
    rows, fields, kwargs, _ = input_cases(tokenizer)["prompt/completion conversational"]
    trainer = build(SafetyAwareSFTTrainer, SafetyAwareSFTConfig, tokenizer, tmp_path, rows, fields, kwargs, **FILTER)
    examples, _ = trainer._scoring_candidates(range(8))
    for example in examples:
        messages = chats()[example.sample_idx]
        expected = tokenize_pair(tokenizer, *chat_pair(messages[0]["content"], messages[1]["content"]))
        assert (example.input_ids, example.prompt_len) == (expected.input_ids, expected.prompt_len)


def test_the_case_list_names_every_input_case(tokenizer):
    assert list(input_cases(tokenizer)) == CASE_NAMES
