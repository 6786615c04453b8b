"""``pflcore.data.node_data``: a SuperNode trains on its own file as on all data."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import ArrayRecord, Context, MessageType, RecordDict

from pflcore.data.images import DataFormatError
from pflcore.data.node_data import (
    DATA_PATH,
    NODE_DATA,
    POPULATION_KEY,
    node_data,
    population_of,
    with_node_data,
)
from pflcore.data.partition_files import client_data_of, export_partitions
from pflcore.run.apps import OUTPUT_DIR_KEY, RunConfigClientApp
from pflcore.run.packages import compose, package_of
from tests.messages import message

QUICK = ["experiment=fedper/quick", "num_clients=4", "dataset.classes_per_client=4"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """FedPer's quick partition, its files, and the run config launcher=flwr sends."""
    package = package_of("fedper")
    cfg = compose("fedper", [*QUICK, "launcher=flwr"])
    config = package.resolve(cfg)
    data = client_data_of(package.prepare(config))
    out = tmp_path_factory.mktemp("parts")
    export_partitions(data, out)
    run_config = {
        **package.run_config(config),
        OUTPUT_DIR_KEY: "",
        POPULATION_KEY: json.dumps(population_of(data)),
    }
    return config, data, out, run_config


def test_the_population_is_the_full_training_sets(exported):
    _, data, _, run_config = exported
    population = json.loads(run_config[POPULATION_KEY])
    mean, std = data.data.channel_stats()
    assert population["num_classes"] == data.data.num_classes == 10
    assert population["mean"] == list(mean) and population["std"] == list(std)


def test_a_node_holds_its_own_splits_and_nothing_else(exported):
    config, data, out, run_config = exported
    node_config = {DATA_PATH: str(out / "partition-2.npz")}
    mine = node_data(with_node_data(config, node_config, run_config))
    assert mine is not None
    for split in data.indices:
        x, y = mine.split_of(2, split)
        pool_x, pool_y = data.pools[split]
        idx = torch.from_numpy(data.indices[split][2])
        assert torch.equal(x, pool_x[idx]) and torch.equal(y, pool_y[idx])
        assert all(mine.size(j, split) == 0 for j in (0, 1, 3))
    assert mine.data.channel_stats() == data.data.channel_stats()  # not its own
    assert mine.data.num_classes == 10 and mine.data.channels == 1


def test_a_node_without_a_file_gets_the_config_unchanged(exported):
    config, _, _, run_config = exported
    assert with_node_data(config, {"partition-id": 1}, run_config) is config
    assert node_data(config) is None and NODE_DATA not in config


def test_a_file_without_the_populations_constants_is_refused(exported):
    config, _, out, run_config = exported
    node_config = {DATA_PATH: str(out / "partition-0.npz")}
    with pytest.raises(DataFormatError, match=POPULATION_KEY):
        with_node_data(config, node_config, {**run_config, POPULATION_KEY: ""})


def test_the_nodes_app_on_its_file_replies_as_the_embedded_app_on_all_data(exported):
    """Same message, same client: trained arrays bit-identical either way."""
    from fedper.client import initial_model
    from fedper.main import PACKAGE
    from fedper.models import personal_keys
    from fedper.settings import read_settings

    config, _, out, run_config = exported
    s = read_settings(config)
    model = initial_model(s.model, 10, 1, seed=s.seed, image_size=s.dataset.image_size)
    personal = set(personal_keys(model, "fedper", 2, "aggregate"))
    base = ArrayRecord(
        {k: v for k, v in model.state_dict().items() if k not in personal}
    )

    def trained(app, node_config, run_config):
        ctx = Context(
            run_id=1, node_id=1, node_config=node_config, state=RecordDict(),
            run_config=run_config,
        )  # fmt: skip
        reply = app(message(MessageType.TRAIN, base, 1), ctx)
        return reply.content.array_records["arrays"].to_torch_state_dict()

    node = trained(
        RunConfigClientApp(package_of("fedper")),
        {"partition-id": 3, DATA_PATH: str(out / "partition-3.npz")},
        run_config,
    )
    embedded = trained(PACKAGE.client_app_for(config), {"partition-id": 3}, {})
    assert list(node) == list(embedded)
    assert all(torch.equal(node[k], embedded[k]) for k in node)
