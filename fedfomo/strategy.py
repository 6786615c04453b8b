"""FedFomo's server: latest uploads, the affinity matrix, epsilon-greedy candidates.

The server keeps every client's latest upload and the affinity matrix P
(P_ii = 0.1, all else 0). After the training phase of round t, each client
that trains in round t+1 (every client after the last round) receives, in one
Message of its own, its own latest upload plus M-1 other models chosen
epsilon-greedily (``choose_candidates``, ε_t = max(0, 0.3 - 0.05 t)) among
round t's uploaders. Its reply carries its signed weights, which update its
row of P (``update_affinity``). The exploration generator is seeded once
per run (the authors' code re-seeds it every round; the suite does not).

With ``num_clusters > 0`` (the authors' README command, ``-nf 5``) every
client also receives, after the uploads of each round, the average of each
cluster of clients (spectral clustering of the symmetrised row-softmax of P,
``cluster_clients``; the maths is in :mod:`fedfomo.algorithm`) and, with
``global_candidate``, the global model
(the uniform mean of those cluster averages). They enter the client's
weights and their normalisation, not P.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid

from fedfomo.algorithm import (
    choose_candidates,
    cluster_clients,
    exploration_rate,
    initial_affinity,
    update_affinity,
)
from fedfomo.messages import (
    GLOBAL_KEY,
    candidate_key,
    cluster_key,
    evaluate_type,
    fomo_weights_of,
)
from pflcore.config.seeds import derive_seed
from pflcore.fl.protocol import (
    ARRAYS,
    CONFIG,
    NUM_EXAMPLES,
    TRAIN_LOSS,
    has_eval,
    instruction,
    metrics_of,
    reply_partition,
    scalar,
)
from pflcore.fl.strategy import (
    PartitionStrategy,
    ServerState,
    averaging_weights,
    client_eval,
    evaluation_record,
    train_record,
    weighted_average,
)
from pflcore.records.results import RunRecorder

# Tag of the server's exploration stream (fixed: it decides FedFomo's draws).
EXPLORATION_TAG = 0xF0F0


def cluster_models(
    uploads: dict[int, ArrayRecord],
    sizes: dict[int, float],
    clusters: np.ndarray,
    last_uploaders: list[int],
    averaging: str,
) -> list[ArrayRecord]:
    """One average per non-empty cluster of the members' latest uploads.

    A cluster averages its members that uploaded in the latest round (all
    of them when every client trains every round); a cluster none of whose
    members uploaded then averages its members' stored latest uploads. The
    weights follow the run's averaging rule (the authors: by sample count).
    Clusters with no stored upload at all are skipped.
    """
    models = []
    recent = set(last_uploaders)
    for c in range(int(clusters.max()) + 1 if clusters.size else 0):
        members = [int(j) for j in np.flatnonzero(clusters == c) if int(j) in uploads]
        active = [j for j in members if j in recent] or members
        if not active:
            continue
        weights = averaging_weights([sizes[j] for j in active], averaging)
        models.append(weighted_average([uploads[j] for j in active], weights))
    return models


@dataclass
class FomoState(ServerState):
    """What FedFomo's server carries from round to round (its checkpoint)."""

    affinity: np.ndarray  # P: row i is client i's affinity to every client
    uploads: dict[int, ArrayRecord]  # each client's latest upload
    sizes: dict[int, float]  # each uploader's training-set size
    last_uploaders: list[int]
    clusters: np.ndarray
    cluster_averages: list[ArrayRecord]
    global_average: ArrayRecord | None
    rng: dict[str, Any]  # the exploration stream's bit-generator state


