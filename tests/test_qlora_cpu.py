"""4-bit QLoRA through bitsandbytes runs on this CPU, so the quantized path is tested without a GPU."""

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer

bnb = pytest.importorskip("bitsandbytes")


def test_filter_and_train_a_4bit_model(tiny_model_dir, tokenizer, tmp_path):
    from transformers import BitsAndBytesConfig

    rows = [{"prompt": f"Tell me about topic {i}.", "response": f"Topic {i} is a fine topic."} for i in range(8)]
    args = SafetyAwareSFTConfig(
        output_dir=str(tmp_path),
        safety_scorers="datashield",
        safety_threshold_policy="top_k",
        safety_threshold_value=1,
        max_steps=1,
        per_device_train_batch_size=4,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        model_init_kwargs={"device_map": "cpu", "dtype": torch.float32},
    )
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    trainer = SafetyAwareSFTTrainer(
        tiny_model_dir,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        quantization_config=quantization,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    result = trainer.train()
    assert trainer.safety_summary["counts"] == {"input": 8, "mixed": 0, "kept": 7, "dropped": 1, "rejected": 0}
    assert result.global_step == 1
