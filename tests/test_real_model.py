"""On the real default model (SmolLM2-135M-Instruct), a few samples."""

import pytest
from datasets import Dataset
from peft import LoraConfig
from sklearn.metrics import roc_auc_score
from transformers import AutoModelForCausalLM

from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer, load_data

pytestmark = pytest.mark.slow


def test_datashield_ranks_planted_unsafe_rows_high_and_lora_trains(default_model_path, tokenizer, tmp_path):
    demo = load_data("builtin:demo_sft")
    rows = demo.select(range(24)).to_list()  # 22 benign + 2 unsafe
    labels = [r["label"] == "unsafe" for r in rows]
    args = SafetyAwareSFTConfig(
        output_dir=str(tmp_path),
        safety_scorers="datashield",
        safety_threshold_policy="top_k",
        safety_threshold_value=2,
        max_length=256,
        per_device_train_batch_size=8,
        max_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(default_model_path)
    trainer = SafetyAwareSFTTrainer(
        model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"),
    )
    result = trainer.train()
    summary = trainer.safety_summary
    assert summary["scorers"]["datashield"]["layer"] in range(1, 31)
    scores = [None] * len(rows)
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "safety_report" / "scores.parquet").to_pydict()
    for idx, score in zip(table["sample_idx"], table["score_datashield"], strict=True):
        scores[idx] = score
    # Measured 1.0 on these rows; on all 70 demo rows 0.98 (5 of the 6 unsafe rows in the top 6).
    assert roc_auc_score(labels, scores) >= 0.9
    assert result.global_step == 1 and result.training_loss > 0
