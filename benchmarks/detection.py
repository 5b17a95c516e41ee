"""Detection benchmark: how well each scorer singles out harmful samples planted in benign SFT data.

Contaminated sets from ../shared/data: benign Alpaca + Dolly responses with 5%, 10% and 30% harmful rows, explicit
(BeaverTails unsafe responses) or implicit (the AOA identity-shift conversations of Qi et al. 2023). Every scorer runs
in one filter pass per set (the hidden-state scorers share one forward pass, FIHS one per-example-gradient pass),
plus the random baseline. Prints AUROC, AUPRC, TPR at 5% FPR, seconds per 1000 samples, and each pass's cost as a
ratio to one LoRA training epoch on the same data, timed in the same run. Writes its section of BENCHMARKS.md.

    python benchmarks/detection.py                         # CPU defaults: 300 samples per explicit set
    python benchmarks/detection.py --n 2000 --batch-size 16   # larger, e.g. on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
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


def _benign_pool(fits) -> list[dict]:
    benign = read_jsonl("alpaca/alpaca_data_1k.norm.jsonl") + read_jsonl("dolly/databricks_dolly_1k.norm.jsonl")
    return [r for r in benign if fits(r["prompt"])]


def contaminated_set(n: int, contamination: float, seed: int, fits, source: str = "explicit"):
    """Rows, harmful labels and the unused benign/harmful rows (for validation), deterministic for the seed.

    explicit: `n` rows, a `contamination` fraction BeaverTails unsafe responses. implicit: all 10 AOA identity-shift
    conversations, with round(10 / contamination) - 10 benign rows, so the rate holds (the set is small).
    """
    rng = random.Random(seed)
    benign = _benign_pool(fits)
    rng.shuffle(benign)
    if source == "explicit":
        harmful = [r for r in read_jsonl("beavertails/beavertails_unsafe_200.norm.jsonl") if fits(r["prompt"])]
        rng.shuffle(harmful)
        n_harmful = round(n * contamination)
        chosen_harmful, n_benign = harmful[:n_harmful], n - n_harmful
    elif source == "implicit":
        chosen_harmful = read_jsonl("llms_finetuning_safety/identity-shift-aoa.norm.jsonl")
        n_benign = round(len(chosen_harmful) / contamination) - len(chosen_harmful)
    else:
        raise ValueError(f"source: {source!r}; allowed: explicit, implicit")
    rows = [(r, False) for r in benign[:n_benign]] + [(r, True) for r in chosen_harmful]
    rng.shuffle(rows)
    data = [{"prompt": r["prompt"], "response": r["response"]} for r, _ in rows]
    return data, np.array([h for _, h in rows]), benign[n_benign:]


def validation_set(per_side: int, seed: int, benign_unused: list[dict], exclude_prompts: set[str]) -> Path:
    """Labelled rows for SAFT's search: BeaverTails unsafe responses and benign rows, disjoint from the scored set."""
    rng = random.Random(seed + 2)
    harmful = [r for r in read_jsonl("beavertails/beavertails_unsafe_200.norm.jsonl")
               if r["prompt"] not in exclude_prompts]  # fmt: skip
    rows = [{"prompt": r["prompt"], "response": r["response"], "label": "harmful"}
            for r in rng.sample(harmful, per_side)]  # fmt: skip
    rows += [{"prompt": r["prompt"], "response": r["response"], "label": "benign"}
             for r in benign_unused[: 2 * per_side]]  # fmt: skip
    path = ROOT / "benchmarks" / "results" / f"validation_{per_side}_{seed}.jsonl"
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
        **_precision(args),
        **safety,
    )


def _precision(args) -> dict:
    """--bf16: bf16 autocast for the timed epoch and (it follows the training's precision) every scoring pass."""
    return {"bf16": True, "use_cpu": not torch.cuda.is_available()} if args.bf16 else {}


def make_trainer(args, model_path, tokenizer, rows, config):
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    return SafetyAwareSFTTrainer(
        model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=lora
    )


SCORERS = ["datashield", "saft", "fihs", "ref_similarity"]


