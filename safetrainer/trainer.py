"""`SafetyAwareSFTTrainer`: a drop-in `SFTTrainer` that filters risky samples before training and reports every
sample's fate."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets
from transformers import AutoTokenizer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from trl import SFTTrainer, pack_dataset

from .callbacks import OnlineFIHSCallback
from .config import SafetyAwareSFTConfig
from .data import (
    CONVERTED_FORMATS,
    SAMPLE_IDX,
    PreparedInput,
    SampleIdxCollator,
    TokenizedPair,
    input_format,
    mixed_row_format,
    pair_texts,
    prepare_input,
    preview_text,
    rows_like,
    trained_example,
)
from .distributed import broadcast_object, rank_and_world_size
from .models import resolve_model_path
from .report import build_summary, build_table, counts, write_report
from .samplers import (
    MODEL_EMBEDDER,
    HarmfulInstructionProbe,
    ModelEmbedder,
    SafetyMix,
    SentenceEmbedder,
    load_pool,
    parse_strategy,
    resolve_embedder_name,
    select_safety_mix,
)
from .samplers.active_set import ConstantLengthSampler
from .scoring import build_scorers, score_and_decide

logger = logging.getLogger(__name__)


class SafetyAwareSFTTrainer(SFTTrainer):
    """`SFTTrainer` with a pre-training safety filter pass and a per-sample report.

    Takes the same arguments as `SFTTrainer`. `args` may be a `SafetyAwareSFTConfig` (plain `SFTConfig` and
    `TrainingArguments` are converted, with every safety feature off). With every safety feature off it is
    SFTTrainer: the data, the collator and the training go through TRL untouched, and TRL's own errors reach you.
    Besides what SFTTrainer accepts, the training set may be Alpaca-style (`instruction`/`input`/`output`) or
    `prompt`/`response`; those rows are converted to conversational prompt/completion.

    With a safety feature on, every row gets a `sample_idx` (its 0-based index in the dataset given here), which
    survives TRL's preparation, so the report can say what happened to each row. Before the dataloader is built,
    `train()` runs the pre-training pass, so step counts and the learning-rate schedule match the final set: with
    `args.safety_mix_pool` set it adds a budget of safety samples chosen from the pool (their `sample_idx` continue
    after the input rows'; see `safetrainer.samplers`); with `args.safety_scorers` set it scores every prepared sample,
    on the tokens TRL will train on, and drops the riskiest according to the threshold policy (mixed samples only with
    `safety_mix_filterable`); it then writes the report. With `packing=True`, scoring, dropping and mixing see the
    unpacked rows, which are packed afterwards.
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
        formatting_func = kwargs.get("formatting_func")
        self._safety_input: PreparedInput | None = None
        self._deferred_packing = False
        if args.filter_enabled or args.mix_enabled or args.online_enabled:
            if not isinstance(train_dataset, Dataset):
                raise TypeError(
                    f"{_enabled_features(args)}: need a map-style `datasets.Dataset` train_dataset (every sample is "
                    f"scored or numbered before training), got {type(train_dataset).__name__}; turn the safety "
                    "features off to train on it as SFTTrainer does."
                )
            processing_class = processing_class or AutoTokenizer.from_pretrained(_model_name(model))
            self._safety_input = prepare_input(
                train_dataset, args.safety_invalid_rows, args.dataset_text_field, formatting_func,
                getattr(processing_class, "tokenizer", processing_class),
            )  # fmt: skip
            if args.mix_enabled:
                mixed_row_format(self._safety_input)  # fails here, before any model work, when mixing cannot render
            train_dataset = self._safety_input.dataset
            _check_chat_template(processing_class, self._safety_input, args)
        else:
            train_dataset, processing_class = _converted(train_dataset, processing_class, model, args, formatting_func)
        eval_dataset = _converted_eval(eval_dataset, processing_class, model, args, formatting_func)
        super().__init__(model, args, data_collator, train_dataset, eval_dataset, processing_class, **kwargs)
        self._online: OnlineFIHSCallback | None = None
        if self._safety_input is not None:
            self.data_collator = SampleIdxCollator(self.data_collator)
            if args.online_enabled:
                self._online = OnlineFIHSCallback()
                self.add_callback(self._online)
        # Callbacks cannot reach the trainer through Trainer's event arguments; hand it to those that need it.
        for callback in self.callback_handler.callbacks:
            if hasattr(callback, "attach") and getattr(callback, "trainer", None) is None:
                callback.attach(self)
        self._safety_filter_done = False
        self._safety_table: dict[str, list] | None = None
        self._safety_mix_rows: Dataset | None = None
        self.safety_mix: SafetyMix | None = None
        self.safety_summary: dict[str, Any] | None = None

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        """Run the pre-training pass (once per trainer), then `SFTTrainer.train`; with online filtering, restore its
        state from the checkpoint's `safety_state.json` when resuming and add the online drops to the report."""
        self.filter_train_dataset()
        if self._online is not None and resume_from_checkpoint:
            self._load_online_state(resume_from_checkpoint)
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
        if self._online is not None:
            self._report_online_drops()
        return output

    def filter_train_dataset(self) -> dict[str, Any] | None:
        """Mix in safety samples, score, decide and drop; write the report; pack when packing was deferred. Returns
        the report summary (None with every safety feature off).

        Called by `train()`; call it directly to score without training (what `safetrainer score` does). Runs once
        per trainer: later calls return the first summary.
        """
        if self._safety_filter_done:
            return self.safety_summary
        self._safety_filter_done = True
        args: SafetyAwareSFTConfig = self.args
        if self._safety_input is None:
            return None
        prepared_idx = self.train_dataset[SAMPLE_IDX]
        rejected = dict(self._safety_input.rejected) | self._removed_by_preparation(prepared_idx)
        if args.mix_enabled:
            self._mix_safety_samples(num_train=len(prepared_idx))
            rejected |= self._mix_removed_by_preparation()
        result = None
        if args.filter_enabled:
            result, unscorable = self._score(rejected)
            rejected |= {idx: f"unscorable: {why}" for idx, why in unscorable.items()}
        table = build_table(
            self._safety_input.num_rows, self._safety_input.previews, rejected, result, self._mix_report_rows()
        )
        extra = {"input_format": self._safety_input.input_format, "model": self.model.config._name_or_path}
        if self.safety_mix is not None:
            extra["safety_mix"] = self.safety_mix.summary()
        if self._deferred_packing:
            self.train_dataset = self._pack(self.train_dataset)
            extra["packing"] = {"strategy": args.packing_strategy, "packed_sequences": len(self.train_dataset)}
        summary = build_summary(table, result, args.safety_dict(), extra)
        for key, value in counts(table).items():
            self._metrics["train"][f"safety/{key}"] = [float(value)]
        self._safety_table = table
        if args.safety_report and self.is_world_process_zero():
            report_dir = write_report(Path(args.output_dir) / "safety_report", table, summary)
            if self.safety_mix is not None:
                self.safety_mix.write(report_dir)
            logger.info("Safety report: %s (%s)", report_dir, _counts_line(summary["counts"]))
        self.safety_summary = summary
        return summary

    def _score(self, rejected: dict[int, str]):
        """Score the prepared rows the filter may drop, decide, and keep the rest; returns the scoring result and the
        rows that could not be scored (with the reason), which leave the training set too."""
        args: SafetyAwareSFTConfig = self.args
        present = self.train_dataset[SAMPLE_IDX]
        scored = [i for i in present if i < self._safety_input.num_rows or args.safety_mix_filterable]
        candidates, unscorable = self._scoring_candidates(scored)
        scorers = build_scorers(args)
        _check_boundaries(scorers, candidates, self._safety_input, args.dataset_text_field)
        # Scoring runs at the training's precision (bf16 autocast when training uses it), so it costs per token what
        # the training it guards costs (float32 scoring beside bf16 training took 2.1x as long on a CPU).
        with self.accelerator.autocast():
            result = score_and_decide(
                self.model,
                self._safety_tokenizer,
                candidates,
                scorers,
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
        unscorable |= result.unscorable
        if not len(result.sample_idx):
            first = next(iter(unscorable.items()), None)
            raise ValueError(
                f"safety_scorers: none of the {len(scored)} samples could be scored"
                + (f" (e.g. sample {first[0]}: {first[1]})." if first else ".")
            )
        dropped = set(result.sample_idx[~result.decision.keep].tolist())
        if len(dropped) == len(result.sample_idx):
            raise ValueError(
                f"The safety filter would drop all {len(dropped)} samples ({result.decision.policy}); raise the "
                "threshold (safety_threshold_value) or lower the fraction/count to drop."
            )
        leaving = dropped | set(unscorable)
        self.train_dataset = self.train_dataset.select([pos for pos, idx in enumerate(present) if idx not in leaving])
        return result, unscorable

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

    def _mix_safety_samples(self, num_train: int) -> None:
        """Choose the safety samples (on rank 0; the choice is broadcast) and append them to the training set."""
        args: SafetyAwareSFTConfig = self.args
        rank, _ = rank_and_world_size()
        try:
            with self.accelerator.autocast():  # the embedding pass, at the training's precision like scoring
                outcome = self._select_safety_mix(num_train) if rank == 0 else None
        except (ValueError, TypeError, ImportError, FileNotFoundError) as err:
            outcome = err  # raised on every rank below, so no rank waits on a collective that never comes
        outcome = broadcast_object(outcome)
        if isinstance(outcome, Exception):
            raise outcome
        self.safety_mix = outcome
        table = outcome.table()
        self._safety_mix_rows = rows_like(
            self._safety_input, table["prompt"], table["response"], self._safety_input.num_rows, self._safety_tokenizer
        )
        formatting_func = self._formatting_func if self._safety_input.input_format == "formatted" else None
        try:
            prepared = self._prepare_train_rows(
                self._safety_mix_rows, self.processing_class, args, formatting_func, "safety_mix"
            )
        except Exception as err:  # the user's formatting_func, on rows that carry only the columns safetrainer fills
            if formatting_func is None:
                raise
            columns = [c for c in self._safety_mix_rows.column_names if c != SAMPLE_IDX]
            raise ValueError(
                f"safety_mix_pool: formatting_func failed on a mixed safety sample ({type(err).__name__}: {err}); "
                f"mixed samples carry only the columns {columns}, so the function must format rows from those alone."
            ) from err
        self.train_dataset = concatenate_datasets([self.train_dataset, _columns_like(prepared, self.train_dataset)])
        logger.info("Safety mix: %d samples (%s) from %s", len(outcome), outcome.strategy, args.safety_mix_pool)

    def _select_safety_mix(self, num_train: int) -> SafetyMix:
        args: SafetyAwareSFTConfig = self.args
        base, _ = parse_strategy(args.safety_mix_strategy)
        embedder_name = resolve_embedder_name(args.safety_mix_embedder)
        if embedder_name == MODEL_EMBEDDER:
            tokenizer, batch = self._safety_tokenizer, args.safety_scoring_batch_size
            embedder = ModelEmbedder(self.model, tokenizer, batch_size=batch, max_length=args.max_length)
        else:
            embedder = SentenceEmbedder(embedder_name)
        # One probe both types an unflagged pool and ranks instructions by harmfulness.
        probe = HarmfulInstructionProbe(embedder, args.safety_mix_harmful_reference)
        classifier = probe if args.safety_mix_harmful_classifier == "probe" else None
        pool = load_pool(args.safety_mix_pool, judge=args.safety_mix_judge, harmful_classifier=classifier)
        contrast = None
        if args.safety_mix_contrast_pool is not None:
            contrast = load_pool(args.safety_mix_contrast_pool, judge=args.safety_mix_judge,
                                 harmful_classifier=classifier, contrast=True)  # fmt: skip
        train_pairs = self._train_pairs() if base == "cossim" else None
        return select_safety_mix(
            pool,
            args.safety_mix_strategy,
            args.safety_mix_budget,
            num_train=num_train,
            seed=args.seed if args.safety_mix_seed is None else args.safety_mix_seed,
            embedder=embedder,
            train_pairs=train_pairs,
            categories=args.safety_mix_categories,
            category_reference=args.safety_mix_category_reference,
            num_clusters=args.safety_mix_num_clusters,
            category_min_similarity=args.safety_mix_category_min_similarity,
            harmfulness=probe.probability if args.safety_mix_most_harmful_first else None,
            contrast=contrast,
            contrast_ratio=args.safety_mix_contrast_ratio,
            contrast_pairing=args.safety_mix_contrast_pairing,
        )

    def _mix_removed_by_preparation(self) -> dict[int, str]:
        present = set(self.train_dataset[SAMPLE_IDX])
        why = f"mixed sample removed by SFT preparation: no completion token within max_length={self.args.max_length}"
        return {idx: why for idx in self._safety_mix_rows[SAMPLE_IDX] if idx not in present}

    def _mix_report_rows(self) -> list[tuple[str, str]] | None:
        """(prompt preview, reason) of each mixed sample, in sample_idx order."""
        if self.safety_mix is None:
            return None
        table = self.safety_mix.table()
        return [
            (preview_text(prompt), f"safety mix, {'' if pool == 'safety' else 'contrast '}pool row {idx} ({behavior}): "
             f"{reason}")
            for idx, behavior, prompt, reason, pool in zip(
                table["pool_idx"], table["behavior"], table["prompt"], table["reason"], table["pool"], strict=True
            )
        ]  # fmt: skip

    def _scoring_candidates(self, sample_idx) -> tuple[list[TokenizedPair], dict[int, str]]:
        """The scoring examples of the prepared training rows in `sample_idx` (the tokens TRL trains on), and the reason
        for each of those rows that has nothing to score."""
        wanted = set(sample_idx)
        formatted = self._safety_input.input_format == "formatted"
        candidates, unscorable = [], {}
        # One sequential pass over the rows: random row access on an Arrow dataset is slow for large sets.
        for row in self.train_dataset:
            if row[SAMPLE_IDX] not in wanted:
                continue
            example = trained_example(
                row, self._safety_tokenizer, self.args.max_length, formatted, self._safety_input.raw_format
            )
            if isinstance(example, str):
                unscorable[row[SAMPLE_IDX]] = example
            else:
                candidates.append(example)
        return candidates, unscorable

    def _train_pairs(self) -> tuple[list[str], list[str]]:
        """(prompts, responses) of the training rows as text, for Cossim's target: the rows' own text where they have
        it, else their trained tokens decoded."""
        if self._safety_input.input_format not in ("tokenized", "formatted"):
            return pair_texts(self._safety_input)
        examples, _ = self._scoring_candidates(self.train_dataset[SAMPLE_IDX])
        decode = self._safety_tokenizer.decode
        prompts = [decode(e.input_ids[: e.prompt_len], skip_special_tokens=True) for e in examples]
        responses = [decode(e.input_ids[e.prompt_len :], skip_special_tokens=True) for e in examples]
        return prompts, responses

    # ------------------------------------------------------------------------------------------------------------
    # Packing: prepared unpacked while safety features need per-row identity, packed after the pre-training pass

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        if dataset_name == "train" and packing and self._safety_input is not None:
            if args.max_length is None:
                raise ValueError("When packing is enabled, `max_length` can't be `None`.")
            self._deferred_packing = True
            return self._prepare_train_rows(dataset, processing_class, args, formatting_func, dataset_name)
        return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)

    def _prepare_train_rows(self, dataset: Dataset, processing_class, args, formatting_func, name: str) -> Dataset:
        """TRL's preparation of training rows (the input's or mixed ones), unpacked; with deferred packing also
        untruncated, as TRL leaves sequences for packing to cut. (Called before `Trainer.__init__` sets `self.args`.)"""
        if self._deferred_packing:
            args = copy.copy(args)
            args.max_length = None
        return super()._prepare_dataset(dataset, processing_class, args, False, formatting_func, name)

    def _pack(self, dataset: Dataset) -> Dataset:
        """Pack the kept rows as TRL's preparation does with `packing=True` (shuffled before and after)."""
        args = self.args
        dataset = dataset.select_columns(["input_ids", "labels"])
        if args.shuffle_dataset:
            dataset = dataset.shuffle(seed=args.seed)
        dataset = pack_dataset(dataset, args.max_length, args.packing_strategy, {"num_proc": args.dataset_num_proc})
        return dataset.shuffle(seed=args.seed) if args.shuffle_dataset else dataset

    # ------------------------------------------------------------------------------------------------------------
    # Online filtering: constant-length sampler, label masking, per-step scores, checkpoint sidecar

    def _get_train_sampler(self, train_dataset=None):
        if self._online is None:
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return ConstantLengthSampler(dataset[SAMPLE_IDX], self._online.active, seed)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        if self._online is not None:
            epoch_iterator = self._mask_dropped(epoch_iterator)
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    def _mask_dropped(self, batches):
        """Dropped rows keep their place in the batch with all labels -100, before the token count is taken: they stop
        contributing at once while every rank still runs the same forward and backward."""
        for batch in batches:
            rows = [r for r, idx in enumerate(batch[SAMPLE_IDX].tolist()) if not self._online.active.is_active(idx)]
            if rows:
                for key in ("labels", "shift_labels"):
                    if key in batch:
                        batch[key] = batch[key].clone()
                        batch[key][rows] = -100
            yield batch

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._online is None:
            return super().training_step(model, inputs, num_items_in_batch)
        sample_idx = inputs[SAMPLE_IDX].tolist()
        num_tokens = inputs["attention_mask"].sum(1).tolist() if "attention_mask" in inputs else [0] * len(sample_idx)
        with self._online.recording():
            loss = super().training_step(model, inputs, num_items_in_batch)
        self._online.score_recorded_step(sample_idx, num_tokens)
        return loss

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self._online is not None and self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            state = {**self._online.state_dict(), "global_step": self.state.global_step}
            (folder / "safety_state.json").write_text(json.dumps(state))

    def _load_online_state(self, resume_from_checkpoint) -> None:
        path = resume_from_checkpoint
        if path is True:
            path = get_last_checkpoint(self.args.output_dir)
            if path is None:
                return  # super().train raises the "no checkpoint found" error
        sidecar = Path(path) / "safety_state.json"
        if not sidecar.is_file():
            raise FileNotFoundError(
                f"{sidecar} not found: the checkpoint was not written by a run with safety_online_every_steps > 0, "
                "so its dropped samples are unknown."
            )
        self._online.load_state_dict(json.loads(sidecar.read_text()))
        logger.info("Online filtering state restored from %s: %d dropped", sidecar, len(self._online.active.dropped))

    def _report_online_drops(self) -> None:
        table, summary = self._safety_table, self.safety_summary
        if table is None or summary is None:
            return
        dropped = self._online.active.dropped
        table["dropped_at_step"] = [None] * len(table["sample_idx"])
        table["score_fihs_online"] = [self._online.active.scores.get(i) for i in table["sample_idx"]]
        for idx, drop in dropped.items():
            table["decision"][idx], table["keep"][idx], table["reason"][idx] = "dropped", False, drop.reason
            table["dropped_at_step"][idx] = drop.step
        summary["counts"] = counts(table)
        summary["online"] = {
            "dropped": len(dropped), "scored": len(self._online.active.scores), "mode": self.args.safety_online_mode,
            "policy": self.args.safety_online_threshold_policy, "value": self.args.safety_online_threshold_value,
            "seconds": self._online.seconds,
        }  # fmt: skip
        if self.args.safety_report and self.is_world_process_zero():
            write_report(Path(self.args.output_dir) / "safety_report", table, summary)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if SAMPLE_IDX not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, SAMPLE_IDX]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs.pop(SAMPLE_IDX, None)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)


