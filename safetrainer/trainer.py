"""`SafetyAwareSFTTrainer`: a drop-in `SFTTrainer` that filters risky samples before training and reports every
sample's fate."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import AutoTokenizer, TrainingArguments
from trl import SFTTrainer

from .config import SafetyAwareSFTConfig
from .data import SAMPLE_IDX, SampleIdxCollator, prepare_input, to_prompt_completion, tokenize_pair
from .models import resolve_model_path
from .report import build_summary, build_table, counts, write_report
from .scoring import build_scorers, score_and_decide

logger = logging.getLogger(__name__)

_CONVERTED_FORMATS = ("alpaca", "prompt_response")


class SafetyAwareSFTTrainer(SFTTrainer):
    """`SFTTrainer` with a pre-training safety filter pass and a per-sample report.

    Takes the same arguments as `SFTTrainer`. `args` may be a `SafetyAwareSFTConfig` (plain `SFTConfig` and
    `TrainingArguments` are converted, with safety filtering off). Besides what SFTTrainer accepts, the training set
    may be Alpaca-style (`instruction`/`input`/`output`) or `prompt`/`response`; those rows are converted to
    conversational prompt/completion. Every row gets a `sample_idx` (its 0-based index in the dataset given here),
    which survives TRL's preparation, so the report can say what happened to each row.

    When `args.safety_scorers` is set, `train()` first scores every prepared sample, drops the riskiest according to
    the threshold policy and writes the report; only then is the dataloader built, so step counts and the learning-rate
    schedule match the filtered set. With filtering off, training is exactly SFTTrainer's.
    """

    def __init__(
        self,
        model,
        args: SafetyAwareSFTConfig | TrainingArguments | None = None,
        data_collator=None,
        train_dataset: Dataset | None = None,
        eval_dataset=None,
        processing_class=None,
        **kwargs: Any,
    ):
        args = _as_safety_config(args, model)
        if isinstance(model, str):
            model = resolve_model_path(model)
        self._safety_input = None
        if isinstance(train_dataset, Dataset):
            self._safety_input = prepare_input(train_dataset, args.safety_invalid_rows, args.dataset_text_field)
            train_dataset = self._safety_input.dataset
        elif args.filter_enabled:
            raise TypeError(
                "safety_scorers needs a map-style `datasets.Dataset` train_dataset, got "
                f"{type(train_dataset).__name__}."
            )
        if self._safety_input is not None and self._safety_input.input_format != "text":
            processing_class = processing_class or AutoTokenizer.from_pretrained(
                model if isinstance(model, str) else model.config._name_or_path
            )
            _check_chat_template(processing_class, self._safety_input, args)
        super().__init__(model, args, data_collator, train_dataset, eval_dataset, processing_class, **kwargs)
        self.data_collator = SampleIdxCollator(self.data_collator)
        # Callbacks cannot reach the trainer through Trainer's event arguments; hand it to those that need it.
        for callback in self.callback_handler.callbacks:
            if hasattr(callback, "attach") and getattr(callback, "trainer", None) is None:
                callback.attach(self)
        self._safety_filter_done = False
        self.safety_summary: dict[str, Any] | None = None

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        """Run the safety filter pass (once per trainer), then `SFTTrainer.train`."""
        self.filter_train_dataset()
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def filter_train_dataset(self) -> dict[str, Any] | None:
        """Score, decide and drop; write the report. Returns the report summary (None when there is nothing to report).

        Called by `train()`; call it directly to score without training (what `safetrainer score` does). Runs once
        per trainer: later calls return the first summary.
        """
        if self._safety_filter_done:
            return self.safety_summary
        self._safety_filter_done = True
        args: SafetyAwareSFTConfig = self.args
        if self._safety_input is None or SAMPLE_IDX not in self.train_dataset.column_names:
            return None  # iterable or packed data: no per-row identity to report on
        prepared_idx = self.train_dataset[SAMPLE_IDX]
        rejected = dict(self._safety_input.rejected) | self._removed_by_preparation(prepared_idx)
        result = None
        if args.filter_enabled:
            result = score_and_decide(
                self.model,
                self._safety_tokenizer,
                self._scoring_candidates(prepared_idx),
                build_scorers(args),
                args.safety_threshold_policy,
                args.safety_threshold_value,
                batch_size=args.safety_scoring_batch_size,
                max_length=args.max_length,
                show_progress=not args.disable_tqdm,
                ensemble=args.safety_ensemble,
                projection_dim=args.safety_projection_dim,
                projection_seed=args.safety_projection_seed,
                gmm_margin=args.safety_gmm_margin,
                gradient_blocks=args.safety_gradient_blocks,
            )
            dropped = set(result.sample_idx[~result.decision.keep].tolist())
            if len(dropped) == len(prepared_idx):
                raise ValueError(
                    f"The safety filter would drop all {len(dropped)} samples ({result.decision.policy}); raise the "
                    "threshold (safety_threshold_value) or lower the fraction/count to drop."
                )
            self.train_dataset = self.train_dataset.select(
                [pos for pos, idx in enumerate(prepared_idx) if idx not in dropped]
            )
        table = build_table(self._safety_input.num_rows, self._safety_input.previews, rejected, result)
        extra = {"input_format": self._safety_input.input_format, "model": self.model.config._name_or_path}
        summary = build_summary(table, result, args.safety_dict(), extra)
        for key, value in counts(table).items():
            self._metrics["train"][f"safety/{key}"] = [float(value)]
        if args.safety_report and self.is_world_process_zero():
            report_dir = write_report(Path(args.output_dir) / "safety_report", table, summary)
            logger.info("Safety report: %s (%s)", report_dir, _counts_line(summary["counts"]))
        self.safety_summary = summary
        return summary

    @property
    def _safety_tokenizer(self):
        return getattr(self.processing_class, "tokenizer", self.processing_class)

    def _removed_by_preparation(self, prepared_idx: list[int]) -> dict[int, str]:
        """Rows TRL's preparation removed: the only reason it does is a completion truncated away entirely."""
        present = set(prepared_idx)
        kept_input = self._safety_input.dataset[SAMPLE_IDX]
        why = (
            "rejected by SFT preparation: no completion token left after truncation to "
            f"max_length={self.args.max_length}"
        )
        return {idx: why for idx in kept_input if idx not in present}

    def _scoring_candidates(self, prepared_idx: list[int]):
        if self._safety_input.input_format == "text":
            raise ValueError(
                "safety_scorers: the scorers compare prompt and response, but this dataset is plain `text` with no "
                "prompt/response boundary; give messages, prompt/completion, prompt/response or Alpaca rows."
            )
        wanted = set(prepared_idx)
        candidates = []
        # One sequential pass over the rows: random row access on an Arrow dataset is slow for large sets.
        for row in self._safety_input.dataset:
            idx = row[SAMPLE_IDX]
            pair = to_prompt_completion(row) if idx in wanted else None
            example = None if pair is None else tokenize_pair(self._safety_tokenizer, *pair, idx, self.args.max_length)
            if example is not None:
                candidates.append(example)
        return candidates

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if SAMPLE_IDX not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, SAMPLE_IDX]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs.pop(SAMPLE_IDX, None)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)


