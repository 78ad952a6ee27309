"""Intent localization (paper Eqs. 2-5) on hand-made vectors."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm4sbr.intent import localize
from llm4sbr.intent.localize import top_r_similar

# Four catalog items; the answer is closest to rows 3 and 2, so the top-2 are NOT the first two rows.
CATALOG = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [3.0, 4.0, 0.0], [2.0, 0.0, 0.0]], dtype=np.float32)
ANSWER = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
# cos(answer, row): 0, 0, 0.6, 1.0
OWN = 1.0 * CATALOG[3] + 0.6 * CATALOG[2]


def test_top_r_items_weighted_by_their_own_similarity() -> None:
    np.testing.assert_allclose(localize(ANSWER, CATALOG, r=2), OWN[None], rtol=1e-6)


def test_not_the_authors_first_rows_weighting() -> None:
    # The released code multiplies the top-r embeddings by the similarities of rows 0..r-1 (both 0 here).
    buggy = 0.0 * CATALOG[3] + 0.0 * CATALOG[2]
    assert not np.allclose(localize(ANSWER, CATALOG, r=2), buggy[None])


def test_mean_divides_the_sum_by_r() -> None:
    np.testing.assert_allclose(localize(ANSWER, CATALOG, r=2, reduce="mean"), OWN[None] / 2, rtol=1e-6)


def test_r_zero_returns_the_raw_answer_embedding() -> None:
    out = localize(ANSWER * 5, CATALOG, r=0)
    np.testing.assert_array_equal(out, ANSWER * 5)
    assert out.dtype == np.float32


def test_r_one_and_r_clamped_to_catalog_size() -> None:
    np.testing.assert_allclose(localize(ANSWER, CATALOG, r=1), CATALOG[3:4], rtol=1e-6)
    np.testing.assert_allclose(localize(ANSWER, CATALOG, r=10), localize(ANSWER, CATALOG, r=4), rtol=1e-6)


def test_negative_similarities_are_kept() -> None:
    catalog = np.array([[-1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    out = localize(np.array([[1.0, 0.0]], np.float32), catalog, r=2)
    np.testing.assert_allclose(out, [[1.0, 0.0]], atol=1e-7)  # -1 * [-1, 0] + 0 * [0, 1]


def test_scale_of_the_answer_does_not_matter_and_rows_are_independent() -> None:
    rng = np.random.default_rng(0)
    answers = rng.normal(size=(7, 3)).astype(np.float32)
    full = localize(answers, CATALOG, r=3)
    np.testing.assert_allclose(localize(answers * 3.5, CATALOG, r=3), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(localize(answers, CATALOG, r=3, block_elements=2), full, rtol=1e-6)
    for i in range(len(answers)):
        sims = CATALOG @ answers[i] / np.linalg.norm(CATALOG, axis=1) / np.linalg.norm(answers[i])
        top = np.argsort(-sims)[:3]
        np.testing.assert_allclose(full[i], sims[top] @ CATALOG[top], rtol=1e-5, atol=1e-6)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="reduce"):
        localize(ANSWER, CATALOG, reduce="max")
    with pytest.raises(ValueError, match="r must be"):
        localize(ANSWER, CATALOG, r=-1)
    with pytest.raises(ValueError, match="non-empty catalog"):
        localize(ANSWER, np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match="expected"):
        localize(ANSWER, np.zeros((4, 2), np.float32))


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 9),
    n=st.integers(1, 40),
    r=st.integers(1, 12),
    column_chunk=st.integers(1, 45),
    seed=st.integers(0, 2**16),
)
def test_chunked_top_r_is_the_top_r_of_the_whole_catalog(m, n, r, column_chunk, seed) -> None:
    """Merging per-chunk top-r lists gives the global top r, for chunks smaller or larger than r."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(m, 4)).astype(np.float32)
    catalog = rng.normal(size=(n, 4)).astype(np.float32)
    r = min(r, n)
    sims, idx = top_r_similar(rows, catalog, r, column_chunk)
    assert sims.shape == idx.shape == (m, r)
    full = rows @ catalog.T
    np.testing.assert_allclose(np.take_along_axis(full, idx, axis=1), sims, rtol=1e-6, atol=1e-6)
    for i in range(m):
        assert len(set(idx[i].tolist())) == r
        np.testing.assert_allclose(np.sort(sims[i]), np.sort(full[i])[-r:], rtol=1e-6, atol=1e-6)


def test_memory_of_a_block_does_not_grow_with_the_catalog() -> None:
    """Every similarity block localize builds stays within block_elements, at any catalog size."""
    module = importlib.import_module("llm4sbr.intent.localize")

    seen = []
    original = module._top_r

    def recording(sims, r):
        seen.append(sims.size)
        return original(sims, r)

    rng = np.random.default_rng(1)
    answers = rng.normal(size=(50, 8)).astype(np.float32)
    catalog = rng.normal(size=(3000, 8)).astype(np.float32)
    module._top_r = recording
    try:
        blocked = localize(answers, catalog, r=5, block_elements=4096)
    finally:
        module._top_r = original
    assert max(seen) <= 4096
    np.testing.assert_allclose(blocked, localize(answers, catalog, r=5), rtol=1e-5, atol=1e-6)
