"""The module-level Flower apps: declared for ``flwr run``, fed by the run config.

Flower's own functions read the declarations and fuse the run config here
(``flwr.common.config``), so these tests check what ``flwr run`` would do
without starting a SuperLink (``tests/test_deployment.py`` starts one).
"""

import importlib
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, MessageType
from flwr.common.config import (
    get_fused_config_from_dir,
    get_project_config,
    parse_config_args,
    validate_config,
)
from hydra import compose, initialize_config_dir

from pflcore.config import ConfigError, to_plain
from pflcore.config.runconfig import JSON_KEYS, UNSET_KEYS, from_run_config
from pflcore.config.settings import leaf_fields
from pflcore.data.node_data import POPULATION_KEY
from pflcore.run.apps import OUTPUT_DIR_KEY, output_dir
from pflcore.run.flwr_apps import app_pyproject
from pflcore.run.launch import RUN_CONFIG_FILE, app_dir, toml_table
from pflcore.run.packages import package_names, package_of
from tests.messages import message

PACKAGES = package_names()
REPO = Path(__file__).resolve().parents[1]
CONF = str(REPO / "conf")
RESERVED = {JSON_KEYS, UNSET_KEYS, OUTPUT_DIR_KEY, POPULATION_KEY}


def presets(package: str) -> list[str]:
    return sorted(
        p.stem for p in (REPO / "conf" / "experiment" / package).glob("*.yaml")
    )


def composed(package: str, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return to_plain(compose(package, overrides=list(overrides)))


@pytest.mark.parametrize("package", PACKAGES)
def test_the_committed_declaration_is_current(package):
    path = app_dir(package) / "pyproject.toml"
    assert path.read_text() == app_pyproject(package), (
        "stale: run python -m pflcore.run.flwr_apps"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_flower_accepts_the_app_and_finds_both_components(package):
    folder = app_dir(package)
    valid, errors, _ = validate_config(
        get_project_config(folder), check_module=True, project_dir=folder
    )
    assert valid, errors
    components = get_project_config(folder)["tool"]["flwr"]["app"]["components"]
    module = importlib.import_module(f"{package}.app")
    assert components == {
        "serverapp": f"{package}.app:server_app",
        "clientapp": f"{package}.app:client_app",
    }
    assert module.server_app is not None and module.client_app is not None
    # the bundle is the declaration alone: the code is the installed suite
    assert sorted(p.name for p in folder.iterdir()) == ["pyproject.toml"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_setting_is_declared_and_nothing_else(package):
    declared = get_fused_config_from_dir(app_dir(package), {})
    leaves = {path for path, _ in leaf_fields(package_of(package).schema)}
    assert set(declared) == leaves | RESERVED


@pytest.mark.parametrize(
    ("package", "preset"),
    [(pkg, preset) for pkg in PACKAGES for preset in presets(pkg)],
)
def test_every_preset_survives_flowers_run_config_exactly(tmp_path, package, preset):
    """Written as the launcher writes it, read and fused as ``flwr run`` does."""
    config = composed(package, f"experiment={package}/{preset}")
    entries = {**package_of(package).run_config(config), OUTPUT_DIR_KEY: "/runs/x"}
    path = tmp_path / RUN_CONFIG_FILE
    path.write_text(toml_table(entries))
    fused = get_fused_config_from_dir(app_dir(package), parse_config_args([str(path)]))
    assert from_run_config(fused) == config
    assert fused[OUTPUT_DIR_KEY] == "/runs/x"


def test_a_key_value_override_reads_as_flwr_run_passes_it():
    package = "fedper"
    overrides = parse_config_args(["num_rounds=3 lr=0.5 dataset.root='/data'"])
    fused = get_fused_config_from_dir(app_dir(package), overrides)
    config = from_run_config(fused)
    assert config["num_rounds"] == 3 and config["lr"] == 0.5
    assert config["dataset"]["root"] == "/data"
    assert config["resume"] is None  # a JSON-encoded default decodes
    assert "num_blocks" not in config["model"]  # an unset leaf stays unset


def test_the_output_folder_must_be_absolute(tmp_path):
    assert output_dir("fedper", {OUTPUT_DIR_KEY: str(tmp_path)}, 7) == str(tmp_path)
    with pytest.raises(ConfigError, match="must be an absolute path"):
        output_dir("fedper", {OUTPUT_DIR_KEY: "runs/x"}, 7)
    default = Path(output_dir("fedper", {OUTPUT_DIR_KEY: ""}, 7))
    assert default.is_absolute() and default.parent.name == "fedper"


def test_the_module_level_client_app_answers_as_the_embedded_one():
    """Same run, same message: the run-config app and the closure app agree bitwise."""
    from fedper.app import client_app
    from fedper.client import initial_model
    from fedper.main import PACKAGE
    from fedper.models import personal_keys
    from fedper.settings import read_settings

    config = PACKAGE.resolve(composed("fedper", "experiment=fedper/quick"))
    s = read_settings(config)
    model = initial_model(s.model, 10, 1, seed=s.seed, image_size=s.dataset.image_size)
    personal = set(personal_keys(model, "fedper", 2, "aggregate"))
    base = ArrayRecord(
        {k: v for k, v in model.state_dict().items() if k not in personal}
    )
    run_config = {**PACKAGE.run_config(config), OUTPUT_DIR_KEY: ""}

    def reply(app, run_config):
        from flwr.app import Context, RecordDict

        ctx = Context(
            run_id=1,
            node_id=1,
            node_config={"partition-id": 2},
            state=RecordDict(),
            run_config=run_config,
        )
        out = app(message(MessageType.TRAIN, base, 1), ctx)
        return out.content.array_records["arrays"].to_torch_state_dict()

    ours = reply(client_app, run_config)
    embedded = reply(PACKAGE.client_app_for(config), {})
    assert list(ours) == list(embedded)
    assert all(torch.equal(ours[k], embedded[k]) for k in ours)
    start = base.to_torch_state_dict()
    assert any(not torch.equal(ours[k], start[k]) for k in ours)  # it trained
