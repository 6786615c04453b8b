"""pflcore.fl.baselines: the one FedAvg / FedAvg + fine-tuning / Local ClientApp."""

from pathlib import Path

import pytest
import torch
from flwr.app import (
    ArrayRecord,
    Message,
    MessageType,
)
from hydra import compose, initialize_config_dir

from fedfomo.client import LocalTraining, baseline_update, get_runtime, local_loss
from fedfomo.settings import read_settings
from pflcore.config import to_plain
from pflcore.fl.baselines import LOCAL_STATE_KEY, LocalUpdate, make_baseline_client_app
from tests.messages import context, message

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def fomo_config(algorithm: str) -> dict:
    overrides = [
        "experiment=fedfomo/quick",
        f"algorithm={algorithm}",
        "num_clients=5",
        "partition.pool_fraction=0.2",
        "local_epochs=1",
    ]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return to_plain(compose("fedfomo", overrides=overrides))


def update_for(config: dict) -> LocalUpdate:
    return baseline_update(read_settings(config), config)


def baseline_app(config: dict, update: LocalUpdate | None = None):
    return make_baseline_client_app(config["algorithm"], update or update_for(config))


def call(app, kind: str, server_round: int, arrays: ArrayRecord, ctx):
    return app(message(kind, arrays, server_round), ctx)


def counts(reply: Message) -> tuple[int, int]:
    m = reply.content.metric_records["metrics"]
    return int(m["correct"]), int(m["num-examples"])


def perturbed(initial: dict[str, torch.Tensor], seed: int) -> ArrayRecord:
    g = torch.Generator().manual_seed(seed)
    return ArrayRecord(
        {
            k: v + 0.05 * torch.randn(v.shape, generator=g)
            if v.is_floating_point()
            else v
            for k, v in initial.items()
        }
    )


def test_fedavg_ft_adapts_a_copy_and_leaves_the_worker_model_as_received():
    sent = perturbed(get_runtime(fomo_config("fedavg")).initial_state, 0)
    fedavg = baseline_app(fomo_config("fedavg"))
    plain = counts(call(fedavg, MessageType.EVALUATE, 3, sent, context(2)))

    config = fomo_config("fedavg_ft")
    runtime = get_runtime(config)
    adapted = counts(
        call(
            baseline_app(config),
            MessageType.EVALUATE,
            3,
            sent,
            context(2),
        )
    )
    for key, value in sent.to_torch_state_dict().items():
        assert torch.equal(runtime.model.state_dict()[key], value), key
    assert adapted[1] == plain[1]  # the same test split
    assert adapted[0] != plain[0]  # the fine-tuned copy was tested, not the received


def test_local_starts_from_the_initial_weights_keeps_its_model_and_sends_nothing():
    config = fomo_config("local")
    app, ctx = baseline_app(config), context(1)
    reply = call(app, MessageType.TRAIN, 1, ArrayRecord(), ctx)
    assert len(reply.content.array_records["arrays"]) == 0
    saved = ctx.state.array_records[LOCAL_STATE_KEY].to_torch_state_dict()

    runtime = get_runtime(config)  # the same update by hand, from the initial weights
    runtime.load(None)
    training = LocalTraining.of(read_settings(config))
    loss = local_loss(runtime, training, 1, 1)
    for key, value in runtime.model.state_dict().items():
        assert torch.equal(saved[key], value), key
    assert reply.content.metric_records["metrics"]["train-loss"] == pytest.approx(loss)

    call(app, MessageType.TRAIN, 2, ArrayRecord(), ctx)  # round 2 continues from it
    again = ctx.state.array_records[LOCAL_STATE_KEY].to_torch_state_dict()
    runtime.load(saved)
    local_loss(runtime, training, 1, 2)
    for key, value in runtime.model.state_dict().items():
        assert torch.equal(again[key], value), key


def test_a_package_without_a_finetune_spec_cannot_run_fedavg_ft():
    from dataclasses import replace

    config = fomo_config("fedavg_ft")
    app = baseline_app(config, replace(update_for(config), finetune=None))
    sent = ArrayRecord(get_runtime(fomo_config("fedavg_ft")).initial_state)
    with pytest.raises(ValueError, match="finetune"):
        call(app, MessageType.EVALUATE, 1, sent, context(0))
