"""Start-up cost of ``launcher=flwr`` against the embedded simulation, side by side.

``python -m bench.launcher_startup [--reps 3] [--out f.json]``

Flower 1.41 deprecates ``flwr.simulation.run_simulation`` (``launcher=embedded``)
for ``flwr run`` against a SuperLink (``launcher=flwr``). This times the same
one-round FedPer quick run (scikit-learn's digits, offline) from the command's
start to its exit, three ways, interleaved in each repetition so that load
falls on all alike:

- ``embedded``: the in-process Ray simulation;
- ``flwr_cold``: ``flwr run`` with no SuperLink running, so the command starts
  Flower's managed local SuperLink (a private ``FLWR_HOME``);
- ``flwr_warm``: the same again while that SuperLink still runs.

It prints the medians, the ratios against ``embedded`` and the load averages,
and checks that each ``flwr`` run recorded the embedded run's rounds (wall-time
columns aside), so the timings compare like with like.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd
from flwr.cli.constant import LOCAL_SUPERLINK_HTTP_API_PORT

HEALTH = f"http://127.0.0.1:{LOCAL_SUPERLINK_HTTP_API_PORT}/health"
RUN = ["experiment=fedper/quick", "algorithm=fedper", "num_rounds=1"]
WALL_TIME = ["time_s", "round_s"]


def superlink_up() -> bool:
    """Whether a managed local SuperLink answers on its HTTP port."""
    try:
        return httpx.get(HEALTH, timeout=1.0).is_success
    except httpx.HTTPError:
        return False


def stop_superlink(home: Path) -> None:
    """End the managed SuperLink started under ``home`` and wait until it is gone."""
    subprocess.run(["pkill", "-TERM", "-f", f"{home}/local-superlink"], check=False)
    deadline = time.time() + 30
    while superlink_up() and time.time() < deadline:
        time.sleep(0.2)
    if superlink_up():
        subprocess.run(["pkill", "-KILL", "-f", f"{home}/local-superlink"], check=False)


def timed_run(launcher: str, folder: Path, env: dict[str, str]) -> float:
    """Seconds from start to exit of one quick run; raises if it fails."""
    command = [sys.executable, "-m", "fedper.main", *RUN, f"launcher={launcher}"]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, f"hydra.run.dir={folder}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{launcher} run failed:\n{done.stdout[-2000:]}{done.stderr}")
    return seconds


def rounds(folder: Path) -> pd.DataFrame:
    """``rounds.csv`` of a run without its wall-time columns."""
    frame = pd.read_csv(folder / "rounds.csv")
    return frame.drop(columns=[c for c in WALL_TIME if c in frame.columns])


def measure(reps: int, work: Path) -> dict[str, list[float]]:
    """``reps`` interleaved repetitions of the three ways; seconds per way."""
    if superlink_up():
        raise SystemExit("a managed local SuperLink already runs here; stop it first")
    times: dict[str, list[float]] = {"embedded": [], "flwr_cold": [], "flwr_warm": []}
    for rep in range(reps):
        home = work / f"flwr-home-{rep}"
        home.mkdir()
        env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_HOME=str(home))
        # flwr finds flower-superlink on PATH: this interpreter's scripts first
        scripts = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
        try:
            for way, launcher in (
                ("embedded", "embedded"),
                ("flwr_cold", "flwr"),
                ("flwr_warm", "flwr"),
            ):
                folder = work / f"{way}-{rep}"
                times[way].append(timed_run(launcher, folder, env))
                if launcher == "flwr":
                    same = rounds(folder).equals(rounds(work / f"embedded-{rep}"))
                    if not same:
                        raise SystemExit(f"{folder}: rounds differ from embedded")
                print(f"rep {rep} {way}: {times[way][-1]:.1f} s", flush=True)
        finally:
            stop_superlink(home)
    return times


def main(argv: list[str] | None = None) -> None:
    """Command line: time the launchers and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        times = measure(args.reps, Path(tmp))
    medians = {way: statistics.median(values) for way, values in times.items()}
    result = {
        "command": "python -m fedper.main " + " ".join(RUN) + " launcher=...",
        "seconds": times,
        "median_s": medians,
        "ratio_to_embedded": {
            way: medians[way] / medians["embedded"]
            for way in ("flwr_cold", "flwr_warm")
        },
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
