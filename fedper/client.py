"""FedPer's ClientApp: train all layers locally, send back the base only.

The personal layers (``model.num_head_layers`` units, K_P) live in
``context.state`` between rounds and never leave the client. ``fedavg`` is
the same client with no personal layers, ``local`` keeps everything personal.

``head_finetune_epochs > 0`` is the paper's Appendix A.3 variant: each round
first trains the personal layers alone on the received base, then all layers
as usual. ``model.linear_base`` is the Section 4.4 ablation: the base is one
linear map (see :func:`fedper.models.linearize_base`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedper.dataset import federated_data
from fedper.models import (
    FedPerNetwork,
    build_model,
    linearize_base,
    personal_keys,
)
from pflcore.devices import apply_determinism, place_model
from pflcore.node_data import node_data
from pflcore.protocol import ARRAYS, eval_metrics, reply, server_round_of, train_metrics
from pflcore.runtime import ClientData, WorkerRuntime, cached_runtime, sgd_epochs
from pflcore.seeds import Stream
from pflcore.simulation import (
    add_partition_query,
    client_device,
    derive_seed,
    partition_id,
)
from pflcore.transforms import BatchTransform

STATE_KEY = "personal"


def initial_model(
    config: dict[str, Any], num_classes: int, channels: int
) -> FedPerNetwork:
    """The run's initial network: identical in every process for one seed.

    With ``model.linear_base`` the base units are replaced by one linear map
    sized for ``dataset.image_size`` (the personal units are unchanged).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        model = build_model(
            config["model"]["name"],
            num_classes,
            channels,
            config["model"].get("num_blocks"),
        )
        if config["model"].get("linear_base", False):
            linearize_base(
                model,
                config["model"]["num_head_layers"],
                channels,
                config["dataset"]["image_size"],
            )
        return model


@dataclass
class ClientRuntime(WorkerRuntime):
    """FedPer's worker runtime: the model split into personal and base layers.

    ``personal`` and ``base`` name the state-dict keys of each part.
    """

    data: ClientData
    personal: list[str]
    base: list[str]

    def load_client(self, base: ArrayRecord, state: RecordDict) -> None:
        """Load the received base and this client's personal layers into the model."""
        weights = dict(self.initial_state)
        weights.update(base.to_torch_state_dict())
        if STATE_KEY in state.array_records:
            weights.update(state.array_records[STATE_KEY].to_torch_state_dict())
        self.model.load_state_dict(weights, strict=True)

    def part(self, keys: list[str]) -> ArrayRecord:
        """The model's current tensors for ``keys``."""
        state = self.model.state_dict()
        return ArrayRecord({k: state[k] for k in keys})


def build_runtime(config: dict[str, Any]) -> ClientRuntime:
    """FedPer's worker runtime for ``config``."""
    dataset = config["dataset"]
    fed = node_data(config) or federated_data(
        dataset, config["num_clients"], config["seed"]
    )
    device = client_device(float(config["client_resources"]["num_gpus"]))
    apply_determinism(bool(config.get("deterministic", True)), device)
    model, initial = place_model(
        initial_model(config, fed.data.num_classes, fed.data.channels), device
    )
    personal = personal_keys(
        model,
        config["algorithm"],
        config["model"]["num_head_layers"],
        config["model"]["base_buffers"],
    )
    base = [k for k in initial if k not in set(personal)]
    # The dataset's own per-channel constants (over its training images, as the
    # usual published CIFAR/MNIST constants are); no label is involved.
    mean, std = fed.data.channel_stats()
    transform = BatchTransform(
        mean,
        std,
        image_size=dataset["image_size"],
        crop_padding=dataset["crop_padding"],
        flip=dataset["flip"],
    )
    return ClientRuntime(
        data=fed,
        model=model,
        initial_state=initial,
        transform=transform,
        device=device,
        personal=personal,
        base=base,
    )


def get_runtime(config: dict[str, Any]) -> ClientRuntime:
    """The per-process runtime for ``config`` (built on first use)."""
    return cached_runtime(build_runtime, config)


