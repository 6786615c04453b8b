"""The server's hypernetwork update against independent computations."""

from __future__ import annotations

import pytest
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from pfedhn.models import HyperNetwork
from pfedhn.strategy import EXTRA_FIELDS, PFedHN
from pflcore.fl.protocol import ClientError
from pflcore.records.results import RunRecorder

SHAPES = {"a.weight": (3, 2), "a.bias": (3,), "b.weight": (1, 3)}


def tiny_hn(seed: int = 0, n: int = 4, dtype=torch.float32) -> HyperNetwork:
    torch.manual_seed(seed)
    return HyperNetwork(n, SHAPES, embed_dim=2, hidden_dim=5, n_hidden=1).to(dtype)


def make_strategy(
    tmp_path, hn, *, lr=0.1, momentum=0.0, wd=0.0, clip=1e9, novel=(), **kw
):
    recorder = RunRecorder(tmp_path, {"seed": 0}, extra_fields=EXTRA_FIELDS)
    strategy = PFedHN(
        recorder,
        hn,
        novel_clients=list(novel),
        novel_rounds=kw.pop("novel_rounds", 2 if novel else 0),
        lr=lr,
        momentum=momentum,
        weight_decay=wd,
        clip=clip,
        novel_lr=kw.pop("novel_lr", lr),
        device="cpu",
        num_clients=hn.embeddings.num_embeddings,
        clients_per_round=kw.pop("clients_per_round", 1),
        num_rounds=kw.pop("num_rounds", 5),
        eval_every=0,
        seed=3,
    )
    strategy.bind_partitions({j: 100 + j for j in range(hn.embeddings.num_embeddings)})
    return strategy


def trained(theta: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: v.detach() + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype)
        for k, v in theta.items()
    }


def test_step_is_sgd_on_the_distance_surrogate(tmp_path):
    """g = VJP(old - new) equals grad of 0.5||h(v_i; phi) - stopgrad(new)||^2."""
    hn = tiny_hn()
    reference = tiny_hn()  # same init, independent autograd path
    strategy = make_strategy(tmp_path, hn, lr=0.05)
    pid = 2
    old = {k: v.detach() for k, v in hn(pid).items()}
    new = trained(old, 1)
    strategy.hn_step([(pid, {k: old[k] - new[k] for k in old})])

    theta = reference(pid)
    loss = 0.5 * sum(((theta[k] - new[k]) ** 2).sum() for k in theta)
    loss.backward()
    for (name, p), (_, q) in zip(
        hn.named_parameters(), reference.named_parameters(), strict=True
    ):
        assert torch.allclose(p, q - 0.05 * q.grad, atol=1e-6), name
    # Only client 2's embedding moved.
    moved = (hn.embeddings.weight != reference.embeddings.weight).any(dim=1)
    assert moved.tolist() == [False, False, True, False]


def test_vjp_matches_finite_differences(tmp_path):
    """Directional derivative of 0.5||h - new||^2 by central differences (float64)."""
    hn = tiny_hn(dtype=torch.float64)
    strategy = make_strategy(tmp_path, hn, lr=1.0)
    pid = 1
    old = {k: v.detach().clone() for k, v in hn(pid).items()}
    new = trained(old, 5)
    params = [p.detach().clone() for p in hn.parameters()]

    def surrogate() -> float:
        with torch.no_grad():
            theta = hn(pid)
            return float(0.5 * sum(((theta[k] - new[k]) ** 2).sum() for k in theta))

    rng = torch.Generator().manual_seed(0)
    direction = [
        torch.randn(p.shape, generator=rng, dtype=torch.float64) for p in params
    ]
    eps = 1e-6
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, p0, d in zip(hn.parameters(), params, direction, strict=True):
                p.copy_(p0 + sign * eps * d)
        values.append(surrogate())
    fd = (values[0] - values[1]) / (2 * eps)
    with torch.no_grad():
        for p, p0 in zip(hn.parameters(), params, strict=True):
            p.copy_(p0)
    strategy.hn_step([(pid, {k: old[k] - new[k] for k in old})])  # lr 1: p_new = p - g
    analytic = sum(
        float(((p0 - p.detach()) * d).sum())
        for p, p0, d in zip(hn.parameters(), params, direction, strict=True)
    )
    assert analytic == pytest.approx(fd, rel=1e-6)


