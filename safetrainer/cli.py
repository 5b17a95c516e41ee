"""`safetrainer` command line (also `python -m safetrainer`, and `accelerate launch -m safetrainer ...`).

    safetrainer train --config FILE.yaml [--field value ...]
    safetrainer score --config FILE.yaml [--field value ...]
    safetrainer score --train-file PATH [--model ID_OR_DIR] [--scorers datashield] [--output-dir DIR]

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
    else:
        sys.exit(f"safetrainer: unknown command {command!r}; commands: train, score.")


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
    trainer.accelerator.end_training()


def _score(argv: list[str]) -> None:
    if "--config" in argv:
        script_args, training_args, model_args = _config_parser().parse_args_and_config(args=argv)
    else:
        script_args, training_args, model_args = _score_args_without_config(argv)
    trainer = _build_trainer(script_args, training_args, model_args, with_peft=False)
    trainer.filter_train_dataset()
    if trainer.is_world_process_zero():
        _print_summary(trainer, training_args.output_dir)
    trainer.accelerator.end_training()


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
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    ns = parser.parse_args(argv)
    extra = {"safety_reference_dataset": ns.reference} if ns.reference else {}
    training_args = SafetyAwareSFTConfig(
        output_dir=ns.output_dir,
        safety_scorers=ns.scorers,
        safety_threshold_policy=ns.threshold_policy,
        safety_threshold_value=ns.threshold_value,
        safety_scoring_batch_size=ns.batch_size,
        max_length=ns.max_length,
        report_to="none",
        **extra,
    )
    return ScriptArguments(dataset_name=ns.train_file), training_args, ModelConfig(model_name_or_path=ns.model)


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
