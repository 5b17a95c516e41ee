"""Collectives for the scoring pass (every rank calls them in the same order; no-ops on one process), and the
teardown order for a multi-process run."""

from __future__ import annotations

from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank `src`'s `obj` on every rank."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def end_distributed_training(trainer: Any) -> None:
    """End a (possibly multi-process) run: free the trainer's DDP wrapper while the process group exists, then destroy
    the group with `accelerator.end_training()`.

    Freed after `destroy_process_group`, DDP's reducer destroys the gloo group itself while holding the GIL, which can
    deadlock with a gloo worker thread that needs the GIL to free its last collective's tensors (pytorch#56297). Call
    it last: the trainer cannot train or evaluate in parallel afterwards.
    """
    import gc

    trainer.accelerator.wait_for_everyone()
    trainer.model_wrapped = trainer.model
    trainer.accelerator.free_memory()
    gc.collect()
    trainer.accelerator.end_training()
