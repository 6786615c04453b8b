"""The comparison baselines every package runs: FedAvg, FedAvg + fine-tuning, Local.

One ClientApp, :func:`make_baseline_client_app`, serves all three for every
package; the package supplies only what differs (:class:`LocalUpdate`): its
worker runtime, its local update, what it tests, and how FedAvg + fine-tuning
adapts. The server side is the plain :class:`pflcore.fl.strategy.PartitionStrategy`
(under the run's ``averaging`` rule).

* ``fedavg``: train the received global model with the package's local
  update and send all of it back; the global model is tested on each
  client's test split.
* ``fedavg_ft``: as ``fedavg``, but at evaluation a *copy* of the global model
  is adapted on the client's training split and tested; the copy is
  discarded (:func:`pflcore.local.finetune.finetune_copy_and_evaluate`).
* ``local``: no communication; each client's full model lives in
  ``context.state`` (:data:`LOCAL_STATE_KEY`), starts from the run's common
  initial weights, and trains with the same local update every round (the
  same budget as the federated methods).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from pflcore.config.seeds import Stream, derive_seed
from pflcore.fl.identity import add_partition_query, partition_id
from pflcore.fl.protocol import (
    ARRAYS,
    eval_metrics,
    reply,
    server_round_of,
    train_metrics,
)
from pflcore.local.finetune import (
    FinetuneSpec,
    finetune_copy_and_evaluate,
    finetune_copy_and_test,
)
from pflcore.local.runtime import WorkerRuntime
from pflcore.local.training import EvalStats

BASELINES = ("fedavg", "fedavg_ft", "local")
LOCAL_STATE_KEY = "local-model"

# fedavg_ft's whole evaluation: (runtime, pid, server_round) -> stats
AdaptedTest = Callable[[WorkerRuntime, int, int], dict[str, EvalStats]]


@dataclass(frozen=True)
class LocalUpdate:
    """What a package gives the baseline ClientApp.

    Every callable closes over the settings it reads; the ClientApp passes
    only the message's values (the client, the round).

    Attributes
    ----------
    runtime : callable
        ``() -> WorkerRuntime``: the worker's runtime (cached per process).
    train : callable
        ``(runtime, pid, server_round) -> mean loss``: the package's local
        update of the loaded model (it seeds its own batches).
    seed : int
        The run's seed (``fedavg_ft``'s batches are drawn from its
        :data:`pflcore.config.seeds.Stream.ADAPT` stream unless ``adapt_seed``).
    eval_batch_size : int
        Batch size of the default test.
    finetune : FinetuneSpec, optional
        How ``fedavg_ft`` adapts its copy (required for ``fedavg_ft``).
    test : callable, optional
        ``(runtime, pid) -> {"test": EvalStats, name: EvalStats}``: what an
        evaluation reports of the loaded model (other names are sent
        prefixed, e.g. ``val-correct``); default: the test split only.
    adapt_seed : callable, optional
        ``(pid, server_round) -> seed`` of ``fedavg_ft``'s batches.
    report_before : bool
        ``fedavg_ft`` also reports the unadapted model's test counts
        (``before-*``).
    prepare : callable, optional
        Called with every message before any work (pFedHN: torch threads).
    adapted_test : callable, optional
        ``(runtime, pid, server_round) -> {"test": EvalStats, ...}``:
        ``fedavg_ft``'s whole evaluation, for a package that tests the adapted
        copy on more than the test split (pFedHN: validation too); without
        it ``finetune`` adapts and the test split is tested.
    """

    runtime: Callable[[], WorkerRuntime]
    train: Callable[[WorkerRuntime, int, int], float]
    seed: int
    eval_batch_size: int
    finetune: FinetuneSpec | None = None
    test: Callable[[WorkerRuntime, int], dict[str, EvalStats]] | None = None
    adapt_seed: Callable[[int, int], int] | None = None
    report_before: bool = False
    prepare: Callable[[Message], None] | None = None
    adapted_test: AdaptedTest | None = None

    def tested(self, runtime: WorkerRuntime, pid: int) -> dict[str, EvalStats]:
        """What an evaluation of the loaded (unadapted) model reports."""
        if self.test is not None:
            return self.test(runtime, pid)
        return {"test": runtime.evaluate_test(pid, self.eval_batch_size)}

    def adaptation_seed(self, pid: int, server_round: int) -> int:
        """The seed of ``fedavg_ft``'s batches for client ``pid`` in a round."""
        if self.adapt_seed is not None:
            return self.adapt_seed(pid, server_round)
        return adaptation_seed(self.seed, pid, server_round)


def adaptation_seed(seed: int, pid: int, server_round: int) -> int:
    """The default seed of FedAvg + fine-tuning's batches (stream 1 of the round)."""
    return derive_seed(seed, pid, server_round, Stream.ADAPT)


def _load(runtime: WorkerRuntime, local: bool, msg: Message, context: Context) -> None:
    if local:  # the client's own model; the common initial weights at first
        runtime.load(context.state.array_records.get(LOCAL_STATE_KEY))
    else:
        runtime.load(msg.content.array_records[ARRAYS])


def _adapted_counts(
    update: LocalUpdate, runtime: WorkerRuntime, pid: int, server_round: int
) -> dict[str, EvalStats]:
    if update.adapted_test is not None:
        return update.adapted_test(runtime, pid, server_round)
    if update.finetune is None:
        raise ValueError("fedavg_ft needs LocalUpdate.finetune")
    seed = update.adaptation_seed(pid, server_round)
    args = (
        runtime.model,
        runtime.train_split(pid),
        runtime.test_split(pid),
        runtime.transform,
        update.finetune,
    )
    options: dict[str, Any] = {
        "eval_batch_size": update.eval_batch_size,
        "generator": torch.Generator().manual_seed(seed),
        "device": runtime.device,
    }
    if update.report_before:
        before, after = finetune_copy_and_evaluate(*args, **options)
        return {"test": after, "before": before}
    return {"test": finetune_copy_and_test(*args, **options)}


def make_baseline_client_app(algorithm: str, update: LocalUpdate) -> ClientApp:
    """A ClientApp for ``algorithm`` in ``fedavg``, ``fedavg_ft``, ``local``.

    Parameters
    ----------
    algorithm : str
        One of :data:`BASELINES`.
    update : LocalUpdate
        The package's runtime, local update, test and adaptation.
    """
    if algorithm not in BASELINES:
        raise ValueError(f"{algorithm!r} is not a baseline {BASELINES}")
    local = algorithm == "local"
    app = ClientApp()
    add_partition_query(app)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if update.prepare is not None:
            update.prepare(msg)
        pid = partition_id(context)
        runtime = update.runtime()
        _load(runtime, local, msg, context)
        loss = update.train(runtime, pid, server_round_of(msg))
        arrays = ArrayRecord()
        if local:
            context.state[LOCAL_STATE_KEY] = runtime.weights()
        else:
            arrays = runtime.weights()
        metrics = train_metrics(pid, loss, runtime.data.size(pid))
        return reply(msg, arrays=arrays, metrics=metrics)

    @app.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        if update.prepare is not None:
            update.prepare(msg)
        pid = partition_id(context)
        runtime = update.runtime()
        _load(runtime, local, msg, context)
        if algorithm == "fedavg_ft":
            stats = _adapted_counts(update, runtime, pid, server_round_of(msg))
        else:
            stats = update.tested(runtime, pid)
        test = stats.pop("test")
        return reply(msg, metrics=eval_metrics(pid, test, **stats))

    return app
