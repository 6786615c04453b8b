"""pFedHN's client update: the delta, and the PC classifier kept in state."""

from __future__ import annotations

import pytest
import torch
from flwr.app import (
    ArrayRecord,
    MessageType,
    RecordDict,
)
from hydra import compose, initialize_config_dir

from pfedhn.client import (
    HEAD_KEY,
    InnerLoop,
    build_runtime,
    eval_client,
    get_runtime,
    make_client_app,
    train_client,
)
from pfedhn.main import PACKAGE
from pfedhn.settings import parse_settings
from pflcore.fl.baselines import LOCAL_STATE_KEY
from tests.fakedata import write_mnist
from tests.mainrun import REPO
from tests.messages import context, message


def config_for(root, algorithm: str) -> dict:
    """A small resolved MNIST run (the rest at ``conf/pfedhn.yaml``'s defaults)."""
    overrides = [
        f"algorithm={algorithm}",
        "dataset=mnist",
        f"dataset.root={root}",
        "num_clients=4",
        "seed=0",
        "local_steps=5",
        "batch_size=16",
        "eval_batch_size=64",
        "model.target=mlp",
        "partition.val_size=200",
        "partition.test_source=official",
        "client_resources.num_cpus=1",
        "client_resources.num_gpus=0.0",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return PACKAGE.resolve(compose("pfedhn", overrides=overrides))


def update_of(config: dict) -> dict:
    """``train_client``'s settings for ``config``: the inner loop and the seed."""
    settings = parse_settings(config)
    return {"loop": InnerLoop.of(settings), "seed": settings.seed}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("mnist")
    write_mnist(path, train=800, test=200)
    return path


def random_weights(runtime, seed: int) -> ArrayRecord:
    g = torch.Generator().manual_seed(seed)
    return ArrayRecord(
        {
            k: 0.05 * torch.randn(v.shape, generator=g)
            for k, v in runtime.model.state_dict().items()
        }
    )


def test_pfedhn_returns_old_minus_new(root):
    config = config_for(root, "pfedhn")
    runtime = build_runtime(config)
    sent = random_weights(runtime, 1)
    update = update_of(config)
    delta, loss = train_client(runtime, 2, 1, sent, RecordDict(), **update)
    old = sent.to_torch_state_dict()
    new = runtime.model.state_dict()
    assert list(delta.keys()) == list(old)
    for k, d in delta.to_torch_state_dict().items():
        assert torch.allclose(d, old[k] - new[k])
    assert loss > 0 and any(
        d.abs().sum() > 0 for d in delta.to_torch_state_dict().values()
    )
    # Same seed and round: the same update (fresh optimizer each call).
    again, _ = train_client(runtime, 2, 1, sent, RecordDict(), **update)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            delta.to_torch_state_dict().values(),
            again.to_torch_state_dict().values(),
            strict=True,
        )
    )


def test_pc_classifier_and_its_momentum_persist(root):
    config = config_for(root, "pfedhn_pc")
    runtime = build_runtime(config)
    state = RecordDict()
    sent = random_weights(runtime, 2)
    assert "fc2.weight" not in sent  # the body only crosses the wire
    update = update_of(config)
    delta, _ = train_client(runtime, 1, 1, sent, state, **update)
    assert list(delta.keys()) == ["fc1.weight", "fc1.bias"]
    saved1 = state.array_records[HEAD_KEY].to_torch_state_dict()
    assert set(saved1) == {"weight", "bias", "momentum.weight", "momentum.bias"}
    assert torch.equal(saved1["weight"], runtime.head.weight.detach())
    # Another client in the same worker overwrites the module, not client 1's state.
    train_client(runtime, 0, 1, sent, RecordDict(), **update)
    # Round 2 starts from client 1's saved classifier: it differs from a run of the
    # same round that starts without it.
    train_client(runtime, 1, 2, sent, state, **update)
    saved2 = state.array_records[HEAD_KEY].to_torch_state_dict()
    assert not torch.equal(saved2["weight"], saved1["weight"])
    fresh = RecordDict()
    train_client(runtime, 1, 2, sent, fresh, **update)  # without the saved head
    assert not torch.equal(
        fresh.array_records[HEAD_KEY].to_torch_state_dict()["weight"], saved2["weight"]
    )
    # Evaluation uses the saved classifier without changing it.
    stats = eval_client(runtime, 1, sent, state, seed=0, eval_batch_size=64)
    assert stats["test"].num_samples > 0 and stats["val"].num_samples > 0
    assert torch.equal(
        state.array_records[HEAD_KEY].to_torch_state_dict()["weight"], saved2["weight"]
    )


def baseline_call(app, kind: str, server_round: int, arrays: ArrayRecord, ctx):
    return app(message(kind, arrays, server_round), ctx)


def test_local_keeps_its_model_and_sends_nothing(root):
    config = config_for(root, "local")
    app, ctx = make_client_app(config), context(0)
    out = baseline_call(app, MessageType.TRAIN, 1, ArrayRecord(), ctx)
    assert len(out.content.array_records["arrays"]) == 0
    first = ctx.state.array_records[LOCAL_STATE_KEY].to_torch_state_dict()
    baseline_call(app, MessageType.TRAIN, 2, ArrayRecord(), ctx)
    second = ctx.state.array_records[LOCAL_STATE_KEY].to_torch_state_dict()
    assert not torch.equal(first["fc1.weight"], second["fc1.weight"])
    evaluated = baseline_call(app, MessageType.EVALUATE, 2, ArrayRecord(), ctx)
    metrics = evaluated.content.metric_records["metrics"]
    assert metrics["num-examples"] > 0 and metrics["val-num-examples"] > 0


def test_fedavg_returns_the_trained_weights(root):
    config = config_for(root, "fedavg")
    runtime = get_runtime(config)
    sent = random_weights(runtime, 3)
    out = baseline_call(make_client_app(config), MessageType.TRAIN, 1, sent, context(0))
    new = runtime.model.state_dict()
    returned = out.content.array_records["arrays"].to_torch_state_dict()
    assert all(torch.equal(v, new[k].cpu()) for k, v in returned.items())
    assert not torch.equal(
        returned["fc1.weight"], sent.to_torch_state_dict()["fc1.weight"]
    )
