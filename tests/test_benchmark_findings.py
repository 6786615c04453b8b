"""The numbers docs/BENCHMARK.md's findings quote, recomputed from the records.

The findings section reads FedAvg's two-class tuning runs by hand (they are not
a table), so this test recomputes each number it quotes from the committed run
folders: a changed record or a reworded finding that no longer holds fails here.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pflcore.fl.sampling import ClientSampler

RUNS = Path(__file__).resolve().parents[1] / "_static" / "runs"
TUNING = RUNS / "shared_classes_tuning" / "seed0"
FEDAVG_GRID = ("0.005", "0.01", "0.02", "0.04", "0.08", "0.16")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _classes_by_client(run: Path) -> dict[int, frozenset[int]]:
    """Each client's training classes, from the run's partition record."""
    held: dict[int, frozenset[int]] = {}
    for row in _rows(run / "partition.csv"):
        if row["split"] == "train":
            counts = {int(k[1:]): int(v) for k, v in row.items() if k.startswith("c")}
            classes = frozenset(c for c, n in counts.items() if n)
            held[int(row["partition_id"])] = classes
    return held


def _last_round_accuracy(run: Path) -> dict[int, float]:
    rows = _rows(run / "clients.csv")
    last = max(int(r["round"]) for r in rows)
    return {
        int(r["partition_id"]): float(r["accuracy"])
        for r in rows
        if int(r["round"]) == last
    }


def test_fedavg_scores_15_to_20_percent_at_every_learning_rate():
    for lr in FEDAVG_GRID:
        accuracy = _last_round_accuracy(TUNING / f"fedavg_lr{lr}")
        mean = sum(accuracy.values()) / len(accuracy)
        assert 0.15 <= mean <= 0.20, (lr, mean)


def test_fedavg_at_lr_008_is_right_only_on_the_clients_holding_5_and_8():
    run = TUNING / "fedavg_lr0.08"
    held = _classes_by_client(run)
    accuracy = _last_round_accuracy(run)
    five_eight = {c for c, classes in held.items() if classes == {5, 8}}
    assert len(five_eight) == 4
    assert all(0.925 <= accuracy[c] <= 1.0 for c in five_eight)
    others = set(accuracy) - five_eight
    assert len(others) == 16
    assert all(0.0 <= accuracy[c] <= 0.075 for c in others)
    last_round = ClientSampler(num_clients=20, seed=0).sample(80, 5)
    assert last_round == [2, 3, 12, 13, 17]
    assert len(five_eight & set(last_round)) == 3


def test_the_two_class_split_has_five_pairs_held_by_four_clients_each():
    held = _classes_by_client(TUNING / "fedavg_lr0.08")
    pairs = list(held.values())
    assert all(len(pair) == 2 for pair in pairs)
    assert sorted(pairs.count(p) for p in set(pairs)) == [4, 4, 4, 4, 4]
