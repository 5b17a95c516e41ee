"""Collator wrapper that carries `sample_idx` through TRL's collator, which keeps only model inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .formats import SAMPLE_IDX


class SampleIdxCollator:
    """Calls the wrapped collator without `sample_idx` and adds it back to the batch as a tensor."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if not examples or SAMPLE_IDX not in examples[0]:
            return self.collator(examples)
        sample_idx = [example[SAMPLE_IDX] for example in examples]
        batch = self.collator([{k: v for k, v in ex.items() if k != SAMPLE_IDX} for ex in examples])
        batch[SAMPLE_IDX] = torch.tensor(sample_idx, dtype=torch.long)
        return batch
