"""`OnlineFIHSCallback`: re-score samples with per-example-gradient FIHS while training and drop the risky ones.

The trainer adds it when `safety_online_every_steps > 0`. At train start and after every decision the FIHS probe
gradient is recomputed at the current weights. Scores come either from each training micro-step's own backward
(`safety_online_mode="cheap"`: the gradient modules' activations and output gradients give exact per-example
gradients, projected and compared with the probe; no extra pass) or from a full per-example-gradient pass over every
active sample at decision time (`"full"`). Every `safety_online_every_steps` optimizer steps and at each epoch end, the
latest score of every sample scored so far is gathered from all ranks, decided once on rank 0 with the online
threshold policy and broadcast; the newly dropped samples are masked out of every later micro-batch and not drawn
from the next epoch on (see `safetrainer.samplers.ConstantLengthSampler`).

A sample found risky in its own step still counts in that step's update: the optimizer has the step's summed
gradient by the time the score exists, and removing one sample's share would need its full-size gradient. The drop
applies from the next micro-batch.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from typing import Any

import numpy as np
from transformers import TrainerCallback

from ..distributed import broadcast_object, gather_objects, rank_and_world_size
from ..samplers.active_set import ActiveSet
from ..scoring import FIHSScorer, build_scorers, decide, score_and_decide
from ..scoring.features import num_layers
from ..scoring.gradients import GradientFeatures, PerExampleGradients
from ..scoring.pipeline import CandidateFeatures, ScoringContext

logger = logging.getLogger(__name__)


class OnlineFIHSCallback(TrainerCallback):
    """Online FIHS re-scoring and dropping for a `SafetyAwareSFTTrainer` (attached by the trainer)."""

    def __init__(self):
        self.trainer = None
        self.active = ActiveSet()
        self.routine: PerExampleGradients | None = None
        self.scorer: FIHSScorer | None = None
        self.pending: dict[int, float] = {}
        self.last_decision_step = -1
        self.seconds = {"probe": 0.0, "score": 0.0, "decide": 0.0}

    def attach(self, trainer) -> None:
        self.trainer = trainer

    # ----------------------------------------------------------------------------------------------------------
    # Events

    def on_train_begin(self, args, state, control, **kwargs):
        if args.safety_online_mode == "cheap":
            self._refresh_probe()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.safety_online_every_steps == 0:
            self._decide(state.global_step)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.last_decision_step != state.global_step:
            self._decide(state.global_step)

    # ----------------------------------------------------------------------------------------------------------
    # Cheap path: called by the trainer around each training micro-step

    def recording(self):
        """Context for one training micro-step; a no-op in full mode."""
        if self.trainer.args.safety_online_mode != "cheap" or self.routine is None:
            return nullcontext()
        return self.routine.recording_training_step()

    def score_recorded_step(self, sample_idx: list[int], num_tokens: list[int]) -> None:
        """FIHS of the micro-batch just trained on, from its own backward; kept until the next decision."""
        if self.trainer.args.safety_online_mode != "cheap" or self.routine is None:
            return
        start = time.perf_counter()
        vectors = self.routine.training_step_vectors()
        idx = np.asarray(sample_idx, dtype=np.int64)
        tokens = np.asarray(num_tokens, dtype=np.int64)
        features = CandidateFeatures(idx, tokens, gradients=GradientFeatures.from_vectors(idx, tokens, vectors))
        for i, score in zip(idx.tolist(), self.scorer.score(features).tolist(), strict=True):
            if np.isfinite(score) and self.active.is_active(i):  # masked rows have no gradient, hence no score
                self.pending[i] = float(score)
        self.seconds["score"] += time.perf_counter() - start

    # ----------------------------------------------------------------------------------------------------------

    def _context(self) -> ScoringContext:
        trainer = self.trainer
        args = trainer.args
        tokenizer = trainer._safety_tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # Rebuilt at every refresh: once LoRA B is non-zero, the A matrices carry gradient too.
        self.routine = PerExampleGradients(
            trainer.model, pad_id, args.safety_projection_dim, args.safety_projection_seed,
            args.safety_scoring_batch_size, False, args.safety_gradient_blocks,
        )  # fmt: skip

        def no_hidden_states(*_):
            raise RuntimeError("Online FIHS uses gradients only.")

        return ScoringContext(trainer.model, tokenizer, pad_id, num_layers(trainer.model), args.max_length,
                              no_hidden_states, self.routine)  # fmt: skip

    def _refresh_probe(self) -> None:
        start = time.perf_counter()
        (scorer,) = build_scorers(self.trainer.args, ["fihs"])
        scorer.fit(self._context())
        # Ranks hold identical weights, but rank 0's probe is the one every rank scores against.
        scorer.probe_gradient_ = broadcast_object(scorer.probe_gradient_)
        self.scorer = scorer
        self.seconds["probe"] += time.perf_counter() - start

    def _decide(self, step: int) -> None:
        args = self.trainer.args
        start = time.perf_counter()
        if args.safety_online_mode == "full":
            scores = self._full_rescore()
        else:
            scores = {}
            for part in gather_objects(self.pending):  # later ranks overwrite earlier ones: same sample, same step
                scores.update(part)
        self.pending = {}
        self.active.scores.update(scores)
        new_drops = None
        rank, _ = rank_and_world_size()
        if rank == 0:
            new_drops = self._new_drops(step)
        new_drops = broadcast_object(new_drops)
        for idx, score, reason in new_drops:
            self.active.drop(idx, step, score, reason)
        self.last_decision_step = step
        self.seconds["decide"] += time.perf_counter() - start
        recent = np.array(list(scores.values()), dtype=np.float64)
        metrics = self.trainer._metrics["train"]
        metrics["safety/online_dropped"] = [float(len(self.active.dropped))]
        if len(recent):
            metrics["safety/fihs_mean"] = [float(recent.mean())]
            metrics["safety/fihs_p95"] = [float(np.percentile(recent, 95))]
        if new_drops:
            logger.info("Online FIHS at step %d: dropped %d more samples", step, len(new_drops))
        if args.safety_online_mode == "cheap":
            self._refresh_probe()  # the full re-score fits its own probe at decision time

    def _full_rescore(self) -> dict[int, float]:
        trainer = self.trainer
        active = [i for i in trainer.train_dataset["sample_idx"] if self.active.is_active(i)]
        args = trainer.args
        candidates, _ = trainer._scoring_candidates(active)  # a row with nothing to score keeps its last score
        with trainer.accelerator.autocast():  # the training's precision, as in the pre-training pass
            result = score_and_decide(
                trainer.model, trainer._safety_tokenizer, candidates,
                build_scorers(args, ["fihs"]), None, 0.0,
                batch_size=args.safety_scoring_batch_size, max_length=args.max_length,
                show_progress=False, projection_dim=args.safety_projection_dim,
                projection_seed=args.safety_projection_seed, gradient_blocks=args.safety_gradient_blocks,
            )  # fmt: skip
        return {int(i): float(v) for i, v in zip(result.sample_idx, result.scores["fihs"], strict=True)}

    def _new_drops(self, step: int) -> list[tuple[int, float, str]]:
        """(sample_idx, score, reason) of active samples the policy now drops, decided over every score so far.

        For the ranked policies the policy's count is a budget for all online drops so far: earlier drops stay dropped
        even when later scores outrank them, so only the difference is dropped now, riskiest first. The total thus
        never exceeds the fraction (or k) of the samples scored."""
        args = self.trainer.args
        idx = np.array(sorted(self.active.scores), dtype=np.int64)
        if len(idx) == 0:
            return []
        scores = np.array([self.active.scores[i] for i in idx.tolist()])
        policy = args.safety_online_threshold_policy
        decision = decide(scores, policy, args.safety_online_threshold_value, idx, args.safety_gmm_margin,
                          args.safety_projection_seed)  # fmt: skip
        candidates = [(int(i), float(s)) for i, s, keep in zip(idx.tolist(), scores.tolist(), decision.keep.tolist(),
                                                                 strict=True)
                      if not keep and self.active.is_active(int(i)) and self._droppable(int(i))]  # fmt: skip
        if policy in ("top_fraction", "top_k"):
            candidates.sort(key=lambda item: (-item[1], item[0]))
            candidates = candidates[: max(0, decision.num_dropped - len(self.active.dropped))]
        why = f"({decision.policy}) at step {step}"
        return [(i, s, f"online fihs score {s:.4g} >= threshold {decision.threshold:.4g} {why}") for i, s in candidates]

    def _droppable(self, sample_idx: int) -> bool:
        """Mixed safety samples (sample_idx past the input rows) are never dropped unless safety_mix_filterable."""
        return sample_idx < self.trainer._safety_input.num_rows or self.trainer.args.safety_mix_filterable

    def state_dict(self) -> dict[str, Any]:
        """What the checkpoint sidecar stores."""
        return {**self.active.to_json(), "pending": {str(i): s for i, s in self.pending.items()}}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        self.active.load(ActiveSet.from_json(data))
        self.pending = {int(i): float(s) for i, s in data.get("pending", {}).items()}
