"""pFedHN's server: the hypernetwork, its optimizer, and the client embeddings.

Each round the server samples ``clients_per_round`` training partitions (one
in the paper) with a seeded generator, generates each one's target weights
theta_j = h(v_j; phi) and sends them in that client's own message. A client
replies with delta_j = theta_j - theta~_j (old minus new). The server then
takes the vector-Jacobian product g = (d theta_j / d(phi, v))^T delta_j, the
gradient of 0.5 * ||h(v_j; phi) - stopgrad(theta~_j)||^2, clips ||g|| to
``clip`` and steps its persistent SGD on phi and the embeddings, so h(v_j)
moves towards the client's trained weights (the authors' sign). With several
clients in a round their VJPs are averaged into one step. No global arrays
exist: the strategy returns none.

Novel clients: partitions listed in ``novel_clients`` never train in the
first ``num_rounds`` rounds. In ``novel_rounds`` further rounds only they are
sampled; each starts from the mean of the trained embeddings, and the server
steps only that client's embedding (phi frozen) with its own SGD.

Evaluation (every ``eval_every`` rounds, the last training round and the last
round): every evaluated client gets its own generated weights and reports
validation and test counts. ``rounds.csv`` gets ``phase``, ``val_acc_pooled``
and ``val_acc_mean``; ``summary.json`` gets ``best_val`` (the test figures at
the training round with the best pooled validation accuracy, the paper's
headline) and ``novel`` (the novel clients' figures at the last round).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid

from pfedhn.algorithm import embedding_step, hypernetwork_step
from pfedhn.models import HyperNetwork
from pfedhn.threads import THREADS_KEY
from pflcore.fl.protocol import (
    ARRAYS,
    CONFIG,
    TRAIN_LOSS,
    ClientError,
    instruction,
    metrics_of,
    reply_partition,
    scalar,
)
from pflcore.fl.strategy import (
    PartitionStrategy,
    ServerState,
    client_eval,
    evaluation_record,
    train_record,
)
from pflcore.records.results import (
    ClientEval,
    RunRecorder,
    summarize_clients,
    worst_share_mean,
)

EXTRA_FIELDS = ("phase", "val_acc_pooled", "val_acc_mean")


class BestValidation:
    """Evaluation bookkeeping shared by pFedHN and the baselines.

    Records test counts through the recorder, validation accuracy as extra
    columns, and keeps ``best_val`` (training phase) and ``novel`` (novel
    phase) in ``summary.json``.
    """

    def __init__(self, recorder: RunRecorder) -> None:
        self.recorder = recorder
        self.best: dict[str, Any] | None = None

    def record(
        self, contents: list[RecordDict], server_round: int, phase: str
    ) -> list[ClientEval]:
        """Record one evaluation's validation figures; return the test results.

        The round loop records the test results (the strategy returns them);
        validation goes into this round's extra columns and ``summary.json``.
        """
        test, val = [], []
        for content in contents:
            m = metrics_of(content)
            test.append(client_eval(m))
            val.append(client_eval(m, "val"))
        t, v = summarize_clients(test), summarize_clients(val)
        self.recorder.log_extra(
            phase=phase,
            val_acc_pooled=v["test_acc_pooled"],
            val_acc_mean=v["test_acc_mean"],
        )
        acc = np.array([e.accuracy for e in test])
        figures = {
            "round": server_round,
            "val_acc_pooled": v["test_acc_pooled"],
            "val_acc_mean": v["test_acc_mean"],
            **t,
            "test_acc_max": float(acc.max()),
            "test_acc_worst10_mean": worst_share_mean(acc, 0.1),
            "num_clients": len(test),
        }
        if phase == "train":
            if self.best is None or v["test_acc_pooled"] > self.best["val_acc_pooled"]:
                self.best = figures
                self.recorder.set_summary(best_val=figures)
        else:
            self.recorder.set_summary(novel=figures)
        return test


@dataclass
class BestValidationState(ServerState):
    """The best-validation figures so far (the baselines' checkpoint)."""

    best: dict[str, Any] | None


@dataclass
class HyperNetworkState(BestValidationState):
    """The hypernetwork, its optimizer and the novel phase (pFedHN's checkpoint)."""

    hn: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    novel_embeddings: dict[int, torch.Tensor]
    novel_optimizers: dict[int, dict[str, Any]]


class PFedHN(PartitionStrategy):
    """pFedHN / pFedHN-PC server (see the module docstring).

    Parameters
    ----------
    recorder : RunRecorder
        Run recorder (created with ``extra_fields=EXTRA_FIELDS``).
    hypernetwork : HyperNetwork
        The hypernetwork (moved to ``device``).
    novel_clients : list of int
        Partitions held out of training (may be empty).
    novel_rounds : int
        Rounds of embedding-only fitting for them after ``num_rounds``.
    lr, momentum, weight_decay, clip : float
        The hypernetwork's SGD and gradient-norm clip.
    embed_lr : float, optional
        Learning rate of the embeddings (default ``lr``).
    novel_lr : float
        Learning rate of a novel client's embedding.
    device : str
        ``server_device``.
    num_clients, clients_per_round, num_rounds, eval_every, seed
        As in :class:`pflcore.fl.strategy.PartitionStrategy`; ``num_rounds``
        counts the training rounds only.
    train_threads : int
        Torch threads a training client uses (``num-threads`` in its
        message): with one client per round it can have every core.
    """

    def __init__(
        self,
        recorder: RunRecorder,
        hypernetwork: HyperNetwork,
        *,
        novel_clients: list[int],
        novel_rounds: int,
        lr: float,
        momentum: float,
        weight_decay: float,
        clip: float,
        novel_lr: float,
        device: str,
        num_clients: int,
        clients_per_round: int,
        num_rounds: int,
        eval_every: int,
        seed: int,
        embed_lr: float | None = None,
        train_threads: int = 1,
        on_client_failure: str = "stop",
    ) -> None:
        total = num_rounds + (novel_rounds if novel_clients else 0)
        super().__init__(
            recorder,
            num_clients=num_clients,
            clients_per_round=clients_per_round,
            num_rounds=total,
            eval_every=eval_every,
            seed=seed,
            on_client_failure=on_client_failure,
        )
        self.device = torch.device(device)
        self.train_threads = train_threads
        self.hn = hypernetwork.to(self.device)
        self.train_rounds = num_rounds
        self.novel = sorted(novel_clients)
        self.trained = [j for j in range(num_clients) if j not in set(self.novel)]
        self.clip = clip
        self.novel_lr = novel_lr
        self.momentum = momentum
        embed = [p for n, p in self.hn.named_parameters() if n.startswith("embeddings")]
        rest = [
            p for n, p in self.hn.named_parameters() if not n.startswith("embeddings")
        ]
        # The authors' optimizer: one SGD, the embeddings as their own group.
        groups: list[dict[str, Any]] = [
            {"params": rest},
            {"params": embed, "lr": embed_lr or lr},
        ]
        self.optimizer = torch.optim.SGD(
            groups,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
        )
        self.novel_embeddings: dict[int, torch.nn.Parameter] = {}
        self.novel_optimizers: dict[int, torch.optim.SGD] = {}
        self.evals = BestValidation(recorder)
        self.keys = list(self.hn.shapes)
        self._graphs: dict[int, dict[str, torch.Tensor]] = {}

    # -- checkpoints ------------------------------------------------------------

    def checkpoint_state(self) -> HyperNetworkState:
        """The hypernetwork (embeddings included), its optimizer, the novel phase."""
        return HyperNetworkState(
            hn={k: v.detach().cpu().clone() for k, v in self.hn.state_dict().items()},
            optimizer=copy.deepcopy(self.optimizer.state_dict()),
            novel_embeddings={
                j: v.detach().cpu().clone() for j, v in self.novel_embeddings.items()
            },
            novel_optimizers={
                j: copy.deepcopy(o.state_dict())
                for j, o in self.novel_optimizers.items()
            },
            best=self.evals.best,
        )

    def restore_state(self, state: ServerState) -> None:
        """Take back :meth:`checkpoint_state`."""
        assert isinstance(state, HyperNetworkState)
        self.hn.load_state_dict(state.hn)
        self.optimizer.load_state_dict(state.optimizer)
        self.novel_embeddings, self.novel_optimizers = {}, {}
        for j, value in state.novel_embeddings.items():
            v = torch.nn.Parameter(value.to(self.device))
            optimizer = torch.optim.SGD([v], lr=self.novel_lr, momentum=self.momentum)
            optimizer.load_state_dict(state.novel_optimizers[j])
            self.novel_embeddings[int(j)] = v
            self.novel_optimizers[int(j)] = optimizer
        self.evals.best = state.best

    # -- phases ---------------------------------------------------------------

    def phase(self, server_round: int) -> str:
        """``train`` for the first ``num_rounds`` rounds, then ``novel``."""
        return "train" if server_round <= self.train_rounds else "novel"

    def train_partitions(self, server_round: int) -> list[int]:
        """Seeded sample of this phase's partitions."""
        pool = self.trained if self.phase(server_round) == "train" else self.novel
        return self.sampler.sample(server_round, self.clients_per_round, pool)

    @property
    def seed(self) -> int:
        """The sampling seed."""
        return self.sampler.seed

    def _start_novel_phase(self) -> None:
        with torch.no_grad():
            mean = self.hn.embeddings.weight[self.trained].mean(dim=0)
        for j in self.novel:
            v = torch.nn.Parameter(mean.clone())
            self.novel_embeddings[j] = v
            self.novel_optimizers[j] = torch.optim.SGD(
                [v], lr=self.novel_lr, momentum=self.momentum
            )

    # -- generation -----------------------------------------------------------

    def generate(self, pid: int) -> dict[str, torch.Tensor]:
        """Client ``pid``'s target weights (with autograd graph)."""
        if pid in self.novel_embeddings:
            return self.hn.generate(self.novel_embeddings[pid])
        return self.hn(pid)

    def weights_record(self, pid: int, keep_graph: bool = False) -> ArrayRecord:
        """Client ``pid``'s generated weights as an ArrayRecord.

        With ``keep_graph`` the forward pass is kept for :meth:`hn_step`: phi
        does not change between sending and aggregating, so the reply's VJP
        needs no second forward.
        """
        if keep_graph:
            weights = self.hn(pid)
            self._graphs[pid] = weights
        else:
            with torch.no_grad():
                weights = self.generate(pid)
        return ArrayRecord({k: v.detach().cpu() for k, v in weights.items()})

    def _messages_for(
        self, partitions: list[int], server_round: int, message_type: str
    ) -> list[Message]:
        self.note_sent(partitions)
        messages = []
        keep_graph = (
            message_type == MessageType.TRAIN and self.phase(server_round) == "train"
        )
        for pid in partitions:
            arrays = self.weights_record(pid, keep_graph)
            config = instruction(server_round)
            if message_type == MessageType.TRAIN:
                config[THREADS_KEY] = self.train_threads
            content = RecordDict({ARRAYS: arrays, CONFIG: config})
            messages.append(
                Message(
                    content, dst_node_id=self.node_of[pid], message_type=message_type
                )
            )
        return messages

    # -- training -------------------------------------------------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send each sampled client its own generated weights."""
        if server_round == self.train_rounds + 1 and self.novel:
            self._start_novel_phase()
        partitions = self.train_partitions(server_round)
        self._graphs.clear()
        return self._messages_for(partitions, server_round, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Backpropagate the returned deltas through the hypernetwork; one step."""
        contents = self.check_replies(replies, "training", server_round)
        deltas: list[tuple[int, dict[str, torch.Tensor]]] = []
        for content in contents:
            pid = reply_partition(metrics_of(content))
            record = content.array_records[ARRAYS]
            deltas.append((pid, self._delta(record, pid, server_round)))
        if not deltas:  # the round's client failed (tolerated): no step
            return None, train_record(float("nan"), 0)
        if self.phase(server_round) == "train":
            self.hn_step(deltas)
        else:
            for pid, delta in deltas:
                self.embedding_step(pid, delta)
        metrics = [metrics_of(c) for c in contents]
        loss = float(np.mean([scalar(m, TRAIN_LOSS) for m in metrics]))
        return None, train_record(loss, len(contents))

    def _delta(
        self, record: ArrayRecord, pid: int, server_round: int
    ) -> dict[str, torch.Tensor]:
        if list(record.keys()) != self.keys:
            raise ClientError(
                f"round {server_round}: client {pid} returned keys "
                f"{list(record.keys())[:4]}"
                f"..., expected the generated tensors {self.keys[:4]}..."
            )
        delta = {k: v.to(self.device) for k, v in record.to_torch_state_dict().items()}
        for k, shape in self.hn.shapes.items():
            if tuple(delta[k].shape) != shape:
                raise ClientError(
                    f"round {server_round}: client {pid} returned {k} of shape "
                    f"{tuple(delta[k].shape)}, expected {shape}"
                )
        return delta

    def hn_step(self, deltas: list[tuple[int, dict[str, torch.Tensor]]]) -> None:
        """One step on phi and the embeddings from the clients' deltas.

        :func:`~pfedhn.algorithm.hypernetwork_step`; a client's generated
        weights are reused from its training message where still held.
        """
        generated = (
            (self._graphs.pop(pid, None) or self.hn(pid), delta)
            for pid, delta in deltas
        )
        params = list(self.hn.parameters())
        hypernetwork_step(self.optimizer, params, generated, len(deltas), self.clip)

    def embedding_step(self, pid: int, delta: dict[str, torch.Tensor]) -> None:
        """Step only novel client ``pid``'s embedding (phi frozen)."""
        embedding_step(
            self.novel_embeddings[pid],
            self.hn.generate,
            delta,
            self.novel_optimizers[pid],
            self.clip,
        )

    # -- evaluation -----------------------------------------------------------

    def is_eval_round(self, server_round: int) -> bool:
        """Every ``eval_every`` rounds, the last training round and the last round."""
        if server_round in (self.train_rounds, self.num_rounds):
            return True
        return self.eval_every > 0 and server_round % self.eval_every == 0

    def eval_partitions(self, server_round: int) -> list[int]:
        """The trained clients in the training phase, the novel ones after."""
        return self.trained if self.phase(server_round) == "train" else self.novel

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send every evaluated client its own generated weights."""
        if not self.is_eval_round(server_round):
            return []
        return self._messages_for(
            self.eval_partitions(server_round), server_round, MessageType.EVALUATE
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Record test and validation counts; track the best-validation round."""
        if not self.is_eval_round(server_round):
            return None
        contents = self.check_replies(replies, "evaluation", server_round)
        test = self.evals.record(contents, server_round, self.phase(server_round))
        return evaluation_record(test)


class BaselineFedAvg(PartitionStrategy):
    """FedAvg, FedAvg + FT and Local on pFedHN's partition, with validation figures.

    The training side is :class:`pflcore.fl.strategy.PartitionStrategy` unchanged;
    evaluation replies carry validation counts too, recorded as pFedHN's.
    With ``held_out`` clients (novel clients) only the others train and are
    evaluated in the ``num_rounds`` training rounds; one more round then
    evaluates the held-out clients alone (no training), recorded as the
    ``novel`` phase as pFedHN's.
    """

    def __init__(
        self,
        recorder: RunRecorder,
        num_rounds: int,
        held_out: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.held_out = sorted(held_out or [])
        self.train_rounds = num_rounds
        super().__init__(
            recorder, num_rounds=num_rounds + (1 if self.held_out else 0), **kwargs
        )
        self.trained = [j for j in range(self.num_clients) if j not in self.held_out]
        self.evals = BestValidation(recorder)

    def phase(self, server_round: int) -> str:
        """``train`` for the first ``num_rounds`` rounds, then ``novel``."""
        return "train" if server_round <= self.train_rounds else "novel"

    def train_partitions(self, server_round: int) -> list[int]:
        """A seeded sample of the trained clients; none in the novel round."""
        if not self.held_out:
            return super().train_partitions(server_round)
        if self.phase(server_round) == "novel":
            return []
        # as PFedHN.train_partitions: a seeded draw from the trained pool
        return self.sampler.sample(server_round, self.clients_per_round, self.trained)

    def is_eval_round(self, server_round: int) -> bool:
        """The usual rounds, the last training round, and the novel round."""
        return server_round == self.train_rounds or super().is_eval_round(server_round)

    def eval_partitions(self, server_round: int) -> list[int]:
        """The trained clients in the training phase, the held-out ones after."""
        if not self.held_out:
            return super().eval_partitions(server_round)
        return self.trained if self.phase(server_round) == "train" else self.held_out

    def checkpoint_state(self) -> BestValidationState:
        """The best-validation round so far."""
        return BestValidationState(best=self.evals.best)

    def restore_state(self, state: ServerState) -> None:
        """Take back :meth:`checkpoint_state`."""
        assert isinstance(state, BestValidationState)
        self.evals.best = state.best

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Record test and validation counts; track the best-validation round."""
        if not self.is_eval_round(server_round):
            return None
        contents = self.check_replies(replies, "evaluation", server_round)
        test = self.evals.record(contents, server_round, self.phase(server_round))
        return evaluation_record(test)
