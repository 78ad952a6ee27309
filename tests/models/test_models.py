import pytest
import torch
from fakes import fake_intents, tiny_dataset

from llm4sbr.kernels import use_backend
from llm4sbr.models import LLM4SBR, SRGNN, SessionGraphEncoder

N_ITEMS, D_TEXT = 23, 6


def make_batch(lengths, L=None, n_items=N_ITEMS, seed=0, d_text=D_TEXT):
    g = torch.Generator().manual_seed(seed)
    L = L or max(lengths)
    item_seq = torch.zeros(len(lengths), L, dtype=torch.long)
    for b, n in enumerate(lengths):
        item_seq[b, :n] = torch.randint(1, n_items + 1, (n,), generator=g)
    item_seq[0, 1] = item_seq[0, 0]  # a consecutive repeat
    return {
        "item_seq": item_seq,
        "item_seq_len": torch.tensor(lengths),
        "target": torch.randint(1, n_items + 1, (len(lengths),), generator=g),
        "item_id": torch.randint(1, n_items + 1, (len(lengths),), generator=g),
        "intent": torch.randn(len(lengths), 2, d_text, generator=g),
    }


def models(dtype=torch.float64):
    torch.manual_seed(0)
    return [SRGNN(N_ITEMS, dim=8).to(dtype), LLM4SBR(N_ITEMS, D_TEXT, dim=8).to(dtype)]


pytestmark = pytest.mark.usefixtures("reference_path")


def test_encoder_shapes_and_local_is_last_click_state():
    enc = SessionGraphEncoder(N_ITEMS, dim=8)
    batch = make_batch([3, 1, 5])
    local, global_ = enc(batch["item_seq"], batch["item_seq_len"])
    assert local.shape == global_.shape == (3, 8)
    # A length-1 session with "none" readout: global = e_1 * h_1 and local = h_1 are parallel.
    cos = torch.nn.functional.cosine_similarity(local[1], global_[1], dim=0)
    assert abs(abs(float(cos.detach())) - 1) < 1e-5


@pytest.mark.parametrize("model_index", [0, 1])
def test_outputs_and_every_parameter_gets_a_gradient(model_index):
    model = models()[model_index]
    batch = make_batch([3, 1, 5, 2])
    batch["intent"] = batch["intent"].double()
    scores = model.full_sort_predict(batch)
    assert scores.shape == (4, N_ITEMS + 1)
    assert torch.isneginf(scores[:, 0]).all()
    picked = model.predict(batch)
    assert torch.allclose(picked, scores.gather(1, batch["item_id"][:, None])[:, 0])
    loss = model.calculate_loss(batch)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"


@pytest.mark.parametrize("model_index", [0, 1])
def test_extra_padding_never_changes_scores(model_index):
    model = models()[model_index]
    batch = make_batch([3, 1, 5])
    batch["intent"] = batch["intent"].double()
    padded = dict(batch, item_seq=torch.cat([batch["item_seq"], torch.zeros(3, 4, dtype=torch.long)], 1))
    assert torch.allclose(model.full_sort_predict(batch), model.full_sort_predict(padded), atol=1e-12)


@pytest.mark.parametrize("model_index", [0, 1])
def test_triton_path_gives_the_reference_loss_and_gradients(model_index):
    with use_backend("triton"):
        model = models(torch.float32)[model_index]
    batch = make_batch([3, 1, 4])
    grads = {}
    for backend in ("torch", "triton"):
        model.zero_grad()
        with use_backend(backend):
            loss = model.calculate_loss(batch)
            loss.backward()
        grads[backend] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    assert torch.allclose(grads["torch"][0], grads["triton"][0], rtol=1e-5, atol=1e-6)
    for name, g in grads["torch"][1].items():
        assert torch.allclose(g, grads["triton"][1][name], rtol=1e-4, atol=1e-6), name


def test_llm4sbr_tau_zero_is_plain_cross_entropy():
    model = models()[1]
    batch = make_batch([3, 2])
    batch["intent"] = batch["intent"].double()
    with_au = model.calculate_loss(batch)
    model.tau = 0.0
    ce = torch.nn.functional.cross_entropy(model.full_sort_predict(batch)[:, 1:], batch["target"] - 1)
    assert torch.allclose(model.calculate_loss(batch), ce)
    assert not torch.allclose(with_au, ce)


