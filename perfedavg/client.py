"""The ClientApp of every algorithm in the package, and the local updates it runs.

Per-FedAvg (Fallah et al.): a client takes ``local_steps`` meta-steps from the
received model (FO or HF, :func:`perfedavg.algorithm.perfedavg_update`).

Evaluation (``@app.evaluate``) tests the received model, then adapts a copy
with ``finetune`` (by default exactly one SGD step at lr alpha on one batch of
the client's *training* split), tests the copy and discards it.

The same app serves the comparisons (``fedavg``, ``fedavg_ft`` = FedAvg +
update, ``local``) and the Jiang et al. pipeline (``jiang``: ``train`` is its
FedAvg stage, ``train.reptile`` its Reptile stage, ``evaluate.personalize``
its personalization of held-out clients).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from torch import nn

from perfedavg.algorithm import perfedavg_update
from perfedavg.dataset import client_data
from perfedavg.models import build_model
from perfedavg.settings import ADAPTING, META, read_settings
from pflcore.config.seeds import Stream, derive_seed
from pflcore.data.client_data import ClientData
from pflcore.data.node_data import node_data
from pflcore.fl.baselines import BASELINES, LocalUpdate, make_baseline_client_app
from pflcore.fl.identity import add_partition_query, partition_id
from pflcore.fl.protocol import (
    ARRAYS,
    eval_metrics,
    reply,
    server_round_of,
    train_metrics,
)
from pflcore.local.devices import apply_determinism, client_device, place_model
from pflcore.local.finetune import FinetuneSpec, finetune_copy_and_evaluate, train_steps
from pflcore.local.runtime import WorkerRuntime, cached_runtime
from pflcore.local.training import (
    EvalStats,
    TrainStats,
    make_sgd,
    train_epochs,
)
from pflcore.local.transforms import BatchTransform

REPTILE_STREAM = 3  # seed stream of Jiang et al.'s Reptile stage
PERSONALIZE_STREAM = 4  # ... and of their personalization evaluation

if TYPE_CHECKING:
    from perfedavg.settings import Finetune, Model, PerFedAvgSettings, Reptile

# -- the worker's runtime ----------------------------------------------------


def initial_model(
    model: Model, data: ClientData, *, image_size: int, seed: int
) -> nn.Module:
    """The run's initial network: identical in every process for one seed.

    Parameters
    ----------
    model : perfedavg.settings.Model
        ``model.*``: the network's name and dropout.
    data : ClientData
        The loaded data (its classes and channels size the network).
    image_size : int
        ``dataset.image_size``.
    seed : int
        The run's seed (the initial weights' draws).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(
            model.name,
            data.data.num_classes,
            data.data.channels,
            int(image_size),
            float(model.dropout),
        )


def input_scaling(
    data: ClientData, normalize: bool
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) the batches are scaled by.

    ``normalize``: the training set's statistics (standardised inputs);
    otherwise mean 0 and std 1, i.e. raw pixels in [0, 1].
    """
    if normalize:
        return data.data.channel_stats()
    channels = int(data.data.channels)
    return (0.0,) * channels, (1.0,) * channels


def build_runtime(config: dict[str, Any]) -> WorkerRuntime:
    """Per-FedAvg's worker runtime: one full model, loaded and saved whole."""
    settings = read_settings(config)
    dataset = settings.dataset
    data = node_data(config) or client_data(
        dataset,
        settings.partition,
        settings.num_clients,
        settings.seed,
        settings.protocol,
    )
    device = client_device(float(settings.client_resources.num_gpus))
    apply_determinism(bool(settings.deterministic), device)
    model, initial = place_model(
        initial_model(
            settings.model, data, image_size=dataset.image_size, seed=settings.seed
        ),
        device,
    )
    mean, std = input_scaling(data, bool(dataset.normalize))
    transform = BatchTransform(
        mean,
        std,
        image_size=dataset.image_size,
        crop_padding=dataset.crop_padding,
        flip=dataset.flip,
    )
    return WorkerRuntime(data, model, initial, transform, device)


def get_runtime(config: dict[str, Any]) -> WorkerRuntime:
    """The per-process runtime for ``config`` (built on first use)."""
    return cached_runtime(build_runtime, config)


def finetune_spec(finetune: Finetune) -> FinetuneSpec:
    """The evaluation-time adaptation of the ``finetune.*`` settings."""
    return FinetuneSpec(
        unit=finetune.unit,
        amount=int(finetune.amount),
        lr=float(finetune.lr),
        batch_size=int(finetune.batch_size),
    )


# -- local updates -------------------------------------------------------------


