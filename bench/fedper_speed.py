"""Flower+Ray round overhead and FedPer training throughput, side by side.

``python -m bench.fedper_speed [--quick] [--clients N] [--rounds R] [--out f.json]``

1. No-op rounds: a ServerApp/ClientApp pair through ``run_federation`` (Flower's
   Ray simulation engine) whose clients reply at once with a one-float array;
   seconds per round for N clients and for 1 client.
2. FedPer local training: samples per second inside the simulation (FedPer's
   own ClientApp and strategy) and in a plain PyTorch loop in this process
   (``ClientRuntime.load`` + ``local_train`` for the same clients, model,
   data, batch size and epochs), with 1 torch thread and with
   ``client_resources.num_cpus`` x concurrent actors threads.

Round boundaries are timestamps taken in the strategy's end-of-round hook
(``Strategy.start`` calls it once before round 1, after Ray has started and
the partition query has run), so Ray start-up and shutdown are excluded.
Rounds train only (no client evaluation) unless ``--with-eval`` is given.
By default the data are synthetic CIFAR-10 files (``tests/fakedata.py``).
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # read when flwr is imported

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from fedper.client import (
    ClientRuntime,
    Sgd,
    get_runtime,
    local_train,
    make_client_app,
)
from fedper.main import PACKAGE, FedPerPrepared
from fedper.settings import read_settings
from fedper.strategy import FedPer
from pflcore.fl.identity import add_partition_query, partition_id
from pflcore.fl.protocol import NUM_EXAMPLES as WEIGHT_KEY
from pflcore.fl.protocol import PARTITION_KEY, scalar
from pflcore.fl.strategy import PartitionStrategy
from pflcore.local.training import make_sgd, train_epochs
from pflcore.records.results import RunRecorder
from pflcore.run.experiment import guarded
from pflcore.run.package import PREPARATION_ERRORS
from pflcore.run.simulation import build_server_app, run_federation

REPO = Path(__file__).resolve().parents[1]

FULL = {
    "clients": 10,
    "rounds": 10,
    "local_epochs": None,  # conf/fedper.yaml's value (4)
    "batch_size": 128,
    "plain_rounds": 2,
    "synthetic_per_batch": 1000,
}
QUICK = {
    "clients": 4,
    "rounds": 3,
    "local_epochs": 1,
    "batch_size": 32,
    "plain_rounds": 1,
    "synthetic_per_batch": 200,
}


# -- timing strategy -----------------------------------------------------------


@dataclass
class RoundLog:
    """What the timed strategy saw, in ``time.perf_counter`` seconds."""

    ends: list[float] = field(default_factory=list)  # end-of-round hook, round 0 first
    train_s: list[float] = field(default_factory=list)  # send -> all replies
    samples: list[int] = field(default_factory=list)  # num-examples x local epochs
    actor_pids: set[int] = field(default_factory=set)
    actor_omp_threads: set[int] = field(default_factory=set)

    @property
    def round_s(self) -> list[float]:
        """Wall time of each round: differences of the end-of-round stamps."""
        return [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]


class TimedRounds(PartitionStrategy):
    """A ``PartitionStrategy`` (or subclass) that timestamps every round.

    It never evaluates clients unless ``with_eval`` is set (then every round),
    and its end-of-round hook writes the recorder's row without printing.
    """

    def __init__(
        self,
        *args: Any,
        local_epochs: int = 1,
        with_eval: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.local_epochs = local_epochs
        self.with_eval = with_eval
        self.log = RoundLog()
        self._sent = 0.0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._sent = time.perf_counter()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.log.train_s.append(time.perf_counter() - self._sent)
        replies = list(replies)
        samples = 0
        for reply in replies:
            if reply.has_error():
                continue  # the parent raises with the client's partition-id
            metrics = next(iter(reply.content.metric_records.values()))
            samples += int(scalar(metrics, WEIGHT_KEY)) * self.local_epochs
            if "actor-pid" in metrics:
                self.log.actor_pids.add(int(metrics["actor-pid"]))  # type: ignore[arg-type]
                self.log.actor_omp_threads.add(int(metrics["omp-threads"]))  # type: ignore[arg-type]
        self.log.samples.append(samples)
        return super().aggregate_train(server_round, replies)

    def is_eval_round(self, server_round: int) -> bool:
        return self.with_eval

    def end_round(self, server_round: int, arrays: ArrayRecord) -> None:
        self.log.ends.append(time.perf_counter())
        self.recorder.end_round(server_round)


class TimedFedPer(TimedRounds, FedPer):
    """FedPer's server strategy with the timestamps of :class:`TimedRounds`."""


