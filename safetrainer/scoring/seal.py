"""SEAL: learn one selection weight per sample so that training on the re-weighted data keeps a safe set's loss low.

Weights p = N * softmax(w) over the N candidates (w starts equal). A short bilevel run alternates, per step, on a
safe batch B_s and a candidate batch B (the memory-efficient penalty form of the published code):
  model:    theta -= lr * grad[ lam * NLL(B_s) + (1 - lam) * mean_{i in B} p_i * l_i ]   (p detached)
  selector: w     -= Adam step on grad_w mean_{i in B} p_i(w) * l_i                    (l detached)
so samples with high loss under a safety-leaning model lose weight. lam starts at 1.0 (epoch 1 trains on the safe set
only while w already learns) and drops by `lambda_step` per epoch. Score = -w (higher = riskier); keeping the top
80% by w is `safety_threshold_policy="top_fraction", safety_threshold_value=0.2`.

The run trains the trainable parameters of the model being fine-tuned (its LoRA adapter) and restores them
afterwards, so the real training starts from the same weights as without SEAL. It runs on rank 0 over all
candidates (the weights must be one vector); other ranks wait for the broadcast scores.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from ..data import chat_pair
from ..data.tokenization import pad_right
from .gradients import response_nll

if TYPE_CHECKING:
    from .pipeline import CandidateFeatures, ScoringContext

MIN_SAFE_ROWS = 4


class SEALScorer:
    """Bilevel per-sample selector (see module docstring).

    Args:
        safe_reference: trusted safe rows with prompt and response (e.g. harmful prompts with refusals).
        epochs: selector epochs over the candidates.
        model_lr, selector_lr: learning rates of the model (SGD on its trainable parameters) and of the selector
            logits (Adam, betas 0.9 / 0.95).
        lambda_init, lambda_step: penalty schedule.
        batch_size: candidates per step (the safe batch has the same size, cycled).
        seed: order of the candidates and safe rows.
    """

    name = "seal"
    transductive = True
    needs_examples = True

    def __init__(
        self,
        safe_reference: Dataset,
        epochs: int = 3,
        model_lr: float = 1e-4,
        selector_lr: float = 5e-3,
        lambda_init: float = 1.0,
        lambda_step: float = 0.03,
        batch_size: int = 8,
        seed: int = 0,
    ):
        missing = {"prompt", "response"} - set(safe_reference.column_names)
        if missing:
            raise ValueError(f"safety_seal_safe_dataset: missing column(s) {sorted(missing)}; needs prompt, response.")
        self.safe_pairs = [chat_pair(r["prompt"], r["response"]) for r in safe_reference
                           if str(r.get("label", "refusal")).lower() in ("refusal", "safe", "safe_response", "benign")
                           and r["response"]]  # fmt: skip
        if len(self.safe_pairs) < MIN_SAFE_ROWS:
            raise ValueError(
                f"safety_seal_safe_dataset: {len(self.safe_pairs)} usable safe rows; SEAL needs at least "
                f"{MIN_SAFE_ROWS} (prompt, response) rows labelled refusal/safe/benign or unlabelled."
            )
        if epochs < 1:
            raise ValueError(f"safety_seal_epochs: must be >= 1, got {epochs}.")
        self.epochs, self.model_lr, self.selector_lr = epochs, model_lr, selector_lr
        self.lambda_init, self.lambda_step = lambda_init, lambda_step
        self.batch_size, self.seed = batch_size, seed
        self.context: ScoringContext | None = None
        self.history_: list[dict] = []

    def fit(self, context: ScoringContext) -> SEALScorer:
        self.context = context
        return self

    def candidate_request(self) -> None:
        return None

    def score(self, candidates: CandidateFeatures) -> np.ndarray:
        """Run the selector over all candidates; returns -w per candidate (higher = riskier), NaN for a candidate whose
        loss was not finite (left out of every step)."""
        context = self.context
        model, examples = context.model, candidates.examples
        safe = context.tokenize(self.safe_pairs)
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(
                "SEAL needs trainable parameters (a LoRA adapter or an unfrozen model) to run its selector."
            )
        saved = [p.detach().clone() for p in trainable]
        device = trainable[0].device
        logits = torch.full((len(examples),), 0.1, device=device, requires_grad=True)
        selector = torch.optim.Adam([logits], lr=self.selector_lr, betas=(0.9, 0.95))
        optimizer = torch.optim.SGD(trainable, lr=self.model_lr)
        rng = random.Random(self.seed)
        pad_id = context.pad_token_id
        unusable: set[int] = set()
        was_training = model.training
        model.eval()  # no dropout: the selector should see deterministic losses
        try:
            for epoch in range(self.epochs):
                lam = max(0.0, self.lambda_init - self.lambda_step * epoch)
                order = list(range(len(examples)))
                rng.shuffle(order)
                losses_seen = []
                for start in tqdm(range(0, len(order), self.batch_size), desc=f"SEAL epoch {epoch + 1}",
                                  disable=not context.show_progress, unit="batch"):  # fmt: skip
                    rows = [i for i in order[start : start + self.batch_size] if i not in unusable]
                    safe_batch = [safe[rng.randrange(len(safe))] for _ in rows]
                    sample_losses = _losses(model, [examples[i] for i in rows], pad_id, device)
                    finite = torch.isfinite(sample_losses.detach()).tolist()
                    if not all(finite):  # a NaN loss would poison the shared weights and every logit: leave it out
                        unusable.update(i for i, ok in zip(rows, finite, strict=True) if not ok)
                        rows = [i for i, ok in zip(rows, finite, strict=True) if ok]
                        safe_batch = safe_batch[: len(rows)]
                        if not rows:
                            continue
                        sample_losses = _losses(model, [examples[i] for i in rows], pad_id, device)
                    weights = len(examples) * torch.softmax(logits, 0)
                    batch_weights = weights[rows]
                    safe_loss = _losses(model, safe_batch, pad_id, device).mean()
                    model_loss = lam * safe_loss + (1 - lam) * (batch_weights.detach() * sample_losses).mean()
                    optimizer.zero_grad()
                    model_loss.backward()
                    optimizer.step()
                    selector.zero_grad()
                    (batch_weights * sample_losses.detach()).mean().backward()
                    selector.step()
                    losses_seen.append(float(sample_losses.detach().mean()))
                self.history_.append(
                    {"epoch": epoch + 1, "lambda": lam, "mean_sample_loss": float(np.mean(losses_seen))}
                )
        finally:
            with torch.no_grad():
                for param, value in zip(trainable, saved, strict=True):
                    param.copy_(value)
            model.train(was_training)
        scores = -logits.detach().cpu().double().numpy()
        scores[sorted(unusable)] = np.nan
        return scores

    def describe(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "model_lr": self.model_lr, "selector_lr": self.selector_lr,
                "lambda_init": self.lambda_init, "lambda_step": self.lambda_step,
                "safe_rows": len(self.safe_pairs), "history": self.history_}  # fmt: skip

    def __getstate__(self):  # the context holds the model: not sent to other ranks (they never score SEAL)
        return {**self.__dict__, "context": None}


def _losses(model, batch, pad_id: int, device) -> torch.Tensor:
    input_ids, attention_mask = pad_right(list(batch), pad_id)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return response_nll(logits, input_ids, attention_mask, batch)
