"""The algorithm packages, found by their primary config, and their declarations.

A package is a top-level Python package ``<name>`` with a primary Hydra config
``conf/<name>.yaml`` and a ``<name>.main`` module whose ``PACKAGE`` is its
:class:`~pflcore.run.apps.AlgorithmPackage`. Nothing here names one: the tools that
work on every package (``flwr_apps``, ``partition_export``) find them this way,
so adding a package edits nothing in :mod:`pflcore`.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pflcore.config import to_plain
from pflcore.run.package import AlgorithmPackage

CONF = Path(__file__).resolve().parents[2] / "conf"


def package_names(conf: Path = CONF) -> list[str]:
    """Every package with a primary config in ``conf`` and a ``main`` module."""
    names = []
    for path in sorted(conf.glob("*.yaml")):
        try:
            found = importlib.util.find_spec(f"{path.stem}.main") is not None
        except ModuleNotFoundError:
            found = False
        if found:
            names.append(path.stem)
    return names


def package_of(name: str) -> AlgorithmPackage:
    """The :class:`AlgorithmPackage` ``name`` declares (``<name>.main.PACKAGE``)."""
    package = getattr(importlib.import_module(f"{name}.main"), "PACKAGE", None)
    if not isinstance(package, AlgorithmPackage):
        raise TypeError(f"{name}.main declares no PACKAGE (an AlgorithmPackage)")
    return package


def compose(name: str, overrides: list[str]) -> DictConfig:
    """``conf/<name>.yaml`` composed with ``overrides`` as ``<name>.main`` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name=name, overrides=overrides)


def prepared_data(name: str, overrides: list[str]) -> Any:
    """Package ``name``'s data, loaded and partitioned as its ``main`` would."""
    return package_of(name).prepare(to_plain(compose(name, overrides)))
