"""Provenance in summary.json, each field checked against an independent computation.

The commit is read from the temporary repository's ref file, the digest with
hashlib on a file the test wrote, the overrides from what the test handed
Hydra; none of them from the code under test.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from pflcore.data import digests
from pflcore.records import provenance
from pflcore.records.results import RunRecorder
from pflcore.reports.portable import absolute_paths

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


@pytest.fixture
def fresh_registry(monkeypatch):
    """An empty registry of files read (the process-wide one is left alone)."""
    monkeypatch.setattr(digests, "_read", {})
    monkeypatch.setattr(digests, "_digests", {})


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
            "HOME": str(repo),
            "PATH": "/usr/bin:/bin:/usr/local/bin",
        },
    )


@needs_git
def test_commit_and_dirty_flag_of_a_temporary_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "add", "code.py")
    git(repo, "commit", "-q", "-m", "first")
    # the commit as git stored it, read without asking git
    head_ref = (repo / ".git" / "HEAD").read_text().split(":", 1)[1].strip()
    expected = (repo / ".git" / head_ref).read_text().strip()
    assert len(expected) == 40
    state = provenance.code_state(repo)
    assert state == {"commit": expected, "dirty": False, "untracked_files": 0}
    (repo / "new.py").write_text("")  # untracked: counted, not dirty
    assert provenance.code_state(repo) == {
        "commit": expected,
        "dirty": False,
        "untracked_files": 1,
    }
    (repo / "code.py").write_text("x = 2\n")  # a tracked file changed: dirty
    assert provenance.code_state(repo)["dirty"] is True
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    assert provenance.code_state(not_a_repo) == {
        "commit": "unknown",
        "dirty": "unknown",
        "untracked_files": "unknown",
    }


def test_digest_and_name_of_a_file_read_below_the_data_root(tmp_path, fresh_registry):
    root = tmp_path / "data"
    (root / "cifar10").mkdir(parents=True)
    inside = root / "cifar10" / "train.npz"
    inside.write_bytes(b"some image bytes" * 1000)
    outside = tmp_path / "elsewhere.npy"
    outside.write_bytes(b"\x00\x01\x02")
    digests.note_read(inside)
    digests.note_read(outside)
    digests.note_read(inside)  # read twice, listed once
    entries = digests.data_files(root)
    assert entries == [
        {
            "path": "cifar10/train.npz",
            "sha256": hashlib.sha256(inside.read_bytes()).hexdigest(),
        },
        {
            "path": "elsewhere.npy",
            "where": "outside the data root",
            "sha256": hashlib.sha256(b"\x00\x01\x02").hexdigest(),
        },
    ]
    # a changed file is hashed again (the cache is keyed by size and mtime)
    inside.write_bytes(b"other bytes")
    assert (
        digests.data_files(root)[0]["sha256"]
        == hashlib.sha256(b"other bytes").hexdigest()
    )


def test_absolute_paths_in_overrides_are_made_portable(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    assert provenance.portable_text(f"dataset.root={root}", root) == (
        "dataset.root=<data root>"
    )
    assert provenance.portable_text(f"dataset.path={root}/x/y.npz", root) == (
        "dataset.path=<data root>/x/y.npz"
    )
    assert provenance.portable_text("hydra.run.dir=/home/me/out", root) == (
        "hydra.run.dir=<local path>"
    )
    assert provenance.portable_text("seed=3", root) == "seed=3"
    assert provenance.portable_text("dataset.path=cifar/x.npz", root) == (
        "dataset.path=cifar/x.npz"
    )


@pytest.fixture
def hydra_job(tmp_path):
    """A Hydra job's config holding the overrides a command line would give."""
    overrides = [
        "experiment=fedper/quick",
        "algorithm=fedavg",
        f"dataset.root={tmp_path}",
    ]
    config = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    config.hydra.overrides.task = overrides
    HydraConfig.instance().set_config(config)
    yield overrides
    HydraConfig.instance().cfg = None


