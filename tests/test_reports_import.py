"""Importing a finished run folder into the committed records."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from fakeruns import write_run

from pflcore.reports.import_run import RunImportError, import_run, main
from pflcore.reports.portable import absolute_paths


@pytest.fixture
def finished_run(tmp_path):
    """A run of the previous code: absolute data root, no provenance, a checkpoint."""
    root = tmp_path / "machine" / "data"
    (root / "cifar10").mkdir(parents=True)
    train = root / "cifar10" / "train.npz"
    train.write_bytes(b"training images" * 100)
    test = root / "cifar10" / "test.npz"
    test.write_bytes(b"test images" * 50)
    src = write_run(
        tmp_path / "multirun" / "fomo_seed1",
        seed=1,
        correct=[3, 4],
        samples=[4, 4],
        config={
            "dataset": {
                "name": "cifar10",
                "root": str(tmp_path / "machine" / "x" / ".." / "data"),
                "source": "npz",
                "path": "cifar10/train.npz",
                "test_path": "cifar10/test.npz",
            },
            "partition": {"embedding": {"cache_dir": "/work/cache"}},
        },
    )
    (src / "affinity.csv").write_text("0,1\n0.1,0.0\n")
    (src / "checkpoint.pkl").write_bytes(b"\x80\x04big")
    (src / "main.log").write_text(f"loaded {root}\n")
    hydra = src / ".hydra"
    hydra.mkdir()
    overrides = ["experiment=fedfomo/paper", "algorithm=fedfomo", "seed=1"]
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (hydra / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"job": {"config_name": "fedfomo"}}})
    )
    return src, root, overrides, (train, test)


def test_import_keeps_records_and_backfills_known_provenance(tmp_path, finished_run):
    src, root, overrides, (train, test) = finished_run
    dest = tmp_path / "repo" / "_static" / "runs" / "x" / "seed1" / "fedfomo_m5"
    commit = "d7d5358"
    written = import_run(src, dest, root=root, commit=commit)
    names = sorted(p.name for p in written)
    assert names == [
        "affinity.csv",
        "clients.csv",
        "partition.csv",
        "rounds.csv",
        "summary.json",
    ]
    assert sorted(p.name for p in dest.iterdir()) == names  # no checkpoint, no log
    assert (dest / "clients.csv").read_bytes() == (src / "clients.csv").read_bytes()
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["config"]["dataset"]["root"] == "<data root>"
    assert summary["config"]["partition"]["embedding"]["cache_dir"] == "<local path>"
    record = summary["provenance"]
    assert record["recorded"] == "at import"
    assert record["code"]["commit"] == commit
    assert record["code"]["dirty"] == "unknown"
    assert record["command"]["overrides"] == overrides
    assert record["command"]["line"] == (
        "python -m fedfomo.main experiment=fedfomo/paper algorithm=fedfomo seed=1"
    )
    assert record["data_files"] == [
        {
            "path": "cifar10/train.npz",
            "sha256": hashlib.sha256(train.read_bytes()).hexdigest(),
        },
        {
            "path": "cifar10/test.npz",
            "sha256": hashlib.sha256(test.read_bytes()).hexdigest(),
        },
    ]
    assert absolute_paths(dest) == []
    # everything else of the summary is kept as it was
    original = json.loads((src / "summary.json").read_text())
    assert summary["seed"] == original["seed"]
    assert summary["rounds_completed"] == original["rounds_completed"]


def test_a_run_that_recorded_provenance_keeps_it(tmp_path, finished_run):
    src, root, _, _ = finished_run
    summary = json.loads((src / "summary.json").read_text())
    summary["provenance"] = {"recorded": "by the run", "code": {"commit": "abc1234"}}
    (src / "summary.json").write_text(json.dumps(summary))
    import_run(src, tmp_path / "dest", root=root)
    kept = json.loads((tmp_path / "dest" / "summary.json").read_text())
    assert kept["provenance"] == summary["provenance"]


def test_unfinished_runs_and_existing_destinations_are_refused(tmp_path, finished_run):
    src, root, _, _ = finished_run
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(RunImportError, match="exists"):
        import_run(src, dest, root=root)
    running = write_run(
        tmp_path / "running", seed=0, correct=[1], samples=[2], status="running"
    )
    with pytest.raises(RunImportError, match="not a completed run"):
        import_run(running, tmp_path / "d2")
    with pytest.raises(SystemExit) as exit_info:
        main([str(src), str(tmp_path / "d3"), "--commit", "not-a-commit"])
    assert exit_info.value.code == 2


def test_in_place_rewrite_of_a_committed_folder(tmp_path, finished_run):
    src, root, _, _ = finished_run
    main(["--in-place", str(src), "--data-root", str(root)])
    summary = json.loads((src / "summary.json").read_text())
    assert summary["config"]["dataset"]["root"] == "<data root>"
    assert summary["provenance"]["code"]["commit"] == "unknown"
    assert not [line for line in absolute_paths(src) if line.startswith("summary.json")]


def failed_run(folder, error: str, rounds: int = 5):
    """A run folder that failed after ``rounds`` rounds with ``error``."""
    return write_run(folder, seed=0, correct=[1], samples=[2], status="failed",
                     round_=rounds, extra_summary={"error": error})  # fmt: skip


def test_a_diverged_run_is_imported_only_when_asked(tmp_path):
    error = "ClientError: client 3 failed in training of round 5: NonFiniteLossError: x"
    diverged = failed_run(tmp_path / "diverged", error, rounds=4)
    with pytest.raises(RunImportError, match="status 'failed'"):
        import_run(diverged, tmp_path / "d1")
    written = import_run(diverged, tmp_path / "d2", diverged=True)
    summary = json.loads((tmp_path / "d2" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["rounds_completed"] == 4
    assert (tmp_path / "d2" / "clients.csv") in written
    crashed = failed_run(tmp_path / "crashed", "ClientError: client 3: MemoryError")
    with pytest.raises(RunImportError, match="not a completed run"):
        import_run(crashed, tmp_path / "d3", diverged=True)  # not a divergence
