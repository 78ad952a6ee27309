"""Splits and sample building: prefix samples from CSR sessions, the validation carve.

The validation split is carved from train by *session*: every sample of a session lands on the
same side, so no prefix of a validation session is trained on.
"""

from __future__ import annotations

import numpy as np

from .dataset import SampleSet


def gather_samples(
    items: np.ndarray, starts: np.ndarray, ends: np.ndarray, targets: np.ndarray, sample_ids: np.ndarray
) -> SampleSet:
    """The SampleSet whose sample i has prefix ``items[starts[i]:ends[i]]`` and target ``targets[i]``.

    items [n_clicks] int64; starts, ends, targets, sample_ids [n] int64.
    """
    lengths = ends - starts
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # Position k of the output lies in sample s = the one with offsets[s] <= k < offsets[s + 1].
    source = np.arange(offsets[-1], dtype=np.int64) + np.repeat(starts - offsets[:-1], lengths)
    return SampleSet(
        offsets,
        np.asarray(items, dtype=np.int64)[source],
        np.asarray(targets, dtype=np.int64),
        np.asarray(sample_ids, dtype=np.int64),
    )


def prefix_samples(
    session_offsets: np.ndarray, augment: bool, max_history: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample boundaries for CSR sessions ``items[session_offsets[s]:session_offsets[s + 1]]``.

    With ``augment`` every prefix is a sample, shortest first ((s1) -> s2, (s1, s2) -> s3, ...);
    without, one sample per session (s[:-1] -> s[-1]). ``max_history`` keeps only the most recent
    clicks of each prefix. Sessions shorter than 2 give no sample. Returns ``(starts, ends,
    target_positions)`` [n_samples] int64 indices into the click array, sessions in order.
    """
    session_offsets = np.asarray(session_offsets, dtype=np.int64)
    session_starts = session_offsets[:-1]
    lengths = np.diff(session_offsets)
    if augment:
        per_session = np.maximum(lengths - 1, 0)
        first = np.repeat(np.cumsum(per_session) - per_session, per_session)
        step = np.arange(per_session.sum(), dtype=np.int64) - first + 1
        session_start = np.repeat(session_starts, per_session)
        ends = session_start + step
    else:
        keep = lengths >= 2
        session_start = session_starts[keep]
        ends = session_offsets[1:][keep] - 1
    starts = session_start if max_history is None else np.maximum(session_start, ends - max_history)
    return starts, ends, ends.copy()


def carve_valid(
    samples: SampleSet, groups: np.ndarray, valid_fraction: float, seed: int
) -> tuple[SampleSet, SampleSet]:
    """Split ``samples`` into (train, valid) by group (one group per session).

    groups [n] int64: the session of each sample. ``round(valid_fraction * n_groups)`` groups,
    drawn with ``numpy.random.default_rng(seed)``, go to valid; both sides keep sample order and
    sample ids.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must lie in [0, 1), got {valid_fraction}")
    groups = np.asarray(groups, dtype=np.int64)
    unique_groups = np.unique(groups)
    n_valid = int(round(valid_fraction * len(unique_groups)))
    chosen = np.random.default_rng(seed).permutation(unique_groups)[:n_valid]
    in_valid = np.isin(groups, chosen)
    return take(samples, np.flatnonzero(~in_valid)), take(samples, np.flatnonzero(in_valid))


def take(samples: SampleSet, index: np.ndarray) -> SampleSet:
    """The samples at positions ``index`` (vectorised ``SampleSet.subset``)."""
    index = np.asarray(index, dtype=np.int64)
    return gather_samples(
        samples.items,
        samples.offsets[:-1][index],
        samples.offsets[1:][index],
        samples.targets[index],
        samples.sample_ids[index],
    )
