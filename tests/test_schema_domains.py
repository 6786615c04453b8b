"""Every setting of every package, refused over its whole invalid domain.

One table: each leaf of each package's settings schema names the class of
values it takes, and each class lists values outside it (wrong type, sign,
zero, infinities and NaN, non-integers, out of range, what Hydra makes of
odd spellings). For every leaf and every such value, the package's
``resolve`` (what runs before Ray starts) must raise one ``ConfigError``
line that names the leaf. The table is written here, independently of the
rules in the code, and must cover every leaf: a new setting without an entry
fails :func:`test_the_table_covers_every_leaf_of_every_schema`.
"""

from __future__ import annotations

import copy
import importlib
import math
import os
from collections.abc import Callable
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from pflcore.config import ConfigError, to_plain
from pflcore.config.settings import leaf_fields
from tests.mainrun import REPO

PACKAGES = ("fedper", "pfedhn", "perfedavg", "fedfomo", "ditto")
INF, NAN = math.inf, math.nan
BIG = 2**63  # one past the largest 64-bit integer
Value = Any | Callable[[dict[str, Any]], Any]  # a callable reads the base config

POS_INT = [0, -1, 1.5, 2.0, True, "3", None, BIG, INF, [1]]
COUNT = [-1, 0.5, True, "0", None, BIG, -INF]
INTEGER = [1.5, True, "1", None, BIG, -BIG - 1]
POS_REAL = [0, 0.0, -0.5, INF, -INF, NAN, True, "0.1", None, [0.1]]
NON_NEG = [-1e-9, -1, INF, NAN, True, "0", None]
UNIT = [-0.01, 1.01, INF, NAN, True, "0.5", None]  # [0, 1]
UNIT_RIGHT_OPEN = [-0.01, 1, 1.0, 1.5, NAN, True, None]  # [0, 1)
UNIT_LEFT_OPEN = [0, 0.0, -0.1, 1.0001, NAN, INF, True, None]  # (0, 1]
UNIT_OPEN = [0, 1, 1.0, -0.5, NAN, True, "0.5", None]  # (0, 1)
BOOL = [0, 1, "true", "yes", None, 1.0]
TEXT = [None, 1, True, ["a"], {"a": 1}]
NAME = [*TEXT, "", "  "]
NO_CHOICE = ["no-such-choice", None, 1, True, ["a"]]


def nullable(values: list[Value]) -> list[Value]:
    """The invalid values of a setting that also takes null."""
    return [v for v in values if v is not None]


def more(values: list[Value], *extra: Value) -> list[Value]:
    return [*values, *extra]


def above(key: str, by: int = 1) -> Callable[[dict[str, Any]], int]:
    """A value ``by`` above the base config's ``key``."""
    return lambda config: int(get(config, key)) + by


