"""Exact per-example gradients from one batched backward pass, compressed by a seeded random projection.

One routine serves offline scoring (GradShield FIHS before training) and online re-scoring during training.

How: forward hooks on the gradient modules (the LoRA A/B linears when the model has adapters) record each module's
input x [B, T, i] and output y [B, T, o]. The per-sample losses are summed and differentiated with respect to the
outputs only; since sample b's rows influence only loss b, the per-example weight gradient is exactly
einsum("bto,bti->boi", dL/dy, x). Parameter `.grad` stays untouched, so no optimizer or DDP/ZeRO hook fires.
(`torch.func.vmap` is not used: it fails on sdpa attention's data-dependent mask path.)

Projection: a count sketch, i.e. a sparse random projection with one Rademacher entry per input coordinate at a
seeded bucket. It is linear, unbiased for inner products (E<Px, Py> = <x, y>) and needs O(parameters) memory, where a
dense Rademacher matrix for ~5M LoRA parameters x 8192 dims (40G entries) cannot be stored or regenerated per batch.

Fresh LoRA (B = 0): dL/dA = B^T dL/dh is zero, so only the B matrices carry signal; their gradient is the full weight
gradient seen through the random A, itself a valid random feature of the gradient. The A matrices of such adapters
are left out (see `gradient_modules`); once B has been trained they are included. `GradientFeatures.zero_fraction`
reports how much of the computed gradient was zero.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.tokenization import TokenizedPair, pad_right, response_positions
from .features import decoder_layers, float32_reductions

# objective(logits [B, K, V], input_ids [B, T], attention_mask [B, T], batch) -> per-example loss [B]; the logits
# cover the last K <= T positions (see `PerExampleGradients.batch_gradients`).
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Sequence[TokenizedPair]], torch.Tensor]


def response_nll(logits, input_ids, attention_mask, batch) -> torch.Tensor:
    """Token-mean negative log-likelihood of each sample's response tokens (what SFT trains on)."""
    first = input_ids.shape[1] - logits.shape[1]  # position of logits[:, 0]
    is_response = response_positions(list(batch), input_ids.shape[1]).to(input_ids.device)
    target_mask = (is_response & attention_mask.bool())[:, first + 1 :].float()
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_nll = -log_probs.gather(-1, input_ids[:, first + 1 :].unsqueeze(-1)).squeeze(-1)
    return (token_nll * target_mask).sum(1) / target_mask.sum(1).clamp(min=1)


def first_token_logit_gap(compliance_token_id: int, refusal_token_id: int) -> Objective:
    """S(x) = logit(compliance token) - logit(refusal token) at the first response position (prompt-only inputs)."""

    def objective(logits, input_ids, attention_mask, batch):
        last = attention_mask.sum(1) - 1 - (input_ids.shape[1] - logits.shape[1])
        at_first_response = logits[torch.arange(len(batch), device=logits.device), last].float()
        return at_first_response[:, compliance_token_id] - at_first_response[:, refusal_token_id]

    return objective


def gradient_modules(model: nn.Module, last_blocks: int | None = None) -> list[tuple[str, nn.Linear]]:
    """The linears whose per-example weight gradients form the gradient features.

    With LoRA adapters: the trainable `lora_A` / `lora_B` linears, minus each `lora_A` whose paired `lora_B` is all
    zeros (a fresh adapter: A's gradient is then exactly zero, so computing it is wasted work), restricted to the
    last `last_blocks` decoder blocks when given. Without LoRA: the trainable linears of the last `last_blocks`
    decoder blocks (default 2; full per-example gradients of every layer would not fit in memory). Fewer blocks
    also make the backward pass stop earlier, which is most of the cost.
    """
    blocks = list(decoder_layers(model))
    if last_blocks is not None and not 1 <= last_blocks <= len(blocks):
        raise ValueError(f"safety_gradient_blocks: must be in 1..{len(blocks)} (decoder blocks), got {last_blocks}.")
    lora = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.weight.requires_grad
            and (".lora_A." in n or ".lora_B." in n)}  # fmt: skip
    window = blocks[-(last_blocks or (len(blocks) if lora else 2)) :]
    in_window = {id(m) for block in window for m in block.modules()}
    if lora:
        found = []
        for name, module in lora.items():
            if id(module) not in in_window:
                continue
            partner = lora.get(name.replace(".lora_A.", ".lora_B."))
            if ".lora_A." in name and partner is not None and not partner.weight.detach().any():
                continue
            found.append((name, module))
        return found
    found = [(n, m) for n, m in model.named_modules()
             if id(m) in in_window and isinstance(m, nn.Linear) and m.weight.requires_grad]  # fmt: skip
    if not found:
        raise ValueError(
            "No trainable linear layer for per-example gradients: the model has no LoRA adapter and the last "
            f"{len(window)} decoder blocks have no linear weight with requires_grad=True."
        )
    return found