def _columns_like(dataset: Dataset, like: Dataset) -> Dataset:
    """`dataset` with exactly `like`'s columns and types (columns it lacks filled with nulls), for concatenation."""
    for name in like.column_names:
        if name not in dataset.column_names:
            dataset = dataset.add_column(name, [None] * len(dataset))
    return dataset.select_columns(like.column_names).cast(like.features)


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


def _enabled_features(args: SafetyAwareSFTConfig) -> str:
    names = ("safety_scorers", "safety_mix_pool", "safety_online_every_steps")
    on = (args.filter_enabled, args.mix_enabled, args.online_enabled)
    return ", ".join(name for name, enabled in zip(names, on, strict=True) if enabled)


def _model_name(model) -> str:
    return model if isinstance(model, str) else model.config._name_or_path


def _converted(dataset, processing_class, model, args, formatting_func, invalid_rows: str | None = None):
    """With every safety feature off: a dataset SFTTrainer can train on passes untouched; Alpaca and prompt/response
    rows, which it cannot, are checked and converted to conversational prompt/completion. Returns (dataset,
    processing_class), the tokenizer loaded when the conversion needs its chat template."""
    if not isinstance(dataset, Dataset) or len(dataset) == 0:
        return dataset, processing_class
    fmt = input_format(dataset.column_names, args.dataset_text_field, formatting_func is not None)
    if fmt not in CONVERTED_FORMATS:
        return dataset, processing_class
    prepared = prepare_input(dataset, invalid_rows or args.safety_invalid_rows, args.dataset_text_field)
    if prepared.rejected:
        logger.warning("Left out %d invalid rows (safety_invalid_rows='reject'): %s", len(prepared.rejected),
                       "; ".join(f"row {i}: {why}" for i, why in list(prepared.rejected.items())[:5]))  # fmt: skip
    processing_class = processing_class or AutoTokenizer.from_pretrained(_model_name(model))
    _check_chat_template(processing_class, prepared, args)
    return prepared.dataset.remove_columns(SAMPLE_IDX), processing_class


