"""FedPer's ClientApp called directly: personal layers persist, only the base leaves."""

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import (
    ArrayRecord,
    Message,
    MessageType,
    RecordDict,
)
from hydra import compose, initialize_config_dir

from fedper.client import STATE_KEY, Sgd, get_runtime, make_client_app
from fedper.client import initial_model as build_initial_model
from fedper.models import FedPerNetwork, personal_keys
from fedper.settings import parse_settings
from pflcore.config import to_plain
from pflcore.local.training import evaluate
from pflcore.local.transforms import BatchTransform
from tests.fakedata import write_cifar10
from tests.messages import context, message

CONF = str(Path(__file__).resolve().parents[1] / "conf")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root, per_batch=40, test=40)
    overrides = [
        f"dataset.root={root}",
        "num_clients=3",
        "local_epochs=1",
        "batch_size=16",
        "model.num_head_layers=2",
        "lr=0.05",
    ]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return to_plain(compose("fedper", overrides=overrides))


def initial_model(config: dict, num_classes: int, channels: int) -> FedPerNetwork:
    """The run's initial network for the plain ``config``."""
    settings = parse_settings(config)
    return build_initial_model(
        settings.model,
        num_classes,
        channels,
        seed=settings.seed,
        image_size=settings.dataset.image_size,
    )


def sgd_of(config: dict) -> Sgd:
    """The SGD settings the ClientApp builds for the plain ``config``."""
    settings = parse_settings(config)
    return Sgd(
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        batch_size=settings.batch_size,
        seed=settings.seed,
    )


def base_of(config: dict) -> tuple[ArrayRecord, list[str]]:
    model = initial_model(config, 10, 3)
    personal = personal_keys(model, "fedper", 2, "aggregate")
    base = {k: v for k, v in model.state_dict().items() if k not in personal}
    return ArrayRecord(base), personal


def test_personal_layers_survive_across_rounds_and_never_leave(config):
    app = make_client_app(config)
    base, personal = base_of(config)
    ctx = context(pid=1)
    first = app(message(MessageType.TRAIN, base, 1), ctx)
    sent = list(first.content.array_records["arrays"].keys())
    assert sent == list(base.keys())
    assert not set(sent) & set(personal)
    head_after_round_1 = ctx.state.array_records[STATE_KEY].to_torch_state_dict()
    assert list(head_after_round_1) == personal
    initial_head = initial_model(config, 10, 3).state_dict()
    assert any(
        not torch.equal(head_after_round_1[k], initial_head[k]) for k in personal
    )

    # Round 2 with lr = 0: parameters cannot move, so the head the client ends
    # with is the head it started from, which must be the stored one.
    frozen = dict(config, lr=0.0, momentum=0.0)
    app_frozen = make_client_app(frozen)
    app_frozen(message(MessageType.TRAIN, base, 2), ctx)
    head_after_round_2 = ctx.state.array_records[STATE_KEY].to_torch_state_dict()
    for key in personal:
        if key.endswith(("weight", "bias")):
            torch.testing.assert_close(
                head_after_round_2[key], head_after_round_1[key], rtol=0, atol=0
            )


def test_evaluation_uses_received_base_and_stored_head(config):
    app = make_client_app(config)
    base, _ = base_of(config)
    ctx = context(pid=2)
    app(message(MessageType.TRAIN, base, 1), ctx)
    reply = app(message(MessageType.EVALUATE, base, 1), ctx)
    metrics = reply.content.metric_records["metrics"]

    # Independent composition: a fresh network with the base and the stored head.
    model = initial_model(config, 10, 3)
    weights = base.to_torch_state_dict()
    weights.update(ctx.state.array_records[STATE_KEY].to_torch_state_dict())
    model.load_state_dict(weights)
    runtime = get_runtime(config)
    x_test, y_test = runtime.data.split_of(2, "test")
    mean, std = runtime.data.data.channel_stats()
    stats = evaluate(
        model,
        x_test,
        y_test,
        BatchTransform(mean, std, 32),
        batch_size=7,
        device=torch.device("cpu"),
    )
    assert metrics["partition-id"] == 2
    assert metrics["num-examples"] == x_test.shape[0] == stats.num_samples
    assert metrics["correct"] == stats.correct
    assert metrics["loss-sum"] == pytest.approx(stats.loss_sum, rel=1e-4)