class CountSketchProjector:
    """Seeded sparse random projection of per-module gradient blocks into `dim` dimensions (0 = no projection)."""

    def __init__(self, block_sizes: Sequence[int], dim: int = 8192, seed: int = 0):
        if dim < 0:
            raise ValueError(f"safety_projection_dim: must be >= 0 (0 keeps full gradients), got {dim}.")
        self.block_sizes = list(block_sizes)
        self.dim = dim if dim > 0 else sum(self.block_sizes)
        self.identity = dim == 0
        self.buckets: list[torch.Tensor] = []
        self.signs: list[torch.Tensor] = []
        if not self.identity:
            generator = torch.Generator().manual_seed(seed)
            for size in self.block_sizes:
                self.buckets.append(torch.randint(0, dim, (size,), generator=generator))
                self.signs.append(torch.randint(0, 2, (size,), generator=generator).float().mul_(2).sub_(1))

    def __call__(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Project the concatenation of `blocks` ([B, p_m] each, in construction order) to [B, dim]."""
        if self.identity:
            return torch.cat([b.float() for b in blocks], dim=1)
        out = torch.zeros(blocks[0].shape[0], self.dim, device=blocks[0].device)
        for block, bucket, sign in zip(blocks, self.buckets, self.signs, strict=True):
            out.index_add_(1, bucket.to(block.device), block.float() * sign.to(block.device))
        return out


@dataclass
class GradientFeatures:
    """Projected per-example gradients, rows aligned with `sample_idx`, stored as unit directions [N, dim] (float16:
    entries lie in [-1, 1], so storing cannot overflow however large a gradient is) and their norms [N] (float64).
    A zero or non-finite norm marks a gradient no score can be computed from."""

    sample_idx: np.ndarray
    num_tokens: np.ndarray
    directions: np.ndarray
    norms: np.ndarray
    zero_fraction: float = 0.0

    @classmethod
    def from_vectors(cls, sample_idx, num_tokens, vectors, zero_fraction: float = 0.0) -> GradientFeatures:
        """Split [N, dim] projected gradients into directions and norms."""
        directions, norms = _unit_rows(np.asarray(vectors, dtype=np.float64))
        return cls(np.asarray(sample_idx), np.asarray(num_tokens), directions.astype(np.float16), norms, zero_fraction)

    def vectors(self) -> np.ndarray:
        """The projected gradients [N, dim] (float64)."""
        return self.directions.astype(np.float64) * self.norms[:, None]

    def select(self, rows: np.ndarray) -> GradientFeatures:
        return GradientFeatures(self.sample_idx[rows], self.num_tokens[rows], self.directions[rows], self.norms[rows],
                                self.zero_fraction)  # fmt: skip


def _unit_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows scaled to unit norm, norms); rows with a zero or non-finite norm become zeros."""
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(vectors, axis=1)
    usable = np.isfinite(norms) & (norms > 0)
    directions = np.zeros_like(vectors)
    directions[usable] = vectors[usable] / norms[usable, None]
    return directions, norms


class _LinearIO:
    """Records each hooked linear's input and output during one forward pass, and, when asked, the gradient of its
    output during the backward pass that follows (the training step's own backward)."""

    def __init__(self, modules: Sequence[nn.Linear]):
        self.modules = list(modules)
        self.inputs: dict[int, torch.Tensor] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.output_grads: dict[int, torch.Tensor] = {}

    @contextmanager
    def recording(self, capture_output_grads: bool = False):
        def hook(index):
            def record(_module, args, output):
                if index in self.outputs:
                    raise RuntimeError(
                        "A gradient module ran twice in one forward pass (gradient checkpointing recompute or a "
                        "shared module); per-example gradients need one call per module."
                    )
                self.inputs[index] = args[0].detach()
                self.outputs[index] = output
                if capture_output_grads and output.requires_grad:
                    output.register_hook(lambda grad: self.output_grads.__setitem__(index, grad.detach()))

            return record

        self.inputs.clear()
        self.outputs.clear()
        self.output_grads.clear()
        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self.modules)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def per_example_gradients(self, loss_sum: torch.Tensor) -> list[torch.Tensor]:
        """[B, out * in] weight gradient of each module, for the per-sample losses summed into `loss_sum`."""
        missing = [i for i in range(len(self.modules)) if i not in self.outputs]
        if missing:
            raise RuntimeError(f"{len(missing)} gradient module(s) did not run in the forward pass.")
        outputs = [self.outputs[i] for i in range(len(self.modules))]
        return self._blocks(torch.autograd.grad(loss_sum, outputs, allow_unused=True))

    def captured_gradients(self) -> list[torch.Tensor]:
        """The same blocks from the output gradients a recorded forward's own backward left behind.

        Exact per example because sample i's rows of each module's output affect only sample i's loss terms; the
        scale is the training loss's (e.g. divided by the batch's token count), which cosine similarity ignores.
        """
        return self._blocks([self.output_grads.get(i) for i in range(len(self.modules))])

    def _blocks(self, output_grads: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        blocks = []
        with float32_reductions(self.inputs[0].device):
            for i, grad_y in enumerate(output_grads):
                if grad_y is None:
                    grad_y = torch.zeros_like(self.outputs[i])
                blocks.append(torch.einsum("bto,bti->boi", grad_y.float(), self.inputs[i].float()).flatten(1))
        return blocks


class PerExampleGradients:
    """Projected per-example gradients of an objective, batched over tokenized examples.

    Args:
        model: the model to differentiate (a PEFT model uses its LoRA A/B linears, see `gradient_modules`).
        pad_token_id: right-padding id.
        dim: projection dimension (0 keeps the full gradient; for tests and tiny models).
        seed: projection seed; features are comparable only under the same seed and modules.
        batch_size: examples per backward pass.
        last_blocks: only the gradient modules of the last this many decoder blocks (see `gradient_modules`).
    """

    def __init__(
        self,
        model: nn.Module,
        pad_token_id: int,
        dim: int = 8192,
        seed: int = 0,
        batch_size: int = 8,
        show_progress: bool = False,
        last_blocks: int | None = None,
    ):
        self.model = model
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size
        self.show_progress = show_progress
        named = gradient_modules(model, last_blocks)
        self.module_names = [n for n, _ in named]
        self.io = _LinearIO([m for _, m in named])
        self.projector = CountSketchProjector([m.weight.numel() for _, m in named], dim, seed)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._keeps_logit_window = "logits_to_keep" in inspect.signature(base.forward).parameters

    @property
    def dim(self) -> int:
        return self.projector.dim

    def __call__(
        self, examples: Sequence[TokenizedPair], objective: Objective = response_nll, desc: str = "Gradients"
    ) -> GradientFeatures:
        n = len(examples)
        directions = np.zeros((n, self.dim), dtype=np.float16)
        norms = np.zeros(n, dtype=np.float64)
        order = sorted(range(n), key=lambda i: len(examples[i].input_ids))
        device = next(self.model.parameters()).device
        zero, total = 0, 0
        with self._scoring_mode():
            batches = range(0, n, self.batch_size)
            for start in tqdm(batches, desc=desc, disable=not self.show_progress, unit="batch"):
                rows = order[start : start + self.batch_size]
                batch = [examples[i] for i in rows]
                blocks = self.batch_gradients(batch, objective, device)
                zero += sum(int((b == 0).all(0).sum()) for b in blocks)
                total += sum(b.shape[1] for b in blocks)
                unit, norms[rows] = _unit_rows(self.projector(blocks).double().cpu().numpy())
                directions[rows] = unit.astype(np.float16)
        return GradientFeatures(
            np.array([e.sample_idx for e in examples], dtype=np.int64),
            np.array([len(e.input_ids) for e in examples], dtype=np.int64),
            directions,
            norms,
            zero / max(total, 1),
        )

    def batch_gradients(self, batch: Sequence[TokenizedPair], objective: Objective, device) -> list[torch.Tensor]:
        """Unprojected per-example gradient blocks for one batch."""
        input_ids, attention_mask = pad_right(list(batch), self.pad_token_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        # No objective reads a logit before the last prompt position: the vocabulary projection (and its softmax)
        # of the earlier positions, a fifth of a small model's forward and backward, is skipped where supported.
        keep = {}
        if self._keeps_logit_window:
            keep["logits_to_keep"] = min(input_ids.shape[1], input_ids.shape[1] - min(e.prompt_len for e in batch) + 1)
        with torch.enable_grad(), self.io.recording():
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **keep).logits
            losses = objective(logits, input_ids, attention_mask, batch)
            blocks = self.io.per_example_gradients(losses.sum())
        return blocks

    @contextmanager
    def recording_training_step(self):
        """Wrap one ordinary training micro-step (forward and backward); then `training_step_vectors()` gives that
        micro-batch's projected per-example gradients, from the step's own backward: no extra pass."""
        with self.io.recording(capture_output_grads=True):
            yield

    def training_step_vectors(self) -> np.ndarray:
        """[B, dim] float32 projected per-example gradients of the last recorded training micro-step."""
        with torch.no_grad():
            vectors = self.projector(self.io.captured_gradients()).cpu().numpy()
        for recorded in (self.io.inputs, self.io.outputs, self.io.output_grads):
            recorded.clear()  # the outputs hold the step's autograd graph alive until cleared
        return vectors

    @contextmanager
    def _scoring_mode(self):
        """Eval mode (no dropout) and no gradient checkpointing (its recompute would re-fire the hooks)."""
        was_training = self.model.training
        checkpointing = bool(getattr(self.model, "is_activation_checkpointing", False))
        if checkpointing:
            self.model.activation_checkpointing_disable()
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)
            if checkpointing:
                self.model.activation_checkpointing_enable()
