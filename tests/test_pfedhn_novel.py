"""``pfedhn.novel``: Dirichlet-drawn novel clients and their distances."""

from __future__ import annotations

import numpy as np
import pytest

from pfedhn.dataset import build_data
from pfedhn.novel import class_counts, draw_mixes, total_variation
from pfedhn.settings import HNPartition, Novel
from pflcore.config.settings import parse
from pflcore.data.partition import PartitionError
from tests.fakedata import write_mnist
from tests.test_pfedhn_dataset import mnist_settings

SIZES = {"train": 60, "val": 20, "test": 20}


def test_total_variation_hand_worked():
    assert total_variation([1, 0], [0.5, 0.5]) == 0.5
    assert total_variation([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert total_variation([1, 0, 0], [0, 0, 1]) == 1.0


def test_class_counts_floor_then_largest_remainders():
    # 7 x (0.5, 0.3, 0.2) = (3.5, 2.1, 1.4): floors (3, 2, 1), one left for class 0
    assert class_counts(np.array([0.5, 0.3, 0.2]), 7).tolist() == [4, 2, 1]
    # ties go to the lower class: 3 x (0.5, 0.5) = (1.5, 1.5)
    assert class_counts(np.array([0.5, 0.5]), 3).tolist() == [2, 1]
    rng = np.random.default_rng(0)
    for _ in range(50):
        mix, size = rng.dirichlet(np.ones(10) * 0.3), int(rng.integers(1, 500))
        counts = class_counts(mix, size)
        assert counts.sum() == size and np.all(np.abs(counts - mix * size) < 1)


def test_mixes_are_seeded_and_ordered_by_concentration():
    mixes = draw_mixes([100.0, 0.05], 3, 10, seed=4)
    assert [a for a, _ in mixes] == [100.0] * 3 + [0.05] * 3
    assert all(abs(p.sum() - 1) < 1e-12 for _, p in mixes)
    same = draw_mixes([100.0, 0.05], 3, 10, seed=4)
    assert all(np.array_equal(p, q) for (_, p), (_, q) in zip(mixes, same, strict=True))
    # large alpha: near uniform; small alpha: nearly one class
    uniform = np.full(10, 0.1)
    assert max(total_variation(p, uniform) for _, p in mixes[:3]) < 0.1
    assert min(total_variation(p, uniform) for _, p in mixes[3:]) > 0.6


PARTITION = parse(
    HNPartition,
    {
        "classes_per_client": 2,
        "low": 0.4,
        "high": 0.6,
        "val_size": 600,
        "test_source": "official",
        "test_size": 1,
    },
)


def _novel(**values) -> Novel:
    return parse(Novel, {"clients": [], "rounds": 0, "lr": None, **values})


def test_novel_clients_get_their_mix_from_images_no_training_client_holds(tmp_path):
    write_mnist(tmp_path, train=3000, test=600)
    novel = _novel(dirichlet=[50.0, 0.1], per_concentration=2, sizes=SIZES)
    data = build_data(mnist_settings(tmp_path), PARTITION, 10, seed=3, novel=novel)
    mixes = draw_mixes([50.0, 0.1], 2, 10, seed=3)
    assert [r["partition_id"] for r in data.novel] == [6, 7, 8, 9]
    counts = data.class_counts(("train", "val", "test"))
    for k, (_, mix) in enumerate(mixes):
        for s, split in enumerate(("train", "val", "test")):
            assert counts[6 + k, s].tolist() == class_counts(mix, SIZES[split]).tolist()
    for split in ("train", "val", "test"):
        everything = np.concatenate(data.indices[split])
        assert everything.size == np.unique(everything).size  # no image twice
    # training clients keep the authors' two classes each
    for j in range(6):
        assert set(np.flatnonzero(counts[j, 0])) == set(data.assignment.classes[j])
    # distances, recomputed from the counts
    train = counts[:, 0].astype(float)
    population = train[:6].sum(0) / train[:6].sum()
    for k, record in enumerate(data.novel):
        p = train[6 + k] / train[6 + k].sum()
        assert record["tv_population"] == pytest.approx(
            0.5 * np.abs(p - population).sum()
        )
        nearest = min(0.5 * np.abs(p - q / q.sum()).sum() for q in train[:6])
        assert record["tv_nearest"] == pytest.approx(nearest)
    # the concentrated mixes lie farther from the population
    far = [r["tv_population"] for r in data.novel]
    assert max(far[:2]) < min(far[2:])


def test_without_dirichlet_the_authors_partition_is_unchanged(tmp_path):
    write_mnist(tmp_path, train=3000, test=600)
    plain = build_data(mnist_settings(tmp_path), PARTITION, 8, seed=3)
    off = _novel(dirichlet=[], per_concentration=2, sizes=SIZES)
    same = build_data(mnist_settings(tmp_path), PARTITION, 8, seed=3, novel=off)
    assert same.novel == () and same.assignment == plain.assignment
    for split in ("train", "val", "test"):
        for a, b in zip(plain.indices[split], same.indices[split], strict=True):
            assert np.array_equal(a, b)


def test_too_many_novel_images_fail_with_the_setting_to_change(tmp_path):
    write_mnist(tmp_path, train=3000, test=600)
    novel = _novel(
        dirichlet=[0.01],
        per_concentration=1,
        # nearly one class: ~250 of it, where the 600 test images hold ~60 a class
        sizes={**SIZES, "test": 250},
    )
    with pytest.raises(PartitionError, match=r"lower novel\.sizes\.test"):
        build_data(mnist_settings(tmp_path), PARTITION, 10, seed=3, novel=novel)


def test_the_figure_takes_each_novel_clients_last_round_accuracy(tmp_path):
    import csv
    import json

    from pfedhn.novel_figure import main, novel_points

    run = tmp_path / "run"
    run.mkdir()
    drawn = [
        {
            "partition_id": 4,
            "concentration": 10,
            "tv_population": 0.1,
            "tv_nearest": 0.7,
        },
        {
            "partition_id": 5,
            "concentration": 0.1,
            "tv_population": 0.8,
            "tv_nearest": 0.3,
        },
    ]
    (run / "summary.json").write_text(
        json.dumps({"config": {"algorithm": "fedavg_ft"}, "novel_clients": drawn})
    )
    rows = [  # round 4: training clients; round 5: the novel round
        (4, 0, 0.9),
        (4, 1, 0.8),
        (5, 4, 0.75),
        (5, 5, 0.5),
        (3, 4, 0.1),
    ]
    with (run / "clients.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["round", "partition_id", "accuracy", "loss", "correct", "num_samples"]
        )
        for r, pid, acc in rows:
            w.writerow([r, pid, acc, 0.1, 1, 2])
    points = novel_points(run)
    assert [(p["partition_id"], p["accuracy"]) for p in points] == [(4, 0.75), (5, 0.5)]
    assert points[1]["tv_population"] == 0.8 and points[1]["algorithm"] == "fedavg_ft"
    main([str(run), "--out", str(tmp_path / "fig.png")])
    assert (tmp_path / "fig.png").stat().st_size > 0
    with (tmp_path / "fig.csv").open() as f:
        assert [r["accuracy"] for r in csv.DictReader(f)] == ["0.75", "0.5"]
