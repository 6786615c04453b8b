"""The ClientApp called directly: what evaluation adapts on, and what training sends."""

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from hydra import compose, initialize_config_dir

import pflcore.local.batching
import pflcore.local.finetune
from perfedavg.client import get_runtime, initial_model, make_client_app
from perfedavg.main import build_strategy
from perfedavg.settings import Model
from perfedavg.strategy import PersonalizedFedAvg
from pflcore.config import to_plain
from pflcore.config.settings import parse
from pflcore.fl.strategy import server_settings
from pflcore.records.results import RunRecorder
from tests.fakedata import write_mnist
from tests.messages import context, message

CONF = str(Path(__file__).resolve().parents[1] / "conf")
ALPHA = 0.05


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, train=300, test=100)
    overrides = [
        f"dataset.root={root}",
        "num_clients=4",
        "clients_per_round=2",
        "partition.a=4",
        "batch_size=3",
        "local_steps=2",
        f"alpha={ALPHA}",
        "beta=0.05",
    ]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return to_plain(compose("perfedavg", overrides=overrides))


def initial_of(config: dict, data) -> torch.nn.Module:
    return initial_model(
        parse(Model, config["model"]),
        data,
        image_size=config["dataset"]["image_size"],
        seed=config["seed"],
    )


def global_arrays(config: dict) -> ArrayRecord:
    runtime = get_runtime(config)
    return ArrayRecord(initial_of(config, runtime.data).state_dict())


def test_evaluation_adapts_once_on_a_training_batch_and_keeps_nothing(
    config, monkeypatch
):
    config = dict(config, algorithm="perfedavg_hf")
    runtime = get_runtime(config)
    pid = 3
    x_train, y_train = runtime.data.split_of(pid, "train")
    x_test, y_test = runtime.data.split_of(pid, "test")
    calls = []
    real_train_steps = pflcore.local.finetune.train_steps

    def spy(model, x, y, optimizer, transform, **kwargs):
        calls.append((x.clone(), y.clone(), kwargs["steps"], kwargs["batch_size"]))
        return real_train_steps(model, x, y, optimizer, transform, **kwargs)

    drawn = []
    real_draw = pflcore.local.batching.draw_batch

    def record_draw(n, batch_size, generator):
        idx = real_draw(n, batch_size, generator)
        drawn.append(idx.clone())
        return idx

    monkeypatch.setattr(pflcore.local.finetune, "train_steps", spy)
    monkeypatch.setattr(pflcore.local.batching, "draw_batch", record_draw)
    arrays = global_arrays(config)
    reply = make_client_app(config)(message(MessageType.EVALUATE, arrays), context(pid))
    metrics = reply.content.metric_records["metrics"]

    # exactly one adaptation call, one step, on the training split (not the test split)
    assert len(calls) == 1 and len(drawn) == 1
    x_seen, y_seen, steps, batch = calls[0]
    assert steps == 1 and batch == config["batch_size"]
    assert torch.equal(x_seen, x_train) and torch.equal(y_seen, y_train)
    assert not (x_seen.shape == x_test.shape and torch.equal(x_seen, x_test))

    # Independent recomputation: w - alpha * grad CE(w; that batch), then test.
    model = initial_of(config, runtime.data)
    model.load_state_dict(arrays.to_torch_state_dict())
    idx = drawn[0]
    inputs = runtime.transform(x_train[idx], train=True)
    loss = torch.nn.functional.cross_entropy(model(inputs), y_train[idx])
    grads = torch.autograd.grad(loss, list(model.parameters()))

    def correct(m):
        with torch.no_grad():
            logits = m(runtime.transform(x_test, train=False))
        return int((logits.argmax(1) == y_test).sum())

    model.eval()
    before = correct(model)
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads, strict=True):
            p -= ALPHA * g
    after = correct(model)
    assert metrics["before-correct"] == before
    assert metrics["correct"] == after
    assert metrics["num-examples"] == y_test.numel()
    # nothing kept: the worker's model still holds the received weights
    for key, value in runtime.model.state_dict().items():
        assert torch.equal(value, torch.from_numpy(arrays[key].numpy()))


def test_training_takes_tau_meta_steps_of_three_batches(config, monkeypatch):
    config = dict(config, algorithm="perfedavg_fo")
    drawn = []
    real_draw = pflcore.local.batching.draw_batch

    def record_draw(n, batch_size, generator):
        drawn.append((n, batch_size))
        return real_draw(n, batch_size, generator)

    monkeypatch.setattr(pflcore.local.batching, "draw_batch", record_draw)
    pid = 0
    reply = make_client_app(config)(
        message(MessageType.TRAIN, global_arrays(config)), context(pid)
    )
    n_train = get_runtime(config).data.size(pid)
    assert drawn == [(n_train, config["batch_size"])] * (3 * config["local_steps"])
    metrics = reply.content.metric_records["metrics"]
    assert metrics["num-examples"] == n_train and metrics["partition-id"] == pid
    sent = reply.content.array_records["arrays"]
    assert list(sent.keys()) == list(global_arrays(config).keys())


