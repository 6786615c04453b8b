"""Every package on a GPU: samples/s per client and per round, peak memory per actor.

``python -m bench.gpu_speed [--rounds R] [--gpus 1,0.5,0.25] [--data-root DIR]
[--settings NAME,...] [--deterministic true|false|both] [--out FILE.json]``

For each setting (every package's quick preset and FedPer's CIFAR-10 setting)
the package's own ``main`` runs through the Ray simulation once on the CPU
(``client_resources.num_gpus=0``) and once per GPU share in ``--gpus``; one
``client_resources.num_cpus=1`` throughout. Each run is a child process whose
ClientApp is wrapped (:class:`MeasuredClientApp`) to log, per message, the
client's own seconds and ``torch.cuda.max_memory_allocated`` /
``max_memory_reserved`` of its actor process. Reported per run:

* client samples/s: samples one train message processes / its seconds
  (median over the messages of rounds 2..R);
* round samples/s: the samples of all of a round's train messages / the
  round's wall time (``round_s`` of ``rounds.csv``; median over rounds
  2..R-1: round 1 also loads the data and builds the model in every actor,
  round R also evaluates every client);
* peak GPU memory per actor: the largest ``max_memory_allocated`` (tensors) and
  ``max_memory_reserved`` (what PyTorch's caching allocator holds) over the
  actors; the CUDA context of each process comes on top and is not included;
* the ratio of both rates to the CPU run of the same setting.

Samples per train message follow each package's update: FedPer and FedFomo
``local_epochs`` (+ ``head_finetune_epochs``) x the client's training-set size;
pFedHN ``local_steps`` x ``batch_size``; Per-FedAvg ``3 x local_steps x
batch_size`` (one-sample trailing batches, which are skipped, are counted).
Rounds evaluate only at the end (``eval_every=0``). Without CUDA the script
says so in one line and exits 0.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # read when flwr is imported

import argparse
import json
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

REPO = Path(__file__).resolve().parents[1]

SETTINGS: dict[str, tuple[str, list[str]]] = {
    "fedper_quick": ("fedper.main", ["experiment=fedper/quick", "algorithm=fedper"]),
    "pfedhn_quick": (
        "pfedhn.main",
        ["experiment=pfedhn/quick", "novel.clients=[]", "novel.rounds=0"],
    ),
    "perfedavg_quick": (
        "perfedavg.main",
        ["experiment=perfedavg/quick", "algorithm=perfedavg_hf"],
    ),
    "fedfomo_quick": (
        "fedfomo.main",
        ["experiment=fedfomo/quick", "algorithm=fedfomo"],
    ),
    # conf/fedper.yaml as it stands: CIFAR-10, MobileNet-v1 at 32 px, 10 clients,
    # 4 local epochs, batch 128
    "fedper_cifar10": ("fedper.main", ["algorithm=fedper"]),
}
LOG_ENV = "BENCH_GPU_LOG"


class MeasuredClientApp(ClientApp):
    """A package's ClientApp that logs each message's seconds and GPU peaks.

    One JSON line per message goes to ``<log_dir>/actor-<pid>.jsonl``.
    """

    def __init__(self, inner: ClientApp, log_dir: str) -> None:
        super().__init__()
        self.inner = inner
        self.log_dir = log_dir

    def __call__(self, message: Message, context: Context) -> Message:  # type: ignore[override]
        synchronize()
        start = time.perf_counter()
        reply = self.inner(message=message, context=context)
        synchronize()
        seconds = time.perf_counter() - start
        config = message.content.config_records.get("config") or {}
        metrics = (
            reply.content.metric_records.get("metrics") if reply.has_content() else None
        )
        allocated, reserved = gpu_peaks()
        entry = {
            "pid": os.getpid(),
            "type": message.metadata.message_type,
            "round": config.get("server-round"),
            "partition": context.node_config["partition-id"],
            "seconds": seconds,
            "num_examples": (metrics or {}).get("num-examples"),
            "peak_allocated": allocated,
            "peak_reserved": reserved,
        }
        with open(Path(self.log_dir) / f"actor-{os.getpid()}.jsonl", "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        return reply


def synchronize() -> None:
    """Wait for this process's GPU work, if it has started CUDA."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def gpu_peaks() -> tuple[int, int]:
    """This process's peak allocated and reserved CUDA bytes (0, 0 without CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    return 0, 0


def child(module: str, overrides: list[str]) -> None:
    """Run ``module``'s main with its ClientApp wrapped (in the child process)."""
    import pflcore.run.experiment

    # Imported, not this __main__'s class: Ray's workers unpickle it by name.
    from bench.gpu_speed import MeasuredClientApp as Measured

    log_dir = os.environ[LOG_ENV]
    original = pflcore.run.experiment.run_federation

    def measured(server_app, client_app, *args, **kwargs):  # type: ignore[no-untyped-def]
        return original(server_app, Measured(client_app, log_dir), *args, **kwargs)

    pflcore.run.experiment.run_federation = measured  # type: ignore[assignment]
    sys.argv = [module, *overrides]
    # As ``python -m module``: Hydra finds ../conf next to the file it runs.
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def samples_per_message(config: dict[str, Any], num_examples: int) -> int:
    """Training samples one train message processes (see the module docstring)."""
    module = config.get("_package")
    if module == "pfedhn.main":
        return int(config["local_steps"]) * min(int(config["batch_size"]), num_examples)
    if module == "perfedavg.main":
        steps, batch = int(config["local_steps"]), int(config["batch_size"])
        if config["algorithm"].startswith("perfedavg_"):
            return 3 * steps * batch
        return (
            steps * batch if steps > 0 else int(config["local_epochs"]) * num_examples
        )
    epochs = int(config["local_epochs"]) + int(config.get("head_finetune_epochs", 0))
    return epochs * num_examples


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(run_dir: Path, log_dir: Path, module: str) -> dict[str, Any]:
    """Rates and peaks of one run from its folder and its actors' logs."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary.get("status") != "completed":
        return {"status": summary.get("status"), "error": summary.get("error")}
    config = dict(summary["config"], _package=module)
    rounds = pd.read_csv(run_dir / "rounds.csv")
    entries = [
        json.loads(line)
        for path in sorted(log_dir.glob("actor-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    train = [e for e in entries if e["type"].startswith("train") and e["num_examples"]]
    per_round: dict[int, int] = {}
    client_rates = []
    for e in train:
        samples = samples_per_message(config, int(e["num_examples"]))
        per_round[int(e["round"])] = per_round.get(int(e["round"]), 0) + samples
        if int(e["round"]) >= 2:
            client_rates.append(samples / e["seconds"])
    last = int(rounds["round"].max())  # it also evaluates every client
    round_rates = [
        per_round[int(r.round)] / r.round_s
        for r in rounds.itertuples()
        if 2 <= int(r.round) < last and int(r.round) in per_round and r.round_s > 0
    ]
    pids = {e["pid"] for e in entries}
    allocated = max((e["peak_allocated"] for e in entries), default=0)
    reserved = max((e["peak_reserved"] for e in entries), default=0)
    return {
        "status": "completed",
        "rounds": len(rounds),
        "client_samples_per_s": median(client_rates),
        "round_samples_per_s": median(round_rates),
        "median_round_s": median(rounds["round_s"].iloc[1:-1].tolist()),
        "actors": len(pids),
        "peak_allocated_mib": allocated / 2**20,
        "peak_reserved_mib": reserved / 2**20,
    }


def run_one(
    module: str, overrides: list[str], work: Path, name: str, timeout: int
) -> dict[str, Any]:
    """One child run; its summary (or how it failed)."""
    run_dir, log_dir = work / name, work / f"{name}-log"
    log_dir.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), **{LOG_ENV: str(log_dir)})
    command = [
        sys.executable,
        "-m",
        "bench.gpu_speed",
        "--child",
        module,
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]
    started = time.perf_counter()
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    wall = time.perf_counter() - started
    if result.returncode != 0 or not (run_dir / "summary.json").is_file():
        return {
            "status": "failed",
            "returncode": result.returncode,
            "tail": (result.stdout + result.stderr)[-1500:],
        }
    return {**summarise(run_dir, log_dir, module), "wall_s": round(wall, 1)}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def report_line(r: dict[str, Any]) -> str:
    """One run's figures on one line."""
    det = "-" if r["deterministic"] is None else str(r["deterministic"]).lower()
    return (
        f"{r['setting']:15s} num_gpus={r['num_gpus']:<5} deterministic={det:5s} "
        f"{r['status']:9s} client {fmt(r.get('client_samples_per_s'))} samples/s "
        f"(x{fmt(r.get('client_ratio_to_cpu'), '.2f')} CPU), "
        f"round {fmt(r.get('round_samples_per_s'))} samples/s "
        f"(x{fmt(r.get('round_ratio_to_cpu'), '.2f')} CPU), "
        f"{r.get('actors', '-')} actors, peak per actor "
        f"{fmt(r.get('peak_allocated_mib'))} MiB allocated / "
        f"{fmt(r.get('peak_reserved_mib'))} MiB reserved"
    )