SHARED: dict[str, list[Value]] = {
    "num_clients": POS_INT,
    "clients_per_round": more(POS_INT, above("num_clients")),
    "num_rounds": POS_INT,
    "batch_size": POS_INT,
    "eval_batch_size": POS_INT,
    "lr": POS_REAL,
    "momentum": UNIT_RIGHT_OPEN,
    "weight_decay": NON_NEG,
    "seed": [-1, 2**32, 1.5, True, "0", None, BIG],
    "averaging": NO_CHOICE,
    "eval_every": COUNT,
    "deterministic": BOOL,
    "tuning": BOOL,
    "protocol.partition": ["shards", "", 1, True, ["classes"]],
    "protocol.classes_per_client": POS_INT,
    "protocol.alpha": POS_REAL,
    "protocol.samples_per_client": [1, 0, -2, 1.5, True, "3", None, BIG, INF],
    "protocol.val_fraction": UNIT_OPEN,
    "protocol.test_fraction": UNIT_OPEN,
    "client_resources.num_cpus": more(POS_REAL, 1e-5, (os.cpu_count() or 1) + 1),
    "client_resources.num_gpus": [-0.1, 1.5, NAN, INF, True, None, 1e-5],
    "checkpoint_every": COUNT,
    "resume": ["/no/such/run/folder", 1, True],
    "on_client_failure": NO_CHOICE,
    "inject.kill_after_round": nullable(POS_INT),
    "inject.client_failure.partition": nullable(COUNT),
    "inject.client_failure.round": nullable(POS_INT),
    "inject.client_failure.stage": NO_CHOICE,
    "inject.client_failure.mode": NO_CHOICE,
    "inject.client_failure.sleep_s": NON_NEG,
    "timeout_s": POS_REAL,
    "verbose": BOOL,
    "tracking": ["tensorboardx", 1, True, ""],
    "ray_address": nullable(NAME),
    "launcher": NO_CHOICE,
    "superlink": NAME,
    "algorithm": NO_CHOICE,
    "dataset.name": NAME,
    "dataset.root": TEXT,
    "dataset.source": NO_CHOICE,
    "dataset.path": nullable(TEXT),
    "dataset.download": BOOL,
    "dataset.pool_test": nullable(BOOL),
    "dataset.test_fraction": nullable(UNIT_OPEN),
    "dataset.classes_per_client": nullable(POS_INT),
    "dataset.class_assignment": nullable(NO_CHOICE),
    "dataset.image_size": POS_INT,
    "dataset.crop_padding": more(COUNT, above("dataset.image_size")),
    "dataset.flip": BOOL,
    "dataset.subset_fraction": UNIT_LEFT_OPEN,
    "dataset.split": TEXT,
    "dataset.npz_orientation": TEXT,
    "dataset.folder": TEXT,
    "dataset.image_folder": TEXT,
    "dataset.labels_file": TEXT,
    "dataset.min_ratings": COUNT,
    "dataset.max_ratings": COUNT,
    "dataset.min_per_score": COUNT,
}