def reply_with(pid: int, n: int, value: float) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.full(3, value, dtype=np.float32))}),
            "metrics": MetricRecord(
                {"num-examples": n, "train-loss": value, "partition-id": pid}
            ),
        }
    )
    return Message(content, dst_node_id=1, message_type=MessageType.TRAIN)


def strategy(tmp_path, **kwargs) -> PersonalizedFedAvg:
    s = PersonalizedFedAvg(
        RunRecorder(tmp_path, {}),
        num_clients=4,
        clients_per_round=2,
        num_rounds=3,
        eval_every=1,
        seed=0,
        **kwargs,
    )
    s.bind_partitions({i: i + 10 for i in range(4)})
    return s


def test_per_fedavg_server_takes_a_uniform_mean(tmp_path):
    s = strategy(tmp_path, averaging="uniform")
    s.configure_train(
        1, ArrayRecord({"w": Array(np.zeros(3, np.float32))}), ConfigRecord(), None
    )
    arrays, _ = s.aggregate_train(1, [reply_with(0, 10, 1.0), reply_with(1, 990, 3.0)])
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0, 2.0, 2.0])  # not 2.98
    weighted = strategy(tmp_path / "w")
    weighted.configure_train(
        1, ArrayRecord({"w": Array(np.zeros(3, np.float32))}), ConfigRecord(), None
    )
    arrays, _ = weighted.aggregate_train(
        1, [reply_with(0, 10, 1.0), reply_with(1, 990, 3.0)]
    )
    np.testing.assert_allclose(arrays["w"].numpy(), [2.98] * 3, rtol=1e-6)


def test_server_lr_and_momentum_step_along_the_averaged_update(tmp_path):
    s = strategy(tmp_path, server_lr=0.5, server_momentum=0.9)
    start = ArrayRecord({"w": Array(np.ones(3, np.float32))})
    s.configure_train(1, start, ConfigRecord(), None)
    first, _ = s.aggregate_train(1, [reply_with(0, 1, 3.0), reply_with(1, 1, 5.0)])
    # update = mean(3, 5) - 1 = 3; w = 1 + 0.5 * 3
    np.testing.assert_allclose(first["w"].numpy(), [2.5] * 3)
    s.configure_train(2, first, ConfigRecord(), None)
    second, _ = s.aggregate_train(2, [reply_with(0, 1, 2.5), reply_with(1, 1, 2.5)])
    # update = 0, velocity = 0.9 * 3 + 0 = 2.7; w = 2.5 + 0.5 * 2.7
    np.testing.assert_allclose(second["w"].numpy(), [3.85] * 3, rtol=1e-6)


def test_dropout_training_is_reproducible_whatever_the_worker_did_before(config):
    # The CNN has dropout, which draws from torch's global RNG.
    config = dict(
        config, algorithm="fedavg", model={"name": "cnn", "dropout": 0.5}, local_steps=2
    )
    arrays = global_arrays(config)
    app = make_client_app(config)
    sent = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # another client's work moved the global RNG
        reply = app(message(MessageType.TRAIN, arrays), context(1))
        sent.append(reply.content.array_records["arrays"])
    assert not torch.equal(
        torch.from_numpy(sent[0]["classifier.1.weight"].numpy()),
        torch.from_numpy(arrays["classifier.1.weight"].numpy()),
    )
    for key in arrays:
        np.testing.assert_array_equal(sent[0][key].numpy(), sent[1][key].numpy())


def test_fo_with_alpha_zero_is_local_sgd_at_beta_on_its_d_prime_batches(
    config, monkeypatch
):
    """With alpha = 0, FO's step w - beta * grad f(w - 0 * g; D') is SGD on D'."""

    config = dict(config, algorithm="perfedavg_fo", alpha=0.0, beta=0.05)
    # the settings refuse alpha = 0 at launch (it must be > 0); a worker reads
    # the values of a config already checked, so the client runs it as given
    drawn = []
    real_draw = pflcore.local.batching.draw_batch

    def record_draw(n, batch_size, generator):
        idx = real_draw(n, batch_size, generator)
        drawn.append(idx.clone())
        return idx

    monkeypatch.setattr(pflcore.local.batching, "draw_batch", record_draw)
    pid, arrays = 1, global_arrays(config)
    reply = make_client_app(config)(message(MessageType.TRAIN, arrays), context(pid))
    sent = reply.content.array_records["arrays"]

    runtime = get_runtime(config)
    x, y = runtime.data.split_of(pid, "train")
    assert len(drawn) == 3 * config["local_steps"]
    model = initial_of(config, runtime.data)
    model.load_state_dict(arrays.to_torch_state_dict())
    for step in range(config["local_steps"]):
        d_prime = drawn[3 * step + 1]  # batches are drawn as D, D', D''
        inputs = runtime.transform(x[d_prime], train=True)
        loss = torch.nn.functional.cross_entropy(model(inputs), y[d_prime])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads, strict=True):
                p -= config["beta"] * g
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(sent[key].numpy(), value.numpy(), atol=1e-7)


