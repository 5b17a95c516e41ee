"""The one batched forward pass that serves every hidden-state scorer.

Layer indices follow `hidden_states` numbering: 0 is the embedding output and l is the output of decoder block l-1.
Index L (the last block) is taken before the model's final norm, unlike HF's `hidden_states[L]`; scorers fit and score
at the same index, so only consistency matters. The forward pass stops after the deepest requested layer and never
runs the LM head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.tokenization import TokenizedPair, pad_right, response_positions

# Poolings a scorer can request, per sample and layer:
#   prompt_last   - the last prompt token (position P-1)
#   prompt_mean   - mean over prompt tokens, special tokens (chat-template markers) excluded
#   response_mean - mean over response tokens, special tokens (end-of-turn, EOS) excluded
#   end_of_turn   - the last special token of the response (its end-of-turn marker), else its last token
POOLINGS = ("prompt_last", "prompt_mean", "response_mean", "end_of_turn")


@dataclass(frozen=True)
class FeatureRequest:
    """The hidden-state layers and poolings a scorer needs."""

    layers: frozenset[int]
    poolings: frozenset[str]

    def __post_init__(self):
        unknown = set(self.poolings) - set(POOLINGS)
        if unknown:
            raise ValueError(f"Unknown pooling(s) {sorted(unknown)}; allowed: {', '.join(POOLINGS)}.")

    def union(self, other: FeatureRequest) -> FeatureRequest:
        return FeatureRequest(self.layers | other.layers, self.poolings | other.poolings)


@dataclass
class HiddenStates:
    """Pooled hidden states: `pooled[(layer, pooling)]` is a float32 array [N, d], rows aligned with `sample_idx`."""

    sample_idx: np.ndarray
    num_tokens: np.ndarray
    pooled: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)

    def get(self, layer: int, pooling: str) -> np.ndarray:
        try:
            return self.pooled[(layer, pooling)]
        except KeyError:
            raise KeyError(f"Features for layer {layer}, pooling {pooling!r} were not extracted.") from None

    def select(self, rows: np.ndarray) -> HiddenStates:
        """Row subset (a boolean mask or index array)."""
        return HiddenStates(self.sample_idx[rows], self.num_tokens[rows], {k: v[rows] for k, v in self.pooled.items()})


class _StopForward(Exception):
    """Raised by the hook on the deepest requested layer: nothing after it is needed."""


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder blocks (works through PEFT wrappers)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = base.config.num_hidden_layers
    for module in base.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"Cannot find the {n} decoder blocks of {type(base).__name__}.")


def float32_reductions(device: torch.device):
    """Context in which pooling and per-example-gradient reductions stay float32 while the model's forward runs
    under bf16/fp16 autocast (the training's precision): autocast would otherwise round their sums to 16 bits."""
    return torch.autocast(device.type, enabled=False)


def num_layers(model: nn.Module) -> int:
    """Number of decoder blocks, i.e. the deepest hidden-state index."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config.num_hidden_layers


class HiddenStateExtractor:
    """Runs batched, early-stopping forward passes and pools hidden states for every requested layer.

    Sequences are sorted by length so batches carry little padding; results come back in input order.
    """

    def __init__(
        self,
        model: nn.Module,
        pad_token_id: int,
        special_token_ids: Sequence[int],
        batch_size: int = 8,
        show_progress: bool = False,
    ):
        self.model = model
        self.pad_token_id = pad_token_id
        self.special_token_ids = torch.tensor(sorted(set(special_token_ids)), dtype=torch.long)
        self.batch_size = batch_size
        self.show_progress = show_progress

    @torch.no_grad()
    def __call__(
        self, examples: Sequence[TokenizedPair], request: FeatureRequest, desc: str = "Scoring"
    ) -> HiddenStates:
        n = len(examples)
        pooled: dict[tuple[int, str], np.ndarray] = {}
        if n == 0:
            return HiddenStates(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), pooled)
        order = sorted(range(n), key=lambda i: len(examples[i].input_ids))
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            batches = range(0, n, self.batch_size)
            for start in tqdm(batches, desc=desc, disable=not self.show_progress, unit="batch"):
                rows = order[start : start + self.batch_size]
                batch_out = self._forward_batch([examples[i] for i in rows], request, device)
                for key, values in batch_out.items():
                    if key not in pooled:
                        pooled[key] = np.zeros((n, values.shape[1]), dtype=np.float32)
                    pooled[key][rows] = values
        finally:
            self.model.train(was_training)
        sample_idx = np.array([e.sample_idx for e in examples], dtype=np.int64)
        num_tokens = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
        return HiddenStates(sample_idx, num_tokens, pooled)

    def _forward_batch(self, batch: list[TokenizedPair], request: FeatureRequest, device) -> dict:
        input_ids, attention_mask = pad_right(batch, self.pad_token_id)
        weights = self._pooling_weights(batch, input_ids, attention_mask, request.poolings)

        captured: dict[tuple[int, str], np.ndarray] = {}
        deepest = max(request.layers)

        def capture(layer: int):
            def hook(_module, _inputs, output):
                hidden = (output[0] if isinstance(output, tuple) else output).float()
                with float32_reductions(hidden.device):
                    for pooling, w in weights.items():
                        pooled = torch.einsum("bt,btd->bd", w.to(hidden.device), hidden)
                        captured[(layer, pooling)] = pooled.cpu().numpy()
                if layer == deepest:
                    raise _StopForward

            return hook

        blocks = decoder_layers(self.model)
        modules = {0: self.model.get_input_embeddings()} | {i + 1: block for i, block in enumerate(blocks)}
        handles = [modules[layer].register_forward_hook(capture(layer)) for layer in sorted(request.layers)]
        try:
            self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return captured

    def _pooling_weights(self, batch, input_ids, attention_mask, poolings) -> dict[str, torch.Tensor]:
        """Per pooling, a [B, T] weight matrix whose product with the hidden states gives the pooled vectors."""
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        prompt_len = torch.tensor([e.prompt_len for e in batch]).unsqueeze(1)
        is_response = response_positions(batch, input_ids.shape[1]) & attention_mask.bool()
        is_special = torch.isin(input_ids, self.special_token_ids)
        weights = {}
        if "prompt_last" in poolings:
            weights["prompt_last"] = (positions == prompt_len - 1).float()
        if "prompt_mean" in poolings:
            weights["prompt_mean"] = _content_mean(positions < prompt_len, is_special)
        if "response_mean" in poolings:
            weights["response_mean"] = _content_mean(is_response, is_special)
        if "end_of_turn" in poolings:
            marker = is_response & is_special
            candidates = torch.where(marker.any(1, keepdim=True), marker, is_response)
            last = (candidates * positions).argmax(1, keepdim=True)
            weights["end_of_turn"] = (positions == last).float()
        return weights


def _content_mean(span: torch.Tensor, is_special: torch.Tensor) -> torch.Tensor:
    """Averaging weights over the non-special tokens of `span`; a span made only of special tokens still gets a
    defined mean over all its tokens, and an empty span (no prompt before a sequence with no known boundary) zero
    weights rather than 0/0."""
    content = span & ~is_special
    content = torch.where(content.any(1, keepdim=True), content, span).float()
    return content / content.sum(1, keepdim=True).clamp(min=1)
