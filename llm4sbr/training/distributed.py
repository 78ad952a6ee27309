"""Where a training process runs: device choice, torchrun's process group and each rank's share
of the work.

Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` > 1 in the environment) training runs
DistributedDataParallel: gloo on CPU, nccl on CUDA (one GPU per process, ``cuda:LOCAL_RANK``).
The batch size stays the global batch: every rank takes its share of each global batch of the
same seeded per-epoch permutation (:func:`shard_batches`); evaluation splits the samples across
ranks and all-gathers their target ranks (:func:`all_gather_ranks`), so every sample counts
exactly once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from llm4sbr.data import EpochShuffleSampler


class DistributedEnv(NamedTuple):
    """This process's place in a torchrun job; (0, 1, 0) for a plain single-process run."""

    rank: int
    world_size: int
    local_rank: int


def distributed_env() -> DistributedEnv:
    """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment."""
    env = os.environ
    return DistributedEnv(
        int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    )


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> a device; a
    CUDA device without CUDA raises ValueError. Under torchrun on CUDA each process takes
    ``cuda:LOCAL_RANK``."""
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but CUDA is not available")
    if device.type == "cuda" and distributed_env().world_size > 1:
        device = torch.device("cuda", distributed_env().local_rank)
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[DistributedEnv]:
    """Join torchrun's process group for one training run (a no-op for a single process) and
    leave it afterwards if this run created it; a group the caller initialised is used as is."""
    env = distributed_env()
    created = env.world_size > 1 and not dist.is_initialized()
    if created:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        env = DistributedEnv(dist.get_rank(), dist.get_world_size(), env.local_rank)
    try:
        yield env
    finally:
        if created:
            # Tear down together: a rank that destroys its group while a peer still talks to it
            # can abort the peer at exit.
            with contextlib.suppress(RuntimeError):
                dist.barrier()
            dist.destroy_process_group()


def shard_batches(
    n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[tuple[np.ndarray, float]]:
    """This rank's share of every global batch of one epoch, as (sample positions, loss weight).

    The epoch order is the permutation ``make_loader(..., shuffle=True, seed=seed)`` draws, cut
    into global batches of ``batch_size``. Global batch g (n_g samples) is split into
    ``world_size`` near-equal parts and rank r takes part r (n_r samples) with weight
    ``n_r * world_size / n_g``: DDP averages the ranks' gradients, so the weighted per-rank
    mean losses give the gradient of the global batch's mean loss. A rank whose part is empty
    (a last batch smaller than ``world_size``) reuses the batch's first sample with weight 0,
    so every rank takes every optimizer step. With one process: make_loader's batches, weight 1.
    """
    order = np.fromiter(iter(EpochShuffleSampler(n, seed)), dtype=np.int64, count=n)
    shares = []
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        part = np.array_split(batch, world_size)[rank]
        if len(part):
            shares.append((part, len(part) * world_size / len(batch)))
        else:
            shares.append((batch[:1], 0.0))
    return shares


def rank_share(n: int) -> np.ndarray:
    """The positions of ``n`` samples this rank evaluates: a contiguous 1/world_size of them."""
    return np.array_split(np.arange(n), dist.get_world_size())[dist.get_rank()]


def all_gather_ranks(local: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """Concatenate every rank's target ranks in rank order, for ``n`` samples shared as
    :func:`rank_share` shares them (all_gather needs equal shapes, so each part is padded to the
    largest and cut back)."""
    sizes = [len(part) for part in np.array_split(np.arange(n), dist.get_world_size())]
    padded = torch.zeros(max(sizes), dtype=torch.long, device=device)
    padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)]).cpu()
