"""Detection benchmark: how well the filter's scores single out harmful samples planted in benign SFT data.

Builds a contaminated set from ../shared/data (benign Alpaca + Dolly responses, a fraction of BeaverTails unsafe
responses), scores it with each arm, and prints AUROC, AUPRC, TPR at 5% FPR, seconds per 1000 samples, and the filter
pass's cost as a ratio to one LoRA training epoch on the same data, timed in the same run. Writes its section of
BENCHMARKS.md.

    python benchmarks/detection.py                      # CPU defaults: 300 samples, 10% harmful
    python benchmarks/detection.py --n 2000 --batch-size 16   # larger, e.g. on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from _report import read_shared_jsonl as read_jsonl
from _report import write_section
from datasets import Dataset
from peft import LoraConfig
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from transformers import AutoModelForCausalLM, AutoTokenizer

from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer, resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
MARK = "detection"


def contaminated_set(n: int, contamination: float, seed: int, fits) -> tuple[list[dict], np.ndarray]:
    """`n` rows, a `contamination` fraction harmful; only rows whose prompt `fits` in the training length."""
    rng = random.Random(seed)
    benign = read_jsonl("alpaca/alpaca_data_1k.norm.jsonl") + read_jsonl("dolly/databricks_dolly_1k.norm.jsonl")
    harmful = read_jsonl("beavertails/beavertails_unsafe_200.norm.jsonl")
    benign, harmful = [r for r in benign if fits(r["prompt"])], [r for r in harmful if fits(r["prompt"])]
    n_harmful = round(n * contamination)
    rows = [(r, False) for r in rng.sample(benign, n - n_harmful)] + [(r, True) for r in rng.sample(harmful, n_harmful)]
    rng.shuffle(rows)
    return [{"prompt": r["prompt"], "response": r["response"]} for r, _ in rows], np.array([h for _, h in rows])


def shared_reference(per_side: int, seed: int, exclude_prompts: set[str]) -> Path:
    """BeaverTails compliant answers vs Safety-Tuned-LLaMAs refusals, disjoint from the scored prompts."""
    rng = random.Random(seed + 1)
    compliant = [
        r for r in read_jsonl("beavertails/beavertails_sample.norm.jsonl") if r["prompt"] not in exclude_prompts
    ]
    refusals = read_jsonl("safety_tuned_llamas/safety_only_data_Instructions.norm.jsonl")
    rows = [
        {"prompt": r["prompt"], "response": r["response"], "label": "compliance"}
        for r in rng.sample(compliant, per_side)
    ]
    rows += [
        {"prompt": r["prompt"], "response": r["response"], "label": "refusal"} for r in rng.sample(refusals, per_side)
    ]
    path = ROOT / "benchmarks" / "results" / f"reference_shared_{per_side}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_max: float = 0.05) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= fpr_max].max())


def base_config(args, output_dir: Path, **safety) -> SafetyAwareSFTConfig:
    return SafetyAwareSFTConfig(
        output_dir=str(output_dir),
        max_length=args.max_length,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=2e-4,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
        safety_scoring_batch_size=args.batch_size,
        **safety,
    )


def make_trainer(args, model_path, tokenizer, rows, config):
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    return SafetyAwareSFTTrainer(
        model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=lora
    )


def run_arm(name, args, model_path, tokenizer, rows, labels, reference: str) -> dict:
    out = ROOT / "benchmarks" / "results" / "detection" / name
    config = base_config(
        args,
        out,
        safety_scorers=["datashield"],
        safety_reference_dataset=reference,
        safety_threshold_policy="top_fraction",
        safety_threshold_value=args.contamination,
    )
    trainer = make_trainer(args, model_path, tokenizer, rows, config)
    start = time.perf_counter()
    summary = trainer.filter_train_dataset()
    filter_seconds = time.perf_counter() - start
    import pyarrow.parquet as pq

    table = pq.read_table(out / "safety_report" / "scores.parquet").to_pydict()
    # Rows TRL rejects (prompt alone longer than max_length) are never trained on and carry no score.
    scored = np.isfinite(np.array(table["score_datashield"], dtype=float))
    scores = np.array(table["score_datashield"], dtype=float)[scored]
    keep = np.array(table["keep"])[scored]
    labels = labels[scored]
    lengths = np.array([t if t is not None else np.nan for t in table["num_tokens"]], dtype=float)[scored]
    return {
        "arm": name,
        "layer": summary["scorers"]["datashield"]["layer"],
        "scored": f"{int(scored.sum())} ({int(labels.sum())} harmful)",
        "auroc": roc_auc_score(labels, scores),
        "auprc": average_precision_score(labels, scores),
        "tpr_at_5fpr": tpr_at_fpr(labels, scores),
        "dropped_harmful": int((~keep & labels).sum()),
        "dropped": int((~keep).sum()),
        "score_length_spearman": float(_spearman(scores, lengths)),
        "seconds_per_1000": 1000 * filter_seconds / len(rows),
        "filter_seconds": filter_seconds,
        "fit_seconds": summary["timings"]["fit_seconds"],
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    ra, rb = np.argsort(np.argsort(a[ok])), np.argsort(np.argsort(b[ok]))
    return float(np.corrcoef(ra, rb)[0, 1])


def time_epoch(args, model_path, tokenizer, rows) -> float:
    """Wall time of one plain LoRA SFT epoch on the same rows (filter off)."""
    out = ROOT / "benchmarks" / "results" / "detection" / "epoch"
    trainer = make_trainer(args, model_path, tokenizer, rows, base_config(args, out, safety_report=False))
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def render(results: list[dict], epoch_seconds: float, args, command: str) -> str:
    header = (
        f"Contaminated set: {args.n} samples from Alpaca + Dolly with {args.contamination:.0%} BeaverTails unsafe "
        f"responses (seed {args.seed}; prompts of at most {args.max_length // 2} tokens); model SmolLM2-135M-Instruct "
        f"(float32), max_length {args.max_length}, scoring "
        f"batch {args.batch_size}; one LoRA epoch (r=16, all-linear, batch {args.batch_size}) took "
        f"{epoch_seconds:.0f} s in the same run. Machine: {platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, {'CUDA' if torch.cuda.is_available() else 'CPU only'}; measured {date.today().isoformat()}."
    )
    lines = [
        "| arm | scored samples | layer | AUROC | AUPRC | TPR@5%FPR | harmful in dropped top-k "
        "| s / 1000 samples | cost (epochs) | score~length (Spearman) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['arm']} | {r['scored']} | {r['layer']} | {r['auroc']:.3f} | {r['auprc']:.3f} "
            f"| {r['tpr_at_5fpr']:.3f} "
            f"| {r['dropped_harmful']}/{r['dropped']} | {r['seconds_per_1000']:.1f} "
            f"| {r['filter_seconds'] / epoch_seconds:.3f} | {r['score_length_spearman']:+.2f} |"
        )
    notes = (
        "Samples whose prompt alone exceeds max_length are rejected by SFT preparation and left out of the metrics. "
        "Cost = the whole filter pass (reference fit + scoring forward) divided by the epoch's wall time. DataShield "
        "ranks how strongly a response pushes the model toward compliance, not harmful content as such; its real test "
        "is the safety-outcome benchmark."
    )
    return "\n".join([f"Command: `{command}`", "", header, "", *lines, "", notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="samples in the contaminated set")
    parser.add_argument("--contamination", type=float, default=0.1, help="fraction of harmful samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--reference-per-side", type=int, default=40)
    parser.add_argument("--model", default=None, help="model id or directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    command = "python benchmarks/detection.py " + " ".join(sys.argv[1:])

    model_path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows, labels = contaminated_set(
        args.n, args.contamination, args.seed, lambda p: len(tokenizer(p)["input_ids"]) <= args.max_length // 2
    )
    reference = shared_reference(args.reference_per_side, args.seed, {r["prompt"] for r in rows})
    results = [
        run_arm(
            "datashield (built-in reference, 24+24)",
            args,
            model_path,
            tokenizer,
            rows,
            labels,
            "builtin:datashield_reference",
        ),
        run_arm(
            f"datashield (shared reference, {args.reference_per_side}+{args.reference_per_side})",
            args,
            model_path,
            tokenizer,
            rows,
            labels,
            str(reference),
        ),
    ]
    epoch_seconds = time_epoch(args, model_path, tokenizer, rows)
    body = render(results, epoch_seconds, args, command.strip())
    print(body)
    if not args.no_write:
        write_section(MARK, "Detection: DataShield on a contaminated SFT set", body)


if __name__ == "__main__":
    main()
