import json
from collections import Counter

import pytest
from datasets import Dataset

from safetrainer.data import SAMPLE_IDX, builtin_names, detect_format, load_data, prepare_input, to_prompt_completion


def test_builtin_sets_exist_and_meet_the_spec():
    assert {"demo_sft", "refusal_pool", "datashield_reference"} <= set(builtin_names())
    demo = load_data("builtin:demo_sft")
    labels = Counter(demo["label"])
    assert labels["benign"] >= 60 and labels["unsafe"] >= 3
    pool = load_data("builtin:refusal_pool")
    assert len(set(pool["category"])) >= 10 and len(pool) >= 8 and all(pool["harmful"])
    reference = load_data("builtin:datashield_reference")
    assert Counter(reference["label"]) == {"compliance": 24, "refusal": 24, "benign": 24}


@pytest.mark.parametrize("ext", ["jsonl", "json", "csv", "parquet"])
def test_local_files_load_through_one_path(tmp_path, ext):
    rows = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(3)]
    path = tmp_path / f"data.{ext}"
    ds = Dataset.from_list(rows)
    {
        "jsonl": lambda: ds.to_json(path, lines=True),
        "json": lambda: path.write_text(json.dumps(rows)),
        "csv": lambda: ds.to_csv(path, index=False),
        "parquet": lambda: ds.to_parquet(path),
    }[ext]()
    loaded = load_data(str(path))
    assert loaded["prompt"] == ["q0", "q1", "q2"]


def test_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="available: "):
        load_data("builtin:nope")
    with pytest.raises(FileNotFoundError):
        load_data(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "data.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match="allowed: .jsonl"):
        load_data(str(bad))


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["messages"], "messages"),
        (["prompt", "completion"], "prompt_completion"),
        (["prompt", "response", "category"], "prompt_response"),
        (["instruction", "input", "output"], "alpaca"),
        (["instruction", "output"], "alpaca"),
        (["text"], "text"),
    ],
)
def test_detect_format(columns, expected):
    assert detect_format(columns) == expected


def test_no_usable_column_lists_what_is_accepted():
    with pytest.raises(ValueError, match="no usable text or conversation column.*found \\['answer', 'question'\\]"):
        detect_format(["question", "answer"])


def test_alpaca_rows_become_conversations_with_sample_idx():
    ds = Dataset.from_list(
        [
            {"instruction": "Summarise.", "input": "Long text.", "output": "Short."},
            {"instruction": "Say hi.", "input": "", "output": "Hi!"},
        ]
    )
    prepared = prepare_input(ds)
    row = prepared.dataset[0]
    assert prepared.input_format == "alpaca" and prepared.dataset[SAMPLE_IDX] == [0, 1]
    assert row["prompt"] == [{"role": "user", "content": "Summarise.\nLong text."}]
    assert row["completion"] == [{"role": "assistant", "content": "Short."}]
    assert prepared.dataset[1]["prompt"][0]["content"] == "Say hi."
    assert prepared.previews[0] == "Summarise. Long text."


def test_prompt_response_rows_become_conversations():
    prepared = prepare_input(Dataset.from_list([{"prompt": "Q?", "response": "A.", "category": "x"}]))
    assert prepared.dataset[0]["completion"] == [{"role": "assistant", "content": "A."}]
    assert prepared.dataset[0]["category"] == "x"


def test_trl_formats_pass_through_unchanged():
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]
    prepared = prepare_input(Dataset.from_list(rows))
    assert prepared.dataset[0]["messages"] == rows[0]["messages"]
    assert to_prompt_completion(prepared.dataset[0]) == (rows[0]["messages"][:1], rows[0]["messages"][1:])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "Q", "response": "   "}], "row 0: field 'response' is empty or whitespace-only"),
        (
            [{"prompt": "Q", "response": "ok"}, {"prompt": "Q", "response": None}],
            "row 1: field 'response' is NoneType, expected a string",
        ),
        ([{"instruction": "Do", "output": 5}], "row 0: field 'output' is int, expected a string"),
        ([{"messages": [{"role": "user", "content": "Hi"}]}], "no assistant message"),
        (
            [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}],
            "'messages[1].content' is empty",
        ),
        ([{"text": ""}], "field 'text' is empty"),
    ],
)
def test_invalid_rows_raise_naming_row_and_field(rows, message):
    with pytest.raises(ValueError, match="safety_invalid_rows='reject'") as err:
        prepare_input(Dataset.from_list(rows))
    assert message in str(err.value)


def test_reject_policy_records_every_invalid_row():
    ds = Dataset.from_list(
        [
            {"prompt": "Q0", "response": "A0"},
            {"prompt": "Q1", "response": " "},
            {"prompt": "Q2", "response": "A2"},
        ]
    )
    prepared = prepare_input(ds, invalid_rows="reject")
    assert prepared.dataset[SAMPLE_IDX] == [0, 2]
    assert prepared.rejected == {1: "invalid input: field 'response' is empty or whitespace-only"}
    assert prepared.num_rows == 3 and len(prepared.previews) == 3


def test_all_rows_invalid_or_empty_or_reserved_column():
    with pytest.raises(ValueError, match="every row is invalid"):
        prepare_input(Dataset.from_list([{"prompt": "Q", "response": ""}]), invalid_rows="reject")
    with pytest.raises(ValueError, match="empty"):
        prepare_input(Dataset.from_list([{"prompt": "Q", "response": "A"}]).select([]))
    with pytest.raises(ValueError, match="reserved"):
        prepare_input(Dataset.from_list([{"prompt": "Q", "response": "A", "sample_idx": 3}]))
