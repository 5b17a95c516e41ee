"""`SafetyAwareSFTConfig`: TRL's `SFTConfig` plus the `safety_*` fields."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, fields

import torch
from trl import SFTConfig

logger = logging.getLogger(__name__)

# Names accepted by `safety_scorers`; `safetrainer.scoring.SCORERS` maps each one to its class.
SCORER_NAMES = ("datashield",)
THRESHOLD_POLICIES = ("top_fraction", "top_k", "absolute")
INVALID_ROW_POLICIES = ("error", "reject")
DEFAULT_REFERENCE_DATASET = "builtin:datashield_reference"


def _has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return accelerator.is_available()
    return torch.cuda.is_available()


@dataclass
class SafetyAwareSFTConfig(SFTConfig):
    """Configuration for [`SafetyAwareSFTTrainer`]: every `SFTConfig` field plus the `safety_*` fields below.

    Two defaults differ from `SFTConfig`: `bf16` and `gradient_checkpointing` are left unset and resolved in
    `__post_init__`. With a GPU (or other accelerator) both become `True`, as in TRL. Without one both become `False`
    with a warning, because bf16 autocast and checkpointing on a CPU made a 135M model train ~20x slower when measured.
    Set either explicitly to keep your value.
    """

    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Deprecated alias of `activation_checkpointing` (transformers >= 5.23). When neither is set: True "
            "with an accelerator, False on a CPU-only machine."
        },
    )

    safety_scorers: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Scorers of the pre-training filter pass, as a list or a comma-separated string. Each scores every "
            f"training sample (higher = riskier). Empty disables filtering. Available: {', '.join(SCORER_NAMES)}."
        },
    )
    safety_threshold_policy: str = field(
        default="top_fraction",
        metadata={
            "help": "How scores become drops: 'top_fraction' drops the riskiest fraction, 'top_k' the riskiest k "
            "samples, 'absolute' every sample whose score is >= the value.",
            "choices": list(THRESHOLD_POLICIES),
        },
    )
    safety_threshold_value: float = field(
        default=0.1,
        metadata={
            "help": "Parameter of the threshold policy: a fraction in [0, 1) for 'top_fraction', a non-negative "
            "integer for 'top_k', any finite score for 'absolute'."
        },
    )
    safety_reference_dataset: str = field(
        default=DEFAULT_REFERENCE_DATASET,
        metadata={
            "help": "Reference responses for DataShield's compliance direction and layer choice: a built-in name "
            "('builtin:datashield_reference'), a local jsonl/json/csv/parquet file, or a Hub dataset id. Columns: "
            "prompt, response, label ('compliance' or 'refusal'; 'harmful_response' is read as 'compliance')."
        },
    )
    safety_reference_split: str = field(
        default="train", metadata={"help": "Split of `safety_reference_dataset` when it is a Hub dataset id."}
    )
    safety_layer: int | None = field(
        default=None,
        metadata={
            "help": "Hidden-state index scored by DataShield (0 = embeddings, l = output of decoder block l-1). "
            "Unset: chosen by the compliance-aware score (CAS) on the reference set."
        },
    )
    safety_scoring_batch_size: int = field(
        default=8, metadata={"help": "Sequences per forward pass in the scoring pass."}
    )
    safety_invalid_rows: str = field(
        default="error",
        metadata={
            "help": "What to do with an input row that cannot be trained on (empty response, non-string field): "
            "'error' stops with a message naming the row and field; 'reject' leaves it out and records it in the "
            "report as rejected with the reason.",
            "choices": list(INVALID_ROW_POLICIES),
        },
    )
    safety_report: bool = field(
        default=True,
        metadata={
            "help": "Write `<output_dir>/safety_report/`: scores.parquet (one row per input sample), summary.json "
            "and a score histogram."
        },
    )

    def __post_init__(self):
        self._resolve_device_defaults()
        super().__post_init__()
        self._validate_safety_fields()

    def _resolve_device_defaults(self) -> None:
        if not _has_accelerator() and not self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Without use_cpu, transformers ignores a gloo process group on a CPU-only machine and every rank would
            # act as the main process; with it, the ranks train (and score) as one DDP job.
            self.use_cpu = True
        on_accelerator = _has_accelerator() and not self.use_cpu
        turned_off = []
        if self.bf16 is None:
            self.bf16 = on_accelerator and not self.fp16
            if not on_accelerator:
                turned_off.append("bf16")
        if self.gradient_checkpointing is None and self.activation_checkpointing is None:
            # transformers >= 5.23 names it activation_checkpointing; gradient_checkpointing mirrors it.
            self.activation_checkpointing = on_accelerator
            if not on_accelerator:
                turned_off.append("gradient_checkpointing")
        if turned_off:
            logger.warning(
                "No GPU/accelerator found: %s turned off (slow on CPU); set them explicitly to override.",
                " and ".join(turned_off),
            )

    def _validate_safety_fields(self) -> None:
        self.safety_scorers = _parse_name_list(self.safety_scorers)
        unknown = [name for name in self.safety_scorers if name not in SCORER_NAMES]
        if unknown:
            raise ValueError(f"safety_scorers: unknown scorer {unknown[0]!r}; allowed: {', '.join(SCORER_NAMES)}.")
        if len(set(self.safety_scorers)) != len(self.safety_scorers):
            raise ValueError(f"safety_scorers: each scorer may appear once, got {self.safety_scorers}.")
        _check_choice("safety_threshold_policy", self.safety_threshold_policy, THRESHOLD_POLICIES)
        _check_choice("safety_invalid_rows", self.safety_invalid_rows, INVALID_ROW_POLICIES)
        self.safety_threshold_value = _validate_threshold_value(
            self.safety_threshold_policy, self.safety_threshold_value
        )
        if self.safety_layer is not None and self.safety_layer < 0:
            raise ValueError(f"safety_layer: must be >= 0 (a hidden-state index) or unset, got {self.safety_layer}.")
        if self.safety_scoring_batch_size < 1:
            raise ValueError(f"safety_scoring_batch_size: must be >= 1, got {self.safety_scoring_batch_size}.")
        if self.safety_scorers and self.packing:
            raise ValueError(
                "safety_scorers: filtering needs one row per sample, but packing=True merges rows; "
                "set packing=False or safety_scorers=[]."
            )

    @property
    def filter_enabled(self) -> bool:
        """Whether the pre-training filter pass runs."""
        return bool(self.safety_scorers)

    def safety_dict(self) -> dict:
        """The `safety_*` fields as a plain dict (for reports)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name.startswith("safety_")}


def _parse_name_list(value: list[str] | str | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [part for item in value for part in item.split(",")]
    return [item.strip().lower() for item in items if item.strip()]


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: got {value!r}; allowed: {', '.join(allowed)}.")


def _validate_threshold_value(policy: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"safety_threshold_value: must be finite, got {value}.")
    if policy == "top_fraction" and not 0.0 <= value < 1.0:
        raise ValueError(
            f"safety_threshold_value: {value} is out of range for 'top_fraction'; allowed: a fraction in [0, 1)."
        )
    if policy == "top_k" and (value < 0 or value != int(value)):
        raise ValueError(
            f"safety_threshold_value: {value} is out of range for 'top_k'; allowed: a non-negative integer."
        )
    return value