OWN: dict[str, dict[str, list[Value]]] = {
    "fedper": {
        "dataset.test_fraction": more(UNIT_OPEN),  # not nullable here
        "dataset.classes_per_client": POS_INT,
        "local_epochs": POS_INT,
        "finetune.epochs": COUNT,
        "finetune.lr": POS_REAL,
        "head_finetune_epochs": COUNT,
        "model.name": NO_CHOICE,
        "model.num_blocks": [12, 11.0, "11", None, True],
        "model.num_head_layers": more(INTEGER, 0, 5),  # K_P: 1..4 for fedper
        "model.base_buffers": NO_CHOICE,
        "model.linear_base": BOOL,
    },
    "pfedhn": {
        "local_steps": POS_INT,
        "clip": POS_REAL,
        "normalize": NO_CHOICE,
        "model.target": NO_CHOICE,
        "model.n_kernels": POS_INT,
        "model.hidden_dim": POS_INT,
        "model.n_hidden": COUNT,
        "model.embed_dim": nullable(POS_INT),
        "hn.lr": nullable(POS_REAL),
        "hn.embed_lr": nullable(POS_REAL),
        "hn.momentum": UNIT_RIGHT_OPEN,
        "hn.weight_decay": NON_NEG,
        "hn.clip": POS_REAL,
        "partition.classes_per_client": POS_INT,
        "partition.low": POS_REAL,
        "partition.high": POS_REAL,
        "partition.val_size": POS_INT,
        "partition.test_source": NO_CHOICE,
        "partition.test_size": POS_INT,
        "novel.clients": [[-1], [1.5], [True], 9, None, "9", [10], [0, 0]],
        "novel.rounds": COUNT,
        "novel.lr": nullable(POS_REAL),
        "novel.dirichlet": [[0], [-1.0], [INF], [NAN], [True], "1", None, 1.0],
        "novel.per_concentration": POS_INT,
        "novel.sizes.train": POS_INT,
        "novel.sizes.val": POS_INT,
        "novel.sizes.test": POS_INT,
        "finetune.steps": COUNT,
        "finetune.lr": POS_REAL,
        "server_device": ["gpu", "cuda:x", "cuda:-1", "cpu:0", "", None, 1, "cuda:99"],
        "client_threads": [0, -1, 1025, "four", "", 1.5, True, None, BIG],
    },
    "perfedavg": {
        "dataset.normalize": BOOL,
        "dataset.split": NO_CHOICE,
        "dataset.npz_orientation": NO_CHOICE,
        "local_steps": COUNT,
        "local_epochs": POS_INT,
        "alpha": POS_REAL,
        "beta": POS_REAL,
        "delta": POS_REAL,
        "server_lr": POS_REAL,
        "server_momentum": UNIT_RIGHT_OPEN,
        "finetune.unit": NO_CHOICE,
        "finetune.amount": COUNT,
        "finetune.lr": POS_REAL,
        "finetune.batch_size": POS_INT,
        "partition.name": NO_CHOICE,
        "partition.a": [1, 0, -2, 2.5, 3.0, True, None, BIG],
        "partition.test_ratio": POS_REAL,
        "partition.samples_per_client": [1, 0, 2.5, True, None, BIG],
        "partition.dirichlet_alpha": POS_REAL,
        "partition.test_fraction": UNIT_OPEN,
        "model.name": NO_CHOICE,
        "model.dropout": UNIT_RIGHT_OPEN,
        "jiang.holdout_clients": POS_INT,
        "jiang.reptile.rounds": COUNT,
        "jiang.reptile.inner_epochs": POS_INT,
        "jiang.reptile.optimizer": NO_CHOICE,
        "jiang.reptile.lr": POS_REAL,
        "jiang.reptile.betas": [
            [0.9],
            [0.9, 1.0],
            [-0.1, 0.9],
            [0.9, NAN],
            [0.9, 0.99, 0.5],
            "0.9,0.99",
            None,
        ],
        "jiang.reptile.server_lr": POS_REAL,
        "jiang.reptile.client_lr": POS_REAL,
    },
    "fedfomo": {
        "dataset.image_size": [21, 0, -1, 22.0, "32", True, None, BIG],
        "dataset.test_split": NO_CHOICE,
        "model.name": NO_CHOICE,
        "dataset.test_path": nullable(TEXT),
        "local_epochs": POS_INT,
        "lr_decay": UNIT_LEFT_OPEN,
        "lr_min": NON_NEG,
        "fomo.num_candidates": more(POS_INT, above("num_clients")),
        "fomo.epsilon_initial": UNIT,
        "fomo.epsilon_decay": UNIT,
        "fomo.norm": NO_CHOICE,
        "fomo.num_clusters": more(COUNT, above("num_clients")),
        "fomo.global_candidate": BOOL,
        "partition.kind": NO_CHOICE,
        "partition.shards_per_client": POS_INT,
        "partition.num_distributions": POS_INT,
        "partition.features": NO_CHOICE,
        "partition.embedding_path": nullable(TEXT),
        "partition.embedding.epochs": POS_INT,
        "partition.embedding.batch_size": POS_INT,
        "partition.embedding.lr": POS_REAL,
        "partition.embedding.width": POS_INT,
        "partition.embedding.cache_dir": TEXT,
        "partition.pca_dim": POS_INT,
        "partition.val_fraction": UNIT_OPEN,
        "partition.pool_fraction": UNIT_LEFT_OPEN,
        "finetune.epochs": COUNT,
        "finetune.lr": POS_REAL,
    },
}

# Ditto reads FedFomo's settings less FedFomo's server (fomo.*), plus its lambda.
OWN["ditto"] = {
    **{k: v for k, v in OWN["fedfomo"].items() if not k.startswith("fomo.")},
    "ditto.lam": NON_NEG,
}


def table(package: str) -> dict[str, list[Value]]:
    return {**SHARED, **OWN[package]}


def schema(package: str) -> type:
    return importlib.import_module(f"{package}.main").PACKAGE.schema