def run_dataset(label, args, model_path, tokenizer, rows, labels, validation: Path, with_seal: bool) -> list[dict]:
    """One filter pass with the four main scorers (ensemble deciding), then one pass per separate scorer (random;
    SEAL, whose selector run is a short training of its own, on the main set only); metrics per scorer."""
    out = ROOT / "benchmarks" / "results" / "detection" / re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    n_harmful = int(labels.sum())
    decide = {"safety_threshold_policy": "top_k", "safety_threshold_value": n_harmful}
    config = base_config(args, out / "scorers", safety_scorers=SCORERS, safety_ensemble=True,
                         safety_validation_dataset=str(validation), **decide)  # fmt: skip
    summary = make_trainer(args, model_path, tokenizer, rows, config).filter_train_dataset()
    table = pq.read_table(out / "scorers" / "safety_report" / "scores.parquet").to_pydict()
    t = summary["timings"]
    hidden_seconds = t.get("hidden_state_seconds", 0.0) + sum(t[f"fit_seconds/{n}"] for n in SCORERS if n != "fihs")
    fihs_seconds = t.get("gradient_seconds", 0.0) + t["fit_seconds/fihs"]
    seconds = {"datashield": hidden_seconds, "saft": hidden_seconds, "ref_similarity": hidden_seconds,
               "fihs": fihs_seconds, "ensemble": hidden_seconds + fihs_seconds}  # fmt: skip
    infos = dict(summary["scorers"])
    # row name -> (scorer, settings); fihs_nll / fihs_contrast: FIHS with the NLL proxies on the validation set (the
    # labelled rows SAFT searches on): its harmful completions, or its benign minus its harmful completions.
    on_validation = {"safety_reference_dataset": str(validation)}
    separate = {
        "random": ("random", {}),
        "fihs_nll": ("fihs", {"safety_fihs_probe": "nll", **on_validation}),
        "fihs_contrast": ("fihs", {"safety_fihs_probe": "nll_contrast", **on_validation}),
        **({"seal": ("seal", {"safety_seal_epochs": args.seal_epochs})} if with_seal else {}),
    }
    for name, (scorer, settings) in separate.items():
        config = base_config(args, out / name, safety_scorers=[scorer], **decide, **settings)
        summary = make_trainer(args, model_path, tokenizer, rows, config).filter_train_dataset()
        seconds[name] = summary["timings"]["fit_seconds"] + summary["timings"]["score_seconds"]
        table[f"score_{name}"] = pq.read_table(out / name / "safety_report" / "scores.parquet")[
            f"score_{scorer}"
        ].to_pylist()
        infos[name] = summary["scorers"][scorer]
    results = []
    for name in [*SCORERS, "ensemble", *separate]:
        # Rows TRL rejects (prompt alone longer than max_length) are never trained on and carry no score.
        scores = np.array(table[f"score_{name}"], dtype=float)
        scored = np.isfinite(scores)
        y = labels[scored]
        lengths = np.array([v if v is not None else np.nan for v in table["num_tokens"]], dtype=float)[scored]
        results.append({
            "dataset": label, "scorer": name, "scored": f"{int(scored.sum())} ({int(y.sum())} harmful)",
            "auroc": roc_auc_score(y, scores[scored]), "auprc": average_precision_score(y, scores[scored]),
            "tpr_at_5fpr": tpr_at_fpr(y, scores[scored]),
            "score_length_spearman": float(_spearman(scores[scored], lengths)),
            "seconds": seconds[name], "seconds_per_1000": 1000 * seconds[name] / len(rows),
            "choice": _choice(infos.get(name, {}), name),
        })  # fmt: skip
    return results


def _choice(info: dict, name: str) -> str:
    if name == "saft":
        return f"form {info['form']}, layer {info['layer']}, {info['pooling']}, k={info['k']}, sign {info['sign']:+d}"
    if name in ("datashield", "ref_similarity"):
        return f"layer {info['layer']}"
    if name == "fihs":
        return f"{info['probe']}, {info['similarity']}"
    if name == "fihs_nll":
        return f"{info['probe']}, {info['similarity']}, {info['harmful_completions']} validation harmful completions"
    if name == "fihs_contrast":
        return (f"{info['probe']}, {info['similarity']}, {info['benign_completions']} benign - "
                f"{info['harmful_completions']} harmful validation completions")  # fmt: skip
    if name == "seal":
        return f"{info['epochs']} epoch(s), {info['safe_rows']} safe rows"
    return ""


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


