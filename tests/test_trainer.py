import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer, load_data
from safetrainer.data import SAMPLE_IDX
from safetrainer.data.tokenization import response_positions

from .conftest import make_tiny_llama

COMMON = dict(
    report_to="none",
    bf16=False,
    activation_checkpointing=False,
    logging_steps=1,
    save_strategy="no",
    disable_tqdm=True,
    max_length=96,
    per_device_train_batch_size=2,
    learning_rate=1e-3,
)


# A safety feature that changes nothing: the random scorer dropping no row, so rows carry sample_idx and a report.
KEEP_ALL = dict(safety_scorers=["random"], safety_threshold_value=0.0)


def alpaca_rows(n=16):
    return [
        {
            "instruction": f"Tell me fact number {i} about {topic}.",
            "input": "",
            "output": f"Fact {i}: {topic} are interesting in {i % 3 + 1} ways.",
        }
        for i, topic in enumerate(["cats", "rivers", "stars", "maps"] * (n // 4))
    ]


def conversational(rows):
    return [
        {
            "prompt": [{"role": "user", "content": r["instruction"]}],
            "completion": [{"role": "assistant", "content": r["output"]}],
        }
        for r in rows
    ]


def response_mask(example) -> list[bool]:
    return response_positions([example], len(example.input_ids))[0].tolist()


def losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def safety_trainer(tokenizer, tmp_path, rows, **kwargs):
    args = SafetyAwareSFTConfig(output_dir=str(tmp_path), **{**COMMON, **kwargs})
    return SafetyAwareSFTTrainer(
        make_tiny_llama(tokenizer), args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )


def test_safety_off_loss_trajectory_equals_sfttrainer(tokenizer, tmp_path):
    rows = alpaca_rows(16)
    plain = SFTTrainer(
        make_tiny_llama(tokenizer),
        args=SFTConfig(output_dir=str(tmp_path / "a"), max_steps=5, **COMMON),
        train_dataset=Dataset.from_list(conversational(rows)),
        processing_class=tokenizer,
    )
    plain.train()
    ours = safety_trainer(tokenizer, tmp_path / "b", rows, max_steps=5, safety_report=False)
    ours.train()
    assert len(losses(plain)) == 5
    assert losses(ours) == losses(plain)
    assert not (tmp_path / "b" / "safety_report").exists()


def test_sample_idx_survives_truncation_filter_and_shuffle(tokenizer, tmp_path):
    rows = alpaca_rows(8)
    rows[3]["instruction"] = "word " * 200  # the prompt alone fills max_length: TRL drops the row
    trainer = safety_trainer(tokenizer, tmp_path, rows, shuffle_dataset=True, max_steps=1, **KEEP_ALL)
    ds = trainer.train_dataset
    assert sorted(ds[SAMPLE_IDX]) == [0, 1, 2, 4, 5, 6, 7] and ds[SAMPLE_IDX] != sorted(ds[SAMPLE_IDX])
    for row in ds:
        assert rows[row[SAMPLE_IDX]]["output"] in tokenizer.decode(row["input_ids"])
    summary = trainer.filter_train_dataset()
    assert summary["counts"] == {"input": 8, "mixed": 0, "kept": 7, "dropped": 0, "rejected": 1}
    assert list(summary["rejected_reasons"]) == [
        "rejected by SFT preparation: no completion token left after truncation to max_length=96"
    ]


def test_collator_carries_sample_idx_and_loss_ignores_it(tokenizer, tmp_path):
    trainer = safety_trainer(tokenizer, tmp_path, alpaca_rows(4), max_steps=1, **KEEP_ALL)
    batch = next(iter(trainer.get_train_dataloader()))
    assert SAMPLE_IDX in batch and sorted(batch[SAMPLE_IDX].tolist()) in (
        [0, 1],
        [0, 2],
        [0, 3],
        [1, 2],
        [1, 3],
        [2, 3],
    )
    trainer.train()


def test_filter_pass_drops_before_the_dataloader_and_reports_every_row(tokenizer, tmp_path):
    demo = load_data("builtin:demo_sft")
    rows = demo.to_list()
    rows[5]["output"] = "  "
    args = SafetyAwareSFTConfig(
        output_dir=str(tmp_path),
        safety_scorers=["datashield"],
        safety_invalid_rows="reject",
        safety_threshold_policy="top_k",
        safety_threshold_value=10,
        num_train_epochs=1,
        **{**COMMON, "per_device_train_batch_size": 8, "max_length": 256},
    )
    trainer = SafetyAwareSFTTrainer(
        make_tiny_llama(tokenizer), args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    trainer.train()
    assert trainer.state.max_steps == -(-(len(rows) - 11) // 8)  # 70 rows - 1 rejected - 10 dropped, batch 8

    report = tmp_path / "safety_report"
    table = pq.read_table(report / "scores.parquet").to_pylist()
    assert [r["sample_idx"] for r in table] == list(range(len(rows)))
    by_decision = {d: [r for r in table if r["decision"] == d] for d in ("kept", "dropped", "rejected")}
    assert len(by_decision["dropped"]) == 10 and len(by_decision["rejected"]) == 1
    assert by_decision["rejected"][0]["sample_idx"] == 5 and "empty" in by_decision["rejected"][0]["reason"]
    assert all("datashield score" in r["reason"] and ">= threshold" in r["reason"] for r in by_decision["dropped"])
    dropped_scores = [r["score_datashield"] for r in by_decision["dropped"]]
    kept_scores = [r["score_datashield"] for r in by_decision["kept"]]
    assert min(dropped_scores) >= max(kept_scores)
    assert by_decision["rejected"][0]["score_datashield"] is None
    assert set(trainer.train_dataset[SAMPLE_IDX]) == {r["sample_idx"] for r in by_decision["kept"]}
    assert all(r["prompt_preview"] for r in table)

    summary = json.loads((report / "summary.json").read_text())
    assert summary["counts"] == {"input": 70, "mixed": 0, "kept": 59, "dropped": 10, "rejected": 1}
    assert summary["scorers"]["datashield"]["layer"] in range(1, 5)
    assert summary["threshold"] == pytest.approx(min(dropped_scores))
    assert summary["safety_config"]["safety_scorers"] == ["datashield"]
    assert {"torch", "transformers", "trl"} <= set(summary["versions"])
    assert summary["world_size"] == 1 and summary["timings"]["score_seconds"] > 0
    assert (report / "histogram.png").stat().st_size > 1000

    logged = next(h for h in trainer.state.log_history if "safety/kept" in h)
    assert logged["safety/kept"] == 59 and logged["safety/dropped"] == 10 and logged["safety/rejected"] == 1


def test_filter_that_drops_everything_is_an_error(tokenizer, tmp_path):
    trainer = safety_trainer(
        tokenizer,
        tmp_path,
        alpaca_rows(8),
        safety_scorers="datashield",
        safety_threshold_policy="absolute",
        safety_threshold_value=-1e9,
    )
    with pytest.raises(ValueError, match="would drop all 8 samples"):
        trainer.train()


def test_text_datasets_cannot_be_scored(tokenizer, tmp_path):
    trainer = safety_trainer(
        tokenizer, tmp_path, [{"text": f"line {i}"} for i in range(4)], safety_scorers="datashield"
    )
    with pytest.raises(ValueError, match="no prompt/response boundary"):
        trainer.train()


def test_tokenizer_without_chat_template_is_an_error(tokenizer, tmp_path):
    plain = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    args = SafetyAwareSFTConfig(output_dir=str(tmp_path), **COMMON)
    with pytest.raises(ValueError, match="no chat template, but alpaca rows are converted"):
        SafetyAwareSFTTrainer(
            make_tiny_llama(tokenizer),
            args=args,
            train_dataset=Dataset.from_list(alpaca_rows(4)),
            processing_class=plain,
        )


def test_plain_sftconfig_is_accepted(tokenizer, tmp_path):
    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, **COMMON)
    trainer = SafetyAwareSFTTrainer(
        make_tiny_llama(tokenizer),
        args=args,
        train_dataset=Dataset.from_list(alpaca_rows(4)),
        processing_class=tokenizer,
    )
    assert isinstance(trainer.args, SafetyAwareSFTConfig) and not trainer.args.filter_enabled
    assert trainer.args.max_steps == 1


def test_messages_rows_are_scored_before_their_last_assistant_turn(tokenizer, tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
        for i in range(6)
    ]
    rows.append(
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Bye"},
            ]
        }
    )
    trainer = safety_trainer(
        tokenizer,
        tmp_path,
        rows,
        safety_scorers="datashield",
        safety_threshold_policy="top_k",
        safety_threshold_value=1,
        max_steps=1,
    )
    examples, unscorable = trainer._scoring_candidates(range(7))
    responses = {e.sample_idx: tokenizer.decode([t for t, r in zip(e.input_ids, response_mask(e), strict=True) if r])
                 for e in examples}  # fmt: skip
    assert not unscorable and responses[0] == "Answer 0.<|im_end|>\n"
    assert responses[6] == "Hello<|im_end|>\n"  # the final assistant turn, though a user turn follows it
    assert tokenizer.decode(examples[6].input_ids[: examples[6].prompt_len]).endswith(
        "Hi<|im_end|>\n<|im_start|>assistant\n"
    )
    summary = trainer.filter_train_dataset()
    assert summary["counts"] == {"input": 7, "mixed": 0, "kept": 6, "dropped": 1, "rejected": 0}
    table = pq.read_table(tmp_path / "safety_report" / "scores.parquet").to_pydict()
    assert all(np.isfinite(table["score_datashield"]))


@pytest.mark.parametrize("bf16", [False, True])
def test_filter_pass_runs_at_the_training_precision(tokenizer, tmp_path, monkeypatch, bf16):
    import torch

    import safetrainer.trainer as trainer_module

    seen = {}
    real = trainer_module.score_and_decide

    def spy(*args, **kwargs):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["dtype"] = torch.get_autocast_dtype("cpu")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "score_and_decide", spy)
    trainer = safety_trainer(
        tokenizer, tmp_path, alpaca_rows(8), **{"bf16": bf16, "use_cpu": True},
        safety_scorers=["datashield", "fihs"], safety_threshold_policy="top_k", safety_threshold_value=2,
        safety_projection_dim=64,
    )  # fmt: skip
    summary = trainer.filter_train_dataset()
    assert seen["autocast"] is bf16
    if bf16:
        assert seen["dtype"] == torch.bfloat16
    table = pq.read_table(tmp_path / "safety_report" / "scores.parquet").to_pydict()
    for name in ("datashield", "fihs"):
        assert np.isfinite(table[f"score_{name}"]).all()  # float32 reductions: bf16 features still score every row
    assert summary["counts"]["dropped"] == 2