def get(config: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        config = config[key]
    return config


def put(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(config)
    *groups, leaf = path.split(".")
    node = changed
    for key in groups:
        node = node.setdefault(key, {})
    node[leaf] = value
    return changed


def compose_quick(package: str, *overrides: str) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return to_plain(
            compose(package, overrides=[f"experiment={package}/quick", *overrides])
        )


@pytest.fixture(scope="module")
def bases() -> dict[str, dict[str, Any]]:
    return {package: compose_quick(package) for package in PACKAGES}


def resolver(package: str) -> Callable[[dict[str, Any]], Any]:
    return importlib.import_module(f"{package}.main").PACKAGE.resolve


@pytest.mark.parametrize("package", PACKAGES)
def test_the_table_covers_every_leaf_of_every_schema(package):
    leaves = {path for path, _ in leaf_fields(schema(package))}
    assert sorted(leaves - set(table(package))) == []
    assert sorted(set(OWN[package]) - leaves) == []  # no stale entry


@pytest.mark.parametrize("package", PACKAGES)
def test_the_quick_preset_passes(bases, package):
    resolver(package)(bases[package])


CASES = [(p, leaf) for p in PACKAGES for leaf in sorted(table(p))]


@pytest.mark.parametrize(("package", "leaf"), CASES, ids=[f"{p}-{k}" for p, k in CASES])
def test_every_invalid_value_of_a_leaf_is_refused_in_one_line_naming_it(
    bases, package, leaf
):
    base = bases[package]
    resolve = resolver(package)
    passed, unnamed = [], []
    for value in table(package)[leaf]:
        if callable(value):
            value = value(base)
        try:
            resolve(put(base, leaf, value))
        except ConfigError as error:
            message = str(error)
            if "\n" in message or leaf not in message:
                unnamed.append((value, message))
        else:
            passed.append(value)
    assert passed == [], f"{package}: {leaf} accepted {passed!r}"
    assert unnamed == [], unnamed


# What Hydra makes of what a user types: floats from 1e3 and 10.0, infinities
# and NaN from inf, nan and 1e999, zero from 1e-999, text from 08, 0x10 and
# quotes. Each is refused in one line naming the setting and what is wrong.
TYPED = [
    ("lr=inf", "lr must be > 0, got inf (not a finite number)"),
    ("lr=1e999", "lr must be > 0, got inf (not a finite number)"),
    ("lr=nan", "lr must be > 0, got nan (not a finite number)"),
    ("lr=1e-999", "lr must be > 0, got 0.0"),
    ("lr='0.1'", "lr must be > 0, got '0.1' (read as text: write a plain number)"),
    ("weight_decay=-inf", "weight_decay must be >= 0, got -inf (not a finite number)"),
    ("timeout_s=1e999", "timeout_s must be > 0, got inf (not a finite number)"),
    (
        "num_rounds=1e3",
        "num_rounds must be a positive integer, got 1000.0 (a float: write 1000)",
    ),
    (
        "num_rounds=10.0",
        "num_rounds must be a positive integer, got 10.0 (a float: write 10)",
    ),
    (
        "num_rounds=99999999999999999999",
        "num_rounds must be a positive integer, got 99999999999999999999 "
        "(beyond 64-bit integers)",
    ),
    (
        "eval_every=08",
        "eval_every must be an integer >= 0, got '08' (read as text: write a plain "
        "number)",
    ),
    ("seed=0x10", "seed must lie in 0..4294967295, got '0x10'"),
    ("seed=-1", "seed must lie in 0..4294967295, got -1"),
    ("dataset.flip=yes", "dataset.flip must be true or false, got 'yes'"),
    ("dataset.flip=1", "dataset.flip must be true or false, got 1"),
    ("superlink=''", "superlink must be a non-empty string, got ''"),
    (
        "client_resources.num_cpus=1e-9",
        "client_resources.num_cpus must be 0 or at least 0.0001 (Ray's smallest "
        "share), got 1e-09",
    ),
    ("algorithm=FedPer", "algorithm must be one of"),
]


@pytest.mark.parametrize(("override", "message"), TYPED)
def test_what_hydra_makes_of_odd_spellings_is_refused_saying_what_is_wrong(
    override, message
):
    config = compose_quick("fedper", override)
    with pytest.raises(ConfigError) as error:
        resolver("fedper")(config)
    assert str(error.value).startswith(message)
