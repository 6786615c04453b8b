"""pFedHN's ClientApp: train the received target weights, return their change.

``pfedhn``: the server sends client ``j`` its generated weights theta_j; the
client runs ``local_steps`` SGD steps on fresh random batches (gradient norm
clipped at ``clip``), and replies with ``delta = theta_j - theta~_j`` (old
minus new, the authors' convention).

``pfedhn_pc``: the generated weights are the body; the client's own
``Linear(features, C)`` classifier and its SGD momentum live in
``context.state`` and train jointly with the body (clipping covers the body
only, as the authors').

Baselines on the same partition, with the same local update: ``fedavg``
replies with the trained weights (the server averages them); ``local`` keeps
its whole model in ``context.state`` and sends nothing.

Evaluation replies carry test counts under the shared names (``correct``,
``loss-sum``, ``num-examples``) and validation counts as ``val-correct``,
``val-loss-sum``, ``val-num-examples``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from pfedhn.dataset import cached_data, make_transform
from pfedhn.models import build_target
from pfedhn.threads import use_threads
from pflcore.baselines import (
    BASELINES,
    LocalUpdate,
    adaptation_seed,
    make_baseline_client_app,
)
from pflcore.devices import apply_determinism, state_on
from pflcore.finetune import FinetuneSpec, finetune
from pflcore.node_data import node_data
from pflcore.protocol import (
    ARRAYS,
    SERVER_ROUND,
    config_int,
    eval_metrics,
    instruction_of,
    reply,
    train_metrics,
)
from pflcore.runtime import ClientData, WorkerRuntime, cached_runtime
from pflcore.seeds import Stream
from pflcore.simulation import (
    add_partition_query,
    client_device,
    derive_seed,
    partition_id,
)
from pflcore.training import EvalStats, NonFiniteLossError, evaluate

HEAD_KEY = "head"


def target_model(config: dict[str, Any], data: ClientData) -> nn.Module:
    """The run's target network (with its classifier unless ``pfedhn_pc``)."""
    return build_target(
        config["model"]["target"],
        data.data.channels,
        int(config["dataset"]["image_size"]),
        data.data.num_classes,
        with_head=config["algorithm"] != "pfedhn_pc",
        n_kernels=int(config["model"]["n_kernels"]),
    )


def initial_target(config: dict[str, Any], data: ClientData) -> nn.Module:
    """The seeded initial target (the baselines' starting point)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        return target_model(config, data)


@dataclass
class ClientRuntime(WorkerRuntime):
    """pFedHN's worker runtime: the target network and, for PC, a classifier.

    The target receives each client's generated weights per message; the
    classifier (``head``) is loaded from the client's own state.
    """

    data: ClientData
    head: nn.Linear | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the target (and the personal classifier, for PC)."""
        out = self.model(x)
        return self.head(out) if self.head is not None else out


def build_runtime(config: dict[str, Any]) -> ClientRuntime:
    """PFedHN's worker runtime for ``config``."""
    torch.set_num_threads(max(1, int(config["client_resources"]["num_cpus"])))
    data = node_data(config) or cached_data(config)
    device = client_device(float(config["client_resources"]["num_gpus"]))
    apply_determinism(bool(config.get("deterministic", True)), device)
    model = target_model(config, data).to(device)
    head = None
    if config["algorithm"] == "pfedhn_pc":
        feat = int(model.feature_dim)  # type: ignore[arg-type]
        head = nn.Linear(feat, data.data.num_classes).to(device)
    transform = make_transform(data.data, config["dataset"], config["normalize"])
    # the baselines' common start; the generated weights replace it for pFedHN
    initial = state_on(initial_target(config, data).state_dict(), device)
    return ClientRuntime(data, model, initial, transform, device, head=head)


def get_runtime(config: dict[str, Any]) -> ClientRuntime:
    """The per-process runtime for ``config`` (built on first use)."""
    return cached_runtime(build_runtime, config)