def local_sgd(
    runtime: WorkerRuntime,
    pid: int,
    seed: int,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    steps: int,
    epochs: int,
    batch_size: int,
) -> TrainStats:
    """FedAvg's local update: ``steps`` SGD steps, or ``epochs`` epochs if 0.

    Parameters
    ----------
    runtime : WorkerRuntime
        The worker's runtime, loaded with the model to train.
    pid : int
        The client (partition-id) whose training split is used.
    seed : int
        Seed of the batch draws.
    lr, momentum, weight_decay : float
        SGD's settings.
    steps : int
        ``local_steps``: SGD steps on independently drawn batches (0: epochs).
    epochs : int
        ``local_epochs``: shuffled passes, used when ``steps`` is 0.
    batch_size : int
        Minibatch size.
    """
    x, y = runtime.train_split(pid)
    model = runtime.model
    optimizer = make_sgd(model.parameters(), lr, momentum, weight_decay)
    generator = torch.Generator().manual_seed(seed)
    if steps > 0:
        return train_steps(
            model,
            x,
            y,
            optimizer,
            runtime.transform,
            steps=steps,
            batch_size=batch_size,
            generator=generator,
            device=runtime.device,
        )
    return train_epochs(
        model,
        x,
        y,
        optimizer,
        runtime.transform,
        epochs=epochs,
        batch_size=batch_size,
        generator=generator,
        device=runtime.device,
    )


def meta_train(
    runtime: WorkerRuntime,
    pid: int,
    seed: int,
    *,
    steps: int,
    batch_size: int,
    alpha: float,
    beta: float,
    variant: str,
    delta: float,
) -> TrainStats:
    """Per-FedAvg's local update on client ``pid``: ``steps`` meta-steps.

    ``variant`` is ``"fo"`` or ``"hf"``; ``seed`` seeds the batch draws; the
    other values are :func:`perfedavg_update`'s.
    """
    x, y = runtime.train_split(pid)
    return perfedavg_update(
        runtime.model,
        x,
        y,
        runtime.transform,
        steps=steps,
        batch_size=batch_size,
        alpha=alpha,
        beta=beta,
        variant=variant,
        delta=delta,
        generator=torch.Generator().manual_seed(seed),
        device=runtime.device,
    )


def reptile_train(
    runtime: WorkerRuntime, pid: int, seed: int, reptile: Reptile, batch_size: int
) -> TrainStats:
    """Jiang et al.'s Reptile stage on a client: ``inner_epochs`` of local steps.

    With ``jiang.reptile.optimizer=client_adam`` (FedLab's seed) the steps
    are Adam's (``lr``, ``betas``; beta1 = 0 by default); with
    ``server_adam`` (the paper: Adam runs on the server) they are plain SGD
    at ``client_lr``.

    Parameters
    ----------
    runtime : WorkerRuntime
        The worker's runtime, loaded with the global model.
    pid : int
        The client (partition-id).
    seed : int
        Seed of the batch shuffles.
    reptile : perfedavg.settings.Reptile
        ``jiang.reptile.*``.
    batch_size : int
        Minibatch size.
    """
    x, y = runtime.train_split(pid)
    optimizer: torch.optim.Optimizer
    if reptile.optimizer == "server_adam":
        optimizer = make_sgd(
            runtime.model.parameters(), float(reptile.client_lr), 0.0, 0.0
        )
    else:
        optimizer = torch.optim.Adam(
            runtime.model.parameters(),
            lr=float(reptile.lr),
            betas=(float(reptile.betas[0]), float(reptile.betas[1])),
        )
    return train_epochs(
        runtime.model,
        x,
        y,
        optimizer,
        runtime.transform,
        epochs=int(reptile.inner_epochs),
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(seed),
        device=runtime.device,
    )


def adapted_counts(
    runtime: WorkerRuntime,
    pid: int,
    seed: int,
    finetune: FinetuneSpec,
    eval_batch_size: int,
) -> tuple[EvalStats, EvalStats]:
    """Test the loaded model, adapt a copy on the *training* split, test the copy.

    ``seed`` seeds the adaptation's batches; ``finetune`` is how the copy
    adapts; both tests run in batches of ``eval_batch_size``.
    """
    return finetune_copy_and_evaluate(
        runtime.model,
        runtime.train_split(pid),
        runtime.test_split(pid),
        runtime.transform,
        finetune,
        eval_batch_size=eval_batch_size,
        generator=torch.Generator().manual_seed(seed),
        device=runtime.device,
    )


# -- the ClientApp ---------------------------------------------------------------


def _seeded(seed: int, pid: int, msg: Message, *tags: int) -> int:
    """The seed of this client's work in this round, also seeding torch's global RNG.

    ``seed`` is the run's. Batches come from explicit generators; dropout
    draws from the global RNG, which a worker shares among the clients it
    serves in any order, so it is reseeded here: one seed reproduces one run.
    """
    return _round_seed(seed, pid, server_round_of(msg), *tags)


def _train_reply(
    msg: Message, arrays: ArrayRecord, stats: TrainStats, n: int, pid: int
) -> Message:
    metrics = train_metrics(pid, stats.loss, n)
    return reply(msg, arrays=arrays, metrics=metrics)


def _eval_reply(
    msg: Message, pid: int, after: EvalStats, before: EvalStats | None
) -> Message:
    metrics = (
        eval_metrics(pid, after)
        if before is None
        else eval_metrics(pid, after, before=before)
    )
    return reply(msg, metrics=metrics)


