"""llm4sbr.integrations.recbole: the SRGNN and LLM4SBR RecBole models built through RecBole's
Config, data pipeline and Trainer; score parity with RecBole's own SRGNN (same weights, float64,
CPU, Triton interpreter and reference paths); the item-level intent table. Skipped without the
``recbole`` extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from fakes import tiny_dataset

for _module in ("recbole.model.abstract_recommender", "recbole.config", "recbole.data", "recbole.trainer"):
    pytest.importorskip(_module, reason="needs the recbole extra: pip install 'llm4sbr[recbole]'")

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402

from bench.train import samples_fingerprint, split_fingerprint  # noqa: E402
from llm4sbr.data import load_dataset, recbole_ml100k_dir  # noqa: E402
from llm4sbr.integrations.recbole import (  # noqa: E402
    LLM4SBR,
    SRGNN,
    convert_recbole_srgnn_state,
    read_item_intents,
    write_item_intents,
)
from llm4sbr.intent import IntentConfig, infer_intents  # noqa: E402
from llm4sbr.kernels import use_backend  # noqa: E402

# RecBole 1.2.1's own calls into pandas 2, numpy 2 and torch 2 raise deprecation warnings.
pytestmark = pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore:__array_wrap__ must accept context:DeprecationWarning"
)

N_ITEMS, N_USERS, D_TEXT = 20, 12, 12


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def recbole_srgnn():
    """RecBole's own SRGNN. Importing RecBole's sequential models switches on autograd anomaly
    detection for the whole process (a side effect of its sine.py); undo that here."""
    anomaly = (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled())
    from recbole.model.sequential_recommender.srgnn import SRGNN as RecBoleSRGNN

    torch.autograd.set_detect_anomaly(*anomaly)
    return RecBoleSRGNN


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    """A RecBole atomic dataset ``tiny``: users walking through items raw1..raw20 with repeats."""
    root = tmp_path_factory.mktemp("recbole")
    (root / "tiny").mkdir()
    rng = np.random.default_rng(0)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(N_USERS):
        steps = rng.choice([0, 1, 1, 2], size=int(rng.integers(5, 10)))
        items = (int(rng.integers(0, N_ITEMS)) + np.cumsum(steps)) % N_ITEMS + 1
        lines += [f"u{user}\traw{item}\t{1000 * user + t}" for t, item in enumerate(items)]
    (root / "tiny" / "tiny.inter").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def recbole_setup(data_path, tmp_path, monkeypatch):
    """``build(model_class, dataset="tiny", **config) -> (config, train, valid, test)`` on CPU.

    RecBole's Config parses sys.argv and sets CUDA_VISIBLE_DEVICES, and its Trainer writes
    ./log_tensorboard: all three are confined to this test.
    """
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.chdir(tmp_path)

    def build(model_class, dataset="tiny", **overrides):
        config_dict = {
            "data_path": str(data_path),
            "checkpoint_dir": str(tmp_path / "saved"),
            "gpu_id": "",
            "show_progress": False,
            "embedding_size": 8,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "MAX_ITEM_LIST_LENGTH": 6,
            "train_batch_size": 16,
            "eval_batch_size": 16,
            "epochs": 1,
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "metrics": ["Recall", "MRR"],
            "topk": [5],
            "valid_metric": "MRR@5",
            **overrides,
        }
        config = Config(model=model_class, dataset=dataset, config_dict=config_dict)
        return (config, *data_preparation(config, create_dataset(config)))

    return build


@pytest.fixture(scope="module")
def item_intents_file(tmp_path_factory):
    """An item-intent table for raw1..raw20 from a stage-1 run (fake LLM, hashing encoder)."""
    root = tmp_path_factory.mktemp("intents")
    dataset = tiny_dataset(n_items=N_ITEMS)
    infer_intents(dataset, IntentConfig(backend="fake", encoder="fake"), root / "stage1", progress=False)
    return write_item_intents(root / "item_intents.npz", dataset, root / "stage1")


def first_batch(loader):
    """The interaction of a loader's first batch (evaluation loaders yield tuples)."""
    batch = next(iter(loader))
    return batch[0] if isinstance(batch, tuple) else batch


