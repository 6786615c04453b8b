"""Ditto's settings and ClientApp; v_k lives and is tested as Local's model.

Unlike litian96/ditto: epochs, not ``local_iters``; ``averaging``, not the plain mean;
uniform sampling; the run's momentum, weight decay, lr decay; no dynamic lambda.
"""

import copy
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from ditto.algorithm import ditto_epochs
from fedfomo.algorithm import round_lr
from fedfomo.client import LocalTraining, get_runtime
from fedfomo.main import FedFomoPackage
from fedfomo.settings import FedFomoDataset, FomoModel, FomoPartition, read_settings
from pflcore.config import settings as rules
from pflcore.config.seeds import derive_seed
from pflcore.config.shared import POSITIVE_INT, EpochFinetune, SharedSettings
from pflcore.fl import baselines, identity, protocol

FOMO: dict[str, Any] = {"num_candidates": 1, "epsilon_initial": 0.0, "norm": "l1"}
FOMO |= {"epsilon_decay": 0.0, "num_clusters": 0, "global_candidate": False}


@dataclass(frozen=True, kw_only=True)
class Ditto(rules.Group):
    """``ditto.*``: lambda (0: the personal model trains as Local's does)."""

    lam: float = rules.setting(rules.NON_NEGATIVE)


@dataclass(frozen=True, kw_only=True)
class DittoSettings(SharedSettings):
    """Everything ``python -m ditto.main`` reads; the lr decays as FedFomo's."""

    algorithm: str = rules.setting(rules.one_of("ditto", *baselines.BASELINES))
    local_epochs: int = rules.setting(POSITIVE_INT)
    lr_decay: float = rules.setting(rules.FRACTION)
    lr_min: float = rules.setting(rules.NON_NEGATIVE)
    ditto: Ditto
    model: FomoModel
    partition: FomoPartition
    finetune: EpochFinetune
    dataset: FedFomoDataset


def fedfomo_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run as FedFomo's package reads it: ``fomo.*`` unused, ``ditto`` as FedAvg."""
    fomo = {k: v for k, v in config.items() if k != "ditto"} | {"fomo": dict(FOMO)}
    return (fomo | {"algorithm": "fedavg"}) if config["algorithm"] == "ditto" else fomo


def make_client_app(config: dict[str, Any]) -> ClientApp:
    """Ditto's ClientApp, or FedFomo's baseline ClientApp of the same run."""
    fomo, fedfomo = fedfomo_config(config), FedFomoPackage()
    if config["algorithm"] != "ditto":
        return fedfomo.client_app_for(fomo)
    t, lam = LocalTraining.of(read_settings(fomo)), config["ditto"]["lam"]
    update = partial(ditto_epochs, lam=lam, epochs=t.epochs, batch_size=t.batch_size)
    sgd = partial(torch.optim.SGD, momentum=t.momentum, weight_decay=t.weight_decay)
    app = ClientApp()
    identity.add_partition_query(app)
    app.evaluate()(fedfomo.client_app_for({**fomo, "algorithm": "local"}))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid, rnd = identity.partition_id(context), protocol.server_round_of(msg)
        runtime = get_runtime(fomo)
        runtime.load(context.state.array_records.get(baselines.LOCAL_STATE_KEY))
        personal = copy.deepcopy(runtime.model)  # v_k: the initial weights at first
        runtime.load(msg.content.array_records[protocol.ARRAYS])  # w^t
        lr = round_lr(t.lr, rnd, lr_decay=t.lr_decay, lr_min=t.lr_min)
        stats = update(
            runtime.model,
            personal,
            *runtime.train_split(pid),
            runtime.transform,
            global_optimizer=sgd(runtime.model.parameters(), lr),
            personal_optimizer=sgd(personal.parameters(), lr),
            generator=torch.Generator().manual_seed(derive_seed(t.seed, pid, rnd)),
            device=runtime.device,
        )
        context.state[baselines.LOCAL_STATE_KEY] = ArrayRecord(personal.state_dict())
        metrics = protocol.train_metrics(pid, stats.global_loss, runtime.data.size(pid))
        return protocol.reply(msg, arrays=runtime.weights(), metrics=metrics)

    return app
