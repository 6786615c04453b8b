"""Every package keeps one computation's tensors on one device, checked without a GPU.

Each package's ClientApp (and pFedHN's server) runs on ``tests.fakeaccel``'s
stand-in accelerator: PyTorch's own CUDA device checks on fake tensors, real
values on the CPU. A CPU tensor meeting a device tensor fails here as it would
on a GPU ("Expected all tensors to be on the same device"). The checker itself
is first tested on operators whose CUDA behaviour is known.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from hydra import compose, initialize_config_dir
from torch import nn

from pflcore.config import to_plain
from pflcore.local.runtime import clear_runtimes
from pflcore.local.training import evaluate, make_sgd, train_epochs
from pflcore.local.transforms import BatchTransform
from tests.fakeaccel import ACCELERATOR, OnAccelerator, fake_accelerator, host
from tests.fakedata import write_cifar10

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SAME_DEVICE = "Expected all tensors to be on the same device"


# -- the checker -----------------------------------------------------------------


def test_checker_rejects_what_cuda_rejects_and_allows_what_it_allows():
    cpu = torch.arange(6.0).view(2, 3)
    with fake_accelerator():
        dev = cpu.to(ACCELERATOR)
        assert isinstance(dev, OnAccelerator) and dev.device == ACCELERATOR
        with pytest.raises(RuntimeError, match=SAME_DEVICE):
            _ = dev - cpu
        with pytest.raises(RuntimeError, match=SAME_DEVICE):
            _ = dev @ cpu.T
        with pytest.raises(RuntimeError, match=SAME_DEVICE):
            torch.cat([dev, cpu])
        with pytest.raises(RuntimeError, match="same device"):
            nn.functional.linear(dev, torch.ones(4, 3))
        # CUDA allows CPU scalars and CPU index tensors
        scaled = dev * torch.tensor(2.0)
        picked = dev[torch.tensor([1, 0])]
        total = float(dev.sum())
        back = dev.cpu()
        made = torch.tensor([1.0, 2.0], device=ACCELERATOR)
        assert isinstance(made, OnAccelerator)
        with pytest.raises(RuntimeError, match=SAME_DEVICE):
            _ = made - torch.ones(2)
    assert torch.equal(host(made), torch.tensor([1.0, 2.0]))
    assert torch.equal(host(scaled), cpu * 2) and torch.equal(host(picked), cpu[[1, 0]])
    assert total == 15.0 and type(back) is torch.Tensor and torch.equal(back, cpu)


def test_training_on_the_stand_in_is_the_cpu_computation_bit_for_bit():
    x = torch.randint(0, 256, (37, 3, 10, 10), dtype=torch.uint8)
    y = torch.arange(37) % 4
    transform = BatchTransform((0.4, 0.5, 0.6), (0.2, 0.3, 0.25), 12, 2, True)

    def run(device: torch.device) -> tuple:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()
        )
        model.append(nn.Linear(4 * 10 * 10, 4))
        model = model.to(device)
        stats = train_epochs(
            model,
            x,
            y,
            make_sgd(model.parameters(), 0.1, 0.9),
            transform,
            epochs=2,
            batch_size=8,
            generator=torch.Generator().manual_seed(1),
            device=device,
        )
        counts = evaluate(model, x, y, transform, batch_size=16, device=device)
        return stats, counts, {k: v.cpu() for k, v in model.state_dict().items()}

    on_cpu = run(torch.device("cpu"))
    with fake_accelerator() as mode:
        on_device = run(ACCELERATOR)
    assert mode.checked > 100  # the device checks really ran
    assert on_device[:2] == on_cpu[:2]
    for key, value in on_cpu[2].items():
        assert torch.equal(on_device[2][key], value), key


# -- the packages' clients -------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, per_batch=20, test=20)
    return root


def composed(name: str, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return to_plain(
            compose(name, overrides=[*overrides, "client_resources.num_gpus=0.5"])
        )


def message(kind: str, server_round: int, **records) -> Message:
    config = records.pop("config", {})
    content = RecordDict(
        {**records, "config": ConfigRecord({"server-round": server_round, **config})}
    )
    return Message(content, dst_node_id=1, message_type=kind)


def context(pid: int) -> Context:
    return Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": pid},
        state=RecordDict(),
        run_config={},
    )


@pytest.fixture
def on_stand_in(monkeypatch):
    """Runtimes built while this is active train on the stand-in accelerator."""
    import fedfomo.client
    import fedper.client
    import perfedavg.client
    import pfedhn.client

    modules = (fedfomo.client, fedper.client, perfedavg.client, pfedhn.client)
    for module in modules:
        monkeypatch.setattr(module, "client_device", lambda num_gpus: ACCELERATOR)
    clear_runtimes()
    with fake_accelerator() as mode:
        yield mode
    clear_runtimes()


def on_accelerator(model: nn.Module) -> bool:
    return all(isinstance(p, OnAccelerator) for p in model.parameters())


def test_fedfomo_update_without_a_saved_baseline(on_stand_in):
    """A client's first FOMO update weighs the candidates against the initial state."""
    from fedfomo.client import get_runtime, make_client_app
    from fedfomo.messages import CANDIDATE_PREFIX, GLOBAL_KEY, evaluate_type

    config = composed(
        "fedfomo",
        "experiment=fedfomo/quick",
        "num_clients=5",  # 10 shards: at least one per class
        "partition.pool_fraction=0.2",
        "local_epochs=1",
        "fomo.num_candidates=3",
    )
    app = make_client_app(config)
    contexts = [context(pid) for pid in range(3)]
    uploads = {}
    for pid, ctx in enumerate(contexts):
        reply = app(message(MessageType.TRAIN, 1), ctx)
        uploads[pid] = reply.content.array_records["arrays"]
    assert on_accelerator(get_runtime(config).model)
    candidates = {f"{CANDIDATE_PREFIX}{pid}": uploads[pid] for pid in range(3)}
    evaluation = message(
        evaluate_type(update=True, test=True),
        1,
        **candidates,
        **{GLOBAL_KEY: uploads[2]},
    )
    first = context(0)  # no baseline in its state yet: the initial weights
    reply = app(evaluation, first)
    metrics = reply.content.metric_records["metrics"]
    assert len(metrics["fomo-weights"]) == 4 and metrics["num-examples"] > 0
    again = app(evaluation, first)  # now from the saved baseline
    assert again.content.metric_records["metrics"]["num-examples"] > 0
    assert on_stand_in.checked > 0


