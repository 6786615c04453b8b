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
from fedper.settings import FedPerModel, read_settings
from pflcore.config.seeds import Stream, derive_seed
from pflcore.config.settings import ABSENT
from pflcore.config.shared import EpochFinetune
from pflcore.data.client_data import ClientData
from pflcore.data.node_data import node_data
from pflcore.fl.identity import add_partition_query, partition_id
from pflcore.fl.protocol import (
    ARRAYS,
    eval_metrics,
    reply,
    server_round_of,
    train_metrics,
)
from pflcore.local.devices import apply_determinism, client_device, place_model
from pflcore.local.runtime import WorkerRuntime, cached_runtime, sgd_epochs
from pflcore.local.transforms import BatchTransform

HEAD_STREAM = 2  # seed stream of the head fine-tuning phase (paper App. A.3)

STATE_KEY = "personal"


def initial_model(
    model: FedPerModel,
    num_classes: int,
    channels: int,
    *,
    seed: int,
    image_size: int,
) -> FedPerNetwork:
    """The run's initial network: identical in every process for one seed.

    With ``model.linear_base`` the base units are replaced by one linear map
    sized for ``image_size`` (the personal units are unchanged).

    Parameters
    ----------
    model : FedPerModel
        The ``model`` settings (network, K_P, linear base).
    num_classes, channels : int
        Output classes and input channels of the network.
    seed : int
        The run's seed (the weights are drawn from it, CPU generator only).
    image_size : int
        ``dataset.image_size``: the input the linear base is sized for.
    """
    num_blocks = None if model.num_blocks is ABSENT else model.num_blocks
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_model(model.name, num_classes, channels, num_blocks, image_size)
        if model.linear_base:
            linearize_base(network, model.num_head_layers, channels, image_size)
        return network


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
    """FedPer's worker runtime for ``config`` (a resolved configuration).

    A boundary: the plain config arrives here from the run (the runtime cache
    keys on it); the node's own data, where it has a partition file, is read
    from the full ``config``.
    """
    settings = read_settings(config)
    dataset = settings.dataset
    fed = node_data(config) or federated_data(
        dataset, settings.num_clients, settings.seed, settings.protocol
    )
    device = client_device(float(settings.client_resources.num_gpus))
    apply_determinism(bool(settings.deterministic), device)
    model, initial = place_model(
        initial_model(
            settings.model,
            fed.data.num_classes,
            fed.data.channels,
            seed=settings.seed,
            image_size=dataset.image_size,
        ),
        device,
    )
    personal = personal_keys(
        model,
        settings.algorithm,
        settings.model.num_head_layers,
        settings.model.base_buffers,
    )
    base = [k for k in initial if k not in set(personal)]
    # The dataset's own per-channel constants (over its training images, as the
    # usual published CIFAR/MNIST constants are); no label is involved.
    mean, std = fed.data.channel_stats()
    transform = BatchTransform(
        mean,
        std,
        image_size=dataset.image_size,
        crop_padding=dataset.crop_padding,
        flip=dataset.flip,
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


@dataclass(frozen=True)
class Sgd:
    """The run's SGD settings every local phase shares.

    Attributes
    ----------
    momentum, weight_decay : float
        ``momentum`` and ``weight_decay`` of every optimizer.
    batch_size : int
        Minibatch size.
    seed : int
        The run's seed; each phase derives its batches' seed from it.
    """

    momentum: float
    weight_decay: float
    batch_size: int
    seed: int

    def epochs(
        self,
        runtime: ClientRuntime,
        pid: int,
        *,
        lr: float,
        epochs: int,
        seed: int,
        params: list[torch.nn.Parameter] | None = None,
    ) -> float:
        """:func:`pflcore.local.runtime.sgd_epochs` with these settings; mean loss."""
        stats = sgd_epochs(
            runtime,
            pid,
            lr=lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            epochs=epochs,
            seed=seed,
            params=params,
        )
        return stats.loss


def local_train(
    runtime: ClientRuntime,
    sgd: Sgd,
    pid: int,
    server_round: int,
    *,
    lr: float,
    epochs: int,
) -> tuple[float, int]:
    """Run ``epochs`` (``local_epochs``) of SGD on all layers.

    Parameters
    ----------
    runtime : ClientRuntime
        The worker's runtime, loaded with the client's model.
    sgd : Sgd
        The run's SGD settings and seed.
    pid, server_round : int
        The client and the round (they seed the batches).
    lr : float
        Learning rate (``lr``).
    epochs : int
        Epochs (``local_epochs``).

    Returns
    -------
    tuple of (float, int)
        The mean loss and the client's training-split size.
    """
    loss = sgd.epochs(
        runtime,
        pid,
        lr=lr,
        epochs=epochs,
        seed=derive_seed(sgd.seed, pid, server_round),
    )
    return loss, runtime.data.size(pid)


def finetune_head(
    runtime: ClientRuntime,
    sgd: Sgd,
    pid: int,
    server_round: int,
    *,
    lr: float,
    epochs: int,
) -> float:
    """Paper App. A.3: train the personal layers alone on the received base.

    Runs ``epochs`` (``head_finetune_epochs``) epochs of SGD (``lr`` and the
    run's ``momentum``, ``weight_decay``) over the personal parameters only;
    the base parameters are frozen (``requires_grad`` off, outside the
    optimizer). The base's BatchNorm layers run in training mode (batch
    statistics, as in the epochs that follow), but their running statistics
    are restored afterwards: every shared tensor leaves this phase
    bit-identical. (With ``model.base_buffers=local`` those statistics are
    the client's own and keep the phase's update.)

    Parameters
    ----------
    runtime : ClientRuntime
        The worker's runtime, loaded with the received base and the head.
    sgd : Sgd
        The run's SGD settings and seed.
    pid, server_round : int
        The client and the round (they seed the batches).
    lr : float
        Learning rate (``lr``).
    epochs : int
        Epochs (``head_finetune_epochs``; 0 does nothing).

    Returns
    -------
    float
        The phase's mean training loss (0 when it does nothing).
    """
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
        loss = sgd.epochs(
            runtime,
            pid,
            params=head,
            lr=lr,
            epochs=epochs,
            seed=derive_seed(sgd.seed, pid, server_round, HEAD_STREAM),
        )
    finally:
        for p in frozen:
            p.requires_grad_(True)
        with torch.no_grad():
            for k, b in model.named_buffers():
                if k in saved:
                    b.copy_(saved[k])
    return loss


def finetune_global_copy(
    runtime: ClientRuntime,
    sgd: Sgd,
    finetune: EpochFinetune,
    pid: int,
    server_round: int,
) -> None:
    """FedAvg + fine-tuning: adapt the loaded global model before testing it.

    The adapted weights are used for this evaluation only: the next message
    reloads the model from the server's arrays, so nothing is kept.

    Parameters
    ----------
    runtime : ClientRuntime
        The worker's runtime, loaded with the global model.
    sgd : Sgd
        The run's SGD settings and seed.
    finetune : EpochFinetune
        ``finetune.epochs`` and ``finetune.lr``.
    pid, server_round : int
        The client and the round (they seed the batches).
    """
    sgd.epochs(
        runtime,
        pid,
        lr=finetune.lr,
        epochs=finetune.epochs,
        seed=derive_seed(sgd.seed, pid, server_round, Stream.ADAPT),
    )


def make_client_app(config: dict[str, Any]) -> ClientApp:
    """Build FedPer's ClientApp for a resolved configuration.

    The closure carries the plain config (the runtime cache's key) and the
    values its handlers use; data and the model are built in the worker
    process on first use and cached there.
    """
    settings = read_settings(config)
    sgd = Sgd(
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        batch_size=settings.batch_size,
        seed=settings.seed,
    )
    lr, local_epochs = settings.lr, settings.local_epochs
    head_epochs = settings.head_finetune_epochs
    finetune = settings.finetune if settings.algorithm == "fedavg_ft" else None
    eval_batch_size = settings.eval_batch_size
    app = ClientApp()
    add_partition_query(app)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        runtime.load_client(msg.content.array_records[ARRAYS], context.state)
        server_round = server_round_of(msg)
        finetune_head(runtime, sgd, pid, server_round, lr=lr, epochs=head_epochs)
        loss, n = local_train(
            runtime, sgd, pid, server_round, lr=lr, epochs=local_epochs
        )
        if runtime.personal:
            context.state[STATE_KEY] = runtime.part(runtime.personal)
        metrics = train_metrics(pid, loss, n)
        return reply(msg, arrays=runtime.part(runtime.base), metrics=metrics)

    @app.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        runtime.load_client(msg.content.array_records[ARRAYS], context.state)
        if finetune is not None:
            finetune_global_copy(runtime, sgd, finetune, pid, server_round_of(msg))
        metrics = eval_metrics(pid, runtime.evaluate_test(pid, eval_batch_size))
        return reply(msg, metrics=metrics)

    return app