@pytest.mark.parametrize("model_index", [0, 1])
def test_training_loss_gradients_equal_the_unfused_scoring(model_index):
    # The fused head takes the whole tied table (first_class=1): every gradient, the padding
    # row's included, must be that of softmax cross-entropy over the scored items.
    model = models()[model_index]
    model.tau = 0.0  # LLM4SBR: the recommendation loss alone
    batch = make_batch([3, 1, 5, 2])
    batch["intent"] = batch["intent"].double()
    grads = []
    for loss_of in (
        model.calculate_loss,
        lambda b: torch.nn.functional.cross_entropy(model.full_sort_predict(b)[:, 1:], b["target"] - 1),
    ):
        model.zero_grad(set_to_none=True)
        loss_of(batch).backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    for name, grad in grads[1].items():
        torch.testing.assert_close(grads[0][name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_concat_order_code_is_a_column_permutation_of_paper():
    torch.manual_seed(1)
    paper = LLM4SBR(N_ITEMS, D_TEXT, dim=8, concat_order="paper").double()
    code = LLM4SBR(N_ITEMS, D_TEXT, dim=8, concat_order="code").double()
    code.load_state_dict(paper.state_dict())
    with torch.no_grad():
        w = paper.linear_transform.weight
        code.linear_transform.weight.copy_(torch.cat([w[:, 8:], w[:, :8]], dim=1))
    batch = make_batch([4, 2])
    batch["intent"] = batch["intent"].double()
    assert torch.allclose(paper.full_sort_predict(batch), code.full_sort_predict(batch))


def test_views_sum_doubles_the_auxiliary_term():
    torch.manual_seed(2)
    mean = LLM4SBR(N_ITEMS, D_TEXT, dim=8, reduce_views="mean").double()
    total = LLM4SBR(N_ITEMS, D_TEXT, dim=8, reduce_views="sum").double()
    total.load_state_dict(mean.state_dict())
    batch = make_batch([4, 2, 3])
    batch["intent"] = batch["intent"].double()
    mean_aux = mean.calculate_loss(batch)
    mean.tau = 0.0
    ce = mean.calculate_loss(batch)
    assert torch.allclose(total.calculate_loss(batch) - ce, 2 * (mean_aux - ce))


def test_llm4sbr_rejects_missing_or_misshapen_intents():
    model = models()[1]
    batch = make_batch([2, 2])
    with pytest.raises(ValueError, match="intent"):
        model.full_sort_predict({k: v for k, v in batch.items() if k != "intent"})
    with pytest.raises(ValueError, match=r"\[B, 2, 6\]"):
        model.full_sort_predict(dict(batch, intent=torch.randn(2, 2, 5, dtype=torch.float64)))


def test_intents_change_llm4sbr_scores_but_srgnn_ignores_them():
    srgnn, llm = models()
    batch = make_batch([3, 4])
    batch["intent"] = batch["intent"].double()
    other = dict(batch, intent=batch["intent"] + 1.0)
    assert torch.equal(srgnn.full_sort_predict(batch), srgnn.full_sort_predict(other))
    assert not torch.allclose(llm.full_sort_predict(batch), llm.full_sort_predict(other))


def test_fake_intents_cover_every_sample():
    ds = tiny_dataset()
    vectors, ids = fake_intents(ds)
    assert vectors.shape == (sum(len(s) for s in ds.splits.values()), 2, 12)
    assert len(set(ids.tolist())) == len(ids)


def sessions_batch(sessions: list[list[int]], extra: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    """A float64 batch of exactly ``sessions``, padded by ``extra`` columns."""
    batch = make_batch([len(s) for s in sessions], L=max(len(s) for s in sessions) + extra, seed=seed)
    batch["item_seq"].zero_()
    for row, session in enumerate(sessions):
        batch["item_seq"][row, : len(session)] = torch.tensor(session)
    batch["intent"] = batch["intent"].double()
    return batch


# Repeated items, a repeated pair, a self-loop, a length-1 session and a long one.
SESSIONS = [[3, 5, 3, 5, 7], [4], [9, 9, 2], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [6, 6]]


def outputs_and_grads(model: torch.nn.Module, batch: dict, packed: bool) -> tuple[torch.Tensor, ...]:
    model.encoder.packed = packed
    model.zero_grad()
    with use_backend("torch"):
        loss = model.calculate_loss(batch)
        loss.backward()
        scores = model.full_sort_predict(batch)
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return loss.detach(), scores.detach(), grads


@pytest.mark.parametrize("readout", ["none", "softmax"])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("model_class", [SRGNN, LLM4SBR])
def test_packed_path_equals_the_padded_reference_to_float64_rounding(
    model_class, steps: int, readout: str
) -> None:
    torch.manual_seed(0)
    args = (N_ITEMS, D_TEXT) if model_class is LLM4SBR else (N_ITEMS,)
    model = model_class(*args, dim=6, steps=steps, readout=readout).double()
    batch = sessions_batch(SESSIONS, extra=2)
    reference = outputs_and_grads(model, batch, packed=False)
    packed = outputs_and_grads(model, batch, packed=True)
    for name, ref, new in zip(("loss", "scores", "gradients"), reference, packed, strict=True):
        finite = torch.isfinite(ref)
        assert torch.equal(finite, torch.isfinite(new)), name
        assert torch.allclose(new[finite], ref[finite], rtol=1e-12, atol=1e-12), name
    assert reference[2].abs().sum() > 0


@pytest.mark.parametrize("model_class", [SRGNN, LLM4SBR])
def test_packed_path_under_bf16_autocast_runs_its_ops_in_float32_as_the_padded_path(model_class) -> None:
    """Under CPU bf16 autocast both paths run the graph ops in the parameters' float32 and the
    dense layers and the scoring head in bf16, so they agree to bf16 rounding."""
    torch.manual_seed(0)
    args = (N_ITEMS, D_TEXT) if model_class is LLM4SBR else (N_ITEMS,)
    model = model_class(*args, dim=8)
    batch = sessions_batch(SESSIONS, extra=2)
    batch["intent"] = batch["intent"].float()
    results = []
    for packed in (False, True):
        model.encoder.packed = packed
        model.zero_grad()
        with use_backend("torch"), torch.autocast("cpu", dtype=torch.bfloat16):
            local, global_ = model.encode(batch)
            loss = model.calculate_loss(batch)
        loss.backward()
        assert local.dtype == global_.dtype == torch.float32
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (ref_loss, ref_grad), (loss, grad) = results
    assert torch.allclose(loss, ref_loss, rtol=2e-2)
    assert (grad - ref_grad).norm() <= 5e-2 * ref_grad.norm()


def test_default_path_is_packed_only_where_triton_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = SRGNN(N_ITEMS, dim=4).encoder
    cpu = torch.device("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with use_backend("auto"):
        assert encoder.uses_packed_path(cpu)
    assert not encoder.uses_packed_path(cpu)  # the "torch" backend of this file's fixture
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with use_backend("auto"):
        assert not encoder.uses_packed_path(cpu)
    encoder.packed = True
    assert encoder.uses_packed_path(cpu)


def test_packed_path_trains_like_the_reference() -> None:
    """Three Adam steps on each path from the same start end at the same parameters."""
    batch = sessions_batch(SESSIONS)
    finals = []
    for packed in (False, True):
        torch.manual_seed(0)
        model = SRGNN(N_ITEMS, dim=6).double()
        model.encoder.packed = packed
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        with use_backend("torch"):
            for _ in range(3):
                optimizer.zero_grad()
                model.calculate_loss(batch).backward()
                optimizer.step()
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(finals[0], finals[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 2])
def test_a_packed_graph_built_by_loader_workers_gives_the_same_outputs_and_gradients(steps: int) -> None:
    """The packed graph prebuilt in float32 (as loader workers build it) and carried in the
    batch gives the packed path's result bit for bit, in float32 and float64 models."""
    from llm4sbr.data.graph import build_packed_batch_graph, packed_batch_to_dict

    batch = sessions_batch(SESSIONS, extra=2)
    prebuilt = packed_batch_to_dict(build_packed_batch_graph(batch["item_seq"], batch["item_seq_len"]))
    assert prebuilt["packed_step_values"].dtype == torch.float32
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = LLM4SBR(N_ITEMS, D_TEXT, dim=6, steps=steps).to(dtype)
        typed = {**batch, "intent": batch["intent"].to(dtype)}
        inline = outputs_and_grads(model, typed, packed=True)
        carried = outputs_and_grads(model, {**typed, **prebuilt}, packed=True)
        for name, a, b in zip(("loss", "scores", "gradients"), inline, carried, strict=True):
            assert torch.equal(a, b), (name, dtype)
