"""llm4sbr.integrations.srgnn.SessionGraph against the reference SR-GNN interface: parameter
names/order/init, scores against an oracle written here from the spec, the Triton path against
the reference path, checkpoints (optimizer state included), and an SR-GNN-style training loop
over SR-GNN pickles."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llm4sbr.integrations.srgnn import SessionGraph, read_srgnn_pickle, write_srgnn_pickle
from llm4sbr.kernels import use_backend

N_NODE, D = 13, 8


pytestmark = pytest.mark.usefixtures("one_thread")


def make_opt(**overrides: object) -> SimpleNamespace:
    """The argparse options SR-GNN's main.py passes to SessionGraph."""
    opt = dict(hiddenSize=D, batchSize=4, nonhybrid=False, step=1, lr=0.01, l2=1e-5, lr_dc_step=3, lr_dc=0.1)
    opt.update(overrides)
    return SimpleNamespace(**opt)


class SliceData:
    """SR-GNN-style batches of (sequence, target) samples: clicks right-padded with 0, nodes =
    the sorted unique ids of the padded row (0 among them when there is padding), A = [A_in | A_out]
    with A_in[v, u] = 1/indeg(v) and A_out[u, v] = 1/outdeg(u) for each consecutive pair u -> v."""

    def __init__(self, sequences: list[list[int]], targets: list[int]) -> None:
        self.sequences = sequences
        self.targets = np.asarray(targets, dtype=np.int64)

    def batches(self, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(len(self.targets))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def get_slice(self, index: np.ndarray) -> tuple[torch.Tensor, ...]:
        """-> alias [B, L], A [B, N, 2N] float32, items [B, N], mask [B, L], targets [B]."""
        lengths = np.array([len(self.sequences[i]) for i in index])
        L = int(lengths.max())
        inputs = np.zeros((len(index), L), dtype=np.int64)
        for row, i in enumerate(index):
            inputs[row, : lengths[row]] = self.sequences[i]
        nodes = [np.unique(row) for row in inputs]
        N = max(len(node) for node in nodes)
        items = np.zeros((len(index), N), dtype=np.int64)
        A = np.zeros((len(index), N, 2 * N))
        alias = np.zeros((len(index), L), dtype=np.int64)
        for row, node in enumerate(nodes):
            items[row, : len(node)] = node
            alias[row] = np.searchsorted(node, inputs[row])
            adjacency = np.zeros((N, N))
            for t in range(lengths[row] - 1):
                adjacency[alias[row, t], alias[row, t + 1]] = 1.0
            A[row, :, :N] = (adjacency / np.maximum(adjacency.sum(0), 1)[None, :]).T
            A[row, :, N:] = adjacency / np.maximum(adjacency.sum(1), 1)[:, None]
        mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.int64)
        return (
            torch.from_numpy(alias),
            torch.from_numpy(A).float(),
            torch.from_numpy(items),
            torch.from_numpy(mask),
            torch.from_numpy(self.targets[index]),
        )