def test_step_moves_the_client_weights_towards_its_trained_weights(tmp_path):
    hn = tiny_hn()
    strategy = make_strategy(tmp_path, hn, lr=0.01)
    old = {k: v.detach() for k, v in hn(0).items()}
    new = trained(old, 2)
    before = sum(((old[k] - new[k]) ** 2).sum() for k in old)
    strategy.hn_step([(0, {k: old[k] - new[k] for k in old})])
    after = sum(((v.detach() - new[k]) ** 2).sum() for k, v in hn(0).items())
    assert after < before


def test_gradient_is_clipped_to_the_configured_norm(tmp_path):
    hn = tiny_hn()
    before = [p.detach().clone() for p in hn.parameters()]
    strategy = make_strategy(tmp_path, hn, lr=1.0, clip=1e-3)
    old = {k: v.detach() for k, v in hn(0).items()}
    strategy.hn_step([(0, {k: old[k] - (old[k] + 10.0) for k in old})])
    step = torch.sqrt(
        sum(
            ((p.detach() - b) ** 2).sum()
            for p, b in zip(hn.parameters(), before, strict=True)
        )
    )
    assert float(step) == pytest.approx(1e-3, rel=1e-4)


def test_round_trip_through_messages(tmp_path):
    """Each client gets its own weights; the replies' deltas step the HN."""
    hn = tiny_hn()
    reference = tiny_hn()
    strategy = make_strategy(tmp_path, hn, lr=0.05, clients_per_round=2)
    messages = list(
        strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid=None)
    )
    pids = strategy.train_partitions(1)
    assert len(messages) == 2 and pids == sorted(set(pids))
    assert pids == strategy.train_partitions(1)  # seeded: the same draw again
    replies, targets = [], {}
    for msg, pid in zip(messages, pids, strict=True):
        assert msg.metadata.dst_node_id == 100 + pid
        sent = msg.content.array_records["arrays"].to_torch_state_dict()
        expected = reference(pid)
        assert all(torch.equal(sent[k], expected[k].detach()) for k in SHAPES)
        targets[pid] = trained(sent, pid)
        delta = ArrayRecord({k: sent[k] - targets[pid][k] for k in sent})
        metrics = MetricRecord(
            {"partition-id": pid, "num-examples": 10, "train-loss": 1.0}
        )
        replies.append(
            Message(
                RecordDict({"arrays": delta, "metrics": metrics}),
                dst_node_id=0,
                message_type=MessageType.TRAIN,
            )
        )
    arrays, _ = strategy.aggregate_train(1, reversed(replies))
    assert arrays is None  # no global model
    # Two clients: the mean of their surrogate gradients, one step.
    thetas = {pid: reference(pid) for pid in pids}
    loss = (
        sum(
            0.5 * ((thetas[p][k] - targets[p][k]) ** 2).sum()
            for p in pids
            for k in SHAPES
        )
        / 2
    )
    loss.backward()
    for p, q in zip(hn.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q - 0.05 * q.grad, atol=1e-6)


def test_reply_with_wrong_keys_is_rejected(tmp_path):
    strategy = make_strategy(tmp_path, tiny_hn())
    list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid=None))
    (pid,) = strategy.train_partitions(1)
    bad = ArrayRecord({"a.weight": torch.zeros(3, 2)})
    metrics = MetricRecord({"partition-id": pid, "num-examples": 1, "train-loss": 1.0})
    reply = Message(
        RecordDict({"arrays": bad, "metrics": metrics}),
        dst_node_id=0,
        message_type=MessageType.TRAIN,
    )
    with pytest.raises(ClientError, match="returned keys"):
        strategy.aggregate_train(1, [reply])