def test_fedavg_ft_adapts_a_copy_and_keeps_nothing(config):
    ft = dict(config, algorithm="fedavg_ft", finetune={"epochs": 2, "lr": 0.05})
    plain = dict(config, algorithm="fedavg")
    model = initial_model(config, 10, 3)
    full = ArrayRecord(model.state_dict())
    ctx = context(pid=0)
    first = make_client_app(ft)(message(MessageType.EVALUATE, full, 4), ctx)
    again = make_client_app(ft)(message(MessageType.EVALUATE, full, 4), ctx)
    untuned = make_client_app(plain)(message(MessageType.EVALUATE, full, 4), ctx)
    assert len(ctx.state.array_records) == 0
    m1, m2, m0 = (r.content.metric_records["metrics"] for r in (first, again, untuned))
    assert (
        m1["loss-sum"] == m2["loss-sum"]
    )  # not cumulative: starts from the global model
    assert m1["loss-sum"] != m0["loss-sum"]  # fine-tuning changed the model it tested


def test_query_reports_partition_id(config):
    app = make_client_app(config)
    reply = app(
        Message(RecordDict(), dst_node_id=1, message_type=MessageType.QUERY),
        context(pid=2),
    )
    assert reply.content.config_records["identity"]["partition-id"] == 2


def test_training_is_reproducible_for_one_seed(config):
    app = make_client_app(config)
    base, _ = base_of(config)
    outs = [app(message(MessageType.TRAIN, base, 3), context(pid=0)) for _ in range(2)]
    a, b = (o.content.array_records["arrays"] for o in outs)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


# --------------------------------------------------------------------------
# Paper App. A.3: fine-tune the personal layers on the received base first
# --------------------------------------------------------------------------


def test_head_finetune_phase_changes_only_the_personal_layers(config):
    from fedper.client import finetune_head

    tuned = dict(config, head_finetune_epochs=1)
    runtime = get_runtime(tuned)
    base, personal = base_of(config)
    runtime.load_client(base, RecordDict())
    before = {k: v.clone() for k, v in runtime.model.state_dict().items()}
    loss = finetune_head(
        runtime,
        sgd_of(tuned),
        pid=1,
        server_round=3,
        lr=tuned["lr"],
        epochs=tuned["head_finetune_epochs"],
    )
    after = runtime.model.state_dict()
    assert loss > 0
    assert set(runtime.personal) == set(personal)
    # Every shared tensor (parameters and BatchNorm statistics) is bit-identical.
    for key in runtime.base:
        assert torch.equal(after[key], before[key]), key
    changed = [k for k in personal if not torch.equal(after[k], before[k])]
    assert "classifier.2.weight" in changed
    assert any(k.startswith("blocks.12.") and k.endswith("weight") for k in changed)
    assert all(p.requires_grad for p in runtime.model.parameters())


def test_head_finetune_zero_leaves_training_as_it_was(config):
    from fedper.client import local_train

    assert config["head_finetune_epochs"] == 0
    base, _ = base_of(config)
    reply = make_client_app(config)(message(MessageType.TRAIN, base, 2), context(0))
    # Independent composition: load the received base, run the plain local update.
    runtime = get_runtime(config)
    runtime.load_client(base, RecordDict())
    local_train(
        runtime, sgd_of(config), 0, 2, lr=config["lr"], epochs=config["local_epochs"]
    )
    expected = runtime.model.state_dict()
    sent = reply.content.array_records["arrays"].to_torch_state_dict()
    for key, value in sent.items():
        assert torch.equal(value, expected[key]), key

    tuned = dict(config, head_finetune_epochs=1)
    reply_tuned = make_client_app(tuned)(
        message(MessageType.TRAIN, base, 2), context(0)
    )
    sent_tuned = reply_tuned.content.array_records["arrays"].to_torch_state_dict()
    assert any(not torch.equal(sent_tuned[k], sent[k]) for k in sent)


def test_linear_base_client_sends_only_the_map(config):
    linear = dict(config, model=dict(config["model"], linear_base=True))
    model = initial_model(linear, 10, 3)
    personal = personal_keys(model, "fedper", 2, "aggregate")
    assert personal == base_of(config)[1]  # the same personal layers as the full model
    base = ArrayRecord(
        {k: v for k, v in model.state_dict().items() if k not in personal}
    )
    assert list(base.keys()) == ["stem.map.weight"]
    reply = make_client_app(linear)(message(MessageType.TRAIN, base, 1), context(2))
    assert list(reply.content.array_records["arrays"].keys()) == ["stem.map.weight"]
