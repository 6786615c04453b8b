"""Seconds per pFedHN round through Flower's simulation vs a plain loop.

``python -m bench.pfedhn_speed [--dataset mnist|mnist_cnn|cifar10] [--rounds R]
[--out f.json]``

1. Simulation: ``python -m pfedhn.main``'s own strategy and ClientApp through
   ``pflcore.run.experiment.run_main_loop`` (Ray), one client per round, no
   evaluation except the last round. Round times come from the recorder
   (``rounds.csv``'s ``round_s``); the first round (workers load the data)
   and the last (evaluation) are dropped. Inside each round the strategy's
   own work (generating and serialising the weights, deserialising the
   delta, the VJP and SGD step) and the client's compute (``client-s``,
   measured in the ClientApp) are timed; what remains of the round is
   Flower's (messaging, Ray, serialisation in Flower's layers).
2. Plain loop: the same client update (``pfedhn.client.train_client``) and
   the same server step (``PFedHN.weights_record`` + ``hn_step``, one forward
   pass kept for the VJP as in the strategy) in one
   process, same seeds, the client at the simulation client's torch threads
   (``client_threads``: ``auto`` gives the one client of a round every core).

Data: the real files under ``--data-root`` (default ``$PFL_DATA_ROOT``) when
present (MNIST idx files; CIFAR-10 from ``cifar10/cifar10_train.npz``), else
generated files in the real formats (``tests/fakedata.py``).
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from hydra import compose, initialize_config_dir

from pfedhn.client import InnerLoop, build_runtime, make_client_app, train_client
from pfedhn.dataset import build_data
from pfedhn.main import PACKAGE, build_hypernetwork, resolve_defaults
from pfedhn.settings import read_settings
from pfedhn.strategy import EXTRA_FIELDS, PFedHN
from pfedhn.threads import train_threads
from pflcore.config import to_plain
from pflcore.fl.protocol import scalar
from pflcore.records.results import RunRecorder
from pflcore.run.experiment import run_main_loop, strategy_loop

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("mnist", "mnist_cnn", "cifar10")  # mnist_cnn: the 99.33 % run's CNN target


class TimedPFedHN(PFedHN):
    """PFedHN that times its own work and collects the clients' compute."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_s: dict[int, float] = {}
        self.client_s: dict[int, float] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        start = time.perf_counter()
        out = list(super().configure_train(server_round, arrays, config, grid))
        self.server_s[server_round] = time.perf_counter() - start
        return out

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        start = time.perf_counter()
        out = super().aggregate_train(server_round, replies)
        self.server_s[server_round] += time.perf_counter() - start
        self.client_s[server_round] = sum(
            scalar(r.content.metric_records["metrics"], "client-s") for r in replies
        )
        return out


def strategy_for(
    config: dict[str, Any], data: Any, out: Path, cls: type = TimedPFedHN
) -> PFedHN:
    recorder = RunRecorder(out, config, extra_fields=EXTRA_FIELDS)
    s = read_settings(config)
    h = config["hn"]
    hypernetwork = build_hypernetwork(
        s.seed,
        s.num_clients,
        s.model,
        data,
        image_size=s.dataset.image_size,
        with_head=s.target_has_head,
    )
    return cls(
        recorder,
        hypernetwork,
        novel_clients=[],
        novel_rounds=0,
        lr=h["lr"],
        embed_lr=h["embed_lr"],
        momentum=h["momentum"],
        weight_decay=h["weight_decay"],
        clip=h["clip"],
        novel_lr=config["novel"]["lr"],
        device=config["server_device"],
        num_clients=config["num_clients"],
        clients_per_round=1,
        num_rounds=config["num_rounds"],
        eval_every=0,
        seed=config["seed"],
        train_threads=train_threads(
            config["client_threads"], 1, config["client_resources"]["num_cpus"]
        ),
    )


def sim_run(config: dict[str, Any], data: Any, work: Path) -> dict[str, Any]:
    """Seconds per round through the simulation, split into ours and Flower's."""
    strategy = strategy_for(config, data, work / "sim")
    assert isinstance(strategy, TimedPFedHN)
    t0 = time.time()
    loop = strategy_loop(strategy, ArrayRecord(), config)
    run_main_loop(loop, strategy.recorder, make_client_app(config), config)
    total = time.time() - t0
    rows = strategy.recorder.rows
    keep = [r["round"] for r in rows[1:-1]]  # drop data loading and the evaluation
    round_s = [r["round_s"] for r in rows[1:-1]]
    server = [strategy.server_s[k] for k in keep]
    client = [strategy.client_s[k] for k in keep]
    rest = [t - s - c for t, s, c in zip(round_s, server, client, strict=True)]
    return {
        "rounds_measured": len(keep),
        "round_s_median": statistics.median(round_s),
        "server_s_median": statistics.median(server),
        "client_s_median": statistics.median(client),
        "flower_s_median": statistics.median(rest),
        "flower_share": statistics.median(rest) / statistics.median(round_s),
        "wall_s_including_start": total,
        "round_s": round_s,
    }


