"""GPU runs: every package end to end on half a GPU, and CPU/GPU agreement.

Marked ``cuda``: collected everywhere, run only where ``torch.cuda.is_available()``
(``tests/conftest.py`` skips them elsewhere, with the reason shown by ``-ra``).
The CPU-side counterpart that runs everywhere is ``tests/test_device_placement.py``.

Tolerances. One epoch of float32 SGD on the CPU and on a GPU (TF32 off, cuDNN
deterministic) differ only by the order of floating-point sums inside each
kernel; over the few dozen steps here the weights are required to agree to
``atol=1e-4, rtol=1e-3`` and the mean loss to a relative ``1e-4``. Two GPU runs
with the same seed and ``deterministic`` on must agree bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from torch import nn

from pflcore.local.devices import set_deterministic
from pflcore.local.training import make_sgd, train_epochs
from pflcore.local.transforms import BatchTransform
from tests.fakedata import write_cifar10, write_mnist
from tests.mainrun import output_tail, read_run, run_module

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("restore_flags")]

CUDA = torch.device("cuda")
WEIGHT_TOL = {"atol": 1e-4, "rtol": 1e-3}
LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root, per_batch=48, test=20)
    write_mnist(root, train=800, test=200)
    return root


HALF_GPU = ["client_resources.num_gpus=0.5", "client_resources.num_cpus=1"]
MAINS = {
    "fedper": [
        "algorithm=fedper",
        "num_clients=4",
        "num_rounds=2",
        "local_epochs=1",
        "batch_size=16",
        "eval_batch_size=64",
    ],
    "pfedhn": [
        "algorithm=pfedhn_pc",
        "server_device=cuda",
        "num_clients=4",
        "num_rounds=4",
        "eval_every=2",
        "local_steps=3",
        "batch_size=16",
        "partition.val_size=200",
        "model.target=mlp",
    ],
    "perfedavg": [
        "algorithm=perfedavg_hf",
        "num_clients=4",
        "clients_per_round=2",
        "num_rounds=2",
        "eval_every=1",
        "partition.a=4",
        "batch_size=3",
        "local_steps=2",
        "eval_batch_size=64",
    ],
    "fedfomo": [
        "algorithm=fedfomo",
        "num_clients=6",
        "num_rounds=3",
        "local_epochs=1",
        "batch_size=16",
        "eval_batch_size=64",
        "fomo.num_candidates=5",
    ],
}


@pytest.mark.parametrize("package", sorted(MAINS))
def test_main_end_to_end_on_half_a_gpu(package, data_root, tmp_path):
    result = run_module(
        f"{package}.main",
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path}",
        *MAINS[package],
        *HALF_GPU,
        cwd=tmp_path,
    )
    assert result.returncode == 0, output_tail(result)
    rounds, clients, summary = read_run(tmp_path)
    assert summary["status"] == "completed"
    assert len(rounds) == summary["rounds_completed"] > 0
    assert rounds["test_acc_mean"].notna().any() and len(clients) > 0


def test_pfedhn_round_trip_with_the_hypernetwork_on_cuda(tmp_path):
    """Sent weights and the VJP step on CUDA match the same HN on the CPU."""
    from pfedhn.models import HyperNetwork
    from pfedhn.strategy import EXTRA_FIELDS, PFedHN
    from pflcore.records.results import RunRecorder

    set_deterministic(True)
    shapes = {"a.weight": (3, 2), "a.bias": (3,), "b.weight": (1, 3)}

    def strategy_on(device: str, folder: Path) -> PFedHN:
        torch.manual_seed(0)
        hn = HyperNetwork(4, shapes, embed_dim=2, hidden_dim=5, n_hidden=1)
        strategy = PFedHN(
            RunRecorder(folder, {"seed": 0}, extra_fields=EXTRA_FIELDS),
            hn,
            novel_clients=[],
            novel_rounds=0,
            lr=0.05,
            momentum=0.9,
            weight_decay=1e-3,
            clip=50.0,
            novel_lr=0.05,
            device=device,
            num_clients=4,
            clients_per_round=2,
            num_rounds=3,
            eval_every=0,
            seed=3,
        )
        strategy.bind_partitions({j: 100 + j for j in range(4)})
        return strategy

    def round_trip(strategy: PFedHN, server_round: int) -> dict[int, dict]:
        sent = list(
            strategy.configure_train(server_round, ArrayRecord(), ConfigRecord(), None)
        )
        replies, weights = [], {}
        for msg, pid in zip(sent, strategy.train_partitions(server_round), strict=True):
            theta = msg.content.array_records["arrays"].to_torch_state_dict()
            weights[pid] = theta
            delta = ArrayRecord({k: 0.1 * v + 0.01 for k, v in theta.items()})
            metrics = MetricRecord(
                {"partition-id": pid, "num-examples": 10, "train-loss": 1.0}
            )
            replies.append(
                Message(
                    RecordDict({"arrays": delta, "metrics": metrics}),
                    dst_node_id=0,
                    message_type=MessageType.TRAIN,
                )
            )
        strategy.aggregate_train(server_round, replies)
        return weights

    on_cpu = strategy_on("cpu", tmp_path / "cpu")
    on_gpu = strategy_on("cuda", tmp_path / "gpu")
    assert next(on_gpu.hn.parameters()).is_cuda
    for server_round in (1, 2, 3):
        sent_cpu, sent_gpu = (
            round_trip(on_cpu, server_round),
            round_trip(on_gpu, server_round),
        )
        for pid, theta in sent_cpu.items():
            for key, value in theta.items():
                assert sent_gpu[pid][key].device.type == "cpu"  # on the wire
                torch.testing.assert_close(sent_gpu[pid][key], value, **WEIGHT_TOL)
    for p, q in zip(on_gpu.hn.parameters(), on_cpu.hn.parameters(), strict=True):
        torch.testing.assert_close(p.detach().cpu(), q.detach(), **WEIGHT_TOL)


def test_perfedavg_hf_step_on_cuda_equals_the_exact_maml_step():
    """On a quadratic the finite difference is exact: HF on CUDA, float64."""
    from perfedavg.algorithm import meta_step

    rng = np.random.default_rng(3)
    w0 = rng.normal(size=5)
    (x1, t1), (x2, t2), (x3, t3) = [
        (rng.normal(size=(8, 5)), rng.normal(size=8)) for _ in range(3)
    ]
    alpha, beta = 0.1, 0.05

    def grad(x, t, w):
        return 2.0 / len(t) * x.T @ (x @ w - t)

    g = grad(x2, t2, w0 - alpha * grad(x1, t1, w0))
    expected = w0 - beta * (g - alpha * (2.0 / len(x3) * x3.T @ x3) @ g)
    model = nn.Linear(5, 1, bias=False).double().to(CUDA)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w0).view(1, -1))

    def mse(outputs, targets):
        return ((outputs.squeeze(-1) - targets) ** 2).mean()

    batches = tuple(
        (torch.from_numpy(x).to(CUDA), torch.from_numpy(t).to(CUDA))
        for x, t in ((x1, t1), (x2, t2), (x3, t3))
    )
    meta_step(
        model, batches, alpha=alpha, beta=beta, variant="hf", delta=1e-3, loss_fn=mse
    )
    np.testing.assert_allclose(
        model.weight.detach().cpu().numpy().ravel(), expected, rtol=1e-10, atol=1e-10
    )


def test_perfedavg_hf_update_agrees_between_cpu_and_cuda():
    from perfedavg.algorithm import perfedavg_update
    from perfedavg.models import build_model

    set_deterministic(True)
    x = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8)
    y = torch.arange(60) % 10
    transform = BatchTransform((0.13,), (0.31,))
    results = {}
    for device in (torch.device("cpu"), CUDA):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model("cnn", 10, 1, 28, 0.0).to(device)
        stats = perfedavg_update(
            model,
            x,
            y,
            transform,
            steps=5,
            batch_size=10,
            alpha=0.02,
            beta=0.05,
            variant="hf",
            delta=1e-3,
            generator=torch.Generator().manual_seed(1),
            device=device,
        )
        results[device.type] = (
            stats,
            {k: v.cpu() for k, v in model.state_dict().items()},
        )
    (cpu_stats, cpu_state), (gpu_stats, gpu_state) = results["cpu"], results["cuda"]
    assert gpu_stats.loss == pytest.approx(cpu_stats.loss, rel=LOSS_RTOL)
    for key, value in cpu_state.items():
        torch.testing.assert_close(gpu_state[key], value, **WEIGHT_TOL)


def one_epoch(device: torch.device) -> tuple[float, dict[str, torch.Tensor]]:
    """One augmented epoch of the FedFomo CNN (SGD with momentum) on ``device``."""
    from fedfomo.models import build_model

    x = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(96) % 10
    model = build_model(0, 10, 3, 32).to(device)
    stats = train_epochs(
        model,
        x,
        y,
        make_sgd(model.parameters(), 0.05, 0.9, 1e-4),
        BatchTransform((0.49, 0.48, 0.45), (0.25, 0.24, 0.26), 32, 4, True),
        epochs=1,
        batch_size=16,
        generator=torch.Generator().manual_seed(2),
        device=device,
    )
    return stats.loss, {k: v.cpu() for k, v in model.state_dict().items()}


def test_one_epoch_agrees_between_cpu_and_cuda():
    set_deterministic(True)
    torch.manual_seed(5)  # the data
    cpu_loss, cpu_state = one_epoch(torch.device("cpu"))
    torch.manual_seed(5)
    gpu_loss, gpu_state = one_epoch(CUDA)
    assert gpu_loss == pytest.approx(cpu_loss, rel=LOSS_RTOL)
    for key, value in cpu_state.items():
        torch.testing.assert_close(gpu_state[key], value, **WEIGHT_TOL)


def test_two_deterministic_gpu_runs_are_bit_identical():
    set_deterministic(True)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(one_epoch(CUDA))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[0][1].items():
        assert torch.equal(runs[1][1][key], value), key
