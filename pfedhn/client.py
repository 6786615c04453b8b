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
from pfedhn.settings import Finetune, PFedHNSettings, TargetModel, read_settings
from pfedhn.threads import use_threads
from pflcore.config.seeds import derive_seed
from pflcore.data.client_data import ClientData
from pflcore.data.node_data import node_data
from pflcore.fl.baselines import (
    BASELINES,
    LocalUpdate,
    adaptation_seed,
    make_baseline_client_app,
)
from pflcore.fl.identity import add_partition_query, partition_id
from pflcore.fl.protocol import (
    ARRAYS,
    SERVER_ROUND,
    config_int,
    eval_metrics,
    instruction_of,
    reply,
    train_metrics,
)
from pflcore.local.devices import apply_determinism, client_device, state_on
from pflcore.local.finetune import FinetuneSpec, finetune
from pflcore.local.runtime import WorkerRuntime, cached_runtime
from pflcore.local.training import EvalStats, NonFiniteLossError, evaluate

# Seeds pFedHN-PC's per-client classifier (once, no round). Its key
# (seed, pid, 7) is also round 7's local-training key: the classifier's first
# weights and that round's batch order start from one integer. Kept, since a
# new tag would change every recorded pFedHN-PC run.
PC_HEAD_STREAM = 7

HEAD_KEY = "head"


def target_model(
    model: TargetModel, data: ClientData, *, image_size: int, with_head: bool
) -> nn.Module:
    """The run's target network.

    Parameters
    ----------
    model : TargetModel
        ``model.*`` (``target``, ``n_kernels`` are read).
    data : ClientData
        The clients' data (channels, classes).
    image_size : int
        ``dataset.image_size``.
    with_head : bool
        Include the classifier (all but ``pfedhn_pc``).
    """
    return build_target(
        model.target,
        data.data.channels,
        int(image_size),
        data.data.num_classes,
        with_head=with_head,
        n_kernels=int(model.n_kernels),
    )


def initial_target(
    seed: int,
    model: TargetModel,
    data: ClientData,
    *,
    image_size: int,
    with_head: bool,
) -> nn.Module:
    """The initial target seeded with the run's ``seed`` (the baselines' start).

    The other parameters are :func:`target_model`'s.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return target_model(model, data, image_size=image_size, with_head=with_head)


@dataclass(frozen=True)
class InnerLoop:
    """The client's SGD (the run's top-level ``lr`` ... ``clip``).

    Attributes
    ----------
    lr, momentum, weight_decay : float
        The client's SGD (also the PC classifier's).
    batch_size : int
        Samples per step.
    local_steps : int
        Steps per round.
    clip : float
        Gradient-norm clip of the target's parameters.
    """

    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    local_steps: int
    clip: float

    @classmethod
    def of(cls, settings: PFedHNSettings) -> InnerLoop:
        """The inner loop of a run's settings."""
        return cls(
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            batch_size=settings.batch_size,
            local_steps=settings.local_steps,
            clip=settings.clip,
        )


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
    """PFedHN's worker runtime for the resolved ``config`` (a boundary)."""
    settings = read_settings(config)
    resources = settings.client_resources
    torch.set_num_threads(max(1, int(resources.num_cpus)))
    data = node_data(config) or cached_data(
        settings.dataset,
        settings.partition,
        settings.num_clients,
        settings.seed,
        settings.novel,
        settings.protocol,
    )
    device = client_device(float(resources.num_gpus))
    apply_determinism(bool(settings.deterministic), device)
    image_size, with_head = settings.dataset.image_size, settings.target_has_head
    model = target_model(
        settings.model, data, image_size=image_size, with_head=with_head
    ).to(device)
    head = None
    if not with_head:  # pfedhn_pc
        feat = int(model.feature_dim)  # type: ignore[arg-type]
        head = nn.Linear(feat, data.data.num_classes).to(device)
    transform = make_transform(data.data, image_size, settings.normalize)
    # the baselines' common start; the generated weights replace it for pFedHN
    start = initial_target(
        settings.seed,
        settings.model,
        data,
        image_size=image_size,
        with_head=with_head,
    )
    initial = state_on(start.state_dict(), device)
    return ClientRuntime(data, model, initial, transform, device, head=head)


def get_runtime(config: dict[str, Any]) -> ClientRuntime:
    """The per-process runtime for ``config`` (built on first use)."""
    return cached_runtime(build_runtime, config)