def plain_run(
    config: dict[str, Any], data: Any, work: Path, rounds: int
) -> dict[str, Any]:
    """The same client update and server step in one process."""
    strategy = strategy_for(config, data, work / "plain", PFedHN)
    runtime = build_runtime(config)
    settings = read_settings(config)
    loop = InnerLoop.of(settings)
    server_threads = torch.get_num_threads()
    states: dict[int, Any] = {}
    times, client_t = [], []
    from flwr.app import RecordDict

    for server_round in range(1, rounds + 1):
        start = time.perf_counter()
        (pid,) = strategy.train_partitions(server_round)
        arrays = strategy.weights_record(pid, keep_graph=True)
        torch.set_num_threads(strategy.train_threads)
        c0 = time.perf_counter()
        delta, _ = train_client(
            runtime,
            pid,
            server_round,
            arrays,
            states.setdefault(pid, RecordDict()),
            loop=loop,
            seed=settings.seed,
        )
        client_t.append(time.perf_counter() - c0)
        torch.set_num_threads(server_threads)
        d = {k: v.to(strategy.device) for k, v in delta.to_torch_state_dict().items()}
        strategy.hn_step([(pid, d)])
        times.append(time.perf_counter() - start)
    times, client_t = times[1:], client_t[1:]  # first round builds per-client tensors
    return {
        "rounds_measured": len(times),
        "round_s_median": statistics.median(times),
        "client_s_median": statistics.median(client_t),
        "client_threads": strategy.train_threads,
        "round_s": times,
    }


def compose_config(
    dataset: str, data_root: Path, generated: bool, rounds: int
) -> dict[str, Any]:
    preset = {
        "mnist": "pfedhn/mnist",
        "mnist_cnn": "pfedhn/mnist_cnn",
        "cifar10": "pfedhn/cifar10_exact",
    }[dataset]
    overrides = [
        f"experiment={preset}",
        f"dataset.root={data_root}",
        f"num_rounds={rounds}",
        "eval_every=0",
    ]
    if generated:
        overrides += ["partition.val_size=2000", "partition.test_size=2000"]
        if dataset == "cifar10":
            overrides += ["dataset.source=default", "dataset.path=null"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="pfedhn", overrides=overrides)
    config = to_plain(cfg)
    PACKAGE.check(config)
    resolve_defaults(config)
    return config


def write_generated(dataset: str, root: Path) -> None:
    sys.path.insert(0, str(REPO))
    from tests.fakedata import write_cifar10, write_mnist

    if dataset.startswith("mnist"):
        write_mnist(root, train=40000, test=6000)
    else:
        write_cifar10(root, per_batch=8000, test=2000)


def has_real(dataset: str, root: Path) -> bool:
    if dataset.startswith("mnist"):
        return (root / "MNIST" / "raw").is_dir()
    return (root / "cifar10" / "cifar10_train.npz").is_file()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=PRESETS, action="append")
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--data-root", default=os.environ.get("PFL_DATA_ROOT", ""))
    p.add_argument("--generated", action="store_true", help="force generated data")
    p.add_argument(
        "--client-threads",
        default=None,
        help="client_threads of the simulation and the plain loop (default: preset's)",
    )
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "loadavg_start": os.getloadavg(),
        },
        "rounds": args.rounds,
        "runs": {},
    }
    for dataset in args.dataset or ["mnist", "cifar10"]:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            root = Path(args.data_root) if args.data_root else work
            generated = args.generated or not has_real(dataset, root)
            if generated:
                root = work / "data"
                write_generated(dataset, root)
            config = compose_config(dataset, root, generated, args.rounds)
            if args.client_threads is not None:
                threads = args.client_threads
                config["client_threads"] = "auto" if threads == "auto" else int(threads)
            s = read_settings(config)
            data = build_data(s.dataset, s.partition, s.num_clients, s.seed)
            plain = plain_run(config, data, work, args.rounds)
            sim = sim_run(config, data, work)
        entry = {
            "data": "generated" if generated else "real",
            "sim": sim,
            "plain": plain,
            "sim_over_plain": sim["round_s_median"] / plain["round_s_median"],
            "flower_share_vs_plain": 1
            - plain["round_s_median"] / sim["round_s_median"],
        }
        results["runs"][dataset] = entry
        print(
            f"{dataset:8s} ({entry['data']}): "
            f"sim {sim['round_s_median'] * 1e3:7.1f} ms/round "
            f"[server {sim['server_s_median'] * 1e3:.1f}, "
            f"client {sim['client_s_median'] * 1e3:.1f}, "
            f"Flower {sim['flower_s_median'] * 1e3:.1f} = {sim['flower_share']:.0%}]; "
            f"plain {plain['round_s_median'] * 1e3:7.1f} ms/round "
            f"({plain['client_threads']} client threads); "
            f"sim/plain {entry['sim_over_plain']:.2f}",
            flush=True,
        )
    results["machine"]["loadavg_end"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