def synthetic_cifar10(folder: Path) -> str:
    from tests.fakedata import write_cifar10

    write_cifar10(folder, per_batch=1000, test=1000)
    print(
        f"fedper_cifar10: synthetic CIFAR-10 (tests/fakedata.py), 6000 images, {folder}"
    )
    return str(folder)


def measure(
    name: str,
    args: argparse.Namespace,
    shares: list[float],
    modes: list[str],
    data_root: str | None,
    work: Path,
) -> list[dict[str, Any]]:
    """The CPU run and every GPU run of setting ``name``."""
    module, preset = SETTINGS[name]
    common = [
        *preset,
        f"num_rounds={args.rounds}",
        "eval_every=0",
        "client_resources.num_cpus=1",
        *args.override,
    ]
    if name == "fedper_cifar10":
        common.append(f"dataset.root={data_root}")
    cpu_overrides = [*common, "client_resources.num_gpus=0"]
    cpu = run_one(module, cpu_overrides, work, f"{name}-cpu", args.timeout)
    rows = [{"setting": name, "num_gpus": 0, "deterministic": None, **cpu}]
    for mode in modes:
        for share in shares:
            overrides = [
                *common,
                f"client_resources.num_gpus={share}",
                f"deterministic={mode}",
            ]
            tag = f"{name}-gpu{share}-det{mode}"
            gpu = run_one(module, overrides, work, tag, args.timeout)
            for rate in ("client", "round"):
                gpu[f"{rate}_ratio_to_cpu"] = ratio(
                    gpu.get(f"{rate}_samples_per_s"), cpu.get(f"{rate}_samples_per_s")
                )
            rows.append(
                {"setting": name, "num_gpus": share, "deterministic": mode == "true"}
                | gpu
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--gpus",
        default="1,0.5,0.25",
        help='GPU shares per client; "" runs the CPU reference only (works anywhere)',
    )
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument(
        "--data-root", help="CIFAR-10 pickles for fedper_cifar10 (default: synthetic)"
    )
    parser.add_argument(
        "--deterministic", choices=("true", "false", "both"), default="true"
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra Hydra override for every run (repeatable)",
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    parser.add_argument("--out", help="write the results as JSON")
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    args = parser.parse_args()
    shares = [float(g) for g in args.gpus.split(",") if g]
    if shares and not torch.cuda.is_available():
        print(
            "bench.gpu_speed: no CUDA device is visible "
            "(torch.cuda.is_available() is False); nothing measured"
        )
        return
    names = [s for s in args.settings.split(",") if s]
    unknown = [s for s in names if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    modes = ["true", "false"] if args.deterministic == "both" else [args.deterministic]
    device = torch.cuda.get_device_name(0) if shares else "none (CPU runs only)"
    print(f"GPU: {device}; {os.cpu_count()} CPU cores; torch {torch.__version__}")
    if args.rounds < 3:
        parser.error("--rounds must be >= 3 (round 1 builds, the last one evaluates)")
    print(
        f"{args.rounds} rounds per run; client rates: median over rounds "
        f"2..{args.rounds}, round rates: rounds 2..{args.rounds - 1}"
    )
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_root = args.data_root
        if data_root is None and "fedper_cifar10" in names:
            data_root = synthetic_cifar10(work / "cifar")
        for name in names:
            rows = measure(name, args, shares, modes, data_root, work)
            for row in rows:
                print(report_line(row), flush=True)
                if row["status"] != "completed":
                    print(row.get("tail") or row.get("error"))
            results.extend(rows)
    if args.out:
        payload = {
            "device": device,
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "rounds": args.rounds,
            "data_root": args.data_root or "synthetic",
            "results": results,
        }
        Path(args.out).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
