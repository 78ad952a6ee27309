"""Stage-1 intents as stage 2 and serving read them: per sample (:class:`IntentLookup`) and per
item (:func:`item_intent_table`).

The per-item table turns per-sample intents into something a session never seen by the LLM can
use: ``table[i, 0]`` is the mean long-term intent over every click on item i in the samples'
prefixes, ``table[i, 1]`` the mean short-term intent of the samples whose last click is i.
A session's intents are then (mean of ``table[click, 0]`` over its clicks, ``table[last, 1]``).
The intent predictor adds this as its non-parametric term and the RecBole integration uses it
as its only source of intents.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from llm4sbr.data.dataset import SampleSet, SessionDataset


class IntentLookup:
    """Stage-1 intent vectors indexed by sample id: ``lookup(sample_id [B]) -> [B, 2, d_text]``.

    ``vectors`` [n, 2, d_text] and ``sample_ids`` [n] as :func:`llm4sbr.intent.load_intents`
    returns them; every sample of every split of ``dataset`` must have a finite vector.
    ``digest`` identifies the vectors the dataset's samples get (what a trained model depends on).
    """

    def __init__(self, vectors: np.ndarray, sample_ids: np.ndarray, dataset: SessionDataset) -> None:
        if vectors.ndim != 3 or vectors.shape[1] != 2 or len(vectors) != len(sample_ids):
            raise ValueError(
                f"intent vectors must be [n_samples, 2, d_text] with one sample id per row, got "
                f"{list(vectors.shape)} vectors and {len(sample_ids)} ids"
            )
        needed = np.concatenate([s.sample_ids for s in dataset.splits.values()])
        size = int(max(needed.max(initial=0), np.max(sample_ids, initial=0))) + 1
        row = np.full(size, -1, dtype=np.int64)
        row[np.asarray(sample_ids, dtype=np.int64)] = np.arange(len(sample_ids))
        missing = needed[row[needed] < 0]
        if len(missing):
            raise ValueError(
                f"the intents cover {len(needed) - len(missing)} of the dataset's {len(needed)} samples "
                f"(first missing sample ids: {missing[:5].tolist()}); rerun infer-intents on this dataset"
            )
        used = np.asarray(vectors[row[needed]], np.float32)
        finite = np.isfinite(used).all(axis=(1, 2))
        if not finite.all():
            raise ValueError(
                f"{int((~finite).sum())} of the dataset's {len(needed)} samples have NaN or infinite "
                f"intent vectors (first sample ids: {needed[~finite][:5].tolist()}); rerun infer-intents"
            )
        self.d_text = int(vectors.shape[2])
        self.table = torch.zeros(size, 2, self.d_text, dtype=torch.float32)
        self.table[torch.from_numpy(needed)] = torch.from_numpy(used)
        self.digest = hashlib.sha256(self.table.numpy().tobytes()).hexdigest()[:16]

    @classmethod
    def load(
        cls, directory: str | Path, dataset: SessionDataset, splits: tuple[str, ...] | None = None
    ) -> IntentLookup:
        """From a stage-1 folder, covering ``splits`` of ``dataset`` (None: every split)."""
        from llm4sbr.intent.store import load_intents

        if splits is not None:
            dataset = replace(dataset, splits={name: dataset.splits[name] for name in splits})
        vectors, sample_ids = load_intents(directory)
        return cls(vectors, sample_ids, dataset)

    def __call__(self, sample_id: torch.Tensor) -> torch.Tensor:
        return self.table[sample_id]


def item_intent_table(
    samples: SampleSet, vectors: torch.Tensor, n_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-item intent table of the module doc.

    ``vectors`` [len(samples), 2, d_text]: the intents of ``samples`` in order. Returns
    (table [n_items + 1, 2, d_text] float32, counts [n_items + 1, 2] int64): counts[i, v] is how
    many clicks (long view) or last clicks (short view) fed row i; rows with none hold the mean
    intent over all samples (row 0, padding, included).
    """
    if vectors.ndim != 3 or vectors.shape[:2] != (len(samples), 2):
        raise ValueError(
            f"vectors must be [{len(samples)}, 2, d_text] (one per sample), got {list(vectors.shape)}"
        )
    if len(samples) == 0:
        raise ValueError("an item intent table needs at least one sample")
    vectors = vectors.double()
    clicks_per_sample = torch.from_numpy(samples.lengths())
    clicked = torch.from_numpy(samples.items).long()
    last = torch.from_numpy(samples.items[samples.offsets[1:] - 1]).long()
    table = vectors.mean(0).expand(n_items + 1, 2, -1).clone()
    counts = torch.zeros(n_items + 1, 2, dtype=torch.int64)
    for view, items, rows in (
        (0, clicked, vectors[:, 0].repeat_interleave(clicks_per_sample, dim=0)),
        (1, last, vectors[:, 1]),
    ):
        total = torch.zeros(n_items + 1, vectors.shape[-1], dtype=torch.float64).index_add_(0, items, rows)
        counts[:, view] = torch.bincount(items, minlength=n_items + 1)
        seen = counts[:, view] > 0
        table[seen, view] = total[seen] / counts[seen, view, None].double()
    return table.float(), counts
