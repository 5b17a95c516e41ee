"""The active training set under online dropping, and the sampler that keeps the epoch length constant.

Online drops are decided by sample_idx at some step. Two consumers must agree on them at every step and on every rank:
the batch masking (a dropped row's labels become -100 from the next micro-batch on) and the sampler (from the next
epoch on, dropped rows are not drawn; their slots are refilled with seeded re-draws from the active rows, so the
dataloader length, step count and learning-rate schedule never change).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Sampler

STATE_VERSION = 1


@dataclass
class OnlineDrop:
    """One online drop: when, with what score, and why."""

    step: int
    score: float
    reason: str


@dataclass
class ActiveSet:
    """Which sample_idx are still trained on. `epoch_rows[e]` is the active set the sampler drew epoch e from (kept so
    a resumed run replays the epoch's order exactly)."""

    dropped: dict[int, OnlineDrop] = field(default_factory=dict)
    epoch_rows: dict[int, list[int]] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)

    def is_active(self, sample_idx: int) -> bool:
        return sample_idx not in self.dropped

    def drop(self, sample_idx: int, step: int, score: float, reason: str) -> None:
        self.dropped.setdefault(sample_idx, OnlineDrop(step, score, reason))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "dropped": {str(i): vars(d) for i, d in sorted(self.dropped.items())},
            "epoch_rows": {str(e): rows for e, rows in sorted(self.epoch_rows.items())},
            "scores": {str(i): s for i, s in sorted(self.scores.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActiveSet:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"safety_state.json: version {data.get('version')!r}, expected {STATE_VERSION}.")
        return cls(
            {int(i): OnlineDrop(**d) for i, d in data["dropped"].items()},
            {int(e): list(rows) for e, rows in data["epoch_rows"].items()},
            {int(i): float(s) for i, s in data["scores"].items()},
        )

    def load(self, other: ActiveSet) -> None:
        """Take `other`'s state in place (the sampler and callback keep their reference to this object)."""
        self.dropped, self.epoch_rows, self.scores = other.dropped, other.epoch_rows, other.scores


class ConstantLengthSampler(Sampler[int]):
    """Yields dataset positions in a seeded order of the epoch's active rows, always `len(sample_idx)` of them.

    The order is a pure function of (seed, epoch, active set at the epoch's start), so every rank yields the same
    order and a resumed run replays it; dropped rows' slots are refilled with seeded draws from the active rows.
    """

    def __init__(self, sample_idx: Sequence[int], active: ActiveSet, seed: int):
        self.sample_idx = list(sample_idx)
        self.position = {idx: pos for pos, idx in enumerate(self.sample_idx)}
        self.active = active
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.sample_idx)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rows = self.active.epoch_rows.get(self.epoch)
        if rows is None:
            rows = [idx for idx in self.sample_idx if self.active.is_active(idx)]
            self.active.epoch_rows[self.epoch] = rows
        if not rows:
            raise RuntimeError("Online filtering dropped every training sample; nothing is left to train on.")
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        positions = torch.tensor([self.position[idx] for idx in rows])
        order = positions[torch.randperm(len(positions), generator=generator)]
        if len(order) < len(self):
            refill = positions[torch.randint(len(positions), (len(self) - len(order),), generator=generator)]
            order = torch.cat([order, refill])
        return iter(order.tolist())