# -- no-op client --------------------------------------------------------------


def make_noop_client_app() -> ClientApp:
    """A ClientApp whose handlers reply at once (train echoes the arrays back).

    Train replies also carry the actor's process id and ``OMP_NUM_THREADS``
    (what torch's intra-op thread count follows) for the report.
    """
    app = ClientApp()
    add_partition_query(app)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        metrics = MetricRecord(
            {
                PARTITION_KEY: partition_id(context),
                WEIGHT_KEY: 1,
                "train-loss": 0.0,
                "actor-pid": os.getpid(),
                "omp-threads": int(os.environ.get("OMP_NUM_THREADS") or 0),
            }
        )
        arrays = msg.content.array_records["arrays"]
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        metrics = MetricRecord(
            {
                PARTITION_KEY: partition_id(context),
                "correct": 0,
                "loss-sum": 0.0,
                WEIGHT_KEY: 1,
            }
        )
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


# -- running -------------------------------------------------------------------


@dataclass
class SimRun:
    """One timed simulation."""

    label: str
    num_clients: int
    round_s: list[float]
    train_s: list[float]
    samples: list[int]
    startup_s: float
    teardown_s: float
    actor_pids: list[int]
    actor_omp_threads: list[int]


def run_timed(
    label: str,
    strategy: TimedRounds,
    initial_arrays: ArrayRecord,
    client_app: ClientApp,
    config: dict[str, Any],
) -> SimRun:
    """Run ``strategy`` through ``run_federation`` and collect its timestamps."""
    num_clients, num_rounds = config["num_clients"], config["num_rounds"]

    def rounds(grid: Grid, partition_to_node: dict[int, int]) -> None:
        strategy.bind_partitions(partition_to_node)
        strategy.log.ends.append(time.perf_counter())  # round 0: the loop starts
        strategy.start(  # the round loop real runs use
            grid,
            initial_arrays,
            num_rounds=num_rounds,
            timeout=float(config["timeout_s"]),
        )

    print(f"running: {label} ...", flush=True)
    server_app = build_server_app(rounds, num_clients)
    start = time.perf_counter()
    run_federation(server_app, client_app, num_clients, config["client_resources"])
    stop = time.perf_counter()
    log = strategy.log
    if len(log.ends) != num_rounds + 1:
        raise RuntimeError(
            f"{label}: {max(len(log.ends) - 1, 0)} of {num_rounds} rounds finished; "
            "rerun with --override verbose=true to see Flower's log"
        )
    return SimRun(
        label=label,
        num_clients=num_clients,
        round_s=log.round_s,
        train_s=log.train_s,
        samples=log.samples,
        startup_s=log.ends[0] - start,
        teardown_s=stop - log.ends[-1],
        actor_pids=sorted(log.actor_pids),
        actor_omp_threads=sorted(log.actor_omp_threads),
    )


def noop_run(
    config: dict[str, Any], num_clients: int, with_eval: bool, work: Path
) -> SimRun:
    """No-op rounds with ``num_clients`` clients, all of them every round."""
    cfg = {**config, "num_clients": num_clients, "clients_per_round": num_clients}
    out = work / f"noop_{num_clients}_clients"
    strategy = TimedRounds(
        RunRecorder(out, cfg),
        num_clients=num_clients,
        clients_per_round=num_clients,
        num_rounds=cfg["num_rounds"],
        eval_every=0,
        seed=cfg["seed"],
        with_eval=with_eval,
    )
    initial = ArrayRecord({"w": Array(np.zeros(1, dtype=np.float32))})
    label = f"no-op, {num_clients} client{'s' if num_clients > 1 else ''}"
    return run_timed(label, strategy, initial, make_noop_client_app(), cfg)