def srgnn_forward(
    model: SessionGraph, data: SliceData, index: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """What SR-GNN's training script does per batch: node states -> click states -> scores."""
    alias, A, items, mask, targets = data.get_slice(index)
    hidden = model(items, A.to(model.embedding.weight.dtype))
    seq_hidden = torch.stack([hidden[b][alias[b]] for b in range(len(alias))])
    return targets, model.compute_scores(seq_hidden, mask)


def walk_samples(n_sessions: int, n_items: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Prefix-augmented sessions that mostly step to the next item id (learnable), with repeats."""
    rng = np.random.default_rng(seed)
    sequences, targets = [], []
    for _ in range(n_sessions):
        length = int(rng.integers(2, 7))
        start = int(rng.integers(0, n_items))
        session = ((start + np.cumsum(rng.choice([0, 1, 1, 1], size=length))) % n_items + 1).tolist()
        for cut in range(1, length):
            sequences.append(session[:cut])
            targets.append(session[cut])
    return sequences, targets


def oracle_scores(model: SessionGraph, data: SliceData, index: np.ndarray) -> torch.Tensor:
    """SR-GNN's scores in plain torch from the paper's equations, reading the module's weights."""
    p = dict(model.named_parameters())
    alias, A, items, mask, _ = data.get_slice(index)
    A = A.to(p["embedding.weight"].dtype)
    h = p["embedding.weight"][items]
    N = items.shape[1]
    for _ in range(model.gnn.step):
        message_in = h @ p["gnn.linear_edge_in.weight"].T + p["gnn.linear_edge_in.bias"]
        message_out = h @ p["gnn.linear_edge_out.weight"].T + p["gnn.linear_edge_out.bias"]
        x = torch.cat(
            [A[:, :, :N] @ message_in + p["gnn.b_iah"], A[:, :, N:] @ message_out + p["gnn.b_oah"]], -1
        )
        gi = (x @ p["gnn.w_ih"].T + p["gnn.b_ih"]).chunk(3, dim=-1)
        gh = (h @ p["gnn.w_hh"].T + p["gnn.b_hh"]).chunk(3, dim=-1)
        reset, update = torch.sigmoid(gi[0] + gh[0]), torch.sigmoid(gi[1] + gh[1])
        candidate = torch.tanh(gi[2] + reset * gh[2])
        h = update * h + (1 - update) * candidate
    seq = torch.stack([h[b][alias[b]] for b in range(len(alias))])
    last = seq[torch.arange(len(seq)), mask.sum(1) - 1]
    q1 = last @ p["linear_one.weight"].T + p["linear_one.bias"]
    q2 = seq @ p["linear_two.weight"].T + p["linear_two.bias"]
    weights = torch.sigmoid(q1[:, None, :] + q2) @ p["linear_three.weight"][0]
    session = (weights[..., None] * seq * mask[..., None]).sum(1)
    if not model.nonhybrid:
        session = torch.cat([session, last], 1) @ p["linear_transform.weight"].T + p["linear_transform.bias"]
    return session @ p["embedding.weight"][1:].T


def test_interface_matches_reference_sessiongraph():
    torch.manual_seed(0)
    opt = make_opt()
    model = SessionGraph(opt, N_NODE)
    d = D
    expected = [
        ("embedding.weight", (N_NODE, d)),
        ("gnn.w_ih", (3 * d, 2 * d)),
        ("gnn.w_hh", (3 * d, d)),
        ("gnn.b_ih", (3 * d,)),
        ("gnn.b_hh", (3 * d,)),
        ("gnn.b_iah", (d,)),
        ("gnn.b_oah", (d,)),
        ("gnn.linear_edge_in.weight", (d, d)),
        ("gnn.linear_edge_in.bias", (d,)),
        ("gnn.linear_edge_out.weight", (d, d)),
        ("gnn.linear_edge_out.bias", (d,)),
        ("gnn.linear_edge_f.weight", (d, d)),
        ("gnn.linear_edge_f.bias", (d,)),
        ("linear_one.weight", (d, d)),
        ("linear_one.bias", (d,)),
        ("linear_two.weight", (d, d)),
        ("linear_two.bias", (d,)),
        ("linear_three.weight", (1, d)),
        ("linear_transform.weight", (d, 2 * d)),
        ("linear_transform.bias", (d,)),
    ]
    assert [(name, tuple(p.shape)) for name, p in model.named_parameters()] == expected
    assert list(model.state_dict()) == [name for name, _ in expected]
    assert (model.hidden_size, model.n_node, model.batch_size, model.nonhybrid) == (d, N_NODE, 4, False)
    assert model.gnn.step == 1
    assert isinstance(model.loss_function, torch.nn.CrossEntropyLoss)
    assert isinstance(model.optimizer, torch.optim.Adam)
    group = model.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (opt.lr, opt.l2)
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
    assert isinstance(model.scheduler, torch.optim.lr_scheduler.StepLR)
    assert (model.scheduler.step_size, model.scheduler.gamma) == (opt.lr_dc_step, opt.lr_dc)
    bound = 1 / math.sqrt(d)
    for name, p in model.named_parameters():
        assert p.abs().max() <= bound, name
    everything = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert everything.abs().max() > 0.9 * bound and abs(float(everything.mean())) < 0.1 * bound


@pytest.mark.parametrize("nonhybrid, step", [(False, 1), (True, 2)])
def test_scores_match_the_oracle_on_the_triton_path(nonhybrid, step):
    torch.manual_seed(1)
    model = SessionGraph(make_opt(nonhybrid=nonhybrid, step=step), N_NODE).double()
    data = SliceData([[3, 3, 5, 3], [7], [1, 12, 2]], [4, 8, 3])
    index = np.arange(3)
    _, scores = srgnn_forward(model, data, index)
    assert scores.shape == (3, N_NODE - 1)
    torch.testing.assert_close(scores, oracle_scores(model, data, index))


def test_triton_path_gives_the_reference_loss_and_gradients():
    torch.manual_seed(2)
    model = SessionGraph(make_opt(step=2), N_NODE).double()
    data = SliceData([[3, 3, 5, 3], [7], [1, 12, 2, 12]], [4, 8, 3])
    results = []
    for backend in ("auto", "torch"):
        model.optimizer.zero_grad()
        with use_backend(backend):
            targets, scores = srgnn_forward(model, data, np.arange(3))
            loss = model.loss_function(scores, targets - 1)
            loss.backward()
        results.append(
            (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    (loss_triton, grads_triton), (loss_ref, grads_ref) = results
    torch.testing.assert_close(loss_triton, loss_ref)
    assert (
        set(grads_triton)
        == set(grads_ref)
        == {n for n, _ in model.named_parameters()}
        - {
            "gnn.linear_edge_f.weight",
            "gnn.linear_edge_f.bias",
        }
    )
    for name in grads_ref:
        torch.testing.assert_close(grads_triton[name], grads_ref[name], msg=name)


def test_forward_rejects_an_adjacency_of_the_wrong_width():
    model = SessionGraph(make_opt(), N_NODE)
    with pytest.raises(ValueError, match=r"A must be \[B, N, 2N\]"):
        model(torch.ones(2, 3, dtype=torch.long), torch.zeros(2, 3, 3))


def train_epoch(model: SessionGraph, data: SliceData, rng: np.random.Generator) -> float:
    """One epoch of SR-GNN's training loop; returns the mean batch loss."""
    model.train()
    losses = []
    for index in data.batches(model.batch_size, rng):
        model.optimizer.zero_grad()
        targets, scores = srgnn_forward(model, data, index)
        loss = model.loss_function(scores, targets - 1)
        loss.backward()
        model.optimizer.step()
        losses.append(loss.item())
    model.scheduler.step()
    return float(np.mean(losses))


def hit_at(model: SessionGraph, data: SliceData, k: int) -> float:
    model.eval()
    with torch.no_grad():
        targets, scores = srgnn_forward(model, data, np.arange(len(data.targets)))
    top = scores.topk(k, dim=1).indices + 1
    return float((top == targets[:, None]).any(1).float().mean())


def test_srgnn_training_loop_on_pickles_learns_and_resumes_from_a_checkpoint(tmp_path):
    n_items = N_NODE - 1
    write_srgnn_pickle(tmp_path / "train.txt", *walk_samples(40, n_items, seed=0))
    data = SliceData(*read_srgnn_pickle(tmp_path / "train.txt"))
    torch.manual_seed(3)
    opt = make_opt(hiddenSize=16, batchSize=32, lr=0.01, lr_dc_step=20)
    model = SessionGraph(opt, N_NODE)
    rng = np.random.default_rng(0)
    with use_backend("torch"):
        hit_before = hit_at(model, data, 3)
        losses = [train_epoch(model, data, rng) for _ in range(12)]
        hit_after = hit_at(model, data, 3)
        assert losses[-1] < 0.7 * losses[0]
        assert hit_after > hit_before + 0.2

        torch.save(
            {"model": model.state_dict(), "optimizer": model.optimizer.state_dict()}, tmp_path / "ckpt.pt"
        )
        resumed = SessionGraph(opt, N_NODE)
        checkpoint = torch.load(tmp_path / "ckpt.pt")
        resumed.load_state_dict(checkpoint["model"])
        resumed.optimizer.load_state_dict(checkpoint["optimizer"])
        index = np.arange(len(data.targets))
        torch.testing.assert_close(
            srgnn_forward(resumed, data, index)[1], srgnn_forward(model, data, index)[1]
        )
        train_epoch(model, data, np.random.default_rng(1))
        train_epoch(resumed, data, np.random.default_rng(1))
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
