"""`SafetyEvalCallback`: watch refusals erode while training.

Every `eval_steps` optimizer steps and at the last step, the callback generates greedily on a small probe set of
harmful and safe prompts and logs `safety/refusal_rate` (harmful prompts refused; higher is safer) and
`safety/over_refusal` (safe prompts refused; lower is better) through the Trainer's logging, so TensorBoard or W&B
show them next to the loss. Cost per evaluation: one greedy generation of at most `max_new_tokens` tokens for each
probe prompt (defaults: 40 prompts x 32 tokens, about 10-20 s for a 135M model on a 2-core CPU), shared across
ranks under several processes.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import TrainerCallback

from ..data import load_data
from ..distributed import gather_objects, rank_and_world_size
from ..eval import generate, judge_pairs, load_judge

DEFAULT_PROBES = "builtin:safety_probes"


class SafetyEvalCallback(TrainerCallback):
    """Log the refusal rate on harmful probes and the over-refusal on safe probes during training.

    Args:
        harmful_prompts, safe_prompts: probe prompts; when both are None, the built-in probe set
            (`builtin:safety_probes`, 20 harmful + 20 safe-but-sensitive-sounding prompts) is used.
        eval_steps: evaluate every this many optimizer steps (and always at the last step).
        max_new_tokens, batch_size: generation budget per probe and batch size.
        judge: `"embedding"` (the default judge), `"keyword"`, a callable `(prompts, responses) -> list[bool]`, or a
            judge model id.

    `SafetyAwareSFTTrainer` attaches itself to this callback. With TRL's `SFTTrainer`, call `callback.attach(trainer)`
    after building the trainer.
    """

    def __init__(
        self,
        harmful_prompts: Sequence[str] | None = None,
        safe_prompts: Sequence[str] | None = None,
        eval_steps: int = 50,
        max_new_tokens: int = 32,
        batch_size: int = 16,
        judge="embedding",
    ):
        if eval_steps < 1:
            raise ValueError(f"eval_steps: must be >= 1, got {eval_steps}.")
        if harmful_prompts is None and safe_prompts is None:
            probes = load_data(DEFAULT_PROBES)
            harmful_prompts = [p for p, h in zip(probes["prompt"], probes["harmful"], strict=True) if h]
            safe_prompts = [p for p, h in zip(probes["prompt"], probes["harmful"], strict=True) if not h]
        self.harmful_prompts = list(harmful_prompts or [])
        self.safe_prompts = list(safe_prompts or [])
        if not self.harmful_prompts and not self.safe_prompts:
            raise ValueError("SafetyEvalCallback: give at least one harmful or safe probe prompt.")
        self.eval_steps = eval_steps
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.judge = load_judge(judge)
        self.trainer = None
        self.history: list[dict] = []

    def attach(self, trainer) -> SafetyEvalCallback:
        """Give the callback the trainer whose logs it writes into."""
        self.trainer = trainer
        return self

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise RuntimeError(
                "SafetyEvalCallback is not attached to a trainer: use SafetyAwareSFTTrainer, or call "
                "callback.attach(trainer) after building an SFTTrainer."
            )

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.eval_steps and state.global_step != state.max_steps:
            return
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        metrics = self.evaluate(model, tokenizer)
        # Logged with the Trainer's next log call, which should_log makes happen at this very step.
        for key, value in metrics.items():
            self.trainer._metrics["train"][key] = [value]
        self.history.append({"step": state.global_step, **metrics})
        control.should_log = True

    def evaluate(self, model, tokenizer) -> dict[str, float]:
        """Refusal rate and over-refusal of `model` on the probes; ranks split the probes and share the verdicts."""
        rank, world_size = rank_and_world_size()
        probes = [(p, True) for p in self.harmful_prompts] + [(p, False) for p in self.safe_prompts]
        mine = probes[rank::world_size]
        responses = generate(model, tokenizer, [p for p, _ in mine], self.max_new_tokens, self.batch_size)
        verdicts = judge_pairs(self.judge, [p for p, _ in mine], responses)
        local = [(harmful, refused) for (_, harmful), refused in zip(mine, verdicts, strict=True)]
        results = [item for part in gather_objects(local) for item in part]
        metrics = {}
        harmful = [refused for is_harmful, refused in results if is_harmful]
        safe = [refused for is_harmful, refused in results if not is_harmful]
        if harmful:
            metrics["safety/refusal_rate"] = sum(harmful) / len(harmful)
        if safe:
            metrics["safety/over_refusal"] = sum(safe) / len(safe)
        return metrics
