"""run_figures.sh end to end in its tiny mode (one or two rounds on scikit-learn's
digits, one figure per package), its resume markers, and clear failures."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mainrun import shared_ray_address

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "run_figures.sh"
TINY = [
    "fedper_cifar10",
    "pfedhn_mnist",
    "perfedavg_mnist",
    "fedfomo_cifar10",
    "ditto_pathological",
]


def run_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",
        # the script calls `python`: make it this interpreter
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RAY_ADDRESS": shared_ray_address(),  # its runs join the session's Ray
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_list_and_unknown_figure():
    listed = run_script("--list")
    assert listed.returncode == 0
    for name in [*TINY, "perfedavg_jiang", "fedper_flickr", "pfedhn_cifar10"]:
        assert name in listed.stdout.split()
    unknown = run_script("--tiny", "no_such_figure")
    assert unknown.returncode == 2
    assert "unknown figure 'no_such_figure'" in unknown.stderr


@pytest.mark.slow
@pytest.mark.timeout(1500)  # about 3 minutes on an idle 2-core machine
def test_tiny_mode_writes_every_figure_and_table_and_resumes(tmp_path):
    out, sweeps, data = tmp_path / "static", tmp_path / "sweeps", tmp_path / "data"
    data.mkdir()  # empty: the tiny mode must not read any dataset from the data root
    common = [
        "--tiny",
        "--out",
        str(out),
        "--sweeps",
        str(sweeps),
        "--data-root",
        str(data),
    ]
    first = run_script(*common, *TINY, timeout=1400)  # within the test's 1500 s
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # The plan comes first, with an expected time per figure.
    plan = first.stdout.split("==", 1)[0]
    assert "mode=tiny" in plan and "expected total" in plan
    assert all(f"{name}: about" in plan for name in TINY)
    expected = [
        "fedper_cifar10_k4_mobilenet_32px_tiny.png",
        "fedper_cifar10_tiny.md",
        "fedper_cifar10_tiny.csv",
        "pfedhn_mnist_tiny.png",
        "pfedhn_mnist_tiny.md",
        "perfedavg_mnist_tiny.png",
        "perfedavg_mnist_tiny.csv",
        "fedfomo_digits_tiny.png",
        "ditto_digits_tiny.png",
    ]
    missing = [name for name in expected if not (out / name).is_file()]
    assert not missing, (missing, sorted(p.name for p in out.iterdir()))
    table = (out / "fedper_cifar10_tiny.md").read_text()
    assert "python -m fedper.main --multirun" in table and "| fedper |" in table
    assert "99.28" in (out / "pfedhn_mnist_tiny.md").read_text()  # the paper's number
    for sweep in (
        "fedper_cifar10",
        "pfedhn_mnist",
        "perfedavg_mnist",
        "fedfomo_cifar10",
        "ditto_pathological",
    ):
        assert (sweeps / "tiny" / sweep / ".complete").is_file()
    # Rerunning resumes: finished sweeps are not run again, figures are redrawn.
    (out / "pfedhn_mnist_tiny.png").unlink()
    again = run_script(*common, "fedper_cifar10", "pfedhn_mnist", timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("already complete") == 2
    assert (out / "pfedhn_mnist_tiny.png").is_file()


@pytest.mark.slow
def test_plot_and_table_commands_reject_a_folder_without_results(tmp_path):
    (tmp_path / "empty").mkdir()
    for module, extra in (
        ("pflcore.reports.plots", ["--out", str(tmp_path / "x.png")]),
        ("perfedavg.jiang", ["--out", str(tmp_path / "j.md")]),
        (
            "pflcore.reports.tables",
            [
                "--out",
                str(tmp_path / "x.md"),
                "--metric",
                "m",
                "--setting",
                "s",
                "--command",
                "c",
            ],
        ),
    ):
        result = subprocess.run(
            [sys.executable, "-m", module, str(tmp_path / "empty"), *extra],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 2
        assert "no run results" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "j.md").exists()
