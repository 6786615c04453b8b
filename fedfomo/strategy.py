"""FedFomo's server: latest uploads, the affinity matrix, epsilon-greedy candidates.

The server keeps every client's latest upload and the affinity matrix P
(P_ii = 0.1, all else 0). After the training phase of round t, each client
that trains in round t+1 (every client after the last round) receives, in one
Message of its own, its own latest upload plus M-1 other models chosen
epsilon-greedily (:func:`choose_candidates`, ε_t = max(0, 0.3 - 0.05 t)) among
round t's uploaders. Its reply carries its signed weights, which update its
row of P (:func:`update_affinity`). The exploration generator is seeded once
per run (the authors' code re-seeds it every round; the suite does not).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid

from fedfomo.client import CANDIDATE_PREFIX, GLOBAL_ID, GLOBAL_KEY
from pflcore.results import ClientEval, RunRecorder
from pflcore.simulation import PARTITION_KEY, derive_seed
from pflcore.strategy import (
    WEIGHT_KEY,
    PartitionFedAvg,
    averaging_weights,
    scalar,
    weighted_average,
)

SELF_AFFINITY = 0.1
SUM_FLOOR = 1e-9


def exploration_rate(
    round_index: int, initial: float = 0.3, decay: float = 0.05
) -> float:
    """ε_t = max(0, initial - decay * t)."""
    return max(0.0, initial - decay * round_index)


def initial_affinity(num_clients: int) -> np.ndarray:
    """P with P_ii = 0.1 and all other entries 0."""
    return np.eye(num_clients) * SELF_AFFINITY


def choose_candidates(
    affinity_row: np.ndarray,
    pool: list[int],
    client: int,
    count: int,
    epsilon: float,
    rng: np.random.Generator,
) -> list[int]:
    """Pick up to ``count`` other clients from ``pool``, epsilon-greedily.

    For each slot a uniform draw below ``epsilon`` takes the next client of a
    random permutation of the pool; otherwise the next client in descending
    affinity (ties in random order). Clients already chosen are skipped.

    Parameters
    ----------
    affinity_row : numpy.ndarray
        P_i, client ``client``'s affinity to every client.
    pool : list of int
        Clients that uploaded last round (``client`` itself is excluded).
    client : int
        The receiving client.
    count : int
        M - 1.
    epsilon : float
        Exploration probability.
    rng : numpy.random.Generator
        The run's exploration generator.

    Returns
    -------
    list of int
        The chosen partition-ids, in the order chosen.
    """
    others = np.array(sorted(p for p in set(pool) if p != client), dtype=np.int64)
    wanted = min(count, others.size)
    if wanted <= 0:
        return []
    explore = iter(rng.permutation(others).tolist())
    ties = rng.random(others.size)
    greedy = iter(others[np.lexsort((ties, -affinity_row[others]))].tolist())
    chosen: list[int] = []
    while len(chosen) < wanted:
        source = explore if rng.random() < epsilon else greedy
        for candidate in source:
            if candidate not in chosen:
                chosen.append(candidate)
                break
    return chosen


def update_affinity(
    affinity: np.ndarray, client: int, candidates: list[int], weights: list[float]
) -> None:
    """P_{i,n} += w_n / max(|Σ_m w_m|, 1e-9) for every candidate, in place.

    The sum runs over all the client's weights (negative ones included, before
    clipping); the global-average candidate (id -1) takes part in the sum but
    has no entry in P.
    """
    total = max(abs(float(np.sum(weights))), SUM_FLOOR)
    for n, w in zip(candidates, weights, strict=True):
        if n != GLOBAL_ID:
            affinity[client, n] += w / total


class FedFomo(PartitionFedAvg):
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
        Also send the average (by the run's ``averaging`` rule) of the last
        round's uploads.
    **kwargs
        Passed to :class:`pflcore.strategy.PartitionFedAvg`.
    """

    def __init__(
        self,
        recorder: RunRecorder,
        *,
        num_candidates: int,
        epsilon_initial: float,
        epsilon_decay: float,
        global_candidate: bool = False,
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
        self.global_average: ArrayRecord | None = None
        self.rng = np.random.default_rng(derive_seed(self.sampler.seed, 0xF0F0))
        self._eval_targets: list[int] = []

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
        contents = self.check_replies(replies, self._expected, "training", server_round)
        metrics = [c.metric_records["metrics"] for c in contents]
        pids = [int(scalar(m, PARTITION_KEY)) for m in metrics]
        arrays = [c.array_records["arrays"] for c in contents]
        sizes = [scalar(m, WEIGHT_KEY) for m in metrics]
        for pid, record in zip(pids, arrays, strict=True):
            self.uploads[pid] = record
        self.last_uploaders = pids
        self.recorder.add_bytes(received=sum(a.count_bytes() for a in arrays))
        loss = sum(
            scalar(m, "train-loss") * n for m, n in zip(metrics, sizes, strict=True)
        )
        loss /= sum(sizes)
        self.recorder.log_train(loss, len(contents))
        if self.global_candidate:
            self.global_average = weighted_average(
                arrays, averaging_weights(sizes, self.averaging)
            )
        return ArrayRecord(), MetricRecord({"train-loss": loss})

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
        """The models sent to ``client``: its own latest upload and M-1 chosen ones."""
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
        content = {f"{CANDIDATE_PREFIX}{i}": self.uploads[i] for i in ids}
        if self.global_candidate and self.global_average is not None:
            content[GLOBAL_KEY] = self.global_average
        return content

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One Message per client: its candidates (if it updates) and what to do."""
        fomo = set(self.fomo_partitions(server_round))
        tested = (
            set(range(self.num_clients)) if self.is_eval_round(server_round) else set()
        )
        self._eval_targets = sorted(fomo | tested)
        messages = []
        for pid in self._eval_targets:
            records: dict[str, Any] = {}
            if pid in fomo:
                records.update(self.candidate_content(pid, server_round))
            self.recorder.add_bytes(sent=sum(r.count_bytes() for r in records.values()))
            records["config"] = ConfigRecord(
                {
                    "server-round": server_round,
                    "fomo": int(pid in fomo),
                    "evaluate": int(pid in tested),
                }
            )
            messages.append(
                Message(
                    RecordDict(records),
                    dst_node_id=self.node_of[pid],
                    message_type=MessageType.EVALUATE,
                )
            )
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Update P from the weights; record the test results on eval rounds."""
        contents = self.check_replies(
            replies, len(self._eval_targets), "FOMO update/evaluation", server_round
        )
        evals = []
        for content in contents:
            m = content.metric_records["metrics"]
            pid = int(scalar(m, PARTITION_KEY))
            if "fomo-weights" in m:
                ids = [int(i) for i in m["fomo-candidates"]]  # type: ignore[union-attr]
                weights = [float(w) for w in m["fomo-weights"]]  # type: ignore[union-attr]
                update_affinity(self.affinity, pid, ids, weights)
            if "correct" in m:
                evals.append(
                    ClientEval(
                        partition_id=pid,
                        correct=int(scalar(m, "correct")),
                        loss_sum=scalar(m, "loss-sum"),
                        num_samples=int(scalar(m, WEIGHT_KEY)),
                    )
                )
        self.write_affinity()
        if not evals:
            return None
        self.recorder.log_eval(evals)
        return MetricRecord(
            {"accuracy-mean": float(np.mean([e.accuracy for e in evals]))}
        )

    def write_affinity(self) -> None:
        """Overwrite ``affinity.csv`` (row i: client i's affinity to every client)."""
        with (self.recorder.out_dir / "affinity.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["partition_id", *[f"p{j}" for j in range(self.num_clients)]]
            )
            for i, row in enumerate(self.affinity):
                writer.writerow([i, *[f"{v:.6g}" for v in row]])
