"""The in-memory dataset every stage shares: remapped items, titles and (prefix, target) samples.

Items are remapped to 1..n_items; 0 is padding. A *sample* is one (input prefix, next item)
pair. Sample ids are unique over the whole dataset (all splits) and stable for a given source
and preset, so stage-1 intent vectors can be joined to samples by id, never by row order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

GATHER_CHUNK = 1 << 20
"""Items gathered per step when building prefix arrays (bounds the index arrays' memory)."""


def gather_segments(
    source: np.ndarray, starts: np.ndarray, ends: np.ndarray, chunk: int = GATHER_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets [m + 1] int64, items [offsets[-1]] int64)``: the segments
    ``source[starts[i]:ends[i]]`` (starts, ends [m] int64) one after another, gathered about
    ``chunk`` items at a time."""
    lengths = np.asarray(ends, dtype=np.int64) - starts
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.empty(int(offsets[-1]), dtype=np.int64)
    first = 0
    while first < len(lengths):
        last = max(int(np.searchsorted(offsets, offsets[first] + chunk, side="right")) - 1, first + 1)
        lo, hi = int(offsets[first]), int(offsets[last])
        shift = np.repeat(
            np.asarray(starts[first:last], dtype=np.int64) - offsets[first:last], lengths[first:last]
        )
        items[lo:hi] = source[np.arange(lo, hi, dtype=np.int64) + shift]
        first = last
    return offsets, items


@dataclass
class SampleSet:
    """Samples of one split in CSR form.

    offsets [n + 1] int64 and items [offsets[-1]] int64: the prefix of sample i is
    ``items[offsets[i]:offsets[i+1]]`` (oldest click first, ids in 1..n_items, never empty);
    targets [n] int64 in 1..n_items; sample_ids [n] int64, unique over the dataset.
    """

    offsets: np.ndarray
    items: np.ndarray
    targets: np.ndarray
    sample_ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.targets)
        if self.offsets.shape != (n + 1,) or len(self.sample_ids) != n:
            raise ValueError(
                f"inconsistent SampleSet: {n} targets, {len(self.offsets)} offsets, "
                f"{len(self.sample_ids)} ids"
            )
        if n and (np.diff(self.offsets) <= 0).any():
            raise ValueError("every sample needs a non-empty prefix")

    def __len__(self) -> int:
        return len(self.targets)

    def prefix(self, i: int) -> np.ndarray:
        return self.items[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, index: np.ndarray) -> SampleSet:
        """The samples at positions ``index`` [m] (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        offsets, items = gather_segments(self.items, self.offsets[:-1][index], self.offsets[1:][index])
        return SampleSet(offsets, items, self.targets[index], self.sample_ids[index])

    @classmethod
    def from_lists(
        cls, prefixes: list, targets: list, sample_ids: list | np.ndarray | None = None
    ) -> SampleSet:
        lens = np.array([len(p) for p in prefixes], dtype=np.int64)
        offsets = np.zeros(len(prefixes) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        items = (
            np.concatenate([np.asarray(p, dtype=np.int64) for p in prefixes])
            if prefixes
            else np.zeros(0, np.int64)
        )
        ids = (
            np.arange(len(targets), dtype=np.int64)
            if sample_ids is None
            else np.asarray(sample_ids, np.int64)
        )
        return cls(offsets, items, np.asarray(targets, dtype=np.int64), ids)


@dataclass
class SessionDataset:
    """A preprocessed dataset.

    ``item_raw_ids[i]`` is the source's id of model item i and ``item_names[i]`` its display name
    (``"Title (Year) -- Genre|Genre"`` for MovieLens, the title otherwise; ``""`` if unknown);
    index 0 is padding. ``splits`` maps "train", "valid", "test" to samples.

    ``report`` (JSON-serialisable, for printing) says what loading did to the source: rows read,
    exact duplicate rows dropped, the sessions, clicks and items each preset filter dropped, what
    was kept, and in ``empty_splits`` why a split is empty (see
    :func:`~llm4sbr.data.presets.build_dataset`). It is not part of ``meta``, so the recorded
    meta of good data is unchanged.
    """

    name: str
    n_items: int
    item_raw_ids: list[str]
    item_names: list[str]
    splits: dict[str, SampleSet]
    meta: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)


def dataset_fingerprint(dataset: SessionDataset) -> str:
    """Changes whenever the items or samples of any split change."""
    digest = hashlib.sha256(f"{dataset.n_items}".encode())
    for name in sorted(dataset.splits):
        s = dataset.splits[name]
        for array in (s.offsets, s.items, s.targets, s.sample_ids):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]
