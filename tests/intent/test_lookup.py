"""Stage-1 intents by sample (IntentLookup) and by item (item_intent_table)."""

import numpy as np
import pytest
import torch
from fakes import fake_intents, tiny_dataset

from llm4sbr.intent.lookup import IntentLookup, item_intent_table


def test_item_table_is_the_mean_intent_per_clicked_item_and_last_click():
    ds = tiny_dataset()
    lookup = IntentLookup(*fake_intents(ds), ds)
    train_set = ds.splits["train"]
    vectors = lookup(torch.from_numpy(train_set.sample_ids))
    table, counts = item_intent_table(train_set, vectors, ds.n_items)
    assert table.shape == (ds.n_items + 1, 2, lookup.d_text) and table.dtype == torch.float32
    vectors = vectors.double().numpy()
    for item in range(1, ds.n_items + 1):
        clicks = [s for s in range(len(train_set)) for i in train_set.prefix(s) if i == item]
        lasts = [s for s in range(len(train_set)) if train_set.prefix(s)[-1] == item]
        assert counts[item].tolist() == [len(clicks), len(lasts)]
        expected_long = vectors[clicks, 0].mean(0) if clicks else vectors[:, 0].mean(0)
        expected_short = vectors[lasts, 1].mean(0) if lasts else vectors[:, 1].mean(0)
        np.testing.assert_allclose(table[item, 0], expected_long, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(table[item, 1], expected_short, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one per sample"):
        item_intent_table(train_set, torch.from_numpy(vectors[:-1]), ds.n_items)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_intents_are_refused_at_load_time(bad):
    ds = tiny_dataset()
    vectors, ids = fake_intents(ds)
    vectors[3, 1, 0] = bad
    with pytest.raises(ValueError, match=rf"1 of the dataset's .* NaN or infinite .*\[{ids[3]}\]"):
        IntentLookup(vectors, ids, ds)


def test_missing_samples_are_named_and_the_digest_follows_the_vectors():
    ds = tiny_dataset()
    vectors, ids = fake_intents(ds)
    with pytest.raises(ValueError, match="first missing sample ids"):
        IntentLookup(vectors[1:], ids[1:], ds)
    digest = IntentLookup(vectors, ids, ds).digest
    assert IntentLookup(vectors[::-1].copy(), ids[::-1].copy(), ds).digest == digest  # row order is free
    vectors[0, 0, 0] += 1
    assert IntentLookup(vectors, ids, ds).digest != digest
