"""A drop-in ``SessionGraph`` for SR-GNN training scripts, with llm4sbr's kernels underneath.

The reference SR-GNN PyTorch code (Wu et al., AAAI 2019) trains a ``SessionGraph(opt, n_node)``
module. This one has the same constructor, attributes, parameter names, parameter order,
initialisation and methods, so a script that builds the model, calls ``model(items, A)`` and
``model.compute_scores(seq_hidden, mask)``, steps ``model.optimizer``/``model.scheduler`` and saves
or loads ``state_dict()`` (optimizer state included) runs unchanged; the GNN step runs
:func:`llm4sbr.kernels.gnn_step` and the readout :func:`llm4sbr.kernels.attn_pool`, both Triton on
CUDA. Swap the import in the script's ``model.py``::

    from llm4sbr.integrations.srgnn import SessionGraph

Data keeps SR-GNN's conventions: item ids 1..n_node-1 (0 = padding), ``inputs`` [B, N] the unique
node ids of each session, ``A`` [B, N, 2N] = ``[A_in | A_out]`` degree-normalised, ``mask`` [B, L]
1 at the clicks of right-padded sessions, targets scored against ``embedding.weight[1:]`` (column
j = item j + 1). SR-GNN's ``(sequences, targets)`` pickles are read and written by
:func:`read_srgnn_pickle` and :func:`write_srgnn_pickle`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llm4sbr.data.loaders import read_srgnn_pickle, write_srgnn_pickle
from llm4sbr.kernels import attn_pool
from llm4sbr.models.layers import GNNCell, reset_uniform

__all__ = ["GNN", "SessionGraph", "read_srgnn_pickle", "write_srgnn_pickle"]


class GNN(GNNCell):
    """SR-GNN's gated GNN: ``step`` propagation steps over ``A = [A_in | A_out]``.

    :class:`llm4sbr.models.layers.GNNCell` registers ``w_ih`` [3d, 2d], ``w_hh`` [3d, d], ``b_ih``,
    ``b_hh`` [3d], ``b_iah``, ``b_oah`` [d], ``linear_edge_in``, ``linear_edge_out`` in the
    reference's order; ``linear_edge_f`` follows, unused as in SR-GNN and kept only because
    checkpoints contain it.
    """

    def __init__(self, hidden_size: int, step: int = 1) -> None:
        super().__init__(hidden_size)
        self.step = step
        self.hidden_size = hidden_size
        self.input_size = hidden_size * 2
        self.gate_size = hidden_size * 3
        self.linear_edge_f = nn.Linear(hidden_size, hidden_size, bias=True)
        reset_uniform(self.linear_edge_f, hidden_size)

    def GNNCell(self, A: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:  # noqa: N802 - SR-GNN's name
        """One step. A [B, N, 2N]; hidden [B, N, d] -> [B, N, d]."""
        n = hidden.shape[1]
        A = A.to(hidden.dtype)
        return super().forward(hidden, A[:, :, :n], A[:, :, n : 2 * n])

    def forward(self, A: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """A [B, N, 2N]; hidden [B, N, d] -> hidden after ``step`` steps [B, N, d]."""
        for _ in range(self.step):
            hidden = self.GNNCell(A, hidden)
        return hidden


class SessionGraph(nn.Module):
    """SR-GNN's model: ``SessionGraph(opt, n_node)``.

    Reads ``opt.hiddenSize`` (d), ``opt.batchSize``, ``opt.nonhybrid``, ``opt.step``, ``opt.lr``,
    ``opt.l2`` (Adam weight decay), ``opt.lr_dc_step`` and ``opt.lr_dc`` (StepLR). ``n_node`` is
    the number of items + 1 (row 0 of ``embedding`` is padding). Every parameter starts
    U(-1/sqrt(d), 1/sqrt(d)).
    """

    def __init__(self, opt: Any, n_node: int) -> None:
        super().__init__()
        self.hidden_size = opt.hiddenSize
        self.n_node = n_node
        self.batch_size = opt.batchSize
        self.nonhybrid = opt.nonhybrid
        self.embedding = nn.Embedding(n_node, self.hidden_size)
        self.gnn = GNN(self.hidden_size, step=opt.step)
        self.linear_one = nn.Linear(self.hidden_size, self.hidden_size, bias=True)
        self.linear_two = nn.Linear(self.hidden_size, self.hidden_size, bias=True)
        self.linear_three = nn.Linear(self.hidden_size, 1, bias=False)
        self.linear_transform = nn.Linear(self.hidden_size * 2, self.hidden_size, bias=True)
        self.loss_function = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.Adam(self.parameters(), lr=opt.lr, weight_decay=opt.l2)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=opt.lr_dc_step, gamma=opt.lr_dc
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(d), 1/sqrt(d)), drawn in registration order."""
        reset_uniform(self, self.hidden_size)

    def compute_scores(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scores of every item. hidden [B, L, d] per-click states; mask [B, L] (nonzero = a click,
        right-padded) -> [B, n_node - 1], column j = item j + 1.

        ``a = sum_j e_j h_j`` over the clicks with ``e_j = w3^T sigmoid(W1 h_last + W2 h_j)`` (no
        softmax), then ``linear_transform([a; h_last])`` unless ``nonhybrid``.
        """
        if mask.shape != hidden.shape[:2]:
            raise ValueError(f"mask must be [B, L] = {list(hidden.shape[:2])}, got {list(mask.shape)}")
        clicks = mask != 0
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), clicks.sum(1) - 1]
        a = attn_pool(
            hidden,
            clicks,
            self.linear_one(last),
            self.linear_two.weight,
            self.linear_two.bias,
            self.linear_three.weight[0],
            normalize="none",
        )
        if not self.nonhybrid:
            a = self.linear_transform(torch.cat([a, last], dim=1))
        return a @ self.embedding.weight[1:].T

    def forward(self, inputs: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """inputs [B, N] node item ids; A [B, N, 2N] = [A_in | A_out] -> node states [B, N, d]."""
        batch, n = inputs.shape
        if A.shape != (batch, n, 2 * n):
            raise ValueError(f"A must be [B, N, 2N] = [{batch}, {n}, {2 * n}], got {list(A.shape)}")
        return self.gnn(A, self.embedding(inputs))