@pytest.mark.parametrize("algorithm", ["fedavg_ft", "local"])
def test_fedfomo_baselines(on_stand_in, algorithm):
    from fedfomo.client import baseline_update, get_runtime
    from fedfomo.settings import read_settings
    from pflcore.fl.baselines import make_baseline_client_app

    config = composed(
        "fedfomo",
        "experiment=fedfomo/quick",
        f"algorithm={algorithm}",
        "num_clients=5",  # 10 shards: at least one per class
        "partition.pool_fraction=0.2",
        "local_epochs=1",
    )
    app = make_baseline_client_app(
        config["algorithm"], baseline_update(read_settings(config), config)
    )
    ctx = context(1)
    initial = ArrayRecord(get_runtime(config).initial_state)  # to the host
    sent = message(MessageType.TRAIN, 1, arrays=initial)
    trained = app(sent, ctx).content.array_records["arrays"]
    arrays = trained if algorithm == "fedavg_ft" else ArrayRecord()
    reply = app(message(MessageType.EVALUATE, 1, arrays=arrays), ctx)
    assert reply.content.metric_records["metrics"]["num-examples"] > 0
    assert on_accelerator(get_runtime(config).model)


@pytest.mark.parametrize(
    "overrides",
    [
        ["algorithm=fedper", "head_finetune_epochs=1"],
        ["algorithm=fedavg_ft"],
        ["algorithm=local"],
    ],
)
def test_fedper_client_with_augmentation(on_stand_in, cifar_root, overrides):
    from fedper.client import get_runtime, initial_model, make_client_app
    from fedper.settings import read_settings

    config = composed(
        "fedper",
        f"dataset.root={cifar_root}",
        "model=small_cnn",  # the placement is under test, not MobileNet (fast tier)
        "num_clients=3",
        "local_epochs=1",
        "batch_size=16",
        *overrides,
    )
    assert config["dataset"]["crop_padding"] > 0 and config["dataset"]["flip"]
    app = make_client_app(config)
    runtime = get_runtime(config)
    assert on_accelerator(runtime.model)
    with torch.random.fork_rng(devices=[]):
        s = read_settings(config)
        initial = initial_model(
            s.model, 10, 3, seed=s.seed, image_size=s.dataset.image_size
        ).state_dict()
    base = ArrayRecord({k: initial[k].cpu() for k in runtime.base})
    ctx = context(2)
    reply = app(message(MessageType.TRAIN, 1, arrays=base), ctx)
    base = reply.content.array_records["arrays"]
    evaluation = app(message(MessageType.EVALUATE, 1, arrays=base), ctx)
    assert evaluation.content.metric_records["metrics"]["num-examples"] > 0