def fedper_run(prepared: FedPerPrepared, with_eval: bool, work: Path) -> SimRun:
    """FedPer's own ClientApp and strategy, as ``fedper.main`` builds them."""
    config, base = prepared.config, prepared.initial
    out = work / "fedper"
    strategy = TimedFedPer(
        RunRecorder(out, config),
        base_keys=list(base.keys()),
        num_clients=config["num_clients"],
        clients_per_round=config["clients_per_round"],
        num_rounds=config["num_rounds"],
        eval_every=0,
        seed=config["seed"],
        local_epochs=config["local_epochs"],
        with_eval=with_eval,
    )
    label = f"FedPer simulation, {config['num_clients']} clients"
    return run_timed(label, strategy, base, make_client_app(config), config)


@dataclass
class PlainRun:
    """The same clients' training in this process, one torch thread setting."""

    label: str
    threads: int
    round_s: list[float]
    samples: list[int]


def plain_run(config: dict[str, Any], rounds: int, threads: int) -> PlainRun:
    """Train every client in turn, ``rounds`` times, with ``threads`` threads.

    Each client first gets the initial weights (``ClientRuntime.load``, as the
    client handler loads the global base) and then runs ``local_train``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runtime = get_runtime(config)
        initial = ArrayRecord({k: v.clone() for k, v in runtime.initial_state.items()})
        empty = RecordDict()
        _warm_up(runtime, config)
        s = read_settings(config)
        sgd = Sgd(
            momentum=s.momentum,
            weight_decay=s.weight_decay,
            batch_size=s.batch_size,
            seed=s.seed,
        )
        round_s, samples = [], []
        for server_round in range(1, rounds + 1):
            start, count = time.perf_counter(), 0
            for pid in range(config["num_clients"]):
                runtime.load_client(initial, empty)
                _, n = local_train(
                    runtime, sgd, pid, server_round, lr=s.lr, epochs=s.local_epochs
                )
                count += n * config["local_epochs"]
            round_s.append(time.perf_counter() - start)
            samples.append(count)
    finally:
        torch.set_num_threads(previous)
    label = f"plain loop, {threads} torch thread{'s' if threads > 1 else ''}"
    return PlainRun(label, threads, round_s, samples)


def _warm_up(runtime: ClientRuntime, config: dict[str, Any]) -> None:
    """Two training steps, so one-off allocations stay out of the timing."""
    x, y = runtime.data.split_of(0, "train")
    n = min(x.shape[0], 2 * config["batch_size"])
    train_epochs(
        runtime.model,
        x[:n],
        y[:n],
        make_sgd(runtime.model.parameters(), config["lr"]),
        runtime.transform,
        epochs=1,
        batch_size=config["batch_size"],
        generator=torch.Generator().manual_seed(0),
        device=runtime.device,
    )


# -- configuration -------------------------------------------------------------


def write_synthetic_cifar10(root: Path, per_batch: int) -> None:
    """Write synthetic ``cifar-10-batches-py`` (6 x ``per_batch`` images)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.fakedata import write_cifar10

    write_cifar10(root, per_batch=per_batch, test=per_batch)


def compose_config(args: argparse.Namespace, data_root: Path) -> FedPerPrepared:
    """Compose ``conf/fedper.yaml`` with the benchmark's overrides, then prepare it.

    ``fedper.main.PACKAGE.prepare`` checks the config and loads and partitions the data,
    exactly as a real run does before Ray starts.
    """
    overrides = [
        f"model={args.model}",
        f"num_clients={args.clients}",
        f"clients_per_round={args.clients}",
        f"num_rounds={args.rounds}",
        f"batch_size={args.batch_size}",
        f"dataset.image_size={args.image_size}",
        "eval_every=0",
        "verbose=false",
    ]
    if args.local_epochs is not None:
        overrides.append(f"local_epochs={args.local_epochs}")
    if args.npz:
        overrides += ["dataset.source=npz", "dataset.pool_test=false"]
    overrides += args.override
    with initialize_config_dir(
        config_dir=str(REPO / "conf"), version_base="1.3", job_name="fedper_speed"
    ):
        cfg: DictConfig = compose("fedper", overrides=overrides)
    cfg.dataset.root = str(data_root)
    if args.npz:
        cfg.dataset.path = str(Path(args.npz).expanduser().resolve())
    return guarded(lambda: PACKAGE.prepare(cfg), PREPARATION_ERRORS)