def _as_safety_config(args, model) -> SafetyAwareSFTConfig:
    if isinstance(args, SafetyAwareSFTConfig):
        return args
    if args is None:
        name = model if isinstance(model, str) else model.config._name_or_path
        return SafetyAwareSFTConfig(f"{name.rstrip('/').split('/')[-1]}-SFT")
    if isinstance(args, TrainingArguments):
        # Not `to_dict()`: it masks every `*_token` field (hub_token, eos_token, pad_token) with a placeholder.
        return SafetyAwareSFTConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init})
    raise TypeError(f"args must be a SafetyAwareSFTConfig, SFTConfig or TrainingArguments, got {type(args).__name__}.")


def _check_chat_template(processing_class, prepared, args) -> None:
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    conversational = prepared.input_format in (*_CONVERTED_FORMATS, "messages") or isinstance(
        prepared.dataset[0].get("prompt"), list
    )
    if conversational and not getattr(tokenizer, "chat_template", None) and args.chat_template_path is None:
        how = (
            f"{prepared.input_format} rows are converted to chat messages"
            if prepared.input_format in _CONVERTED_FORMATS
            else "the dataset is conversational"
        )
        raise ValueError(
            f"The tokenizer has no chat template, but {how}. Use a chat model's tokenizer, set "
            "`tokenizer.chat_template` or `chat_template_path`, or give plain-string prompt/completion data."
        )


def _counts_line(c: dict[str, int]) -> str:
    return f"{c['input']} input rows: {c['kept']} kept, {c['dropped']} dropped, {c['rejected']} rejected"