@pytest.mark.parametrize("model_class", [SRGNN, LLM4SBR])
def test_config_data_and_recbole_trainer_run_the_model(recbole_setup, item_intents_file, model_class):
    config, train, valid, test = recbole_setup(model_class, item_intents_path=str(item_intents_file))
    torch.manual_seed(0)
    model = model_class(config, train.dataset).to(config["device"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = Trainer(config, model)
    with use_backend("torch"):
        best_score, _ = trainer.fit(train, valid, saved=False, show_progress=False)
        result = trainer.evaluate(test, load_best_model=False, show_progress=False)
    assert set(result) == {"recall@5", "mrr@5"}
    assert all(0 <= value <= 1 for value in result.values()) and np.isfinite(best_score)
    assert all(not torch.equal(before[name], p) for name, p in model.named_parameters())

    interaction = first_batch(test)
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
        session = model(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
    assert scores.shape == (len(interaction), train.dataset.item_num)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    assert session.shape == (len(interaction), 8)


@pytest.fixture
def ml100k_folder():
    """RecBole's bundled MovieLens-100k folder; skips the test where the wheel's data is absent."""
    try:
        return recbole_ml100k_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.mark.usefixtures("ml100k_folder")
def test_runs_on_the_movielens_100k_that_ships_with_recbole(recbole_setup):
    # Ten days of ml-100k keep RecBole's data preparation to about a second.
    config, train, _, test = recbole_setup(
        SRGNN, "ml-100k", val_interval={"timestamp": "[880000000,880864000)"}
    )
    model = SRGNN(config, train.dataset)
    interaction = first_batch(test)
    with torch.no_grad(), use_backend("torch"):
        scores = model.full_sort_predict(interaction)
    assert train.dataset.item_num > 100
    assert scores.shape == (len(interaction), train.dataset.item_num)
    assert torch.isfinite(scores[:, 1:]).all()


def recbole_samples(loader) -> tuple[int, str]:
    """(count, fingerprint) of the samples in a RecBole split: prefix raw ids > target raw id."""
    inter = loader.dataset.inter_feat
    tokens = loader.dataset.field2id_token["item_id"]
    rows, lengths = inter["item_id_list"].numpy(), inter["item_length"].numpy()
    prefixes = [tokens[row[:n]].tolist() for row, n in zip(rows, lengths, strict=True)]
    targets = tokens[inter["item_id"].numpy()].tolist()
    return len(targets), samples_fingerprint(prefixes, targets)


@pytest.mark.usefixtures("ml100k_folder")
def test_leave_one_out_ml100k_has_recbole_samples_in_recbole_order(recbole_setup):
    _, *loaders = recbole_setup(SRGNN, "ml-100k", MAX_ITEM_LIST_LENGTH=50)
    ours = load_dataset("ml-100k", "leave-one-out")
    for name, loader in zip(("train", "valid", "test"), loaders, strict=True):
        expected = (len(ours.splits[name]), split_fingerprint(ours, name))
        assert recbole_samples(loader) == expected, name


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_scores_match_recbole_srgnn_with_the_same_weights(recbole_setup, recbole_srgnn, backend):
    config, train, _, test = recbole_setup(SRGNN, step=2)
    torch.manual_seed(1)
    reference = recbole_srgnn(config, train.dataset).double()
    ours = SRGNN(config, train.dataset)
    ours.load_state_dict(convert_recbole_srgnn_state(reference.state_dict()))
    ours.double()
    build_graph = reference._get_slice

    def graph_in_float64(item_seq):
        alias, A, items, mask = build_graph(item_seq)
        return alias, A.double(), items, mask

    # RecBole builds A as float32 whatever the model's dtype.
    reference._get_slice = graph_in_float64

    evaluation, training = first_batch(test), first_batch(train)
    with torch.no_grad(), use_backend(backend):
        expected = reference.full_sort_predict(evaluation)
        torch.testing.assert_close(
            ours.full_sort_predict(evaluation)[:, 1:], expected[:, 1:], rtol=0, atol=1e-5
        )
        torch.testing.assert_close(ours.predict(training), reference.predict(training), rtol=0, atol=1e-5)
        logits = reference.full_sort_predict(training)[:, 1:]
        target = training[reference.POS_ITEM_ID] - 1
        expected_loss = torch.nn.functional.cross_entropy(logits, target)
        torch.testing.assert_close(ours.calculate_loss(training), expected_loss, rtol=0, atol=1e-5)

        # Copied without negating the update gate, the same weights give other scores.
        state = reference.state_dict()
        gates = {
            f"model.encoder.gnn.{name}": state[f"gnn.{name}"] for name in ("w_ih", "w_hh", "b_ih", "b_hh")
        }
        ours.load_state_dict({**convert_recbole_srgnn_state(state), **gates})
        assert not torch.allclose(ours.full_sort_predict(evaluation)[:, 1:], expected[:, 1:], atol=1e-3)
    assert not torch.is_anomaly_enabled()


def test_convert_rejects_a_foreign_state_dict():
    with pytest.raises(ValueError, match="unexpected keys.*'encoder.weight'"):
        convert_recbole_srgnn_state({"encoder.weight": torch.zeros(1)})


def test_loss_types_other_than_ce_are_rejected(recbole_setup):
    config, train, _, _ = recbole_setup(SRGNN)
    config["loss_type"] = "BPR"
    with pytest.raises(ValueError, match="loss_type 'CE' only"):
        SRGNN(config, train.dataset)


def test_item_intent_file_round_trip_and_validation(item_intents_file, tmp_path):
    item_ids, intents = read_item_intents(item_intents_file)
    assert item_ids.tolist() == [f"raw{i}" for i in range(1, N_ITEMS + 1)]
    assert intents.shape[:2] == (N_ITEMS, 2) and intents.dtype == np.float32
    assert np.abs(intents).sum() > 0
    np.savez(tmp_path / "bad.npz", item_ids=item_ids, intents=intents[:, :1])
    with pytest.raises(ValueError, match=r"bad.npz: intents must be \[20, 2, d_text\]"):
        read_item_intents(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        read_item_intents(tmp_path / "missing.npz")


def test_llm4sbr_session_intents_come_from_the_item_table(recbole_setup, item_intents_file, tmp_path):
    config, train, _, test = recbole_setup(LLM4SBR, item_intents_path=str(item_intents_file))
    model = LLM4SBR(config, train.dataset)
    item_ids, intents = read_item_intents(item_intents_file)
    row_of = {item_id: row for row, item_id in enumerate(item_ids.tolist())}
    tokens = train.dataset.field2id_token[model.ITEM_ID]
    interaction = first_batch(test)
    item_seq, item_seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    got = model.session_intents(item_seq, item_seq_len)
    for b in range(len(item_seq)):
        clicks = [row_of[tokens[item]] for item in item_seq[b, : item_seq_len[b]].tolist()]
        np.testing.assert_allclose(got[b, 0].numpy(), intents[clicks, 0].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[b, 1].numpy(), intents[clicks[-1], 1], rtol=1e-5, atol=1e-6)
    assert model.state_dict()["intent_long"].shape == (train.dataset.item_num, intents.shape[2])

    config["item_intents_path"] = None
    with pytest.raises(ValueError, match="needs config\\['item_intents_path'\\]"):
        LLM4SBR(config, train.dataset)
    np.savez(tmp_path / "other.npz", item_ids=np.array(["x1", "x2"]), intents=intents[:2])
    config["item_intents_path"] = str(tmp_path / "other.npz")
    with pytest.raises(ValueError, match=r"none of the dataset's \d+ item tokens"):
        LLM4SBR(config, train.dataset)
