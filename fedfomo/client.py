"""FedFomo's ClientApp: the first-order model optimisation update, then local SGD.

The authors' round for client i (``NVlabs/FedFomo``) is: FOMO update from the
received models, keep the result as the baseline, test it, train E epochs,
upload. Here it is split over Flower's two phases of a round:

* ``evaluate`` (end of round t): receive the candidates (client i's own
  latest upload plus M-1 other clients' round-t uploads, each in its own
  ArrayRecord ``candidate-<partition-id>``, then, where enabled, the
  cluster models ``cluster-<k>`` and the global model), compute the weights
  (``fedfomo.algorithm.fomo_weights``) on the client's fixed validation
  split, move the baseline (``fomo_update``), store the new baseline in
  ``context.state``, test it, and reply with the weights so the server can
  update its affinity matrix;
* ``train`` (round t+1): start from the stored baseline (the common initial
  weights before the first update), train ``local_epochs`` and upload the
  whole model.

The first round is therefore local training from the common initialisation,
and the last round's evaluate phase is "one more FOMO update, then the final
evaluation", as in the authors' code. ``context.state`` holds one model per
client (the baseline, θ_i^b); the client's own trained model comes back from
the server as a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp

from fedfomo.algorithm import (
    State,
    fomo_update,
    fomo_weights,
    model_distance,
    round_lr,
)
from fedfomo.dataset import fomo_data
from fedfomo.messages import (
    FOMO_UPDATE,
    FOMO_UPDATE_AND_TEST,
    candidate_id,
    fomo_weights_metrics,
    is_candidate_key,
)
from fedfomo.models import build_model
from fedfomo.settings import FedFomoSettings, read_settings
from pflcore.config.seeds import derive_seed
from pflcore.config.shared import EpochFinetune
from pflcore.data.node_data import node_data
from pflcore.fl.baselines import LocalUpdate
from pflcore.fl.identity import add_partition_query, partition_id
from pflcore.fl.protocol import (
    PARTITION_KEY,
    eval_metrics,
    reply,
    server_round_of,
    train_metrics,
)
from pflcore.local.devices import (
    apply_determinism,
    client_device,
    place_model,
    state_on,
)
from pflcore.local.finetune import FinetuneSpec
from pflcore.local.runtime import WorkerRuntime, cached_runtime, sgd_epochs
from pflcore.local.training import TrainStats
from pflcore.local.transforms import BatchTransform

BASELINE_KEY = "fomo-baseline"


# -- local training (FedFomo's local update, also its baselines') ----------------


@dataclass(frozen=True)
class LocalTraining:
    """The settings of FedFomo's local update (also its baselines').

    Attributes
    ----------
    lr, lr_decay, lr_min : float
        The learning rate of round 1, its decay per round and its floor
        (:func:`round_lr`).
    momentum, weight_decay : float
        SGD's momentum and weight decay.
    batch_size : int
        Minibatch size.
    epochs : int
        Epochs per round (``local_epochs``).
    seed : int
        The run's seed; each round's batches are seeded from it.
    """

    lr: float
    lr_decay: float
    lr_min: float
    momentum: float
    weight_decay: float
    batch_size: int
    epochs: int
    seed: int

    @classmethod
    def of(cls, settings: FedFomoSettings) -> LocalTraining:
        """The run's local update.

        Takes the whole settings: it reads eight of their top-level values
        (``lr``, ``lr_decay``, ``lr_min``, ``momentum``, ``weight_decay``,
        ``batch_size``, ``local_epochs``, ``seed``).
        """
        return cls(
            lr=settings.lr,
            lr_decay=settings.lr_decay,
            lr_min=settings.lr_min,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            batch_size=settings.batch_size,
            epochs=settings.local_epochs,
            seed=settings.seed,
        )


def local_round(
    runtime: WorkerRuntime, training: LocalTraining, pid: int, server_round: int
) -> TrainStats:
    """One round's local training: ``local_epochs`` at the round's learning rate.

    Parameters
    ----------
    runtime : WorkerRuntime
        The worker's runtime, loaded with the model to train.
    training : LocalTraining
        The run's local-update settings.
    pid, server_round : int
        The client and the round (they seed the batches).
    """
    return sgd_epochs(
        runtime,
        pid,
        lr=round_lr(
            training.lr,
            server_round,
            lr_decay=training.lr_decay,
            lr_min=training.lr_min,
        ),
        momentum=training.momentum,
        weight_decay=training.weight_decay,
        batch_size=training.batch_size,
        epochs=training.epochs,
        seed=derive_seed(training.seed, pid, server_round),
    )


def local_loss(
    runtime: WorkerRuntime, training: LocalTraining, pid: int, server_round: int
) -> float:
    """:func:`local_round`'s mean loss (the baselines' local update)."""
    return local_round(runtime, training, pid, server_round).loss


def finetune_spec(
    finetune: EpochFinetune, *, batch_size: int, momentum: float, weight_decay: float
) -> FinetuneSpec:
    """How FedAvg + fine-tuning adapts: ``finetune.epochs`` at ``finetune.lr``.

    Parameters
    ----------
    finetune : EpochFinetune
        The ``finetune.*`` settings.
    batch_size : int
        Minibatch size (the run's ``batch_size``).
    momentum, weight_decay : float
        SGD's momentum and weight decay (the run's).
    """
    return FinetuneSpec(
        unit="epochs",
        amount=int(finetune.epochs),
        lr=float(finetune.lr),
        batch_size=int(batch_size),
        momentum=float(momentum),
        weight_decay=float(weight_decay),
    )


# -- the worker's runtime ------------------------------------------------------


def val_loss(
    runtime: WorkerRuntime, weights: State, pid: int, batch_size: int
) -> float:
    """Mean cross-entropy of ``weights`` on client ``pid``'s validation split.

    The split moves to the device once and stays there for the other
    candidates (:class:`pflcore.local.devices.SplitCache`).
    """
    runtime.load(weights)
    return runtime.evaluate(pid, "val", batch_size).loss


def build_runtime(config: dict[str, Any]) -> WorkerRuntime:
    """FedFomo's worker runtime (also its baselines'): one model, three splits.

    A boundary: the plain config (a resolved configuration) arrives here from
    the run (the runtime cache keys on it); the node's own data, where it has
    a partition file, is read from the full ``config``.
    """
    settings = read_settings(config)
    dataset = settings.dataset
    data = node_data(config) or fomo_data(
        dataset,
        settings.partition,
        settings.num_clients,
        settings.seed,
        settings.protocol,
    )
    device = client_device(float(settings.client_resources.num_gpus))
    apply_determinism(bool(settings.deterministic), device)
    # The initial state is taken on the device: a client with no baseline yet
    # weighs the candidates against it.
    model, initial = place_model(
        build_model(
            settings.seed,
            data.data.num_classes,
            data.data.channels,
            dataset.image_size,
            settings.model.name,
        ),
        device,
    )
    mean, std = data.data.channel_stats()
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


def baseline_update(settings: FedFomoSettings, config: dict[str, Any]) -> LocalUpdate:
    """FedFomo's local update for the baselines (FedAvg, FedAvg + FT, Local).

    Parameters
    ----------
    settings : FedFomoSettings
        The run's typed settings (of ``config``).
    config : dict
        The resolved configuration: the key of the worker's runtime cache.
    """
    training = LocalTraining.of(settings)

    def runtime() -> WorkerRuntime:
        return get_runtime(config)

    def train(runtime: WorkerRuntime, pid: int, server_round: int) -> float:
        return local_loss(runtime, training, pid, server_round)

    return LocalUpdate(
        runtime,
        train,
        seed=settings.seed,
        eval_batch_size=settings.eval_batch_size,
        finetune=finetune_spec(
            settings.finetune,
            batch_size=settings.batch_size,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
        ),
        report_before=True,
    )


def _state_of(record: ArrayRecord, device: torch.device) -> State:
    return state_on(record, device)


def fomo_step(
    runtime: WorkerRuntime,
    pid: int,
    baseline: State,
    candidates: list[tuple[int, State]],
    *,
    eval_batch_size: int,
    norm: str,
) -> tuple[State, list[int], np.ndarray]:
    """Weight the candidates on the validation split and move the baseline.

    Parameters
    ----------
    runtime : WorkerRuntime
        The worker's runtime (its model is loaded with each model in turn).
    pid : int
        The client.
    baseline : dict
        The client's baseline model θ_b.
    candidates : list of (int, dict)
        The candidates' ids and models.
    eval_batch_size : int
        Batch size of the validation losses.
    norm : str
        The distance (``fomo.norm``, :func:`model_distance`).

    Returns
    -------
    new_baseline : dict
        The updated model (a copy of ``baseline`` when no weight is positive).
    ids : list of int
        The candidates' ids: partition-ids, ``pflcore.fl.protocol.GLOBAL_ID`` for the
        global average, ``cluster_id(k)`` for cluster k.
    weights : numpy.ndarray
        The raw (signed) weights, in the order of ``ids``.
    """
    batch = eval_batch_size
    base_loss = val_loss(runtime, baseline, pid, batch)
    losses = np.array([val_loss(runtime, c, pid, batch) for _, c in candidates])
    distances = np.array([model_distance(c, baseline, norm) for _, c in candidates])
    weights = fomo_weights(base_loss, losses, distances)
    updated = fomo_update(baseline, [c for _, c in candidates], weights)
    return updated, [i for i, _ in candidates], weights


def make_client_app(config: dict[str, Any]) -> ClientApp:
    """Build FedFomo's ClientApp for a resolved configuration.

    The closure carries the plain config (the runtime cache's key) and the
    values its handlers use.
    """
    settings = read_settings(config)
    training = LocalTraining.of(settings)
    eval_batch_size, norm = settings.eval_batch_size, settings.fomo.norm
    app = ClientApp()
    add_partition_query(app)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        bench = runtime
        bench.load(context.state.array_records.get(BASELINE_KEY))
        stats = local_round(bench, training, pid, server_round_of(msg))
        metrics = train_metrics(pid, stats.loss, runtime.data.size(pid))
        return reply(msg, arrays=bench.weights(), metrics=metrics)

    def evaluate(msg: Message, context: Context, update: bool, test: bool) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        saved = context.state.array_records.get(BASELINE_KEY)
        baseline = (
            _state_of(saved, runtime.device)
            if saved is not None
            else runtime.initial_state
        )
        metrics = MetricRecord()
        if update:
            candidates = [
                (candidate_id(key), _state_of(record, runtime.device))
                for key, record in msg.content.array_records.items()
                if is_candidate_key(key)
            ]
            if candidates:
                baseline, ids, weights = fomo_step(
                    runtime,
                    pid,
                    baseline,
                    candidates,
                    eval_batch_size=eval_batch_size,
                    norm=norm,
                )
                for key, value in fomo_weights_metrics(ids, list(weights)).items():
                    metrics[key] = value
            context.state[BASELINE_KEY] = ArrayRecord(
                {k: v.detach().cpu() for k, v in baseline.items()}
            )
        if test:
            runtime.load(baseline)
            for key, value in eval_metrics(
                pid, runtime.evaluate_test(pid, eval_batch_size)
            ).items():
                metrics[key] = value
        metrics[PARTITION_KEY] = pid
        return reply(msg, metrics=metrics)

    @app.evaluate()
    def test_baseline(msg: Message, context: Context) -> Message:
        return evaluate(msg, context, update=False, test=True)

    @app.evaluate(FOMO_UPDATE)
    def update_from_candidates(msg: Message, context: Context) -> Message:
        return evaluate(msg, context, update=True, test=False)

    @app.evaluate(FOMO_UPDATE_AND_TEST)
    def update_then_test(msg: Message, context: Context) -> Message:
        return evaluate(msg, context, update=True, test=True)

    return app
