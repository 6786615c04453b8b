"""Personalized FedAvg of Jiang et al. (2019) as three stages of one ServerApp.

1. **FedAvg** for ``num_rounds`` rounds over the training clients
   (partition-ids ``0 .. num_clients - holdout_clients - 1``), ``local_epochs``
   epochs of SGD each; the server moves by ``server_lr`` times the averaged
   update (``server_momentum`` optional: FedLab drops the paper's 0.9).
2. **Reptile fine-tuning** for ``jiang.reptile.rounds`` rounds: clients run
   ``inner_epochs`` epochs of Adam (betas (0, 0.999)) from the global model
   (``train.reptile`` messages); the server moves by ``jiang.reptile.server_lr``
   times the averaged model difference.
3. **Personalization** of the held-out clients (the last ``holdout_clients``
   partition-ids, never trained on): each tests the final global model on its
   test split ("initial"), adapts a copy with ``finetune`` (the seed: 5 epochs
   of SGD on its 80 % training split) and tests it ("personalized")
   (``evaluate.personalize`` messages).

Evaluation rounds of stages 1 and 2 test the global model on the held-out
clients (the "initial" accuracy over time). Stage 3 is recorded as one last
round (``num_rounds + reptile.rounds + 1``) whose headline columns are the
personalized results and whose ``before_*`` columns are the initial ones;
``summary.json`` repeats them under ``personalization``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from perfedavg.strategy import PersonalizedFedAvg
from pflcore.records.results import RunRecorder
from pflcore.run.experiment import Checkpointer, resume_strategy
from pflcore.run.stopping import raise_if_stopped

if TYPE_CHECKING:
    from perfedavg.settings import Jiang, Reptile

PERSONALIZE = "evaluate.personalize"
REPTILE = "train.reptile"


def heldout_partitions(num_clients: int, holdout_clients: int) -> list[int]:
    """Partition-ids of the held-out (personalization) clients: the last ones."""
    n, holdout = num_clients, holdout_clients
    return list(range(n - holdout, n))


def last_round(num_rounds: int, reptile_rounds: int) -> int:
    """The personalization round: after the FedAvg and the Reptile stages."""
    return num_rounds + int(reptile_rounds) + 1


def _stage(
    recorder: RunRecorder,
    server: dict[str, Any],
    holdout_clients: int,
    **kwargs: Any,
) -> PersonalizedFedAvg:
    num_clients = server["num_clients"]
    return PersonalizedFedAvg(
        recorder,
        train_clients=num_clients - holdout_clients,
        eval_partitions=heldout_partitions(num_clients, holdout_clients),
        **{**server, **kwargs},  # each stage its own num_rounds
    )


def personalization_summary(
    recorder: RunRecorder, row: dict[str, Any]
) -> dict[str, Any]:
    """The seed's table entries from stage 3's row: mean (std over clients)."""
    return {
        "clients": row["num_eval_clients"],
        "initial_loss": row.get("before_loss"),
        "initial_acc": row.get("before_acc_mean"),
        "initial_acc_std": row.get("before_acc_std"),
        "personalized_loss": row.get("test_loss"),
        "personalized_acc": row.get("test_acc_mean"),
        "personalized_acc_std": row.get("test_acc_std"),
        "rounds_to_0.8_initial": rounds_to(recorder.rows[:-1], 0.8),
    }


def rounds_to(rows: list[dict[str, Any]], target: float) -> int | None:
    """First evaluated round whose held-out initial accuracy reaches ``target``."""
    for row in rows:
        acc = row.get("test_acc_mean")
        if acc is not None and not np.isnan(acc) and acc >= target:
            return int(row["round"])
    return None


REPTILE_OPTIMIZERS = ("client_adam", "server_adam")


def server_adam(reptile: Reptile) -> tuple[float, float, float] | None:
    """Adam's (lr, beta1, beta2) on the server, or None when the clients run Adam.

    ``client_adam`` (FedLab's seed): clients take Adam steps, the server an
    SGD step of ``server_lr``. ``server_adam`` (the paper): clients take SGD
    steps at ``client_lr``, the server applies Adam (``lr``, ``betas``).
    """
    if reptile.optimizer != "server_adam":
        return None
    beta1, beta2 = reptile.betas
    return float(reptile.lr), float(beta1), float(beta2)


def jiang_main_loop(
    recorder: RunRecorder,
    initial: ArrayRecord,
    checkpoints: Checkpointer,
    *,
    server: dict[str, Any],
    jiang: Jiang,
    server_lr: float,
    server_momentum: float,
    timeout: float,
) -> Callable[[Grid, dict[int, int]], None]:
    """The ServerApp's main loop: the three stages in sequence.

    Rounds are numbered across the stages (FedAvg ``1..F``, Reptile
    ``F+1..F+R``, personalization ``F+R+1``); a checkpoint records the
    global round, so a resumed run skips the stages it finished and
    continues the one it was in, with that stage's server state.

    Parameters
    ----------
    recorder : RunRecorder
        The run's recorder.
    initial : ArrayRecord
        The global model of the first round.
    checkpoints : Checkpointer
        The run's checkpoints, up to :func:`last_round`.
    server : dict
        :class:`pflcore.fl.strategy.PartitionStrategy`'s keywords
        (:func:`pflcore.fl.strategy.server_settings`); its ``num_clients`` is
        the population, its ``num_rounds`` F.
    jiang : perfedavg.settings.Jiang
        ``jiang.*``: the held-out clients and the Reptile stage.
    server_lr, server_momentum : float
        The FedAvg stage's server step and momentum.
    timeout : float
        Seconds to wait for a round's replies.
    """
    reptile, holdout = jiang.reptile, jiang.holdout_clients
    fedavg_rounds, reptile_rounds = server["num_rounds"], int(reptile.rounds)
    final_round = last_round(fedavg_rounds, reptile_rounds)

    def main_loop(grid: Grid, partition_to_node: dict[int, int]) -> None:
        stages = [
            _stage(
                recorder,
                server,
                holdout,
                num_rounds=fedavg_rounds,
                server_lr=float(server_lr),
                server_momentum=float(server_momentum),
                stage="fedavg",
            )
        ]
        if reptile_rounds > 0:
            stages.append(
                _stage(
                    recorder,
                    server,
                    holdout,
                    num_rounds=reptile_rounds,
                    train_message=REPTILE,
                    server_lr=float(reptile.server_lr),
                    server_adam=server_adam(reptile),
                    round_offset=fedavg_rounds,
                    stage="reptile",
                )
            )
        for stage in stages:
            stage.bind_partitions(partition_to_node)
        done, arrays = 0, initial
        resumed = recorder.resumed_from
        if resumed is not None:
            done = int(resumed["round"])
            current = next(
                (s for s in stages if done <= s.round_offset + s.num_rounds),
                stages[-1],
            )
            arrays = resume_strategy(current, grid, resumed, timeout)
        for stage in stages:
            first = max(1, done - stage.round_offset + 1)
            if first > stage.num_rounds:
                continue
            arrays = stage.start(
                grid,
                arrays,
                timeout=timeout,
                first_round=first,
                before_round=raise_if_stopped,
                after_round=partial(_checkpoint, checkpoints, stage, grid, timeout),
            ).arrays
        summary_rounds = {"fedavg": [1, fedavg_rounds]}
        if reptile_rounds > 0:
            summary_rounds["reptile"] = [fedavg_rounds + 1, final_round - 1]
        recorder.set_summary(stage_rounds=summary_rounds)
        if done >= final_round:
            return
        last = _stage(
            recorder,
            server,
            holdout,
            num_rounds=1,
            eval_message=PERSONALIZE,
            round_offset=final_round - 1,
            stage="personalize",
        )
        last.bind_partitions(partition_to_node)
        last.evaluate_round(1, arrays, grid, timeout)
        last.end_round(1, arrays)
        recorder.set_summary(
            personalization=personalization_summary(recorder, recorder.rows[-1])
        )
        checkpoints.after_round(final_round, arrays, last, grid, timeout)

    return main_loop


def _checkpoint(
    checkpoints: Checkpointer,
    stage: PersonalizedFedAvg,
    grid: Grid,
    timeout: float,
    server_round: int,
    arrays: ArrayRecord,
) -> None:
    """After a stage's local round: checkpoint under the global round number."""
    checkpoints.after_round(
        server_round + stage.round_offset, arrays, stage, grid, timeout
    )


if __name__ == "__main__":
    from perfedavg.jiang_table import main

    main()