class FedFomo(PartitionStrategy):
    """FedFomo's server strategy.

    Parameters
    ----------
    recorder : RunRecorder
        Run recorder (the affinity matrix is written to ``affinity.csv``).
    num_candidates : int
        M, the models a client receives including its own.
    epsilon_initial, epsilon_decay : float
        ε_t = max(0, epsilon_initial - epsilon_decay * t).
    global_candidate : bool
        Also send a global model: the uniform mean of the cluster models, or,
        with ``num_clusters=0``, the average (by the run's ``averaging`` rule)
        of the last round's uploads.
    num_clusters : int
        Also send the average of each of this many clusters of clients
        (:func:`~fedfomo.algorithm.cluster_clients`, recomputed every round from P; the
        authors' ``-nf``); 0 sends none.
    **kwargs
        Passed to :class:`pflcore.fl.strategy.PartitionStrategy`.
    """

    def __init__(
        self,
        recorder: RunRecorder,
        *,
        num_candidates: int,
        epsilon_initial: float,
        epsilon_decay: float,
        global_candidate: bool = False,
        num_clusters: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(recorder, **kwargs)
        self.num_candidates = num_candidates
        self.epsilon_initial = epsilon_initial
        self.epsilon_decay = epsilon_decay
        self.global_candidate = global_candidate
        self.affinity = initial_affinity(self.num_clients)
        self.uploads: dict[int, ArrayRecord] = {}
        self.last_uploaders: list[int] = []
        self.num_clusters = num_clusters
        self.sizes: dict[int, float] = {}
        self.cluster_averages: list[ArrayRecord] = []
        self.clusters = np.zeros(self.num_clients, dtype=np.int64)
        self.global_average: ArrayRecord | None = None
        explore = derive_seed(self.sampler.seed, EXPLORATION_TAG)
        self.rng = np.random.default_rng(explore)
        self._eval_targets: list[int] = []

    # -- checkpoints ------------------------------------------------------------

    def checkpoint_state(self) -> FomoState:
        """P, the latest uploads, the server models and the exploration stream."""
        return FomoState(
            affinity=self.affinity.copy(),
            uploads=dict(self.uploads),
            sizes=dict(self.sizes),
            last_uploaders=list(self.last_uploaders),
            clusters=self.clusters.copy(),
            cluster_averages=list(self.cluster_averages),
            global_average=self.global_average,
            rng=copy.deepcopy(dict(self.rng.bit_generator.state)),
        )

    def restore_state(self, state: ServerState) -> None:
        """Take back :meth:`checkpoint_state`."""
        assert isinstance(state, FomoState)
        self.affinity = np.array(state.affinity, dtype=np.float64)
        self.uploads = dict(state.uploads)
        self.sizes = dict(state.sizes)
        self.last_uploaders = list(state.last_uploaders)
        self.clusters = np.array(state.clusters, dtype=np.int64)
        self.cluster_averages = list(state.cluster_averages)
        self.global_average = state.global_average
        self.rng.bit_generator.state = state.rng

    # -- training: start from the stored baseline, upload the trained model ----

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask the round's clients to train; they start from their own baseline."""
        return super().configure_train(server_round, ArrayRecord(), config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Keep each client's upload (no averaging); log the training loss."""
        contents = self.check_replies(replies, "training", server_round)
        if not contents:  # every client failed (tolerated): nothing to keep
            return ArrayRecord(), train_record(float("nan"), 0)
        metrics = [metrics_of(c) for c in contents]
        pids = [reply_partition(m) for m in metrics]
        arrays = [c.array_records[ARRAYS] for c in contents]
        sizes = [scalar(m, NUM_EXAMPLES) for m in metrics]
        for pid, record, n in zip(pids, arrays, sizes, strict=True):
            self.uploads[pid] = record
            self.sizes[pid] = n
        self.last_uploaders = pids
        loss = sum(
            scalar(m, TRAIN_LOSS) * n for m, n in zip(metrics, sizes, strict=True)
        )
        loss /= sum(sizes)
        self.update_server_models(arrays, sizes)
        return ArrayRecord(), train_record(loss, len(contents))

    def update_server_models(
        self, arrays: list[ArrayRecord], sizes: list[float]
    ) -> None:
        """Recompute the cluster models and the global model after the uploads."""
        if self.num_clusters > 0:
            self.clusters = cluster_clients(
                self.affinity, self.num_clusters, self.sampler.seed
            )
            self.cluster_averages = cluster_models(
                self.uploads,
                self.sizes,
                self.clusters,
                self.last_uploaders,
                self.averaging,
            )
        if not self.global_candidate:
            return
        if self.cluster_averages:
            uniform = [1.0] * len(self.cluster_averages)
            self.global_average = weighted_average(self.cluster_averages, uniform)
        else:
            weights = averaging_weights(sizes, self.averaging)
            self.global_average = weighted_average(arrays, weights)

    # -- evaluate phase: the FOMO update, then the test -------------------------

    def fomo_partitions(self, server_round: int) -> list[int]:
        """Clients that get a FOMO update after ``server_round``.

        Those that train next round, and every client after the last round.
        """
        if server_round >= self.num_rounds:
            return list(range(self.num_clients))
        return self.train_partitions(server_round + 1)

    def candidate_content(
        self, client: int, server_round: int
    ) -> dict[str, ArrayRecord]:
        """The models sent to ``client``.

        Its own latest upload, M-1 chosen ones, then the cluster models and
        the global model where enabled.
        """
        epsilon = exploration_rate(
            server_round, self.epsilon_initial, self.epsilon_decay
        )
        chosen = choose_candidates(
            self.affinity[client],
            self.last_uploaders,
            client,
            self.num_candidates - 1,
            epsilon,
            self.rng,
        )
        ids = ([client] if client in self.uploads else []) + chosen
        content = {candidate_key(i): self.uploads[i] for i in ids}
        for k, model in enumerate(self.cluster_averages):
            content[cluster_key(k)] = model
        if self.global_candidate and self.global_average is not None:
            content[GLOBAL_KEY] = self.global_average
        return content

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One Message per client: its candidates if it updates; its type says what."""
        fomo = set(self.fomo_partitions(server_round))
        tested = (
            set(range(self.num_clients)) if self.is_eval_round(server_round) else set()
        )
        self._eval_targets = sorted(fomo | tested)
        self.note_sent(self._eval_targets)
        messages = []
        for pid in self._eval_targets:
            records: dict[str, Any] = {}
            if pid in fomo:
                records.update(self.candidate_content(pid, server_round))
            records[CONFIG] = instruction(server_round)
            messages.append(
                Message(
                    RecordDict(records),
                    dst_node_id=self.node_of[pid],
                    message_type=evaluate_type(pid in fomo, pid in tested),
                )
            )
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Update P from the weights; record the test results on eval rounds."""
        contents = self.check_replies(replies, "FOMO update/evaluation", server_round)
        evals = []
        for content in contents:
            m = metrics_of(content)
            weighed = fomo_weights_of(m)
            if weighed is not None:
                update_affinity(self.affinity, reply_partition(m), *weighed)
            if has_eval(m):
                evals.append(client_eval(m))
        return evaluation_record(evals) if evals else None

    def round_tables(self) -> dict[str, tuple[list[str], list[list[Any]]]]:
        """``affinity.csv``, rewritten each round: row i, client i's affinity to all."""
        header = ["partition_id", *[f"p{j}" for j in range(self.num_clients)]]
        rows = [[i, *[f"{v:.6g}" for v in row]] for i, row in enumerate(self.affinity)]
        return {"affinity.csv": (header, rows)}