def _round_seed(seed: int, pid: int, server_round: int, *tags: int) -> int:
    """:func:`_seeded` for a round number (the baseline ClientApp's hooks)."""
    derived = derive_seed(seed, pid, server_round, *tags)
    torch.manual_seed(derived)
    return derived


def sgd_of(settings: PerFedAvgSettings) -> Callable[..., TrainStats]:
    """:func:`local_sgd` with the run's SGD settings: ``(runtime, pid, seed)``.

    Part of the client boundary (:func:`make_client_app`): reads ``lr``,
    ``momentum``, ``weight_decay``, ``local_steps``, ``local_epochs`` and
    ``batch_size``.
    """
    return partial(
        local_sgd,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        steps=settings.local_steps,
        epochs=settings.local_epochs,
        batch_size=settings.batch_size,
    )


def baseline_update(settings: PerFedAvgSettings, config: dict[str, Any]) -> LocalUpdate:
    """What the baseline ClientApp runs: FedAvg's local SGD, the ``finetune`` copy.

    Part of the client boundary (:func:`make_client_app`): the local update
    is :func:`local_sgd` with the run's SGD settings (:func:`sgd_of`), the
    adaptation ``finetune.*``; every seed derives from ``seed`` (and seeds
    torch's global RNG, :func:`_round_seed`); the test runs in batches of
    ``eval_batch_size``. ``config`` is the runtime's cache key
    (:func:`get_runtime`).
    """
    seed = settings.seed
    sgd = sgd_of(settings)

    def fedavg_loss(runtime: WorkerRuntime, pid: int, server_round: int) -> float:
        """FedAvg's (and Local's) local update of the loaded model: its mean loss."""
        stats: TrainStats = sgd(runtime, pid, _round_seed(seed, pid, server_round))
        return stats.loss

    return LocalUpdate(
        partial(get_runtime, config),
        fedavg_loss,
        seed=seed,
        eval_batch_size=settings.eval_batch_size,
        finetune=finetune_spec(settings.finetune),
        adapt_seed=lambda pid, server_round: _round_seed(
            seed, pid, server_round, Stream.ADAPT
        ),
        report_before=True,  # the paper's table is read after adaptation; both are kept
    )


def make_client_app(config: dict[str, Any]) -> ClientApp:
    """Build the ClientApp for a resolved configuration.

    FedAvg, FedAvg + update and Local run on the suite's baseline ClientApp
    (:mod:`pflcore.fl.baselines`) with :func:`local_sgd`; Per-FedAvg and Jiang
    et al.'s pipeline on this one. The closures carry the plain config (the
    runtime's cache key) and the typed settings; data and the model are
    built in the worker process on first use.
    """
    settings = read_settings(config)
    algorithm = settings.algorithm
    if algorithm in BASELINES:
        return make_baseline_client_app(algorithm, baseline_update(settings, config))
    app = ClientApp()
    add_partition_query(app)
    seed, eval_batch_size = settings.seed, settings.eval_batch_size
    finetune = finetune_spec(settings.finetune)
    sgd = sgd_of(settings)
    meta = partial(
        meta_train,
        steps=settings.local_steps,
        batch_size=settings.batch_size,
        alpha=settings.alpha,
        beta=settings.beta,
        variant=algorithm.removeprefix("perfedavg_"),
        delta=settings.delta,
    )
    reptile, batch_size = settings.jiang.reptile, settings.batch_size

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        round_seed = _seeded(seed, pid, msg)
        n = runtime.data.size(pid)
        runtime.load(msg.content.array_records[ARRAYS])
        if algorithm in META:
            stats = meta(runtime, pid, round_seed)
        else:  # the FedAvg stage of jiang
            stats = sgd(runtime, pid, round_seed)
        return _train_reply(msg, runtime.weights(), stats, n, pid)

    @app.train("reptile")
    def train_reptile(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        runtime.load(msg.content.array_records[ARRAYS])
        stats = reptile_train(
            runtime, pid, _seeded(seed, pid, msg, REPTILE_STREAM), reptile, batch_size
        )
        n = runtime.data.size(pid)
        return _train_reply(msg, runtime.weights(), stats, n, pid)

    @app.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        runtime.load(msg.content.array_records[ARRAYS])
        if algorithm in ADAPTING:
            adapt = _seeded(seed, pid, msg, Stream.ADAPT)
            before, after = adapted_counts(
                runtime, pid, adapt, finetune, eval_batch_size
            )
            return _eval_reply(msg, pid, after, before)
        return _eval_reply(msg, pid, runtime.evaluate_test(pid, eval_batch_size), None)

    @app.evaluate("personalize")
    def personalize(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        runtime.load(msg.content.array_records[ARRAYS])
        adapt = _seeded(seed, pid, msg, PERSONALIZE_STREAM)
        before, after = adapted_counts(runtime, pid, adapt, finetune, eval_batch_size)
        return _eval_reply(msg, pid, after, before)

    return app