def render(results: list[dict], epoch: tuple[tuple[float, float], int, str], args, command: str) -> str:
    (before, after), epoch_rows, main_set = epoch
    epoch_seconds = min(before, after)
    rates = "/".join(f"{float(r):.0%}" for r in args.rates.split(","))
    benign_counts = "/".join(str(round(10 / float(r)) - 10) for r in args.rates.split(","))
    header = (
        f"Contaminated sets from Alpaca + Dolly (seed {args.seed}; prompts of at most {args.max_length // 2} tokens). "
        f"Explicit: {args.n} samples with {rates} BeaverTails unsafe responses. Implicit: all 10 AOA identity-shift "
        f"conversations plus benign rows to the rate ({benign_counts} benign rows). Model {_model_name(args.model)} "
        f"({'float32 weights, bf16 autocast for training and scoring' if args.bf16 else 'float32'}) "
        f"with a fresh LoRA (r=16, all-linear) as the gradient space, max_length {args.max_length}, scoring batch "
        f"{args.batch_size}, FIHS projection {args.projection_dim} dims. SAFT searches form/layer/pooling/k/sign on a "
        f"validation set of {args.validation_per_side} BeaverTails unsafe + {2 * args.validation_per_side} benign rows "
        "disjoint from the scored set; DataShield, ref_similarity and FIHS use the built-in reference and probes; "
        "fihs_nll is FIHS with the NLL proxy on that validation set's harmful completions, fihs_contrast with the "
        "NLL of its benign minus its harmful completions (each a pass of its own). "
        f"Ensemble = mean percentile rank of the four scorers. SEAL ({args.seal_epochs} selector epoch(s) on CPU, safe "
        "set builtin:refusal_pool) runs on the main set only. One LoRA epoch on the "
        f"{epoch_rows}-sample {main_set} set took {before:.0f} s before the scoring passes and {after:.0f} s after "
        f"them in the same run; costs are per the faster, {epoch_seconds:.0f} s. Machine: "
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU only'}; measured {date.today().isoformat()}."
    )
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    scorers = list(dict.fromkeys(r["scorer"] for r in results))
    by_key = {(r["dataset"], r["scorer"]): r for r in results}
    matrix = ["| scorer | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
    for name in scorers:
        cells = [f"{by_key[(d, name)]['auroc']:.3f}" if (d, name) in by_key else "-" for d in datasets]
        matrix.append(f"| {name} | " + " | ".join(cells) + " |")
    detail = [
        f"Detail on {main_set} (cost = scorer fit + its feature pass / one training epoch; the three hidden-state "
        "scorers share one forward pass, so their cost is that pass counted once):",
        "",
        "| scorer | scored | choice | AUROC | AUPRC | TPR@5%FPR | s / 1000 samples | cost (epochs) "
        "| score~length (Spearman) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in scorers:
        r = by_key[(main_set, name)]
        detail.append(
            f"| {name} | {r['scored']} | {r['choice']} | {r['auroc']:.3f} | {r['auprc']:.3f} | {r['tpr_at_5fpr']:.3f} "
            f"| {r['seconds_per_1000']:.1f} | {r['seconds'] / epoch_seconds:.3f} | {r['score_length_spearman']:+.2f} |"
        )
    other = [
        "AUPRC / TPR@5%FPR on every set:",
        "",
        "| scorer | " + " | ".join(datasets) + " |",
        "|---" * (len(datasets) + 1) + "|",
    ]
    for name in scorers:
        cells = [f"{by_key[(d, name)]['auprc']:.3f} / {by_key[(d, name)]['tpr_at_5fpr']:.2f}"
                 if (d, name) in by_key else "-" for d in datasets]  # fmt: skip
        other.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = (
        "Samples whose prompt alone exceeds max_length are rejected by SFT preparation and left out of the metrics. "
        "The implicit sets are tiny (10 harmful rows), so their AUROCs move a lot with one sample."
    )
    return "\n".join(
        [f"Command: `{command}`", "", header, "", "AUROC per set:", "", *matrix, "", *detail, "", *other, "", notes]
    )


def _model_name(model: str | None) -> str:
    if model is None:
        return "SmolLM2-135M-Instruct"
    if "safety_outcome/align" in Path(model).as_posix():
        return f"`{model}` (SmolLM2-135M-Instruct after the safety-outcome benchmark's alignment stage)"
    return f"`{model}`"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="samples in each explicit contaminated set")
    parser.add_argument("--rates", default="0.05,0.1,0.3", help="contamination rates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--projection-dim", type=int, default=8192)
    parser.add_argument("--seal-epochs", type=int, default=1, help="SEAL selector epochs (main set only)")
    parser.add_argument("--validation-per-side", type=int, default=20, help="harmful validation rows (benign: 2x)")
    parser.add_argument("--model", default=None, help="model id or directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast for training and scoring (float32 weights); a section of its own",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/detection.py", *sys.argv[1:]])

    model_path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def fits(prompt: str) -> bool:
        return len(tokenizer(prompt)["input_ids"]) <= args.max_length // 2

    results, epoch = [], None
    rates = [float(r) for r in args.rates.split(",")]
    main_rate = 0.1 if 0.1 in rates else rates[0]
    for source in ("explicit", "implicit"):
        for rate in rates:
            rows, labels, unused = contaminated_set(args.n, rate, args.seed, fits, source)
            validation = validation_set(args.validation_per_side, args.seed, unused, {r["prompt"] for r in rows})
            label = f"{source} {rate:.0%}"
            print(f"== {label}: {len(rows)} rows, {int(labels.sum())} harmful", flush=True)
            is_main = source == "explicit" and rate == main_rate
            # The epoch is timed before and after the scoring passes: the same epoch took 160-220 s (bf16) and
            # 236-325 s (float32) within and across processes on this CPU; the faster timing gives the higher, more
            # conservative cost ratios.
            before = time_epoch(args, model_path, tokenizer, rows) if is_main else None
            results += run_dataset(label, args, model_path, tokenizer, rows, labels, validation, with_seal=is_main)
            if is_main:
                epoch = ((before, time_epoch(args, model_path, tokenizer, rows)), len(rows), label)
    body = render(results, epoch, args, command)
    print(body)
    if not args.no_write:
        title = "Detection: every scorer on contaminated SFT sets"
        write_section(*((f"{MARK}-bf16", f"{title} (bf16 autocast)") if args.bf16 else (MARK, title)), body)


if __name__ == "__main__":
    main()