@pytest.mark.parametrize(
    "overrides",
    [
        ["algorithm=perfedavg_hf"],
        ["algorithm=perfedavg_fo", "finetune.unit=epochs"],
        ["algorithm=fedavg_ft"],
        ["algorithm=local"],
        ["experiment=perfedavg/jiang_quick"],
    ],
)
def test_perfedavg_client(on_stand_in, overrides):
    from perfedavg.client import get_runtime, initial_model, make_client_app
    from perfedavg.settings import read_settings

    config = composed("perfedavg", "experiment=perfedavg/quick", *overrides)
    app = make_client_app(config)
    runtime = get_runtime(config)
    assert on_accelerator(runtime.model)
    s = read_settings(config)
    with torch.random.fork_rng(devices=[]):
        model = initial_model(
            s.model, runtime.data, image_size=s.dataset.image_size, seed=s.seed
        )
        arrays = ArrayRecord({k: v.cpu() for k, v in model.state_dict().items()})
    ctx = context(1)
    trained = app(message(MessageType.TRAIN, 1, arrays=arrays), ctx)
    arrays = trained.content.array_records["arrays"] or arrays
    reply = app(message(MessageType.EVALUATE, 1, arrays=arrays), ctx)
    assert reply.content.metric_records["metrics"]["num-examples"] > 0
    if config["algorithm"] == "jiang":
        reptile = Message(
            message(MessageType.TRAIN, 2, arrays=arrays).content,
            dst_node_id=1,
            message_type=f"{MessageType.TRAIN}.reptile",
        )
        assert app(reptile, ctx).content.array_records["arrays"]
        personalize = Message(
            message(MessageType.EVALUATE, 3, arrays=arrays).content,
            dst_node_id=1,
            message_type=f"{MessageType.EVALUATE}.personalize",
        )
        assert app(personalize, context(25)).content.metric_records["metrics"]


@pytest.mark.parametrize("algorithm", ["pfedhn", "pfedhn_pc", "fedavg", "local"])
def test_pfedhn_client(on_stand_in, algorithm):
    from pfedhn.client import get_runtime, initial_target, make_client_app
    from pfedhn.settings import read_settings

    config = composed("pfedhn", "experiment=pfedhn/quick", f"algorithm={algorithm}")
    app = make_client_app(config)
    runtime = get_runtime(config)
    assert on_accelerator(runtime.model)
    with torch.random.fork_rng(devices=[]):
        s = read_settings(config)
        weights = initial_target(
            s.seed,
            s.model,
            runtime.data,
            image_size=s.dataset.image_size,
            with_head=s.target_has_head,
        ).state_dict()
    arrays = ArrayRecord({k: v.cpu() for k, v in weights.items()})
    ctx = context(0)
    for server_round in (1, 2):  # PC: the second round reloads head and momentum
        app(message(MessageType.TRAIN, server_round, arrays=arrays), ctx)
        reply = app(message(MessageType.EVALUATE, server_round, arrays=arrays), ctx)
        assert reply.content.metric_records["metrics"]["val-num-examples"] > 0


def test_pfedhn_server_with_the_hypernetwork_on_the_device(tmp_path):
    from pfedhn.models import HyperNetwork
    from pfedhn.strategy import EXTRA_FIELDS, PFedHN
    from pflcore.records.results import RunRecorder

    shapes = {"a.weight": (3, 2), "a.bias": (3,)}
    with fake_accelerator() as mode:
        torch.manual_seed(0)
        hn = HyperNetwork(4, shapes, embed_dim=2, hidden_dim=5, n_hidden=1)
        strategy = PFedHN(
            RunRecorder(tmp_path, {"seed": 0}, extra_fields=EXTRA_FIELDS),
            hn,
            novel_clients=[3],
            novel_rounds=1,
            lr=0.1,
            momentum=0.9,
            weight_decay=1e-3,
            clip=1.0,
            novel_lr=0.1,
            device=str(ACCELERATOR),
            num_clients=4,
            clients_per_round=2,
            num_rounds=1,
            eval_every=0,
            seed=0,
        )
        strategy.bind_partitions({j: 100 + j for j in range(4)})
        assert on_accelerator(strategy.hn)
        for server_round in (1, 2):  # a training round, then a novel-client round
            sent = strategy.configure_train(
                server_round, ArrayRecord(), ConfigRecord(), grid=None
            )
            replies = []
            for msg, pid in zip(
                sent, strategy.train_partitions(server_round), strict=True
            ):
                weights = msg.content.array_records["arrays"].to_torch_state_dict()
                delta = ArrayRecord({k: 0.1 * v for k, v in weights.items()})
                metrics = MetricRecord(
                    {"partition-id": pid, "num-examples": 5, "train-loss": 1.0}
                )
                replies.append(
                    Message(
                        RecordDict({"arrays": delta, "metrics": metrics}),
                        dst_node_id=0,
                        message_type=MessageType.TRAIN,
                    )
                )
            strategy.aggregate_train(server_round, replies)
    assert mode.checked > 0