def test_summary_records_provenance_from_the_run(tmp_path, fresh_registry, hydra_job):
    data = tmp_path / "MNIST" / "raw"
    data.mkdir(parents=True)
    images = data / "train-images-idx3-ubyte"
    images.write_bytes(b"\x00\x00\x08\x01" + bytes(range(200)))
    digests.note_read(images)
    RunRecorder(tmp_path / "run", {"seed": 0, "dataset": {"root": str(tmp_path)}})
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    record = summary["provenance"]
    assert record["recorded"] == "by the run"
    assert record["data_files"] == [
        {
            "path": "MNIST/raw/train-images-idx3-ubyte",
            "sha256": hashlib.sha256(images.read_bytes()).hexdigest(),
        }
    ]
    assert record["command"]["overrides"] == [
        "experiment=fedper/quick",
        "algorithm=fedavg",
        "dataset.root=<data root>",
    ]
    assert record["command"]["line"].endswith(
        "experiment=fedper/quick algorithm=fedavg dataset.root=<data root>"
    )
    assert str(tmp_path) not in json.dumps(record)
    assert set(record["code"]) == {"commit", "dirty", "untracked_files"}


def test_outside_a_hydra_job_the_command_is_unknown(tmp_path, fresh_registry):
    RunRecorder(tmp_path, {"seed": 0})
    record = json.loads((tmp_path / "summary.json").read_text())["provenance"]
    assert record["command"]["overrides"] == "unknown"
    assert record["data_files"] == []


def test_the_suite_checkout_commit_is_the_repositorys_head():
    repo = Path(provenance.__file__).resolve().parents[2]
    dot_git = repo / ".git"
    if dot_git.is_file():  # a worktree: .git names its git folder
        gitdir = Path(dot_git.read_text().split(":", 1)[1].strip())
    elif dot_git.is_dir():
        gitdir = dot_git
    else:
        pytest.skip("the suite is not a git checkout here")
    text = (gitdir / "HEAD").read_text().strip()
    if text.startswith("ref:"):
        name = text.split(":", 1)[1].strip()
        common = gitdir / "commondir"
        base = (gitdir / common.read_text().strip()) if common.is_file() else gitdir
        ref = base / name
        if not ref.is_file():  # packed refs
            pytest.skip("HEAD's ref is packed")
        text = ref.read_text().strip()
    assert provenance.code_state(repo)["commit"] == text


def test_the_loaders_register_the_files_they_read(tmp_path, fresh_registry):
    import numpy as np

    from pflcore.data.images import load_dataset

    root = tmp_path / "data"
    (root / "mine").mkdir(parents=True)
    archive = root / "mine" / "set.npz"
    rng = np.random.default_rng(0)
    np.savez(
        archive,
        x_train=rng.integers(0, 255, (6, 8, 8), dtype=np.uint8),
        y_train=np.arange(6) % 2,
    )
    load_dataset.cache_clear()  # a cached dataset is not read again
    load_dataset("npz", str(root), "npz", "mine/set.npz")
    load_dataset("digits", str(root))
    from importlib.resources import files

    digits = Path(str(files("sklearn.datasets.data") / "digits.csv.gz"))
    assert digests.data_files(root) == [
        {
            "path": "mine/set.npz",
            "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        },
        {
            "path": "scikit-learn/datasets/data/digits.csv.gz",
            "sha256": hashlib.sha256(digits.read_bytes()).hexdigest(),
        },
    ]


def test_a_run_summary_names_no_absolute_path(tmp_path):
    root = tmp_path / "data"
    (root / "cifar").mkdir(parents=True)
    run = tmp_path / "run"
    config = {
        "seed": 0,
        "dataset": {"root": str(root), "path": "cifar/x.npz"},
        "partition": {"cache_dir": str(tmp_path / "cache")},
    }
    recorder = RunRecorder(run, config)
    recorder.write_summary("failed", error=f"cannot read {root}/cifar/x.npz")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["dataset"] == {
        "root": "<data root>",
        "path": "cifar/x.npz",
    }
    assert summary["config"]["partition"]["cache_dir"] == "<local path>"
    assert summary["error"] == "cannot read <data root>/cifar/x.npz"
    assert absolute_paths(run) == []
    # the recorder's own config (what a checkpoint keeps) is the one the run used
    assert recorder.config["dataset"]["root"] == str(root)