@pytest.mark.parametrize("rule", ["uniform", "samples"])
def test_the_server_aggregates_per_fedavg_exactly_as_fedavg(tmp_path, config, rule):
    """Under one averaging rule, FO's and FedAvg's servers compute the same mean."""
    replies = [reply_with(0, 10, 1.0), reply_with(1, 30, 5.0)]
    expected = {"uniform": 3.0, "samples": (10 * 1.0 + 30 * 5.0) / 40}[rule]
    results = []
    for algorithm in ("perfedavg_fo", "fedavg_ft", "fedavg"):
        run = dict(config, algorithm=algorithm, averaging=rule, num_clients=4)
        server = build_strategy(
            RunRecorder(tmp_path / algorithm, run),
            server_settings(run),
            server_lr=run["server_lr"],
            server_momentum=run["server_momentum"],
        )
        server.bind_partitions({i: i + 10 for i in range(4)})
        start = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
        server.configure_train(1, start, ConfigRecord(), None)
        arrays, metrics = server.aggregate_train(1, replies)
        results.append(arrays["w"].numpy())
        np.testing.assert_allclose(arrays["w"].numpy(), [expected] * 3, rtol=1e-6)
        assert metrics["train-loss"] == pytest.approx(expected)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_unnormalised_inputs_are_raw_pixels_in_unit_range(config):
    raw = dict(config, dataset=dict(config["dataset"], normalize=False))
    runtime = get_runtime(raw)
    x, _ = runtime.data.split_of(0, "train")
    out = runtime.transform(x[:5], train=False)
    torch.testing.assert_close(out, x[:5].to(torch.float32) / 255.0)
    (mean,), (std,) = runtime.data.data.channel_stats()
    standardised = get_runtime(config).transform(x[:5], train=False)
    torch.testing.assert_close(standardised, (out - mean) / std)


def test_server_adam_matches_torch_adam_on_the_pseudo_gradient(tmp_path):
    """Reptile with server Adam: global <- Adam(global, global - mean of replies)."""
    s = strategy(tmp_path, averaging="uniform", server_adam=(0.1, 0.0, 0.999))
    param = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    reference = torch.optim.Adam([param], lr=0.1, betas=(0.0, 0.999), eps=1e-8)
    current = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    for server_round, values in enumerate([(1.0, 3.0), (0.5, 0.5), (2.0, -1.0)], 1):
        s.configure_train(server_round, current, ConfigRecord(), None)
        current, _ = s.aggregate_train(
            server_round, [reply_with(0, 5, values[0]), reply_with(1, 7, values[1])]
        )
        mean = sum(values) / 2
        reference.zero_grad()
        param.grad = param.detach() - torch.full((3,), mean, dtype=torch.float64)
        reference.step()
        np.testing.assert_allclose(
            current["w"].numpy(), param.detach().numpy(), rtol=1e-6, atol=1e-7
        )


@pytest.mark.parametrize(
    ("optimizer", "expected"),
    [("client_adam", torch.optim.Adam), ("server_adam", torch.optim.SGD)],
)
def test_reptile_clients_run_adam_or_sgd_by_where_adam_lives(
    config, monkeypatch, optimizer, expected
):
    import perfedavg.client

    reptile = dict(
        config["jiang"]["reptile"], optimizer=optimizer, lr=0.003, client_lr=0.04
    )
    run = dict(
        config,
        algorithm="jiang",
        local_steps=0,
        jiang=dict(config["jiang"], reptile=reptile, holdout_clients=1),
    )
    seen = []

    def spy(model, x, y, opt, transform, **kwargs):
        seen.append(opt)
        return perfedavg.client.TrainStats(0.0, 0, 0)

    monkeypatch.setattr(perfedavg.client, "train_epochs", spy)
    make_client_app(run)(message("train.reptile", global_arrays(run)), context(0))
    (opt,) = seen
    assert type(opt) is expected
    lr = 0.003 if optimizer == "client_adam" else 0.04
    assert opt.param_groups[0]["lr"] == lr
