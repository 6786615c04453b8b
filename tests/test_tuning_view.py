"""``tuning=true``: every figure on a held-out half of validation; test never read."""

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from pflcore.data.client_data import ClientData
from pflcore.data.images import ImageData
from tests.mainrun import output_tail, read_run, run_module


def client_data(val_sizes: list[int], train_size: int = 4) -> ClientData:
    """Three disjoint index blocks per client in one pool whose labels are indices."""
    sizes = [train_size + v + 3 for v in val_sizes]
    total = sum(sizes)
    x = torch.zeros(total, 1, 2, 2, dtype=torch.uint8)
    y = torch.arange(total)
    indices: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    start = 0
    for v in val_sizes:
        cut = np.cumsum([train_size, v, 3]) + start
        indices["train"].append(np.arange(start, cut[0]))
        indices["val"].append(np.arange(cut[0], cut[1]))
        indices["test"].append(np.arange(cut[1], cut[2]))
        start = int(cut[2])
    pool = (x, y)
    data = ImageData("toy", x, y, None, None, num_classes=total)
    return ClientData(data, {name: pool for name in indices}, indices)


def labels(data: ClientData, pid: int, split: str) -> set[int]:
    return set(data.split_of(pid, split)[1].tolist())


@pytest.mark.fast
def test_validation_is_cut_in_two_disjoint_halves_and_the_test_split_is_gone():
    data = client_data([7, 2, 10])
    view = data.tuning_view(seed=3)
    for pid, size in enumerate([7, 2, 10]):
        val, kept, scored = (
            labels(data, pid, "val"),
            labels(view, pid, "val"),
            labels(view, pid, "test"),
        )
        assert kept | scored == val and not kept & scored
        assert (len(kept), len(scored)) == (size // 2, size - size // 2)
        assert not scored & labels(data, pid, "test")  # no test sample is scored
        assert labels(view, pid, "train") == labels(data, pid, "train")
    assert all(view.size(pid, "test") > 0 for pid in range(3))


@pytest.mark.fast
def test_the_halves_depend_on_the_seed_and_the_client_not_on_the_others():
    data = client_data([12, 12])
    a, b = data.tuning_view(seed=0), data.tuning_view(seed=1)
    assert labels(a, 0, "test") != labels(b, 0, "test")
    assert labels(a, 0, "test") == labels(data.tuning_view(seed=0), 0, "test")
    # a node holding only client 1's samples (the others empty) draws the same halves
    node = client_data([12, 12])
    empty = np.array([], dtype=np.int64)
    node_indices = {s: [empty, idx[1]] for s, idx in node.indices.items()}
    node = ClientData(node.data, node.pools, node_indices)
    assert labels(node.tuning_view(0), 1, "test") == labels(a, 1, "test")
    assert node.tuning_view(0).size(0, "test") == 0


@pytest.mark.fast
def test_a_client_with_one_validation_sample_or_no_validation_split_is_refused():
    with pytest.raises(ValueError, match="client 1 holds 1 validation sample"):
        client_data([4, 1]).tuning_view(0)
    data = client_data([4])
    no_val = ClientData(
        data.data,
        data.pools,
        {k: v for k, v in data.indices.items() if k != "val"},
    )
    with pytest.raises(ValueError, match="holds out no validation split"):
        no_val.tuning_view(0)


@pytest.mark.slow
def test_a_tuning_run_tests_every_client_on_its_held_out_validation_half(tmp_path):
    run = partial(run_module, "ditto.main", cwd=tmp_path)
    base = ["experiment=ditto/quick", "num_rounds=1", "num_clients=5"]
    for name, extra in (("final", []), ("tuning", ["tuning=true"])):
        result = run(*base, *extra, f"hydra.run.dir={tmp_path / name}")
        assert result.returncode == 0, output_tail(result)
    _, final, _ = read_run(tmp_path / "final")
    _, tuning, summary = read_run(tmp_path / "tuning")
    assert summary["tuning"].startswith("test = held-out half of validation")
    # Independent of the view: FedFomo's partition keeps 20 % of a client's
    # training share for validation, so the scored half is about a tenth of
    # that share, not the test split's size.
    partition = pd.read_csv(tmp_path / "tuning" / "partition.csv")
    train = partition[partition.split == "train"].iloc[:, 2:].sum(axis=1).to_numpy()
    scored = tuning.num_samples.to_numpy()
    val = np.round(train / 0.8 * 0.2)
    assert np.all(np.abs(scored - np.ceil(val / 2)) <= 1)
    assert not np.array_equal(scored, final.num_samples.to_numpy())


@pytest.mark.slow
def test_a_package_without_a_validation_split_refuses_tuning_in_one_line(tmp_path):
    result = run_module(
        "fedper.main", "experiment=fedper/quick", "tuning=true", cwd=tmp_path
    )
    assert result.returncode != 0
    tail = output_tail(result).strip().splitlines()
    assert tail[-1].startswith("error: tuning=true cannot work:"), tail
    assert "Traceback" not in output_tail(result, 10**6)
