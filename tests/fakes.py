"""Deterministic stand-ins for tests: a tiny session dataset and fake stage-1 intent vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llm4sbr.data.dataset import SampleSet, SessionDataset
from llm4sbr.intent import FakeBackend

MOVIE_NAMES = [
    "",
    "Toy Story (1995) -- Animation|Children's|Comedy",
    "GoldenEye (1995) -- Action|Adventure|Thriller",
    "Misery (1990) -- Horror",
    "Heat (1995) -- Action|Crime|Thriller",
    "Babe (1995) -- Children's|Comedy|Drama",
]
"""MovieLens titles as the RecBole item file gives them, by model id (0 is padding)."""


def tiny_dataset(n_items: int = 30, n_sessions: int = 60, max_len: int = 8, seed: int = 0) -> SessionDataset:
    """Sessions that walk through the catalog with small strides (so the next item is learnable),
    with repeats; one sample per session; 70/15/15 train/valid/test."""
    rng = np.random.default_rng(seed)
    prefixes, targets = [], []
    for _ in range(n_sessions):
        length = int(rng.integers(2, max_len + 1))
        start = int(rng.integers(1, n_items + 1))
        steps = rng.choice([0, 1, 1, 1, 2], size=length - 1)
        seq = (start - 1 + np.concatenate([[0], np.cumsum(steps)])) % n_items + 1
        prefixes.append(seq[:-1].tolist())
        targets.append(int(seq[-1]))
    n_train, n_valid = int(0.7 * n_sessions), int(0.15 * n_sessions)
    cuts = [(0, n_train), (n_train, n_train + n_valid), (n_train + n_valid, n_sessions)]
    splits = {
        name: SampleSet.from_lists(prefixes[a:b], targets[a:b], np.arange(a, b))
        for name, (a, b) in zip(("train", "valid", "test"), cuts, strict=True)
    }
    raw = ["[PAD]"] + [f"raw{i}" for i in range(1, n_items + 1)]
    names = [""] + [f"Item {i}" for i in range(1, n_items + 1)]
    return SessionDataset("tiny", n_items, raw, names, splits)


def fake_intents(dataset: SessionDataset, d_text: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors [n, 2, d_text], sample_ids [n]): long-term = mean item vector of the prefix,
    short-term = the last item's vector, item vectors random but fixed by ``seed``."""
    item_vectors = np.random.default_rng(seed).normal(size=(dataset.n_items + 1, d_text)).astype(np.float32)
    vectors, ids = [], []
    for samples in dataset.splits.values():
        for i in range(len(samples)):
            prefix = samples.prefix(i)
            vectors.append(np.stack([item_vectors[prefix].mean(0), item_vectors[prefix[-1]]]))
            ids.append(samples.sample_ids[i])
    return np.stack(vectors), np.asarray(ids, dtype=np.int64)


def write_log(folder: Path, n_sessions: int = 60, n_items: int = 25, seed: int = 0) -> Path:
    """A RecBole click log (``tiny.inter``, with item names in ``tiny.item``) for the ``srgnn``
    preset: one session every 12 hours, so the last 7 days are test; a few clicks each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["session_id:token\titem_id:token\ttimestamp:float"]
    for s in range(n_sessions):
        t, item = 1_000_000 + s * 43_200, int(rng.integers(n_items))
        for j in range(int(rng.integers(3, 6))):
            item = (item + int(rng.choice([0, 1, 1, 2]))) % n_items
            rows.append(f"{s}\ti{item}\t{t + 60 * j}")
    (folder / "tiny.inter").write_text("\n".join(rows) + "\n")
    names = [f"i{i}\tMovie {i} about topic {i % 5}" for i in range(n_items)]
    (folder / "tiny.item").write_text("item_id:token\ttitle:token_seq\n" + "\n".join(names) + "\n")
    return folder


class RecordingBackend(FakeBackend):
    """FakeBackend that records every prompt it is asked for, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def generate(self, prompts: list[str]) -> list[str]:
        self.seen += prompts
        return super().generate(prompts)
