"""Batches of (prefix, target) samples for training and evaluation.

A batch is a dict of LongTensors: ``item_seq`` [B, L] right-padded with 0 (L = the longest
prefix in the batch), ``item_seq_len`` [B], ``target`` [B] and ``sample_id`` [B]. With
``with_graph=True`` it also holds the SR-GNN session graph built by the numba builder in the
loader's workers: ``graph_nodes`` [B, N] long, ``graph_alias`` [B, L] long, ``graph_A_in`` and
``graph_A_out`` [B, N, N] float32. With ``with_packed_graph=True`` it holds instead the packed
graph and first-step matrices of the encoder's packed path (the ``packed_*`` keys of
:func:`~llm4sbr.data.graph.packed_batch_to_dict`), built in the loader's workers.

Prefixes longer than ``max_len`` keep their ``max_len`` most recent clicks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .dataset import SampleSet

SampleItem = tuple[np.ndarray, int, int]


class SampleDataset(Dataset):
    """A SampleSet as a torch Dataset of ``(prefix [l] int64, target, sample_id)`` items.

    ``max_len`` (None = no limit) truncates each prefix to its ``max_len`` most recent clicks.
    """

    def __init__(self, samples: SampleSet, max_len: int | None = None) -> None:
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1 or None, got {max_len}")
        self.samples = samples
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> SampleItem:
        start, end = int(self.samples.offsets[index]), int(self.samples.offsets[index + 1])
        if self.max_len is not None:
            start = max(start, end - self.max_len)
        return (
            self.samples.items[start:end],
            int(self.samples.targets[index]),
            int(self.samples.sample_ids[index]),
        )


def collate_sessions(items: Sequence[SampleItem]) -> dict[str, torch.Tensor]:
    """Stack ``(prefix, target, sample_id)`` items into a right-padded batch (see module doc)."""
    lengths = np.fromiter((len(prefix) for prefix, _, _ in items), dtype=np.int64, count=len(items))
    item_seq = np.zeros((len(items), int(lengths.max(initial=0))), dtype=np.int64)
    for row, (prefix, _, _) in enumerate(items):
        item_seq[row, : len(prefix)] = prefix
    return {
        "item_seq": torch.from_numpy(item_seq),
        "item_seq_len": torch.from_numpy(lengths),
        "target": torch.tensor([target for _, target, _ in items], dtype=torch.long),
        "sample_id": torch.tensor([sample_id for _, _, sample_id in items], dtype=torch.long),
    }


def collate_sessions_with_graph(items: Sequence[SampleItem]) -> dict[str, torch.Tensor]:
    """:func:`collate_sessions` plus the numba-built session graph (``graph_*`` keys)."""
    from .graph_numba import build_session_graph_numba

    batch = collate_sessions(items)
    nodes, alias, A_in, A_out = build_session_graph_numba(
        batch["item_seq"].numpy(), batch["item_seq_len"].numpy()
    )
    batch["graph_nodes"] = torch.from_numpy(nodes)
    batch["graph_alias"] = torch.from_numpy(alias)
    batch["graph_A_in"] = torch.from_numpy(A_in)
    batch["graph_A_out"] = torch.from_numpy(A_out)
    return batch


def collate_sessions_packed(items: Sequence[SampleItem]) -> dict[str, torch.Tensor]:
    """:func:`collate_sessions` plus the packed graph (``packed_*`` keys, float32 weights)."""
    from .graph import build_packed_batch_graph, packed_batch_to_dict

    batch = collate_sessions(items)
    batch.update(packed_batch_to_dict(build_packed_batch_graph(batch["item_seq"], batch["item_seq_len"])))
    return batch


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(n)`` that depends only on ``(seed, epoch)``.

    Each pass over the sampler uses the current epoch and then advances it, so the k-th pass
    (counting from 0) is the permutation of epoch k. The permutation is
    ``numpy.random.default_rng([seed, epoch])``.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        self.epoch += 1
        return iter(order.tolist())


def make_loader(
    samples: SampleSet,
    batch_size: int = 100,
    shuffle: bool = False,
    seed: int = 0,
    max_len: int | None = None,
    num_workers: int = 0,
    with_graph: bool = False,
    batches: Sequence[Sequence[int]] | None = None,
    with_packed_graph: bool = False,
) -> DataLoader:
    """The one way to batch samples, for training and evaluation alike (see the module doc for
    the keys).

    With ``shuffle`` the order comes from an :class:`EpochShuffleSampler` (``loader.sampler``):
    reproducible for a given ``seed`` and epoch, whatever the number of workers. Without it,
    samples come in SampleSet order. The last batch may be smaller. ``batches`` (lists of sample
    positions, e.g. one rank's share of each global batch) replaces ``batch_size`` and
    ``shuffle``. ``with_graph`` builds the session graphs in the loader (needs the ``numba``
    extra); ``with_packed_graph`` the encoder's packed graphs (with ``num_workers`` > 0 their
    index work overlaps the model's compute).
    """
    if with_graph and with_packed_graph:
        raise ValueError("with_graph and with_packed_graph exclude each other")
    dataset = SampleDataset(samples, max_len)
    collate = (
        collate_sessions_with_graph
        if with_graph
        else collate_sessions_packed
        if with_packed_graph
        else collate_sessions
    )
    if batches is not None:
        return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(len(dataset), seed) if shuffle else None,
        num_workers=num_workers,
        collate_fn=collate,
    )
