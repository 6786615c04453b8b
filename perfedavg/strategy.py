"""The server side: FedAvg over partition-ids, as each algorithm needs it.

* Per-FedAvg: the mean of the returned weights over the sampled clients, by
  the run's ``averaging`` rule (Fallah et al.'s server is uniform; every
  method beside it in a comparison uses the same rule), evaluation on every
  client before and after its one-step adaptation (recorded as ``before_*``
  and headline columns).
* FedAvg, FedAvg + update, Local-only: the same averaging rule.
* Jiang et al.: one instance per stage. The FedAvg stage moves the global
  model by ``server_lr`` times the averaged update (with optional server
  momentum); the Reptile stage sends ``train.reptile`` messages and moves by
  its own smaller ``server_lr``. Only the training clients are sampled; the
  held-out clients are evaluated. Rounds are numbered across stages
  (``round_offset``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid

from perfedavg.algorithm import adam_step
from pflcore.fl.protocol import ARRAYS, CONFIG, SERVER_ROUND
from pflcore.fl.sampling import ClientSampler
from pflcore.fl.strategy import PartitionStrategy, ServerState
from pflcore.records.results import RunRecorder

BEFORE = "before"  # the extra evaluation: the received model, not adapted


@dataclass
class ServerStepState(ServerState):
    """Server momentum and Adam moments (Per-FedAvg's and Jiang's checkpoint)."""

    velocity: dict[str, np.ndarray]
    adam_moments: dict[str, tuple[np.ndarray, np.ndarray]]
    adam_steps: int


class PersonalizedFedAvg(PartitionStrategy):
    """PartitionStrategy with a server step, a client pool, before/after evaluation.

    Parameters
    ----------
    recorder : RunRecorder
        Run recorder (declare ``extra_evals=("before",)`` to keep the
        un-adapted accuracy).
    train_clients : int, optional
        Sample training clients among partition-ids ``0 .. train_clients-1``
        (default: all).
    eval_partitions : list of int, optional
        Partition-ids evaluated on evaluation rounds (default: all).
    train_message, eval_message : str
        Message types of the training and evaluation instructions.
    server_lr : float
        The global model moves by ``server_lr`` times the averaged update
        (1.0: plain FedAvg).
    server_momentum : float
        Heavy-ball momentum on that update (0: none).
    server_adam : tuple of float, optional
        ``(lr, beta1, beta2)``: instead, apply Adam to the pseudo-gradient
        ``global - mean of client models`` (Jiang et al.'s Reptile stage);
        ``server_lr`` and ``server_momentum`` are then unused.
    round_offset : int
        Added to this strategy's round numbers (for stages run in sequence).
    stage : str
        Name printed in the progress line.
    **kwargs
        Passed to :class:`pflcore.fl.strategy.PartitionStrategy`.
    """

    def __init__(
        self,
        recorder: RunRecorder,
        *,
        train_clients: int | None = None,
        eval_partitions: list[int] | None = None,
        train_message: str = MessageType.TRAIN,
        eval_message: str = MessageType.EVALUATE,
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        server_adam: tuple[float, float, float] | None = None,
        round_offset: int = 0,
        stage: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(recorder, **kwargs)
        self.train_clients = train_clients or self.num_clients
        self.sampler = ClientSampler(self.train_clients, self.sampler.seed)
        self.evaluated = (
            list(range(self.num_clients))
            if eval_partitions is None
            else eval_partitions
        )
        self.train_message = train_message
        self.eval_message = eval_message
        self.server_lr = server_lr
        self.server_momentum = server_momentum
        self.round_offset = round_offset
        self.stage = stage
        self._current: ArrayRecord | None = None
        self._velocity: dict[str, np.ndarray] = {}
        self.server_adam = server_adam
        self._adam_moments: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._adam_steps = 0

    # -- checkpoints ----------------------------------------------------------

    def checkpoint_state(self) -> ServerStepState:
        """Server momentum and Adam moments (the rest is the global arrays)."""
        return ServerStepState(
            velocity={k: v.copy() for k, v in self._velocity.items()},
            adam_moments={
                k: (m.copy(), v.copy()) for k, (m, v) in self._adam_moments.items()
            },
            adam_steps=self._adam_steps,
        )

    def restore_state(self, state: ServerState) -> None:
        """Take back :meth:`checkpoint_state`."""
        assert isinstance(state, ServerStepState)
        self._velocity = {k: v.copy() for k, v in state.velocity.items()}
        self._adam_moments = {
            k: (m.copy(), v.copy()) for k, (m, v) in state.adam_moments.items()
        }
        self._adam_steps = int(state.adam_steps)

    # -- training -------------------------------------------------------------

    def train_partitions(self, server_round: int) -> list[int]:
        """Seeded sample of training clients for the (global) round."""
        return self.sampler.sample(
            server_round + self.round_offset, self.clients_per_round
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the global arrays to the round's sample of training clients."""
        partitions = self.train_partitions(server_round)
        config[SERVER_ROUND] = server_round + self.round_offset
        content = RecordDict({ARRAYS: arrays, CONFIG: config})
        self._current = arrays
        return self.messages_to(partitions, content, self.train_message)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average (see ``averaging``), then step ``server_lr`` along the update."""
        averaged, metrics = super().aggregate_train(server_round, replies)
        plain = self.server_lr == 1.0 and self.server_momentum == 0.0
        if averaged is None or not len(averaged) or self._current is None:
            return averaged, metrics
        if self.server_adam is not None:
            return self._adam(averaged), metrics
        if plain:
            return averaged, metrics
        stepped = ArrayRecord()
        for key in averaged:
            old = self._current[key].numpy()
            update = averaged[key].numpy().astype(np.float64) - old
            if self.server_momentum:
                velocity = self._velocity.get(key, np.zeros_like(update))
                update = self.server_momentum * velocity + update
                self._velocity[key] = update
            new = old + self.server_lr * update
            if np.issubdtype(old.dtype, np.integer):
                new = np.rint(new)
            stepped[key] = Array(np.asarray(new.astype(old.dtype)))
        return stepped, metrics

    def _adam(self, averaged: ArrayRecord) -> ArrayRecord:
        """Adam on the pseudo-gradient ``global - averaged`` (float arrays only)."""
        assert self.server_adam is not None and self._current is not None
        lr, beta1, beta2 = self.server_adam
        self._adam_steps += 1
        stepped = ArrayRecord()
        for key in averaged:
            old = self._current[key].numpy()
            if not np.issubdtype(old.dtype, np.floating):
                stepped[key] = averaged[key]  # e.g. counters: plain average
                continue
            grad = old.astype(np.float64) - averaged[key].numpy().astype(np.float64)
            zeros = np.zeros_like(grad)
            moments = self._adam_moments.get(key, (zeros, zeros))
            new, self._adam_moments[key] = adam_step(
                old.astype(np.float64),
                grad,
                moments,
                self._adam_steps,
                lr,
                (beta1, beta2),
            )
            stepped[key] = Array(np.asarray(new.astype(old.dtype)))
        return stepped

    # -- evaluation -----------------------------------------------------------

    def is_eval_round(self, server_round: int) -> bool:
        """The stage's last round, and every ``eval_every`` global rounds."""
        if server_round == self.num_rounds:
            return True
        global_round = server_round + self.round_offset
        return self.eval_every > 0 and global_round % self.eval_every == 0

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluate the ``eval_partitions`` on evaluation rounds."""
        if not self.is_eval_round(server_round):
            return []
        config[SERVER_ROUND] = server_round + self.round_offset
        content = RecordDict({ARRAYS: arrays, CONFIG: config})
        return self.messages_to(self.evaluated, content, self.eval_message)

    def eval_partitions(self, server_round: int) -> list[int]:
        """The ``eval_partitions`` given (every client by default)."""
        return list(self.evaluated)

    # -- end of round ---------------------------------------------------------

    def end_round(self, server_round: int, arrays: ArrayRecord) -> None:
        """Write the (global) round's row and print progress."""
        row = self.recorder.end_round(server_round + self.round_offset)
        before = row.get("before_acc_mean")
        note = f"(before adaptation {before:.4f})" if before is not None else ""
        self.progress.update(server_round, row, prefix=self.stage, note=note)