def test_novel_phase_trains_only_the_novel_embedding(tmp_path):
    hn = tiny_hn()
    strategy = make_strategy(tmp_path, hn, novel=[3], num_rounds=4, novel_rounds=2)
    assert all(3 not in strategy.train_partitions(r) for r in range(1, 5))
    assert strategy.train_partitions(5) == [3] and strategy.phase(5) == "novel"
    frozen = {k: v.detach().clone() for k, v in hn.state_dict().items()}
    messages = list(
        strategy.configure_train(5, ArrayRecord(), ConfigRecord(), grid=None)
    )
    start = strategy.novel_embeddings[3].detach().clone()
    assert torch.allclose(
        start, frozen["embeddings.weight"][:3].mean(0)
    )  # mean of trained
    sent = messages[0].content.array_records["arrays"].to_torch_state_dict()
    new = trained(sent, 9)
    strategy.embedding_step(3, {k: sent[k] - new[k] for k in sent})
    assert all(
        torch.equal(v, frozen[k]) for k, v in hn.state_dict().items()
    )  # phi frozen
    v = strategy.novel_embeddings[3]
    assert not torch.equal(v.detach(), start)
    # Independent path: the surrogate's gradient w.r.t. the embedding alone.
    e = start.clone().requires_grad_(True)
    theta = hn.generate(e)
    (0.5 * sum(((theta[k] - new[k]) ** 2).sum() for k in theta)).backward()
    assert torch.allclose(v.detach(), start - strategy.novel_lr * e.grad, atol=1e-6)


def test_the_baselines_never_train_held_out_clients_and_test_them_after(tmp_path):
    from pfedhn.strategy import BaselineFedAvg

    recorder = RunRecorder(tmp_path, {"seed": 0}, extra_fields=EXTRA_FIELDS)
    held_out = [5, 2]
    strategy = BaselineFedAvg(
        recorder,
        held_out=held_out,
        num_clients=8,
        clients_per_round=3,
        num_rounds=6,
        eval_every=4,
        seed=1,
    )
    trained = [0, 1, 3, 4, 6, 7]
    assert strategy.num_rounds == 7  # six training rounds, then the novel round
    for r in range(1, 7):
        picks = strategy.train_partitions(r)
        assert len(picks) == 3 and set(picks) <= set(trained)
        assert strategy.eval_partitions(r) == trained
    assert strategy.train_partitions(7) == [] and strategy.eval_partitions(7) == [2, 5]
    assert [r for r in range(1, 8) if strategy.is_eval_round(r)] == [4, 6, 7]
    assert [strategy.phase(r) for r in (6, 7)] == ["train", "novel"]
    # the same seed draws differently from six than from eight clients, but stays seeded
    again = BaselineFedAvg(
        recorder,
        held_out=held_out,
        num_clients=8,
        clients_per_round=3,
        num_rounds=6,
        eval_every=4,
        seed=1,
    )
    assert [again.train_partitions(r) for r in range(1, 7)] == [
        strategy.train_partitions(r) for r in range(1, 7)
    ]


def test_without_held_out_clients_the_baseline_is_plain_partition_fedavg(tmp_path):
    from pfedhn.strategy import BaselineFedAvg
    from pflcore.fl.strategy import PartitionStrategy

    recorder = RunRecorder(tmp_path, {"seed": 0}, extra_fields=EXTRA_FIELDS)
    kw = {"num_clients": 8, "clients_per_round": 3, "num_rounds": 6, "eval_every": 4}
    ours = BaselineFedAvg(recorder, seed=1, **kw)
    plain = PartitionStrategy(recorder, seed=1, **kw)
    assert ours.num_rounds == plain.num_rounds == 6
    for r in range(1, 7):
        assert ours.train_partitions(r) == plain.train_partitions(r)
        assert ours.is_eval_round(r) == plain.is_eval_round(r)
        assert ours.eval_partitions(r) == list(range(8))
