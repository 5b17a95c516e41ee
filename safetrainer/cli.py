"""`safetrainer` command line (also `python -m safetrainer`, and `accelerate launch -m safetrainer ...`).

    safetrainer train --config FILE.yaml [--field value ...]
    safetrainer score --config FILE.yaml [--field value ...]
    safetrainer score --train-file PATH [--model ID_OR_DIR] [--scorers datashield] [--output-dir DIR]
    safetrainer eval --model ID_OR_DIR [--adapter DIR] --prompts PATH_OR_SUITE [--judge embedding|keyword|MODEL_ID]
                     --output-dir DIR
    safetrainer judge --input PATH [--judge embedding|keyword|MODEL_ID] --output-dir DIR
    safetrainer mix --pool PATH_OR_HUB_ID --strategy {random,sss,pss,cossim,...-b} --budget N_OR_FRACTION
                    [--train-file PATH] [--seed S] --output-dir DIR

The YAML config holds TRL's script, training (`SafetyAwareSFTConfig`) and model (`ModelConfig`) fields, as for
`trl sft --config`; command-line flags override it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

_USAGE = __doc__.split("\n\n")[1]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `safetrainer` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage:\n{_USAGE}\n\nRun `safetrainer COMMAND --help` for a command's options.")
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        _train(rest)
    elif command == "score":
        _score(rest)
    elif command == "eval":
        _eval(rest)
    elif command == "judge":
        _judge(rest)
    elif command == "mix":
        _mix(rest)
    else:
        sys.exit(f"safetrainer: unknown command {command!r}; commands: train, score, eval, judge, mix.")


def _config_parser():
    from trl import ModelConfig, ScriptArguments, TrlParser

    from .config import SafetyAwareSFTConfig

    return TrlParser((ScriptArguments, SafetyAwareSFTConfig, ModelConfig))


def _build_trainer(script_args, training_args, model_args, with_peft: bool):
    from trl import get_peft_config, get_quantization_config

    from .data import load_data
    from .models import resolve_model_path
    from .trainer import SafetyAwareSFTTrainer

    if not script_args.dataset_name:
        raise ValueError("dataset_name: required; give builtin:NAME, a local jsonl/json/csv/parquet file or a Hub id.")
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
        trust_remote_code=training_args.trust_remote_code,
    )
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        import torch

        model_init_kwargs["device_map"] = {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"
    training_args.model_init_kwargs = {**model_init_kwargs, **(training_args.model_init_kwargs or {})}
    dataset = load_data(script_args.dataset_name, split=script_args.dataset_train_split)
    return SafetyAwareSFTTrainer(
        model=resolve_model_path(model_args.model_name_or_path),
        args=training_args,
        train_dataset=dataset,
        quantization_config=quantization_config,
        peft_config=get_peft_config(model_args) if with_peft else None,
    )


def _train(argv: list[str]) -> None:
    script_args, training_args, model_args = _config_parser().parse_args_and_config(args=argv)
    trainer = _build_trainer(script_args, training_args, model_args, with_peft=True)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    if trainer.is_world_process_zero():
        print(f"Model saved to {training_args.output_dir}")
        _print_summary(trainer, training_args.output_dir)
    from .distributed import end_distributed_training

    end_distributed_training(trainer)


def _score(argv: list[str]) -> None:
    if "--config" in argv:
        script_args, training_args, model_args = _config_parser().parse_args_and_config(args=argv)
    else:
        script_args, training_args, model_args = _score_args_without_config(argv)
    trainer = _build_trainer(script_args, training_args, model_args, with_peft=False)
    trainer.filter_train_dataset()
    if trainer.is_world_process_zero():
        _print_summary(trainer, training_args.output_dir)
    from .distributed import end_distributed_training

    end_distributed_training(trainer)


def _score_args_without_config(argv: list[str]):
    from trl import ModelConfig, ScriptArguments

    from .config import SCORER_NAMES, THRESHOLD_POLICIES, SafetyAwareSFTConfig

    parser = argparse.ArgumentParser(prog="safetrainer score", description="Score a dataset without training.")
    parser.add_argument("--train-file", required=True, help="jsonl/json/csv/parquet file, builtin:NAME or Hub id")
    parser.add_argument("--model", default=None, help="model id or directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument(
        "--scorers", default="datashield", help=f"comma-separated; available: {', '.join(SCORER_NAMES)}"
    )
    parser.add_argument("--output-dir", default="safetrainer-score", help="report goes to DIR/safety_report/")
    parser.add_argument("--threshold-policy", default="top_fraction", choices=THRESHOLD_POLICIES)
    parser.add_argument("--threshold-value", type=float, default=0.1)
    parser.add_argument("--reference", default=None, help="reference dataset for DataShield (default: built-in)")
    parser.add_argument("--validation", default=None, help="labelled rows for SAFT's layer/k/sign search (optional)")
    parser.add_argument("--ensemble", action="store_true", help="decide on the rank average of all scorers")
    parser.add_argument("--projection-dim", type=int, default=8192, help="per-example gradient projection (FIHS)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    ns = parser.parse_args(argv)
    extra = {"safety_reference_dataset": ns.reference} if ns.reference else {}
    training_args = SafetyAwareSFTConfig(
        output_dir=ns.output_dir,
        safety_scorers=ns.scorers,
        safety_validation_dataset=ns.validation,
        safety_ensemble=ns.ensemble,
        safety_projection_dim=ns.projection_dim,
        safety_threshold_policy=ns.threshold_policy,
        safety_threshold_value=ns.threshold_value,
        safety_scoring_batch_size=ns.batch_size,
        max_length=ns.max_length,
        report_to="none",
        **extra,
    )
    return ScriptArguments(dataset_name=ns.train_file), training_args, ModelConfig(model_name_or_path=ns.model)


def _eval(argv: list[str]) -> None:
    from .eval.suites import SUITES

    parser = argparse.ArgumentParser(prog="safetrainer eval", description="Generate on prompts and judge refusals.")
    parser.add_argument("--model", default=None, help="model id or directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--adapter", default=None, help="PEFT adapter directory to load on top of the model")
    parser.add_argument("--prompts", required=True, help=f"suite ({', '.join(SUITES)}) or file with a 'prompt' column")
    parser.add_argument(
        "--judge", default="embedding", help="'embedding', 'keyword', or a classifier / Llama Guard-style model id"
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first n prompts only")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--utility", default=None, help="file of prompt/response rows: adds their mean response NLL")
    parser.add_argument("--gsm8k", type=int, default=0, help="adds GSM8K exact match on the first n test problems")
    ns = parser.parse_args(argv)

    from .data import load_data
    from .eval import evaluate_refusals, gsm8k_exact_match, load_judge, load_prompts, response_nll
    from .eval.suites import shared_data_dir

    prompt_set = load_prompts(ns.prompts, ns.limit)
    model, tokenizer = _load_for_eval(ns.model, ns.adapter)
    records, metrics = evaluate_refusals(model, tokenizer, prompt_set, load_judge(ns.judge), ns.max_new_tokens,
                                         ns.batch_size, show_progress=True)  # fmt: skip
    metrics["model"], metrics["adapter"] = ns.model or "default", ns.adapter
    if ns.utility:
        rows = load_data(ns.utility)
        metrics["utility_nll"] = response_nll(
            model, tokenizer, list(zip(rows["prompt"], rows["response"], strict=True))
        )
    if ns.gsm8k:
        lines = (shared_data_dir() / "gsm8k" / "test.jsonl").read_text().splitlines()[: ns.gsm8k]
        metrics["gsm8k"] = gsm8k_exact_match(model, tokenizer, [json.loads(line) for line in lines],
                                             batch_size=ns.batch_size)  # fmt: skip
    _write_outputs(ns.output_dir, "generations.jsonl", records, "eval.json", metrics)


def _judge(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="safetrainer judge", description="Judge existing prompt/response pairs.")
    parser.add_argument("--input", required=True, help="jsonl/json/csv/parquet file with prompt and response columns")
    parser.add_argument(
        "--judge", default="embedding", help="'embedding', 'keyword', or a classifier / Llama Guard-style model id"
    )
    parser.add_argument("--output-dir", required=True)
    ns = parser.parse_args(argv)

    from .data import load_data
    from .eval import judge_pairs, load_judge, refusal_metrics

    rows = load_data(ns.input)
    missing = {"prompt", "response"} - set(rows.column_names)
    if missing:
        raise ValueError(f"--input {ns.input}: missing column(s) {sorted(missing)}; found {rows.column_names}.")
    for column in ("prompt", "response"):
        bad = next((i for i, v in enumerate(rows[column]) if not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"--input {ns.input}: row {bad} field {column!r} is not a string.")
    refusals = judge_pairs(load_judge(ns.judge), rows["prompt"], rows["response"])
    records = [{**row, "refusal": refused} for row, refused in zip(rows.to_list(), refusals, strict=True)]
    summary = {"input": ns.input, **refusal_metrics(refusals, None, None), "judge": ns.judge}
    _write_outputs(ns.output_dir, "judgements.jsonl", records, "summary.json", summary)


def _mix(argv: list[str]) -> None:
    from .config import (
        DEFAULT_HARMFUL_REFERENCE,
        MIX_CATEGORY_METHODS,
        MIX_CONTRAST_PAIRINGS,
        MIX_HARMFUL_CLASSIFIERS,
        MIX_STRATEGIES,
        check_category_min_similarity,
        check_most_harmful_first,
    )

    parser = argparse.ArgumentParser(prog="safetrainer mix", description="Choose safety samples to mix into training.")
    parser.add_argument("--pool", required=True, help="builtin:NAME, jsonl/json/csv/parquet file or Hub dataset id")
    parser.add_argument("--strategy", required=True, choices=MIX_STRATEGIES)
    parser.add_argument("--budget", required=True, type=float, help="a count, or a fraction of --train-file's rows")
    parser.add_argument("--train-file", default=None, help="the fine-tuning data (budget fractions, Cossim's target)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--categories", default="auto", choices=MIX_CATEGORY_METHODS)
    parser.add_argument("--category-reference", default=None, help="prompt/category rows (default: built-in)")
    parser.add_argument(
        "--category-min-similarity", type=float, default=None,
        help="with --categories nearest: below this prototype cosine a prompt is 'uncategorized' (default: none)",
    )  # fmt: skip
    parser.add_argument("--num-clusters", type=int, default=14)
    parser.add_argument("--model", default=None, help="embed with this model's hidden states (--embedder model)")
    parser.add_argument(
        "--embedder", default=None,
        help="'model' (--model's hidden states; default SmolLM2-135M) or a sentence-transformers id (default: the "
        "bundled all-MiniLM-L6-v2, or 'model' when --model is given)",
    )  # fmt: skip
    parser.add_argument("--judge", default="embedding", help="refusal judge: 'embedding', 'keyword' or a model id")
    parser.add_argument(
        "--harmful-classifier", default=None, choices=MIX_HARMFUL_CLASSIFIERS,
        help="flag harmful instructions of a pool without harmful/is_safe/label columns (default: all harmful)",
    )  # fmt: skip
    parser.add_argument("--harmful-reference", default=DEFAULT_HARMFUL_REFERENCE, help="prompts labelled for the probe")
    parser.add_argument(
        "--most-harmful-first", action="store_true",
        help="random/sss: take the instructions the probe rates most harmful first instead of drawing at random",
    )  # fmt: skip
    parser.add_argument("--contrast-pool", default=None, help="borderline-benign requests answered helpfully")
    parser.add_argument("--contrast-ratio", type=float, default=1.0, help="contrast rows per selected safety sample")
    parser.add_argument(
        "--contrast-pairing", default="random", choices=MIX_CONTRAST_PAIRINGS,
        help="draw contrast rows at random, or give each safety sample its nearest look-alike",
    )  # fmt: skip
    ns = parser.parse_args(argv)
    if not ns.contrast_ratio > 0:
        parser.error(f"--contrast-ratio: must be > 0, got {ns.contrast_ratio}")

    from .data import load_data, pair_texts, prepare_input
    from .samplers import (
        MODEL_EMBEDDER,
        HarmfulInstructionProbe,
        SentenceEmbedder,
        load_pool,
        resolve_embedder_name,
        select_safety_mix,
    )

    train_pairs = num_train = None
    if ns.train_file:
        prepared = prepare_input(load_data(ns.train_file), invalid_rows="reject")
        train_pairs = pair_texts(prepared)
        num_train = prepared.num_rows - len(prepared.rejected)
    embedder_name = resolve_embedder_name(ns.embedder or (MODEL_EMBEDDER if ns.model else None))
    embedder = _LazyModelEmbedder(ns.model) if embedder_name == MODEL_EMBEDDER else SentenceEmbedder(embedder_name)
    if ns.most_harmful_first:
        check_most_harmful_first(ns.strategy)  # before the pool is typed and embedded
    check_category_min_similarity(ns.category_min_similarity)
    probe = HarmfulInstructionProbe(embedder, ns.harmful_reference)
    classifier = probe if ns.harmful_classifier else None
    contrast = None
    if ns.contrast_pool:
        contrast = load_pool(ns.contrast_pool, judge=ns.judge, harmful_classifier=classifier, contrast=True)
    mix = select_safety_mix(
        load_pool(ns.pool, judge=ns.judge, harmful_classifier=classifier), ns.strategy,
        ns.budget, num_train, ns.seed, embedder, train_pairs, ns.categories, ns.category_reference, ns.num_clusters,
        ns.category_min_similarity, probe.probability if ns.most_harmful_first else None, contrast, ns.contrast_ratio,
        ns.contrast_pairing,
    )  # fmt: skip
    path = mix.write(ns.output_dir)
    summary = mix.summary()
    shown = {k: summary[k] for k in ("strategy", "budget", "selected", "selected_behavior_counts",
                                     "selected_judge_unsure", "notes")}  # fmt: skip
    print(json.dumps({**shown, "category_source": summary["pool"]["category_source"]}, indent=2))
    print(f"Wrote {path} and {path.parent / 'mix_summary.json'}")


class _LazyModelEmbedder:
    """Loads the model only when a strategy needs embeddings (random and column-category SSS never do)."""

    def __init__(self, model_id: str | None):
        self.model_id, self.embedder = model_id, None

    def __call__(self, prompts, responses, instruction_only):
        if self.embedder is None:
            from .samplers import ModelEmbedder

            model, tokenizer = _load_for_eval(self.model_id, None)
            self.embedder = ModelEmbedder(model, tokenizer)
        return self.embedder(prompts, responses, instruction_only)


def _load_for_eval(model_id: str | None, adapter: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models import resolve_model_path

    path = resolve_model_path(model_id)
    tokenizer = AutoTokenizer.from_pretrained(adapter or path) if adapter and _has_tokenizer(adapter) else None
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model, tokenizer


def _has_tokenizer(directory: str) -> bool:
    from pathlib import Path

    return (Path(directory) / "tokenizer_config.json").is_file()


def _write_outputs(output_dir: str, rows_name: str, rows: list[dict], summary_name: str, summary: dict) -> None:
    from pathlib import Path

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / rows_name, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / summary_name).write_text(json.dumps(summary, indent=2))
    shown = {k: v for k, v in summary.items() if k in ("n", "refusal_rate", "asr", "utility_nll", "gsm8k")}
    print(json.dumps(shown, indent=2))
    print(f"Wrote {out / rows_name} and {out / summary_name}")


def _print_summary(trainer, output_dir: str) -> None:
    summary = trainer.safety_summary
    if summary is None:
        return
    shown = {k: summary[k] for k in ("counts", "threshold_policy", "threshold", "rejected_reasons") if k in summary}
    print(json.dumps(shown, indent=2))
    if trainer.args.safety_report:
        print(f"Safety report: {output_dir}/safety_report/")


if __name__ == "__main__":
    main()
