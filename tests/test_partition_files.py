"""``pflcore.data.partition_files``: each client's data in its own file, exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pflcore.data.images import DataFormatError, DatasetNotFoundError
from pflcore.data.partition_files import FORMAT, export_partitions, read_partition
from pflcore.run.partition_export import main, prepare_package
from tests.fakedata import write_mnist

PFEDHN = [
    "num_clients=5",
    "partition.val_size=200",
    "model.target=mlp",
]


@pytest.fixture
def mnist_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_mnist(root, train=1500, test=300)
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    return root


def test_every_file_holds_exactly_its_clients_splits(mnist_root, tmp_path):
    data = prepare_package("pfedhn", [f"dataset.root={mnist_root}", *PFEDHN])
    paths = export_partitions(data, tmp_path / "out", {"package": "pfedhn"})
    assert [p.name for p in paths] == [f"partition-{j}.npz" for j in range(5)]
    index = json.loads((tmp_path / "out" / "partitions.json").read_text())
    assert index["num_partitions"] == 5 and index["format"] == FORMAT
    seen: dict[str, list[np.ndarray]] = {s: [] for s in data.indices}
    for pid, path in enumerate(paths):
        part = read_partition(path)
        assert part.partition_id == pid and part.meta["num_partitions"] == 5
        assert part.meta["package"] == "pfedhn" and part.meta["num_classes"] == 10
        for split in ("train", "val", "test"):
            x, y = part.splits[split]
            # independent of split_of: the pool gathered at the client's indices
            pool_x, pool_y = data.pools[split]
            idx = torch.from_numpy(data.indices[split][pid])
            assert torch.equal(x, pool_x[idx]) and torch.equal(y, pool_y[idx])
            assert x.dtype == torch.uint8 and y.dtype == torch.int64
            counts = np.bincount(y.numpy(), minlength=10).tolist()
            assert part.meta["class_counts"][split] == counts
            assert part.meta["sizes"][split] == y.numel()
            seen[split].append(data.indices[split][pid])
    for parts in seen.values():  # the files together are the partition
        joined = np.concatenate(parts)
        assert joined.size == np.unique(joined).size


def test_the_command_line_writes_the_files_and_refuses_bad_settings(
    mnist_root, tmp_path, capsys
):
    out = tmp_path / "parts"
    assert (
        main(["pfedhn", f"dataset.root={mnist_root}", *PFEDHN, "--out", str(out)]) == 0
    )
    assert len(list(out.glob("partition-*.npz"))) == 5
    part = read_partition(out / "partition-3.npz")
    assert part.meta["overrides"][0] == f"dataset.root={mnist_root}"
    status = main(
        ["pfedhn", f"dataset.root={mnist_root}", "hn.lr=-1", "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert status == 2 and err == "error: hn.lr must be null or > 0, got -1"


def test_a_file_that_is_not_a_partition_file_is_refused_in_one_line(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        read_partition(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.array(json.dumps({"format": "something else"})))
    with pytest.raises(DataFormatError, match=r"meta\.format is 'something else'"):
        read_partition(other)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(DataFormatError, match="not a readable partition file"):
        read_partition(broken)
    lacking = tmp_path / "lacking.npz"
    meta = {"format": FORMAT, "splits": ["train"], "partition_id": 0}
    np.savez(lacking, meta=np.array(json.dumps(meta)))
    lacks = r"meta\.num_partitions must be an integer"
    with pytest.raises(DataFormatError, match=lacks):
        read_partition(lacking)


@pytest.mark.slow
@pytest.mark.parametrize("package", ["fedper", "perfedavg", "fedfomo"])
def test_every_package_exports_its_quick_partition(package, tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    out = tmp_path / package
    assert main([package, f"experiment={package}/quick", "--out", str(out)]) == 0
    data = prepare_package(package, [f"experiment={package}/quick"])
    files = sorted(out.glob("partition-*.npz"))
    assert len(files) == data.num_clients
    for pid in range(data.num_clients):
        part = read_partition(out / f"partition-{pid}.npz")
        assert part.meta["splits"] == list(data.indices)
        for split, idx in data.indices.items():
            assert part.splits[split][1].numel() == idx[pid].size
