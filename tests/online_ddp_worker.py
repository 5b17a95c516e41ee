"""Run by `test_two_process_online_drops_agree` under `accelerate launch`: trains with online FIHS and writes each
rank's dropped set, step count and world size."""

import json
import sys
from pathlib import Path

import torch.distributed as dist
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer, end_distributed_training, load_data

model_dir, out = sys.argv[1], Path(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
args = SafetyAwareSFTConfig(
    output_dir=str(out), per_device_train_batch_size=4, num_train_epochs=2, max_length=128, report_to="none",
    save_strategy="no", disable_tqdm=True, safety_online_every_steps=3, safety_online_threshold_value=0.1,
    safety_projection_dim=512,
)  # fmt: skip
trainer = SafetyAwareSFTTrainer(
    AutoModelForCausalLM.from_pretrained(model_dir), args=args, train_dataset=load_data("builtin:demo_sft"),
    processing_class=tokenizer, peft_config=LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
)  # fmt: skip
trainer.train()
rank, world = dist.get_rank(), dist.get_world_size()
dropped = {str(i): vars(d) for i, d in sorted(trainer._online.active.dropped.items())}
state = {"world_size": world, "global_step": trainer.state.global_step, "dropped": dropped}
(out / f"rank{rank}.json").write_text(json.dumps(state))
end_distributed_training(trainer)
