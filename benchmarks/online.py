"""Online FIHS benchmark: what online re-scoring costs per training step, and how precise its drops are.

(a) Overhead: plain LoRA training steps, the same steps with the cheap path (per-example FIHS from each step's own
    backward), and one full re-score pass, timed in one run; ratios to the plain step (the full pass: to a plain
    epoch).
(b) Drops: one epoch with online FIHS (cheap path) on a contaminated set, 10% BeaverTails unsafe responses plus the
    10 AOA identity-shift conversations; precision and recall of the online drops against the true labels.

    python benchmarks/online.py                                        # base SmolLM2-135M-Instruct
    python benchmarks/online.py --model benchmarks/results/safety_outcome/align/model
"""

from __future__ import annotations

import argparse
import platform
import random
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from _report import write_section
from datasets import Dataset
from detection import _model_name, contaminated_set, validation_set
from detection import read_jsonl as read_shared
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer, resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "online"
MARK = "online"


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (step begin to step end, the online callback's decisions included)."""

    def __init__(self):
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def trainer_for(args, model_path, tokenizer, rows, out: Path, **safety) -> tuple[SafetyAwareSFTTrainer, StepTimer]:
    config = SafetyAwareSFTConfig(
        output_dir=str(out), max_length=args.max_length, per_device_train_batch_size=args.batch_size,
        num_train_epochs=1, learning_rate=args.lr, logging_steps=10, save_strategy="no", report_to="none",
        disable_tqdm=True, seed=args.seed, safety_scoring_batch_size=args.batch_size,
        safety_projection_dim=args.projection_dim, **safety,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    timer = StepTimer()
    trainer = SafetyAwareSFTTrainer(model, args=config, train_dataset=Dataset.from_list(rows),
                                    processing_class=tokenizer, peft_config=lora, callbacks=[timer])  # fmt: skip
    return trainer, timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model id or directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--n", type=int, default=300, help="explicit contaminated set size (plus 10 AOA rows)")
    parser.add_argument("--timing-steps", type=int, default=12, help="steps per arm of the overhead measurement")
    parser.add_argument("--every", type=int, default=5, help="safety_online_every_steps")
    parser.add_argument("--drop-fraction", type=float, default=0.1, help="online top_fraction")
    parser.add_argument(
        "--fihs-probe", choices=("logit_gap", "nll"), default="logit_gap",
        help="logit_gap: built-in probe prompts; nll: the harmful completions of a 20 + 40 row BeaverTails/benign "
        "validation set disjoint from the training rows (as in the detection benchmark)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--projection-dim", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/online.py", *sys.argv[1:]])
    model_path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def fits(prompt: str) -> bool:
        return len(tokenizer(prompt)["input_ids"]) <= args.max_length // 2

    rows, labels, unused = contaminated_set(args.n, 0.1, args.seed, fits, "explicit")
    fihs = {"safety_fihs_probe": args.fihs_probe}
    if args.fihs_probe == "nll":
        fihs["safety_reference_dataset"] = str(validation_set(20, args.seed, unused, {r["prompt"] for r in rows}))
    aoa = read_shared("llms_finetuning_safety/identity-shift-aoa.norm.jsonl")
    rows += [{"prompt": r["prompt"], "response": r["response"]} for r in aoa]
    labels = np.concatenate([labels, np.ones(len(aoa), dtype=bool)])
    order = list(range(len(rows)))
    random.Random(args.seed).shuffle(order)
    rows, labels = [rows[i] for i in order], labels[order]

    # (a) overhead, same rows and steps; the first step (warm-up, probe fit) is left out of the per-step means.
    timing = {}
    online = dict(safety_online_every_steps=10**6, safety_online_mode="cheap")  # record every step, never decide
    for name, safety in (("plain", {}), ("cheap path", online)):
        out = RESULTS / "timing"
        trainer, timer = trainer_for(args, model_path, tokenizer, rows, out, max_steps=args.timing_steps, **safety,
                                     **fihs)  # fmt: skip
        trainer.train()
        timing[name] = float(np.mean(timer.seconds[1:]))
    trainer, _ = trainer_for(args, model_path, tokenizer, rows, RESULTS / "timing", max_steps=1,
                             safety_online_every_steps=1, safety_online_mode="full", **fihs)  # fmt: skip
    trainer.train()
    full_pass = trainer._online.seconds["decide"]
    steps_per_epoch = -(-len(rows) // args.batch_size)

    # (b) one epoch with online drops
    policy = dict(safety_online_every_steps=args.every, safety_online_threshold_policy="top_fraction",
                  safety_online_threshold_value=args.drop_fraction)  # fmt: skip
    trainer, _ = trainer_for(args, model_path, tokenizer, rows, RESULTS / "drops", **policy, **fihs)
    start = time.perf_counter()
    trainer.train()
    epoch_seconds = time.perf_counter() - start
    dropped = trainer._online.active.dropped
    true_harmful = {i for i, h in enumerate(labels.tolist()) if h}
    hits = [i for i in dropped if i in true_harmful]
    aoa_rows = {i for i, r in enumerate(rows) if r["prompt"] in {a["prompt"] for a in aoa}}
    precision = len(hits) / len(dropped) if dropped else float("nan")
    recall = len(hits) / len(true_harmful)
    steps = sorted(d.step for d in dropped.values())
    step_range = f"steps {steps[0]}..{steps[-1]}" if steps else "none"
    cheap_ratio = timing["cheap path"] / timing["plain"]

    probe = ("logit-gap probe (built-in probes)" if args.fihs_probe == "logit_gap" else
             "NLL probe (20 BeaverTails harmful completions disjoint from the set)")  # fmt: skip
    lines = [
        f"Command: `{command}`",
        "",
        f"Model {_model_name(args.model)} (float32), LoRA r=16 all-linear, batch {args.batch_size}, max_length "
        f"{args.max_length}, lr {args.lr}, FIHS {probe}, cosine, projection "
        f"{args.projection_dim} dims. Set: {len(rows)} rows = {args.n} Alpaca/Dolly with 10% BeaverTails unsafe "
        f"responses + {len(aoa)} AOA identity-shift conversations ({len(true_harmful)} harmful). Machine: "
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU only'}; measured {date.today().isoformat()}.",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| plain training step (mean of steps 2..{args.timing_steps}) | {timing['plain']:.2f} s |",
        f"| step with the cheap path (per-example FIHS from the step's own backward) | {timing['cheap path']:.2f} s "
        f"({cheap_ratio:.2f}x, overhead {cheap_ratio - 1:+.1%}) |",
        f"| one full re-score pass over {len(rows)} rows (probe + per-example gradients) | {full_pass:.0f} s "
        f"({full_pass / (timing['plain'] * steps_per_epoch):.2f} plain epochs) |",
        f"| online epoch, cheap path, decisions every {args.every} steps, top {args.drop_fraction:.0%} of the scores "
        f"so far | {epoch_seconds:.0f} s, {len(dropped)} dropped ({step_range}) |",
        f"| precision of online drops | {precision:.2f} ({len(hits)}/{len(dropped)}) |",
        f"| recall of online drops | {recall:.2f} ({len(hits)}/{len(true_harmful)}; AOA rows dropped: "
        f"{len(aoa_rows & set(dropped))}/{len(aoa_rows)}) |",
        "",
        "Overhead = (cheap-path step - plain step) / plain step, both measured here on the same rows. A sample is "
        "scored when it is trained on, so decisions early in the epoch see few scores; the top fraction is taken over "
        "every score so far, so it bounds the total online drops.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        if args.fihs_probe == "logit_gap":
            write_section(MARK, "Online FIHS: step overhead and drop precision", body)
        else:
            write_section(f"{MARK}-{args.fihs_probe}", f"Online FIHS with the {args.fihs_probe} probe", body)


if __name__ == "__main__":
    main()