def initial_head(
    config: dict[str, Any], pid: int, features: int, classes: int
) -> nn.Linear:
    """Client ``pid``'s initial PC classifier (seeded per client)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config["seed"], pid, Stream.PC_HEAD_INIT))
        return nn.Linear(features, classes)


def inner_train(
    runtime: ClientRuntime,
    config: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    head_optimizer: torch.optim.SGD | None = None,
) -> float:
    """The authors' inner loop: ``local_steps`` SGD steps on random batches.

    Each step draws a fresh batch of ``batch_size`` distinct samples (the first
    batch of a reshuffled loader), takes a cross-entropy step with the body's
    gradient norm clipped at ``clip``; the optimizer is new every call.

    Returns
    -------
    float
        Mean training loss over the steps.
    """
    model = runtime.model
    model.train()
    params = list(model.parameters())
    optimizer = torch.optim.SGD(
        params,
        lr=config["lr"],
        momentum=config["momentum"],
        weight_decay=config["weight_decay"],
    )
    n = x.shape[0]
    total = torch.zeros((), device=runtime.device)
    steps = int(config["local_steps"])
    # Every step's batch, drawn up front in step order and moved in one copy
    # (local_steps >= 1, checked before the run).
    indices = torch.stack(
        [
            torch.randperm(n, generator=generator)[: config["batch_size"]]
            for _ in range(steps)
        ]
    ).to(runtime.device)
    for idx in indices:
        inputs = runtime.transform.apply(x[idx], None)  # the paper: no augmentation
        loss = nn.functional.cross_entropy(runtime.forward(inputs), y[idx])
        optimizer.zero_grad(set_to_none=True)
        if head_optimizer is not None:
            head_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config["clip"])
        optimizer.step()
        if head_optimizer is not None:
            head_optimizer.step()
        total += loss.detach()
    mean = float(total) / steps
    if not math.isfinite(mean):
        raise NonFiniteLossError(f"training loss became {mean}; lower lr or check data")
    return mean


def _head_optimizer(
    runtime: ClientRuntime, config: dict[str, Any], pid: int, state: RecordDict
) -> torch.optim.SGD:
    """Load client ``pid``'s classifier and momentum from ``state`` (or init)."""
    head = runtime.head
    assert head is not None
    optimizer = torch.optim.SGD(
        head.parameters(),
        lr=config["lr"],
        momentum=config["momentum"],
        weight_decay=config["weight_decay"],
    )
    if HEAD_KEY in state.array_records:
        saved = state.array_records[HEAD_KEY].to_torch_state_dict()
        head.load_state_dict({"weight": saved["weight"], "bias": saved["bias"]})
        if "momentum.weight" in saved:
            for name, p in head.named_parameters():
                optimizer.state[p]["momentum_buffer"] = saved[f"momentum.{name}"].to(
                    runtime.device
                )
    else:
        fresh = initial_head(config, pid, head.in_features, head.out_features)
        head.load_state_dict(fresh.state_dict())
    return optimizer


def _save_head(
    runtime: ClientRuntime, optimizer: torch.optim.SGD, state: RecordDict
) -> None:
    head = runtime.head
    assert head is not None
    saved = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    for name, p in head.named_parameters():
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            saved[f"momentum.{name}"] = buf.detach().cpu().clone()
    state[HEAD_KEY] = ArrayRecord(saved)


