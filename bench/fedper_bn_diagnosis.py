"""Why FedAvg's global MobileNet scores low per client: a BatchNorm diagnosis.

Reads a finished FedPer-package run (``algorithm=fedavg``, written with
``checkpoint_every`` so its folder holds ``checkpoint.pkl`` with the final
global arrays) and evaluates that one global model on every client's test
split four ways:

``averaged``
    As the run evaluates it: BatchNorm in eval mode with the running
    statistics FedAvg averaged across clients.
``pooled``
    The same weights, BatchNorm running statistics recomputed (cumulative
    average, no gradient) over every client's training images together: the
    statistics a centrally trained network would have. Averaging per-client
    variances leaves out the spread between the clients' means, so on
    non-IID clients ``averaged`` and ``pooled`` differ.
``own``
    Running statistics recomputed on the client's own training images only
    (as FedBN / SiloBN keep them).
``batch``
    BatchNorm in training mode on each test batch (batch statistics).

It also prints, for the ``averaged`` model, the share of test predictions
that name a class the client does not hold (``foreign``) and the accuracy
when the prediction is restricted to the client's own classes
(``own-cls``): what the shared features allow once the head's pull towards
other clients' classes is removed, to compare with the 1 / k a uniform
guess among k own classes scores. Usage::

    python -m bench.fedper_bn_diagnosis RUN_FOLDER [--data-root DIR]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fedper.client import build_runtime
from fedper.main import PACKAGE
from pflcore.config import to_plain
from pflcore.fl.client_state import plain_to_arrays
from pflcore.run.checkpoint import read_checkpoint


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]


@torch.no_grad()
def _recalibrate(model: nn.Module, inputs: list[torch.Tensor]) -> None:
    """Running statistics = the exact average over ``inputs`` (eval-mode forward)."""
    saved = {}
    for bn in _batchnorms(model):
        saved[bn] = bn.momentum
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: the plain mean over batches
    model.train()
    for x in inputs:
        model(x)
    for bn, momentum in saved.items():
        bn.momentum = momentum
    model.eval()


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_mode: bool) -> torch.Tensor:
    """The model's logits; with ``batch_mode``, BatchNorm on the batch's statistics.

    In training mode BatchNorm would also move its running statistics towards
    the batch's; momentum 0 keeps them, so later evaluations are unaffected.
    """
    saved = {bn: bn.momentum for bn in _batchnorms(model)}
    if batch_mode:
        for bn in saved:
            bn.momentum = 0.0
    model.train(batch_mode)
    out = model(x)
    model.eval()
    for bn, momentum in saved.items():
        bn.momentum = momentum
    return out


def main() -> None:
    """Print per-client accuracies of the four BatchNorm treatments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data-root", default=os.environ.get("PFL_DATA_ROOT"))
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    loaded = OmegaConf.load(args.run / ".hydra" / "config.yaml")
    assert isinstance(loaded, DictConfig), "a run's .hydra/config.yaml is a mapping"
    cfg = to_plain(loaded)
    if args.data_root:
        cfg["dataset"]["root"] = args.data_root
    config = PACKAGE.resolve(cfg)
    runtime = build_runtime(config)
    arrays = plain_to_arrays(read_checkpoint(args.run)["arrays"])
    global_state = arrays.to_torch_state_dict()
    model, transform, data = runtime.model, runtime.transform, runtime.data

    def batches(pid: int, split: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        x, y = data.split_of(pid, split)
        xs = [
            transform.apply(x[i : i + args.batch], None)
            for i in range(0, len(x), args.batch)
        ]
        return xs, y

    def load() -> None:
        state = dict(runtime.initial_state)
        state.update(global_state)
        model.load_state_dict(state, strict=True)

    n = data.num_clients
    train = [batches(pid, "train")[0] for pid in range(n)]
    test = [batches(pid, "test") for pid in range(n)]
    own_classes = [
        np.unique(data.split_of(pid, "train")[1].numpy()) for pid in range(n)
    ]

    def accuracy(pid: int, batch_mode: bool = False) -> tuple[float, float, float]:
        xs, y = test[pid]
        logits = torch.cat([_logits(model, x, batch_mode) for x in xs])
        pred = logits.argmax(dim=1)
        foreign = ~np.isin(pred.numpy(), own_classes[pid])
        mask = torch.full_like(logits, float("-inf"))
        mask[:, torch.as_tensor(own_classes[pid])] = 0.0
        restricted = (logits + mask).argmax(dim=1)
        return (
            float((pred == y).float().mean()),
            float(foreign.mean()),
            float((restricted == y).float().mean()),
        )

    rows: dict[str, list[float]] = {
        "averaged": [],
        "pooled": [],
        "own": [],
        "batch": [],
    }
    foreign_share = []
    own_class_acc = []
    load()
    for pid in range(n):
        acc, foreign, restricted = accuracy(pid)
        rows["averaged"].append(acc)
        foreign_share.append(foreign)
        own_class_acc.append(restricted)
        rows["batch"].append(accuracy(pid, batch_mode=True)[0])
    _recalibrate(model, [x for xs in train for x in xs])
    rows["pooled"] = [accuracy(pid)[0] for pid in range(n)]
    for pid in range(n):
        load()
        _recalibrate(model, train[pid])
        rows["own"].append(accuracy(pid)[0])

    layers = len(_batchnorms(model))
    print(f"run: {args.run}  ({n} clients, {layers} BatchNorm layers)")
    clients = pd.read_csv(Path(args.run) / "clients.csv")
    recorded = clients[clients["round"] == clients["round"].max()]
    recorded_mean = float(recorded["accuracy"].mean())
    same = np.isclose(recorded_mean, np.mean(rows["averaged"]), atol=1e-9)
    print(
        f"the run recorded {recorded_mean * 100:.2f} % mean accuracy; 'averaged' "
        f"{'reproduces it' if same else 'DIFFERS from it'}"
    )
    header = (
        "client  classes        "
        + "  ".join(f"{k:>8}" for k in rows)
        + "  foreign  own-cls"
    )
    print(header)
    for pid in range(n):
        cells = "  ".join(f"{rows[k][pid] * 100:7.1f}%" for k in rows)
        classes = ",".join(str(c) for c in own_classes[pid])
        print(
            f"{pid:>6}  {classes:<13}  {cells}  {foreign_share[pid] * 100:6.1f}%"
            f"  {own_class_acc[pid] * 100:6.1f}%"
        )
    means = "  ".join(f"{np.mean(rows[k]) * 100:7.1f}%" for k in rows)
    mins = "  ".join(f"{np.min(rows[k]) * 100:7.1f}%" for k in rows)
    print(
        f"{'mean':>6}  {'':<13}  {means}  {np.mean(foreign_share) * 100:6.1f}%"
        f"  {np.mean(own_class_acc) * 100:6.1f}%"
    )
    print(f"{'min':>6}  {'':<13}  {mins}  {'':>7}  {np.min(own_class_acc) * 100:6.1f}%")


if __name__ == "__main__":
    main()