def _converted_eval(eval_dataset, processing_class, model, args, formatting_func):
    """Eval datasets in the converted formats are converted like the training set (invalid rows are an error)."""
    if isinstance(eval_dataset, dict):
        return {name: _converted_eval(ds, processing_class, model, args, formatting_func)
                for name, ds in eval_dataset.items()}  # fmt: skip
    return _converted(eval_dataset, processing_class, model, args, formatting_func, invalid_rows="error")[0]


def _check_boundaries(scorers, candidates: list[TokenizedPair], prepared: PreparedInput, text_field: str) -> None:
    """A scorer that compares prompt and response cannot score data with no prompt/response boundary at all: say so
    for the input type, rather than rejecting every row."""
    needing = [s.name for s in scorers if getattr(s, "needs_prompt", False)]
    if needing and candidates and not any(e.prompt_len for e in candidates):
        kind = {
            "text": f"plain text (dataset_text_field={text_field!r})",
            "tokenized": "pre-tokenized rows trained on every token (no -100 labels, assistant_masks, completion_mask)",
            "formatted": "formatting_func text in which the row's response text was not found",
        }.get(prepared.input_format, f"{prepared.input_format} rows")
        raise ValueError(
            f"safety_scorers: {', '.join(needing)} compare the prompt with the response, but the training data is "
            f"{kind}, which has no prompt/response boundary. Use scorers that read the trained tokens alone (fihs, "
            "seal, random, classifier), or give messages, prompt/completion, prompt/response or Alpaca rows, or "
            "pre-tokenized rows whose labels are -100 on the prompt."
        )


def _check_chat_template(processing_class, prepared: PreparedInput, args) -> None:
    """Converted rows and conversations are rendered with the chat template, and so are safety samples mixed into
    pre-tokenized data: fail before training when the tokenizer has none."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if getattr(tokenizer, "chat_template", None) or args.chat_template_path is not None:
        return
    sample = prepared.dataset[0]
    if prepared.input_format in CONVERTED_FORMATS:
        how = f"{prepared.input_format} rows are converted to chat messages"
    elif prepared.input_format == "messages" or isinstance(sample.get("prompt"), list):
        how = "the dataset is conversational"
    elif prepared.input_format == "tokenized" and args.mix_enabled:
        how = "safety samples mixed into pre-tokenized data are rendered with it"
    else:
        return
    raise ValueError(
        f"The tokenizer has no chat template, but {how}. Use a chat model's tokenizer, set "
        "`tokenizer.chat_template` or `chat_template_path`, or give plain-string prompt/completion data."
    )


def _counts_line(c: dict[str, int]) -> str:
    mixed = f" + {c['mixed']} mixed safety samples" if c["mixed"] else ""
    return f"{c['input']} input rows{mixed}: {c['kept']} kept, {c['dropped']} dropped, {c['rejected']} rejected"