def initial_head(seed: int, pid: int, features: int, classes: int) -> nn.Linear:
    """Client ``pid``'s initial PC classifier (seeded per client from ``seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, pid, PC_HEAD_STREAM))
        return nn.Linear(features, classes)


def inner_train(
    runtime: ClientRuntime,
    loop: InnerLoop,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    head_optimizer: torch.optim.SGD | None = None,
) -> float:
    """The authors' inner loop: ``local_steps`` SGD steps on random batches.

    Each step draws a fresh batch of ``batch_size`` distinct samples (the first
    batch of a reshuffled loader), takes a cross-entropy step with the body's
    gradient norm clipped at ``clip``; the optimizer is new every call.

    Parameters
    ----------
    runtime : ClientRuntime
        The worker's runtime, its target loaded.
    loop : InnerLoop
        The SGD, the batch size, the steps and the clip.
    x, y : torch.Tensor
        The client's training split.
    generator : torch.Generator
        Draws the batches.
    head_optimizer : torch.optim.SGD, optional
        The PC classifier's optimizer (stepped with the target's).

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
        lr=loop.lr,
        momentum=loop.momentum,
        weight_decay=loop.weight_decay,
    )
    n = x.shape[0]
    total = torch.zeros((), device=runtime.device)
    steps = int(loop.local_steps)
    # Every step's batch, drawn up front in step order and moved in one copy
    # (local_steps >= 1, checked before the run).
    indices = torch.stack(
        [
            torch.randperm(n, generator=generator)[: loop.batch_size]
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
        torch.nn.utils.clip_grad_norm_(params, loop.clip)
        optimizer.step()
        if head_optimizer is not None:
            head_optimizer.step()
        total += loss.detach()
    mean = float(total) / steps
    if not math.isfinite(mean):
        raise NonFiniteLossError(f"training loss became {mean}; lower lr or check data")
    return mean


def _load_head(
    runtime: ClientRuntime, seed: int, pid: int, state: RecordDict
) -> dict[str, torch.Tensor] | None:
    """Load client ``pid``'s classifier from ``state`` (or its seeded init).

    Returns the saved record (with the momentum, if any), ``None`` at first.
    """
    head = runtime.head
    assert head is not None
    if HEAD_KEY in state.array_records:
        saved = state.array_records[HEAD_KEY].to_torch_state_dict()
        head.load_state_dict({"weight": saved["weight"], "bias": saved["bias"]})
        return saved
    fresh = initial_head(seed, pid, head.in_features, head.out_features)
    head.load_state_dict(fresh.state_dict())
    return None


def _head_optimizer(
    runtime: ClientRuntime, loop: InnerLoop, seed: int, pid: int, state: RecordDict
) -> torch.optim.SGD:
    """Load client ``pid``'s classifier and momentum from ``state`` (or init)."""
    head = runtime.head
    assert head is not None
    optimizer = torch.optim.SGD(
        head.parameters(),
        lr=loop.lr,
        momentum=loop.momentum,
        weight_decay=loop.weight_decay,
    )
    saved = _load_head(runtime, seed, pid, state)
    if saved is not None and "momentum.weight" in saved:
        for name, p in head.named_parameters():
            optimizer.state[p]["momentum_buffer"] = saved[f"momentum.{name}"].to(
                runtime.device
            )
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
    pid: int,
    server_round: int,
    arrays: ArrayRecord,
    state: RecordDict,
    *,
    loop: InnerLoop,
    seed: int,
) -> tuple[ArrayRecord, float]:
    """One pFedHN / pFedHN-PC client update: (the change to send back, mean loss).

    The baselines (FedAvg, Local) train through :func:`baseline_update`.

    Parameters
    ----------
    runtime : ClientRuntime
        The worker's runtime.
    pid, server_round : int
        The client and the round (they seed the batches).
    arrays : ArrayRecord
        The client's generated target weights.
    state : RecordDict
        The client's own state (the PC classifier and its momentum).
    loop : InnerLoop
        The client's SGD.
    seed : int
        The run's seed.
    """
    x, y = runtime.split(pid, "train")
    generator = torch.Generator().manual_seed(derive_seed(seed, pid, server_round))
    old = arrays.to_torch_state_dict()
    load_weights(runtime, old)
    head_optimizer = (
        _head_optimizer(runtime, loop, seed, pid, state)
        if runtime.head is not None
        else None
    )
    loss = inner_train(runtime, loop, x, y, generator, head_optimizer)
    if head_optimizer is not None:
        _save_head(runtime, head_optimizer, state)
    new = {k: v.detach().cpu() for k, v in runtime.model.state_dict().items()}
    return ArrayRecord({k: old[k] - new[k] for k in old}), loss


def eval_client(
    runtime: ClientRuntime,
    pid: int,
    arrays: ArrayRecord,
    state: RecordDict,
    *,
    seed: int,
    eval_batch_size: int,
) -> dict[str, EvalStats]:
    """Evaluate client ``pid``'s generated model on its validation and test splits.

    ``seed`` (the run's) initialises a PC classifier the client has not yet
    trained; ``eval_batch_size`` is the evaluation's batch size.
    """
    load_weights(runtime, arrays.to_torch_state_dict())
    if runtime.head is not None:
        _load_head(runtime, seed, pid, state)
    return test_val_and_test(runtime, pid, eval_batch_size)


def test_val_and_test(
    runtime: ClientRuntime, pid: int, eval_batch_size: int
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
            batch_size=eval_batch_size,
            device=runtime.device,
        )
    return out


class _Forward(nn.Module):
    """The runtime's forward as a module (for ``pflcore.local.training.evaluate``)."""

    def __init__(self, runtime: ClientRuntime) -> None:
        super().__init__()
        self.runtime = runtime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runtime.forward(x)

    def train(self, mode: bool = True) -> _Forward:
        self.runtime.model.train(mode)
        return self


def baseline_loss(
    runtime: WorkerRuntime,
    pid: int,
    server_round: int,
    *,
    loop: InnerLoop,
    seed: int,
) -> float:
    """FedAvg's and Local's update: pFedHN's inner steps on the loaded target."""
    assert isinstance(runtime, ClientRuntime)
    x, y = runtime.split(pid, "train")
    generator = torch.Generator().manual_seed(derive_seed(seed, pid, server_round))
    return inner_train(runtime, loop, x, y, generator)


def baseline_update(settings: PFedHNSettings, config: dict[str, Any]) -> LocalUpdate:
    """The baseline ClientApp's hooks: pFedHN's update, val and test reported.

    Parameters
    ----------
    settings : PFedHNSettings
        The run's settings: the client's SGD, ``seed``, ``eval_batch_size``,
        ``finetune`` and ``client_resources`` are read, most of the run's.
    config : dict
        The configuration the settings were parsed from (with the node's
        data, if any): the key of the worker's cached runtime.
    """
    cpus = max(1, int(settings.client_resources.num_cpus))
    loop, seed = InnerLoop.of(settings), settings.seed
    eval_batch_size = settings.eval_batch_size
    spec = finetune_spec(
        settings.finetune,
        batch_size=settings.batch_size,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )

    def train(runtime: WorkerRuntime, pid: int, server_round: int) -> float:
        return baseline_loss(runtime, pid, server_round, loop=loop, seed=seed)

    def tested(runtime: WorkerRuntime, pid: int) -> dict[str, EvalStats]:
        assert isinstance(runtime, ClientRuntime)
        return test_val_and_test(runtime, pid, eval_batch_size)

    def adapted(
        runtime: WorkerRuntime, pid: int, server_round: int
    ) -> dict[str, EvalStats]:
        return adapted_val_and_test(
            runtime,
            pid,
            server_round,
            spec=spec,
            seed=seed,
            eval_batch_size=eval_batch_size,
        )

    return LocalUpdate(
        lambda: get_runtime(config),
        train,
        seed=seed,
        eval_batch_size=eval_batch_size,
        test=tested,
        prepare=lambda msg: use_threads(instruction_of(msg), default=cpus),
        adapted_test=adapted,
    )


def finetune_spec(
    finetune: Finetune, *, batch_size: int, momentum: float, weight_decay: float
) -> FinetuneSpec:
    """FedAvg + FT's adaptation: ``finetune.steps`` SGD steps as the inner loop.

    Parameters
    ----------
    finetune : Finetune
        ``finetune.*`` (``steps``, ``lr``).
    batch_size : int
        The client's batch size.
    momentum, weight_decay : float
        The client's SGD.
    """
    return FinetuneSpec(
        unit="steps",
        amount=int(finetune.steps),
        lr=float(finetune.lr),
        batch_size=int(batch_size),
        momentum=float(momentum),
        weight_decay=float(weight_decay),
    )


def adapted_val_and_test(
    runtime: WorkerRuntime,
    pid: int,
    server_round: int,
    *,
    spec: FinetuneSpec,
    seed: int,
    eval_batch_size: int,
) -> dict[str, EvalStats]:
    """FedAvg + FT: adapt a copy of the loaded global model, test it on val and test.

    The copy trains on client ``pid``'s training split only, by ``spec``,
    with batches from the round's adaptation stream of the run's ``seed``;
    the loaded model is left unchanged. ``eval_batch_size`` is the tests'.
    """
    adapted = copy.deepcopy(runtime.model)
    x, y = runtime.split(pid, "train")
    generator = torch.Generator().manual_seed(adaptation_seed(seed, pid, server_round))
    finetune(
        adapted,
        x,
        y,
        runtime.transform,
        spec,
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
            batch_size=eval_batch_size,
            device=runtime.device,
        )
    return out


def make_client_app(config: dict[str, Any]) -> ClientApp:
    """Build the ClientApp for a resolved configuration (a boundary).

    FedAvg and Local run on the suite's baseline ClientApp
    (:mod:`pflcore.fl.baselines`) with pFedHN's inner update; pFedHN and
    pFedHN-PC on this one. The closures carry the plain config (the key of
    the worker's runtime) and the settings parsed from it; data and the
    model are built in the worker process on first use.
    """
    settings = read_settings(config)
    if settings.algorithm in BASELINES:
        return make_baseline_client_app(
            settings.algorithm, baseline_update(settings, config)
        )
    app = ClientApp()
    add_partition_query(app)
    cpus = max(1, int(settings.client_resources.num_cpus))
    loop, seed = InnerLoop.of(settings), settings.seed
    eval_batch_size = settings.eval_batch_size

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
            pid,
            server_round,
            msg.content.array_records[ARRAYS],
            context.state,
            loop=loop,
            seed=seed,
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
            runtime,
            pid,
            msg.content.array_records[ARRAYS],
            context.state,
            seed=seed,
            eval_batch_size=eval_batch_size,
        )
        metrics = eval_metrics(pid, stats["test"], val=stats["val"])
        return reply(msg, metrics=metrics)

    return app
