"""Control intents: how much do the LLM's intents add over intents that carry no information
about the session?

* ``shuffled``: the stage-1 vectors permuted across samples. Every sample gets some other
  sample's (long, short) pair: the distribution of the vectors is kept exactly, the link between
  a session and its intents is broken.
* ``random``: Gaussian vectors with the stage-1 vectors' mean and standard deviation per view
  and dimension: the scale is kept, the content is noise.

LLM4SBR trained on a control and evaluated on the same control intents measures what the
model gains from the extra parameters and the regularising alignment loss alone; the gap to
LLM4SBR with the stage-1 intents is what the LLM adds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .store import load_intents, save_intents

CONTROLS = ("shuffled", "random")


def control_intents(vectors: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """The ``kind`` control of ``vectors`` [n, 2, d_text] -> [n, 2, d_text] float32, seeded."""
    if kind not in CONTROLS:
        raise ValueError(f"control must be one of {CONTROLS}, got {kind!r}")
    vectors = np.asarray(vectors, dtype=np.float32)
    rng = np.random.default_rng([seed, CONTROLS.index(kind)])
    if kind == "shuffled":
        return vectors[rng.permutation(len(vectors))]
    mean, std = vectors.mean(axis=0), vectors.std(axis=0)
    return (mean + std * rng.standard_normal(vectors.shape)).astype(np.float32)


def write_control_intents(
    intents_dir: str | os.PathLike, kind: str, out_dir: str | os.PathLike, seed: int = 0
) -> Path:
    """A stage-1 output folder in ``out_dir`` holding the ``kind`` control of the intents in
    ``intents_dir`` for the same samples; meta.json records the control, its seed and source."""
    vectors, sample_ids = load_intents(intents_dir)
    return save_intents(
        out_dir,
        control_intents(vectors, kind, seed),
        sample_ids,
        meta={"control": kind, "control_seed": seed, "source": str(Path(intents_dir).resolve())},
    )
