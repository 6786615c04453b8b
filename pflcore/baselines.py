"""The comparison baselines every package runs: FedAvg, FedAvg + fine-tuning, Local.

A package supplies its :class:`pflcore.runtime.WorkerRuntime` (its model, the
common initial weights, its clients' data and batch transform);
:func:`make_baseline_client_app` turns it into a ClientApp that the plain
:class:`pflcore.strategy.PartitionFedAvg` drives:

* ``fedavg``: train the received global model for ``local_epochs`` and send
  all of it back; the server takes the sample-weighted mean; the global model
  is tested on each client's test split.
* ``fedavg_ft``: as ``fedavg``, but at evaluation a copy of the global model
  is first fine-tuned (``finetune.epochs`` epochs at ``finetune.lr``) on the
  client's train split; the copy is discarded.
* ``local``: no communication; each client's full model lives in
  ``context.state`` and trains ``local_epochs`` every round (the total budget
  is therefore ``num_rounds x local_epochs`` epochs, the same as the
  federated methods).

The optimizer is re-created every round (no state carried over); its
learning rate is ``lr * lr_decay ** (round - 1)``, floored at ``lr_min``
(both optional keys; no decay by default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from pflcore.protocol import ARRAYS, eval_metrics, reply, server_round_of, train_metrics
from pflcore.runtime import WorkerRuntime
from pflcore.simulation import (
    add_partition_query,
    derive_seed,
    partition_id,
)
from pflcore.training import EvalStats, TrainStats, evaluate, make_sgd, train_epochs

BASELINES = ("fedavg", "fedavg_ft", "local")
LOCAL_STATE_KEY = "local-model"


def round_lr(config: dict[str, Any], server_round: int) -> float:
    """``lr * lr_decay ** (server_round - 1)``, floored at ``lr_min``."""
    decay = float(config.get("lr_decay", 1.0))
    floor = float(config.get("lr_min", 0.0))
    return max(float(config["lr"]) * decay ** (server_round - 1), floor)


def sgd_epochs(
    bench: WorkerRuntime,
    config: dict[str, Any],
    pid: int,
    *,
    lr: float,
    epochs: int,
    seed: int,
) -> TrainStats:
    """SGD on all parameters over client ``pid``'s train split (fresh optimizer)."""
    x, y = bench.train_split(pid)
    optimizer = make_sgd(
        bench.model.parameters(), lr, config["momentum"], config["weight_decay"]
    )
    return train_epochs(
        bench.model,
        x,
        y,
        optimizer,
        bench.transform,
        epochs=epochs,
        batch_size=config["batch_size"],
        generator=torch.Generator().manual_seed(seed),
        device=bench.device,
    )


def local_round(
    bench: WorkerRuntime, config: dict[str, Any], pid: int, server_round: int
) -> TrainStats:
    """One round's local training: ``local_epochs`` at the round's learning rate."""
    return sgd_epochs(
        bench,
        config,
        pid,
        lr=round_lr(config, server_round),
        epochs=config["local_epochs"],
        seed=derive_seed(config["seed"], pid, server_round),
    )


def evaluate_on_test(
    bench: WorkerRuntime, config: dict[str, Any], pid: int
) -> EvalStats:
    """Evaluate the loaded model on client ``pid``'s test split."""
    x, y = bench.test_split(pid)
    return evaluate(
        bench.model,
        x,
        y,
        bench.transform,
        batch_size=config["eval_batch_size"],
        device=bench.device,
    )


def make_baseline_client_app(
    config: dict[str, Any], bench_of: Callable[[dict[str, Any]], WorkerRuntime]
) -> ClientApp:
    """A ClientApp for ``config["algorithm"]`` in ``fedavg``, ``fedavg_ft``, ``local``.

    Parameters
    ----------
    config : dict
        Resolved configuration (``algorithm``, ``seed``, ``lr``, ``momentum``,
        ``weight_decay``, ``local_epochs``, ``batch_size``, ``eval_batch_size``,
        ``finetune.{epochs,lr}`` for ``fedavg_ft``; optional ``lr_decay``,
        ``lr_min``).
    bench_of : callable
        ``config -> WorkerRuntime``, cached per process by the caller.
    """
    algorithm = config["algorithm"]
    if algorithm not in BASELINES:
        raise ValueError(f"{algorithm!r} is not a baseline {BASELINES}")
    app = ClientApp()
    add_partition_query(app)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        bench = bench_of(config)
        if algorithm == "local":
            saved = context.state.array_records.get(LOCAL_STATE_KEY)
            bench.load(saved)
        else:
            bench.load(msg.content.array_records[ARRAYS])
        stats = local_round(bench, config, pid, server_round_of(msg))
        arrays = ArrayRecord()
        if algorithm == "local":
            context.state[LOCAL_STATE_KEY] = bench.weights()
        else:
            arrays = bench.weights()
        metrics = train_metrics(pid, stats.loss, bench.train_split(pid)[1].numel())
        return reply(msg, arrays=arrays, metrics=metrics)

    @app.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        bench = bench_of(config)
        if algorithm == "local":
            bench.load(context.state.array_records.get(LOCAL_STATE_KEY))
        else:
            bench.load(msg.content.array_records[ARRAYS])
        if algorithm == "fedavg_ft":
            sgd_epochs(
                bench,
                config,
                pid,
                lr=float(config["finetune"]["lr"]),
                epochs=int(config["finetune"]["epochs"]),
                seed=derive_seed(config["seed"], pid, server_round_of(msg), 1),
            )
        metrics = eval_metrics(pid, evaluate_on_test(bench, config, pid))
        return reply(msg, metrics=metrics)

    return app