def local_train(
    runtime: ClientRuntime, config: dict[str, Any], pid: int, server_round: int
) -> tuple[float, int]:
    """Run ``local_epochs`` of SGD on all layers; return (mean loss, train size)."""
    stats = sgd_epochs(
        runtime,
        config,
        pid,
        lr=config["lr"],
        epochs=config["local_epochs"],
        seed=derive_seed(config["seed"], pid, server_round),
    )
    return stats.loss, runtime.data.size(pid)


def finetune_head(
    runtime: ClientRuntime, config: dict[str, Any], pid: int, server_round: int
) -> float:
    """Paper App. A.3: train the personal layers alone on the received base.

    Runs ``head_finetune_epochs`` epochs of SGD (``lr``, ``momentum``,
    ``weight_decay``) over the personal parameters only; the base parameters
    are frozen (``requires_grad`` off, outside the optimizer). The base's
    BatchNorm layers run in training mode (batch statistics, as in the
    epochs that follow), but their running statistics are restored
    afterwards: every shared tensor leaves this phase bit-identical. (With
    ``model.base_buffers=local`` those statistics are the client's own and
    keep the phase's update.)

    Returns
    -------
    float
        The phase's mean training loss (0 when it does nothing).
    """
    epochs = int(config.get("head_finetune_epochs", 0))
    if epochs <= 0 or not runtime.personal:
        return 0.0
    model = runtime.model
    personal = set(runtime.personal)
    shared = set(runtime.base)
    head = [p for k, p in model.named_parameters() if k in personal]
    frozen = [p for k, p in model.named_parameters() if k not in personal]
    saved = {k: b.clone() for k, b in model.named_buffers() if k in shared}
    for p in frozen:
        p.requires_grad_(False)
    try:
        stats = sgd_epochs(
            runtime,
            config,
            pid,
            params=head,
            lr=config["lr"],
            epochs=epochs,
            seed=derive_seed(config["seed"], pid, server_round, Stream.HEAD),
        )
    finally:
        for p in frozen:
            p.requires_grad_(True)
        with torch.no_grad():
            for k, b in model.named_buffers():
                if k in saved:
                    b.copy_(saved[k])
    return stats.loss


def finetune_global_copy(
    runtime: ClientRuntime, config: dict[str, Any], pid: int, server_round: int
) -> None:
    """FedAvg + fine-tuning: adapt the loaded global model before testing it.

    The adapted weights are used for this evaluation only: the next message
    reloads the model from the server's arrays, so nothing is kept.
    """
    sgd_epochs(
        runtime,
        config,
        pid,
        lr=config["finetune"]["lr"],
        epochs=config["finetune"]["epochs"],
        seed=derive_seed(config["seed"], pid, server_round, Stream.ADAPT),
    )


def make_client_app(config: dict[str, Any]) -> ClientApp:
    """Build FedPer's ClientApp for a resolved configuration.

    The closure carries the plain config only; data and the model are built
    in the worker process on first use and cached there.
    """
    app = ClientApp()
    add_partition_query(app)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        runtime.load_client(msg.content.array_records[ARRAYS], context.state)
        server_round = server_round_of(msg)
        finetune_head(runtime, config, pid, server_round)
        loss, n = local_train(runtime, config, pid, server_round)
        if runtime.personal:
            context.state[STATE_KEY] = runtime.part(runtime.personal)
        metrics = train_metrics(pid, loss, n)
        return reply(msg, arrays=runtime.part(runtime.base), metrics=metrics)

    @app.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        runtime.load_client(msg.content.array_records[ARRAYS], context.state)
        if config["algorithm"] == "fedavg_ft":
            finetune_global_copy(runtime, config, pid, server_round_of(msg))
        metrics = eval_metrics(
            pid, runtime.evaluate_test(pid, config["eval_batch_size"])
        )
        return reply(msg, metrics=metrics)

    return app
