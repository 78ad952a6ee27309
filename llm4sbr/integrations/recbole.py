"""llm4sbr's SRGNN and LLM4SBR as RecBole sequential models (needs the ``recbole`` extra).

Both classes follow RecBole's ``SequentialRecommender`` contract (``__init__(config, dataset)``,
``forward(item_seq, item_seq_len)``, ``calculate_loss``, ``predict``, ``full_sort_predict``) and
run RecBole's own data pipeline and trainer, with the session graph built by batched tensor ops
and the GNN step and readout in llm4sbr's kernels::

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from llm4sbr.integrations.recbole import SRGNN

    config = Config(model=SRGNN, dataset="ml-100k", config_dict={"train_neg_sample_args": None})
    train, valid, test = data_preparation(config, create_dataset(config))
    model = SRGNN(config, train.dataset).to(config["device"])
    trainer = Trainer(config, model)
    trainer.fit(train, valid)
    print(trainer.evaluate(test))

Config keys: ``embedding_size`` (d), ``step`` (GNN steps), ``loss_type`` ("CE", the only one),
``readout`` ("none": SR-GNN's raw attention weights; "softmax": masked softmax). LLM4SBR adds
``item_intents_path`` (required, see below), ``tau``, ``reduce_views``, ``uniformity_t`` and
``concat_order`` (see :class:`llm4sbr.models.LLM4SBR`). A key missing from the config takes the
class's ``DEFAULTS``; RecBole itself fills a class named SRGNN from its SRGNN.yaml (d = 64, one
step, CE), while for LLM4SBR, which RecBole has no yaml for, its Config wants ``loss_type: CE``
in the config. As for every RecBole model trained with CE, ``train_neg_sample_args`` must be None.

Differences from RecBole's ``recbole.model.sequential_recommender.SRGNN``:

* RecBole's GRU update is ``h' = (1 - z) h + z n``, SR-GNN's and llm4sbr's ``h' = z h + (1 - z) n``.
  :func:`convert_recbole_srgnn_state` negates the update-gate rows (sigmoid(-x) = 1 - sigmoid(x)),
  so a RecBole SRGNN state dict loaded through it gives the same scores.
* CE runs over items 1..n; RecBole's SRGNN also puts the padding row of the table in the softmax.
* ``full_sort_predict`` gives the padding column -inf (RecBole's evaluator sets it to -inf anyway).

LLM4SBR's intents. Stage 1 writes one vector per llm4sbr sample id; RecBole samples carry no such
id and come from different sessions (a user's whole history, cut to MAX_ITEM_LIST_LENGTH), so no
per-sample join is sound. The intent source is an item-level table keyed by raw item token
instead, built by :func:`write_item_intents` from a stage-1 folder and the training split of the
llm4sbr dataset it was run on, with :func:`llm4sbr.intent.lookup.item_intent_table` (the same
table the intent predictor uses): item i's long-term vector is the mean long-term intent over
the clicks on i, its short-term vector the mean short-term intent of the samples whose last
click is i. A RecBole session then gets, on the fly, long-term = the mean of its clicks'
long-term vectors and short-term = its last click's short-term vector. Items the training
samples never show get the mean intent; items absent from the table get zero vectors, so their
projected intent is the bias of T.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender

from llm4sbr import models
from llm4sbr.atomic import atomic_writer
from llm4sbr.config import TrainConfig
from llm4sbr.data.dataset import SessionDataset
from llm4sbr.intent.lookup import IntentLookup, item_intent_table

__all__ = [
    "LLM4SBR",
    "SRGNN",
    "convert_recbole_srgnn_state",
    "item_intent_table",
    "read_item_intents",
    "write_item_intents",
]

# RecBole 1.2.1's Config reads numpy aliases that numpy 2 removed. This module is imported before
# any Config(model=SRGNN, ...) is built, so restoring them here (same types, only when missing)
# lets that call work on numpy 2.
for _alias, _type in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
    if not hasattr(np, _alias):
        setattr(np, _alias, _type)


_RECBOLE_SRGNN_KEYS = {
    "item_embedding.weight": "model.encoder.embedding.weight",
    "gnn.w_ih": "model.encoder.gnn.w_ih",
    "gnn.w_hh": "model.encoder.gnn.w_hh",
    "gnn.b_ih": "model.encoder.gnn.b_ih",
    "gnn.b_hh": "model.encoder.gnn.b_hh",
    "gnn.b_iah": "model.encoder.gnn.b_iah",
    "gnn.b_ioh": "model.encoder.gnn.b_oah",
    "gnn.linear_edge_in.weight": "model.encoder.gnn.linear_edge_in.weight",
    "gnn.linear_edge_in.bias": "model.encoder.gnn.linear_edge_in.bias",
    "gnn.linear_edge_out.weight": "model.encoder.gnn.linear_edge_out.weight",
    "gnn.linear_edge_out.bias": "model.encoder.gnn.linear_edge_out.bias",
    "linear_one.weight": "model.encoder.readout.linear_one.weight",
    "linear_one.bias": "model.encoder.readout.linear_one.bias",
    "linear_two.weight": "model.encoder.readout.linear_two.weight",
    "linear_two.bias": "model.encoder.readout.linear_two.bias",
    "linear_three.weight": "model.encoder.readout.linear_three.weight",
    "linear_transform.weight": "model.linear_transform.weight",
    "linear_transform.bias": "model.linear_transform.bias",
}
_GRU_GATE_KEYS = ("gnn.w_ih", "gnn.w_hh", "gnn.b_ih", "gnn.b_hh")


class _RecBoleModel(SequentialRecommender):
    """RecBole's contract over one of llm4sbr's models, held as ``self.model``."""

    DEFAULTS: dict[str, Any] = {"embedding_size": 64, "step": 1, "loss_type": "CE", "readout": "none"}

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        loss_type = self.option(config, "loss_type")
        if loss_type != "CE":
            raise ValueError(f"{type(self).__name__} trains with loss_type 'CE' only, got {loss_type!r}")

    def option(self, config: Any, key: str) -> Any:
        """``config[key]``, or this class's default when the config does not set it."""
        value = config[key]
        return self.DEFAULTS[key] if value is None else value

    def session_batch(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> dict[str, torch.Tensor]:
        """The llm4sbr batch of item_seq [B, L] (right-padded) and item_seq_len [B]."""
        return {"item_seq": item_seq, "item_seq_len": item_seq_len}

    def _interaction_batch(self, interaction: Any) -> dict[str, torch.Tensor]:
        return self.session_batch(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """item_seq [B, L]; item_seq_len [B] -> session representation [B, d]."""
        return self.model(self.session_batch(item_seq, item_seq_len))

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        """Softmax CE of the next item over items 1..n_items-1 (scores against the item embeddings)."""
        batch = self._interaction_batch(interaction)
        batch["target"] = interaction[self.POS_ITEM_ID]
        return self.model.calculate_loss(batch)

    def predict(self, interaction: Any) -> torch.Tensor:
        """Score of ``interaction[ITEM_ID]`` for each session -> [B]."""
        batch = self._interaction_batch(interaction)
        batch["item_id"] = interaction[self.ITEM_ID]
        return self.model.predict(batch)

    def full_sort_predict(self, interaction: Any) -> torch.Tensor:
        """Scores of every item -> [B, n_items], column = RecBole item id, column 0 (padding) -inf."""
        return self.model.full_sort_predict(self._interaction_batch(interaction))


class SRGNN(_RecBoleModel):
    """SR-GNN (hybrid readout) on llm4sbr's kernels: :class:`llm4sbr.models.SRGNN` as ``self.model``."""

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        self.model = models.SRGNN(
            self.n_items - 1,
            dim=self.option(config, "embedding_size"),
            steps=self.option(config, "step"),
            readout=self.option(config, "readout"),
        )


class LLM4SBR(_RecBoleModel):
    """LLM4SBR with intents from an item-level table: :class:`llm4sbr.models.LLM4SBR` as ``self.model``.

    ``config["item_intents_path"]`` names a file from :func:`write_item_intents`; the table,
    re-indexed by RecBole's item ids, is kept in the buffers ``intent_long`` and ``intent_short``
    [n_items, d_text] (row 0 = padding = 0), so checkpoints carry it.
    """

    DEFAULTS: dict[str, Any] = {
        **_RecBoleModel.DEFAULTS,
        "item_intents_path": None,
        "tau": TrainConfig.tau,
        "reduce_views": TrainConfig.reduce_views,
        "uniformity_t": TrainConfig.uniformity_t,
        "concat_order": TrainConfig.concat_order,
    }

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        path = self.option(config, "item_intents_path")
        if path is None:
            raise ValueError(
                "LLM4SBR needs config['item_intents_path']: an item-intent table written by "
                "llm4sbr.integrations.recbole.write_item_intents"
            )
        item_ids, intents = read_item_intents(path)
        tokens = [str(token) for token in dataset.field2id_token[self.ITEM_ID]]
        row_of = {item_id: row for row, item_id in enumerate(item_ids.tolist())}
        rows = np.array([row_of.get(token, -1) for token in tokens[1:]], dtype=np.int64)
        covered = rows >= 0
        if not covered.any():
            raise ValueError(
                f"{path}: none of the dataset's {len(rows)} item tokens (e.g. {tokens[1:4]}) is in the "
                f"table (e.g. {item_ids[:3].tolist()}); build it from the same item ids"
            )
        table = np.zeros((self.n_items, 2, intents.shape[2]), dtype=np.float32)
        table[1:][covered] = intents[rows[covered]]
        self.logger.info(f"LLM4SBR item intents: {int(covered.sum())} of {len(rows)} items from {path}")
        self.register_buffer("intent_long", torch.from_numpy(np.ascontiguousarray(table[:, 0])))
        self.register_buffer("intent_short", torch.from_numpy(np.ascontiguousarray(table[:, 1])))
        self.model = models.LLM4SBR(
            self.n_items - 1,
            d_text=intents.shape[2],
            dim=self.option(config, "embedding_size"),
            steps=self.option(config, "step"),
            readout=self.option(config, "readout"),
            tau=self.option(config, "tau"),
            reduce_views=self.option(config, "reduce_views"),
            uniformity_t=self.option(config, "uniformity_t"),
            concat_order=self.option(config, "concat_order"),
        )

    def session_intents(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """[B, 2, d_text]: (mean long-term vector of the clicks, short-term vector of the last click)."""
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        clicks = torch.where(positions[None, :] < item_seq_len[:, None], item_seq, 0)
        long = F.embedding_bag(clicks, self.intent_long, mode="sum")
        long = long / item_seq_len[:, None].to(long.dtype)
        short = self.intent_short[item_seq.gather(1, (item_seq_len - 1)[:, None])[:, 0]]
        return torch.stack([long, short], dim=1)

    def session_batch(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = super().session_batch(item_seq, item_seq_len)
        batch["intent"] = self.session_intents(item_seq, item_seq_len)
        return batch


def convert_recbole_srgnn_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of RecBole's SRGNN -> the state dict of :class:`SRGNN` that gives the same scores.

    Renames the keys (RecBole's ``gnn.b_ioh`` is SR-GNN's ``b_oah``) and negates rows [d, 2d)
    (the update gate) of ``gnn.w_ih``, ``gnn.w_hh``, ``gnn.b_ih`` and ``gnn.b_hh``: RecBole updates
    ``h' = (1 - z) h + z n``, llm4sbr ``h' = z h + (1 - z) n``.
    """
    unknown = sorted(set(state) - set(_RECBOLE_SRGNN_KEYS))
    if unknown:
        raise ValueError(f"not a RecBole SRGNN state dict: unexpected keys {unknown}")
    converted = {}
    for key, value in state.items():
        if key in _GRU_GATE_KEYS:
            d = value.shape[0] // 3
            value = value.clone()
            value[d : 2 * d] = -value[d : 2 * d]
        converted[_RECBOLE_SRGNN_KEYS[key]] = value
    return converted


def write_item_intents(
    path: str | os.PathLike, dataset: SessionDataset, intents_dir: str | os.PathLike
) -> Path:
    """Write the item-intent table of a stage-1 folder (``llm4sbr infer-intents --out DIR``).

    ``dataset`` is the llm4sbr dataset that folder was computed on; the table comes from its
    training split. The ``.npz`` file (written atomically) holds ``item_ids`` [n_items] (raw
    item ids: RecBole tokens when the data came from RecBole atomic files), ``intents``
    [n_items, 2, d_text] float32 and ``counts`` [n_items, 2] (see
    :func:`llm4sbr.intent.lookup.item_intent_table`). Returns the path.
    """
    train = dataset.splits["train"]
    lookup = IntentLookup.load(intents_dir, dataset, splits=("train",))
    table, counts = item_intent_table(train, lookup(torch.from_numpy(train.sample_ids)), dataset.n_items)
    table, counts = table.numpy(), counts.numpy()
    path = Path(path)
    with atomic_writer(path) as f:
        np.savez(
            f,
            item_ids=np.asarray(dataset.item_raw_ids[1:], dtype=str),
            intents=table[1:],
            counts=counts[1:],
        )
    return path


def read_item_intents(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a table from :func:`write_item_intents` -> (item_ids [n] str, intents [n, 2, d_text] float32).

    Raises FileNotFoundError or ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such item-intent table: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            item_ids, intents = data["item_ids"], data["intents"]
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(f"{path}: not an item-intent table ({type(exc).__name__}: {exc})") from exc
    if item_ids.ndim != 1 or item_ids.dtype.kind != "U":
        raise ValueError(f"{path}: item_ids must be [n] strings, got {item_ids.shape} {item_ids.dtype}")
    if intents.ndim != 3 or intents.shape[:2] != (len(item_ids), 2) or intents.dtype.kind != "f":
        raise ValueError(
            f"{path}: intents must be [{len(item_ids)}, 2, d_text] floats, "
            f"got {intents.shape} {intents.dtype}"
        )
    if len(np.unique(item_ids)) != len(item_ids):
        raise ValueError(f"{path}: duplicate item ids")
    return item_ids, intents.astype(np.float32, copy=False)
