"""Ditto's ClientApp in process, against FedFomo's FedAvg and Local and autograd.

The references are FedFomo's own ClientApps for the same run composed from
``conf/fedfomo.yaml`` (not from Ditto's config), its initial model built by
``fedfomo.models.build_model``, and a gradient taken here with autograd.
"""

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from hydra import compose, initialize_config_dir

from ditto.main import PACKAGE as DITTO
from fedfomo.client import get_runtime
from fedfomo.main import PACKAGE as FEDFOMO
from fedfomo.models import build_model
from pflcore.config import to_plain
from tests.mainrun import REPO
from tests.messages import context, message

SMALL = ["num_clients=5", "partition.pool_fraction=0.5", "local_epochs=1"]
LOCAL_KEY = "local-model"  # where Local (and Ditto) keep the client's own model
TRAIN, EVALUATE = MessageType.TRAIN, MessageType.EVALUATE
KEY = "classifier.3.weight"  # the last layer's weights


def composed(package: str, *overrides: str) -> dict:
    quick = [f"experiment={package}/quick", *SMALL, *overrides]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return to_plain(compose(package, overrides=quick))


def ditto_app(*overrides: str):
    return DITTO.client_app_for(DITTO.resolve(composed("ditto", *overrides)))


def fedfomo_app(algorithm: str, *overrides: str):
    config = FEDFOMO.resolve(composed("fedfomo", f"algorithm={algorithm}", *overrides))
    return FEDFOMO.client_app_for(config), config


INITIAL = build_model(0, 10, 1, 32).state_dict()  # digits: 10 classes, 1 channel


def received(seed: int) -> ArrayRecord:
    """A global model w^t away from the initial weights."""
    g = torch.Generator().manual_seed(seed)
    return ArrayRecord(
        {
            k: v + 0.05 * torch.randn(v.shape, generator=g)
            if v.is_floating_point()
            else v
            for k, v in INITIAL.items()
        }
    )


def arrays(reply: Message) -> dict[str, torch.Tensor]:
    return reply.content.array_records["arrays"].to_torch_state_dict()


def metrics(reply: Message) -> dict:
    return dict(reply.content.metric_records["metrics"])


def personal(ctx) -> dict[str, torch.Tensor]:
    return ctx.state.array_records[LOCAL_KEY].to_torch_state_dict()


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten().double() for v in state.values()])


@pytest.mark.parametrize("server_round", [1, 4])  # round 4: the decayed lr
def test_the_upload_is_fedavgs_local_update_bit_for_bit(server_round):
    ditto = ditto_app("algorithm=ditto", "momentum=0.5")
    fedavg, _ = fedfomo_app("fedavg", "momentum=0.5")
    sent = received(server_round)
    ours = ditto(message(TRAIN, sent, server_round), context(2))
    theirs = fedavg(message(TRAIN, sent, server_round), context(2))
    assert_same(arrays(ours), arrays(theirs))
    assert metrics(ours) == metrics(theirs)  # train-loss, num-examples, partition
    assert not torch.equal(arrays(ours)[KEY], sent.to_torch_state_dict()[KEY])


def test_lambda_zero_trains_the_personal_model_as_local_in_the_rounds_it_trains():
    ditto, ctx = ditto_app("algorithm=ditto", "ditto.lam=0", "momentum=0.5"), context(1)
    local, _ = fedfomo_app("local", "momentum=0.5")
    local_ctx = context(1)
    for server_round in (1, 3):  # selected in rounds 1 and 3, not in round 2
        ditto(message(TRAIN, received(server_round), server_round), ctx)
        local(message(TRAIN, ArrayRecord(), server_round), local_ctx)
        assert_same(personal(ctx), personal(local_ctx))
        # and it is what Ditto tests, as Local tests its model
        evaluated = ditto(message(EVALUATE, received(9), server_round), ctx)
        expected = local(message(EVALUATE, ArrayRecord(), server_round), local_ctx)
        assert metrics(evaluated) == metrics(expected)
        assert_same(personal(ctx), personal(local_ctx))  # evaluation keeps it


def test_lambda_one_over_lr_lands_one_gradient_step_from_the_received_model():
    # plain SGD, one step (one epoch, one batch), lam = 1/lr, v = the initial weights:
    # v' = v - lr (grad F(v) + (v - w) / lr) = w - lr grad F(v)
    lr = 0.05
    plain = ["momentum=0.0", "weight_decay=0.0", "batch_size=100000", f"lr={lr}"]
    ditto, ctx = ditto_app("algorithm=ditto", f"ditto.lam={1 / lr}", *plain), context(3)
    sent = received(5)
    reply = ditto(message(TRAIN, sent, 1), ctx)

    _, config = fedfomo_app("local", *plain)  # the client's data, by FedFomo's runtime
    runtime = get_runtime(config)
    x, y = runtime.train_split(3)
    model = build_model(0, 10, 1, 32)
    loss = torch.nn.functional.cross_entropy(model(runtime.transform(x, False)), y)
    grads = dict(
        zip(
            [k for k, _ in model.named_parameters()],
            torch.autograd.grad(loss, list(model.parameters())),
            strict=True,
        )
    )
    w = sent.to_torch_state_dict()
    expected = {k: w[k] - lr * g for k, g in grads.items()}
    got = personal(ctx)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-6)
    # the global copy took a plain SGD step from w instead
    assert not torch.allclose(arrays(reply)[KEY], expected[KEY])


def test_a_larger_lambda_keeps_the_personal_model_closer_to_the_received_one():
    sent = received(6)
    distances = []
    for lam in (0.0, 2.0, 10.0):  # lam * lr <= 1 at lr 0.05: a stable pull
        ctx = context(4)
        ditto_app("algorithm=ditto", f"ditto.lam={lam}")(message(TRAIN, sent, 1), ctx)
        distances.append(
            float((flat(personal(ctx)) - flat(sent.to_torch_state_dict())).norm())
        )
    assert distances == sorted(distances, reverse=True)
    assert distances[-1] < 0.5 * distances[0]


def test_a_client_never_trained_is_tested_with_the_initial_weights():
    ditto = ditto_app("algorithm=ditto")
    fedavg, _ = fedfomo_app("fedavg")
    ours = ditto(message(EVALUATE, received(7), 2), context(0))
    theirs = fedavg(message(EVALUATE, ArrayRecord(INITIAL), 2), context(0))
    assert metrics(ours) == metrics(theirs)
    assert len(ours.content.array_records) == 0


def query(app, kind: str, content: RecordDict, ctx) -> Message:
    if kind == "query.checkpoint":
        content = RecordDict({"config": ConfigRecord({"server-round": 1})})
    return app(Message(content, dst_node_id=1, message_type=kind), ctx)


def test_the_personal_model_survives_a_checkpoint_and_restore():
    ditto = ditto_app("algorithm=ditto")
    ctx = context(1)
    ditto(message(TRAIN, received(1), 1), ctx)
    saved = query(ditto, "query.checkpoint", RecordDict(), ctx)
    restored = context(1)
    query(ditto, "query.restore", saved.content, restored)
    assert_same(personal(restored), personal(ctx))

    after = ditto(message(TRAIN, received(2), 2), ctx)
    resumed = ditto(message(TRAIN, received(2), 2), restored)
    assert_same(arrays(after), arrays(resumed))
    assert_same(personal(ctx), personal(restored))
    fresh = context(1)  # without the restored state the personal model differs
    ditto(message(TRAIN, received(2), 2), fresh)
    assert not torch.equal(personal(fresh)[KEY], personal(ctx)[KEY])