def load_weights(runtime: ClientRuntime, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` into the worker's target model (strict keys)."""
    runtime.model.load_state_dict(weights, strict=True)


def train_client(
    runtime: ClientRuntime,
    config: dict[str, Any],
    pid: int,
    server_round: int,
    arrays: ArrayRecord,
    state: RecordDict,
) -> tuple[ArrayRecord, float]:
    """One pFedHN / pFedHN-PC client update: (the change to send back, mean loss).

    The baselines (FedAvg, Local) train through :data:`BASELINE_UPDATE`.
    """
    x, y = runtime.split(pid, "train")
    generator = torch.Generator().manual_seed(
        derive_seed(config["seed"], pid, server_round)
    )
    old = arrays.to_torch_state_dict()
    load_weights(runtime, old)
    head_optimizer = (
        _head_optimizer(runtime, config, pid, state)
        if runtime.head is not None
        else None
    )
    loss = inner_train(runtime, config, x, y, generator, head_optimizer)
    if head_optimizer is not None:
        _save_head(runtime, head_optimizer, state)
    new = {k: v.detach().cpu() for k, v in runtime.model.state_dict().items()}
    return ArrayRecord({k: old[k] - new[k] for k in old}), loss


def eval_client(
    runtime: ClientRuntime,
    config: dict[str, Any],
    pid: int,
    arrays: ArrayRecord,
    state: RecordDict,
) -> dict[str, EvalStats]:
    """Evaluate client ``pid``'s generated model on its validation and test splits."""
    load_weights(runtime, arrays.to_torch_state_dict())
    if runtime.head is not None:
        _head_optimizer(runtime, config, pid, state)  # loads the classifier only
    return test_val_and_test(runtime, config, pid)


def test_val_and_test(
    runtime: ClientRuntime, config: dict[str, Any], pid: int
) -> dict[str, EvalStats]:
    """The loaded model (with the client's classifier, for PC) on val and test."""
    out = {}
    for split in ("val", "test"):
        x, y = runtime.split(pid, split)
        out[split] = evaluate(
            _Forward(runtime),
            x,
            y,
            runtime.transform,
            batch_size=config["eval_batch_size"],
            device=runtime.device,
        )
    return out


class _Forward(nn.Module):
    """The runtime's forward as a module (for ``pflcore.training.evaluate``)."""

    def __init__(self, runtime: ClientRuntime) -> None:
        super().__init__()
        self.runtime = runtime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runtime.forward(x)

    def train(self, mode: bool = True) -> _Forward:
        self.runtime.model.train(mode)
        return self


def baseline_loss(
    runtime: WorkerRuntime, config: dict[str, Any], pid: int, server_round: int
) -> float:
    """FedAvg's and Local's update: pFedHN's inner steps on the loaded target."""
    assert isinstance(runtime, ClientRuntime)
    x, y = runtime.split(pid, "train")
    generator = torch.Generator().manual_seed(
        derive_seed(config["seed"], pid, server_round)
    )
    return inner_train(runtime, config, x, y, generator)


def baseline_update(config: dict[str, Any]) -> LocalUpdate:
    """The baseline ClientApp's hooks: pFedHN's update, val and test reported."""
    cpus = max(1, int(config["client_resources"]["num_cpus"]))

    def tested(
        runtime: WorkerRuntime, cfg: dict[str, Any], pid: int
    ) -> dict[str, EvalStats]:
        assert isinstance(runtime, ClientRuntime)
        return test_val_and_test(runtime, cfg, pid)

    return LocalUpdate(
        get_runtime,
        baseline_loss,
        test=tested,
        prepare=lambda msg: use_threads(instruction_of(msg), default=cpus),
        adapted_test=adapted_val_and_test,
    )


def finetune_spec(config: dict[str, Any]) -> FinetuneSpec:
    """FedAvg + FT's adaptation: ``finetune.steps`` SGD steps as the inner loop."""
    return FinetuneSpec(
        unit="steps",
        amount=int(config["finetune"]["steps"]),
        lr=float(config["finetune"]["lr"]),
        batch_size=int(config["batch_size"]),
        momentum=float(config["momentum"]),
        weight_decay=float(config["weight_decay"]),
    )


def adapted_val_and_test(
    runtime: WorkerRuntime, config: dict[str, Any], pid: int, server_round: int
) -> dict[str, EvalStats]:
    """FedAvg + FT: adapt a copy of the loaded global model, test it on val and test.

    The copy trains on client ``pid``'s training split only, with batches
    from the round's adaptation stream; the loaded model is left unchanged.
    """
    adapted = copy.deepcopy(runtime.model)
    x, y = runtime.split(pid, "train")
    generator = torch.Generator().manual_seed(
        adaptation_seed(config, pid, server_round)
    )
    finetune(
        adapted,
        x,
        y,
        runtime.transform,
        finetune_spec(config),
        generator=generator,
        device=runtime.device,
    )
    out = {}
    for split in ("val", "test"):
        xs, ys = runtime.split(pid, split)
        out[split] = evaluate(
            adapted,
            xs,
            ys,
            runtime.transform,
            batch_size=config["eval_batch_size"],
            device=runtime.device,
        )
    return out


def make_client_app(config: dict[str, Any]) -> ClientApp:
    """Build the ClientApp for a resolved configuration.

    FedAvg and Local run on the suite's baseline ClientApp
    (:mod:`pflcore.baselines`) with pFedHN's inner update; pFedHN and
    pFedHN-PC on this one. The closure carries the plain config only; data
    and the model are built in the worker process on first use.
    """
    if config["algorithm"] in BASELINES:
        return make_baseline_client_app(config, baseline_update(config))
    app = ClientApp()
    add_partition_query(app)
    cpus = max(1, int(config["client_resources"]["num_cpus"]))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        instruction = instruction_of(msg)
        use_threads(instruction, default=cpus)
        server_round = config_int(instruction, SERVER_ROUND)
        start = time.perf_counter()
        arrays, loss = train_client(
            runtime,
            config,
            pid,
            server_round,
            msg.content.array_records[ARRAYS],
            context.state,
        )
        metrics = train_metrics(
            pid,
            loss,
            runtime.data.indices["train"][pid].size,
            # the client's own compute, for locating a round's time (bench/)
            client_s=time.perf_counter() - start,
        )
        return reply(msg, arrays=arrays, metrics=metrics)

    @app.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        pid = partition_id(context)
        runtime = get_runtime(config)
        use_threads(instruction_of(msg), default=cpus)
        stats = eval_client(
            runtime, config, pid, msg.content.array_records[ARRAYS], context.state
        )
        metrics = eval_metrics(pid, stats["test"], val=stats["val"])
        return reply(msg, metrics=metrics)

    return app