def concurrent_actors(resources: dict[str, Any], num_clients: int) -> int:
    """Actors Flower's Ray backend can run at once on this machine (estimate).

    Ray fits ``CPUs // num_cpus`` actors (and ``GPUs // num_gpus`` with GPUs);
    the no-op run's distinct actor process ids confirm it.
    """
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count() or 1
    fit = int(cpus // float(resources["num_cpus"]))
    if float(resources["num_gpus"]) > 0:
        fit = min(fit, int(torch.cuda.device_count() // float(resources["num_gpus"])))
    return max(1, min(fit, num_clients))


# -- report --------------------------------------------------------------------


def median(values: list[float]) -> float:
    """Median, NaN for no values."""
    return float(statistics.median(values)) if values else math.nan


def after_first(values: list[Any]) -> list[Any]:
    """Drop the warm-up round (the first) when there is more than one."""
    return values[1:] if len(values) > 1 else values


def sim_row(run: SimRun, throughput: bool) -> dict[str, Any]:
    """A table row for a simulation.

    No-op runs: median over all rounds. FedPer: median over rounds after the
    first (workers build data and model in round 1) of seconds per round and
    of per-round samples / round time.
    """
    if not throughput:
        return {
            "setting": run.label,
            "s_per_round": median(run.round_s),
            "s_per_round_after_first": median(after_first(run.round_s)),
            "train_phase_s": median(run.train_s),
            "samples_per_s": None,
        }
    pairs = after_first(list(zip(run.round_s, run.train_s, run.samples, strict=True)))
    return {
        "setting": run.label,
        "s_per_round": median([r for r, _, _ in pairs]),
        "train_phase_s": median([t for _, t, _ in pairs]),
        "samples_per_round": median([s for _, _, s in pairs]),
        "samples_per_s": median([s / r for r, _, s in pairs]),
        "samples_per_s_train_phase": median([s / t for _, t, s in pairs]),
    }


def plain_row(run: PlainRun, sim_rate: float) -> dict[str, Any]:
    """A table row for a plain loop; the ratio is simulation / this loop."""
    rate = median([s / r for r, s in zip(run.round_s, run.samples, strict=True)])
    return {
        "setting": run.label,
        "s_per_round": median(run.round_s),
        "samples_per_round": median([float(n) for n in run.samples]),
        "samples_per_s": rate,
        "ratio_sim_over_plain": sim_rate / rate if rate else math.nan,
    }


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """Setting, seconds/round, samples/s, simulation/plain ratio."""
    width = max(len(r["setting"]) for r in rows)
    head = f"{'setting':<{width}}  {'s/round':>9}  {'samples/s':>10}  {'sim/plain':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['setting']:<{width}}  {_fmt(r['s_per_round'], 3):>9}  "
            f"{_fmt(r.get('samples_per_s'), 1):>10}  "
            f"{_fmt(r.get('ratio_sim_over_plain'), 2):>9}"
        )


def environment(resources: dict[str, Any], actors: int) -> dict[str, Any]:
    """Machine and library facts that bear on the figures."""
    import flwr
    import ray

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flwr": flwr.__version__,
        "ray": ray.__version__,
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "client_resources": resources,
        "concurrent_actors_estimate": actors,
        "driver_torch_threads_default": torch.get_num_threads(),
    }


def warn_if_busy() -> None:
    """Say so when other processes already keep the CPUs busy."""
    if not hasattr(os, "getloadavg"):
        return
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cpus:
        print(
            f"warning: load average {load:.1f} on {cpus} CPUs before starting: "
            "other processes compete for the CPUs and distort every figure "
            "(most of all the multi-thread plain loop, whose threads wait on "
            "each other)",
            flush=True,
        )


# -- main ----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line; unset sizes take the --quick or the full defaults."""
    p = argparse.ArgumentParser(
        prog="python -m bench.fedper_speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--clients", type=int, help="clients, all train every round (10)")
    p.add_argument("--rounds", type=int, help="rounds per simulation (10)")
    p.add_argument("--local-epochs", type=int, help="local epochs (conf: 4)")
    p.add_argument("--model", default="mobilenet_v1", help="model config group")
    p.add_argument("--image-size", type=int, default=32, help="dataset.image_size")
    p.add_argument("--batch-size", type=int, help="local batch size (128)")
    p.add_argument(
        "--plain-rounds", type=int, help="timed rounds of the plain loop (2)"
    )
    p.add_argument(
        "--synthetic-per-batch",
        type=int,
        help="synthetic CIFAR-10: images per train batch file (1000)",
    )
    p.add_argument("--data-root", help="real data root (cifar-10-batches-py/ below it)")
    p.add_argument("--npz", help="an .npz with x_train, y_train (dataset.source=npz)")
    p.add_argument(
        "--with-eval",
        action="store_true",
        help="evaluate every client every round, as eval_every=1 runs do",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override of conf/fedper.yaml (repeatable)",
    )
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="tiny sizes (about 1-2 min)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every measurement, print the table, optionally write JSON."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fedper_speed_") as work:
        if args.data_root or args.npz:
            data_root = Path(args.data_root or Path(args.npz).parent).expanduser()
            data_desc = f"{args.npz or data_root}"
        else:
            data_root = Path(work) / "data"
            write_synthetic_cifar10(data_root, args.synthetic_per_batch)
            data_desc = f"synthetic CIFAR-10, {6 * args.synthetic_per_batch} images"
        prepared = compose_config(args, data_root)
        config = prepared.config
        resources = config["client_resources"]
        actors = concurrent_actors(resources, config["num_clients"])
        threads = sorted({1, max(1, round(float(resources["num_cpus"]) * actors))})
        print(
            f"data: {data_desc}; model {config['model']['name']} at "
            f"{config['dataset']['image_size']} px; {config['num_clients']} clients x "
            f"{config['local_epochs']} local epochs, batch {config['batch_size']}; "
            f"{config['num_rounds']} rounds; client_resources {resources} -> "
            f"{actors} concurrent actor(s); plain loop threads {threads}",
            flush=True,
        )
        warn_if_busy()
        records = Path(work) / "records"
        sims = [noop_run(config, config["num_clients"], args.with_eval, records)]
        if config["num_clients"] > 1:
            sims.append(noop_run(config, 1, args.with_eval, records))
        sims.append(fedper_run(prepared, args.with_eval, records))
        plains: list[PlainRun] = []
        for n in threads:
            print(f"running: plain loop, {n} torch thread(s) ...", flush=True)
            plains.append(plain_run(config, args.plain_rounds, n))

    rows = [sim_row(run, throughput=False) for run in sims[:-1]]
    rows.append(sim_row(sims[-1], throughput=True))
    rows += [plain_row(run, rows[-1]["samples_per_s"]) for run in plains]
    print()
    print_table(rows)
    floor = rows[0]["s_per_round"] / rows[len(sims) - 1]["s_per_round"]
    print(
        f"\nno-op floor / FedPer round: {floor:.1%}"
        f"; actors seen in the no-op run: {len(sims[0].actor_pids)} "
        f"(OMP_NUM_THREADS there: {sims[0].actor_omp_threads or 'unset'}); "
        f"Ray start-up {sims[-1].startup_s:.1f} s and shutdown "
        f"{sims[-1].teardown_s:.1f} s are outside every figure"
    )
    result = {
        "arguments": vars(args),
        "data": data_desc,
        "config": config,
        "environment": environment(resources, actors),
        "rows": rows,
        "simulations": [asdict(run) for run in sims],
        "plain_loops": [asdict(run) for run in plains],
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
        print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    main()
