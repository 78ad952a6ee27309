"""Splits and sample building: prefix samples from CSR sessions, the validation carve.

The validation split is carved from train by *session*: every sample of a session lands on the
same side, so no prefix of a validation session is trained on.
"""

from __future__ import annotations

import numpy as np

from .dataset import GATHER_CHUNK, SampleSet


def _prefix_items(steps: np.ndarray, max_history: int | None) -> np.ndarray:
    """Items in the prefixes of steps 0 .. steps - 1 of a session (step k: ``min(k + 1,
    max_history)`` clicks), per entry of ``steps`` [m] int64."""
    full = steps * (steps + 1) // 2
    if max_history is None:
        return full
    h = int(max_history)
    return np.where(steps <= h, full, h * (h + 1) // 2 + (steps - h) * h)


def session_samples(
    items: np.ndarray,
    session_offsets: np.ndarray,
    sessions: np.ndarray,
    first_step: np.ndarray,
    stop_step: np.ndarray,
    first_ids: np.ndarray,
    max_history: int | None = None,
    chunk: int = GATHER_CHUNK,
) -> SampleSet:
    """Prefix samples of the CSR sessions ``sessions`` [m] (of ``items[session_offsets[s]:
    session_offsets[s + 1]]``), in that order.

    first_step, stop_step, first_ids [n_sessions] int64, ``first_step <= stop_step``: session s
    (starting at click ``a``) gives the samples of steps ``k = first_step[s] .. stop_step[s] - 1``
    in that order: prefix ``items[a : a + k + 1]`` cut to its ``max_history`` most recent
    clicks, target ``items[a + k + 1]``, sample id ``first_ids[s] + k - first_step[s]``. Built
    about ``chunk`` prefix items at a time into preallocated arrays, so the index arrays stay
    small.
    """
    sessions = np.asarray(sessions, dtype=np.int64)
    sample_end = np.cumsum(stop_step[sessions] - first_step[sessions])
    item_end = np.cumsum(
        _prefix_items(stop_step[sessions], max_history) - _prefix_items(first_step[sessions], max_history)
    )
    n_samples = int(sample_end[-1]) if len(sessions) else 0
    offsets = np.zeros(n_samples + 1, dtype=np.int64)
    prefixes = np.empty(int(item_end[-1]) if len(sessions) else 0, dtype=np.int64)
    targets = np.empty(n_samples, dtype=np.int64)
    sample_ids = np.empty(n_samples, dtype=np.int64)
    thresholds = np.arange(chunk, len(prefixes), chunk)
    bounds = np.unique(
        np.concatenate([[0], np.searchsorted(item_end, thresholds, side="right"), [len(sessions)]])
    )
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        chosen = sessions[lo:hi]
        step0 = first_step[chosen]
        count = stop_step[chosen] - step0
        first = int(sample_end[lo - 1]) if lo else 0
        n = int(sample_end[hi - 1]) - first
        within = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
        step = within + np.repeat(step0, count)
        start = np.repeat(session_offsets[chosen], count)
        end = start + step + 1
        begin = start if max_history is None else np.maximum(start, end - int(max_history))
        targets[first : first + n] = items[end]
        sample_ids[first : first + n] = np.repeat(first_ids[chosen], count) + within
        lengths = end - begin
        np.cumsum(lengths, out=offsets[first + 1 : first + n + 1])
        offsets[first + 1 : first + n + 1] += offsets[first]
        base = int(offsets[first])
        size = int(offsets[first + n]) - base
        local = offsets[first : first + n] - base
        prefixes[base : base + size] = items[
            np.arange(size, dtype=np.int64) + np.repeat(begin - local, lengths)
        ]
    return SampleSet(offsets, prefixes, targets, sample_ids)


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
    chosen = draw_valid_groups(unique_groups, valid_fraction, seed)
    in_valid = np.isin(groups, chosen)
    return samples.subset(np.flatnonzero(~in_valid)), samples.subset(np.flatnonzero(in_valid))


def draw_valid_groups(groups: np.ndarray, valid_fraction: float, seed: int) -> np.ndarray:
    """The ``round(valid_fraction * len(groups))`` groups (of the distinct ascending ``groups``
    [g] int64) that go to valid: the first of ``numpy.random.default_rng(seed)``'s permutation."""
    n_valid = int(round(valid_fraction * len(groups)))
    return np.random.default_rng(seed).permutation(groups)[:n_valid]
