"""Checks of the configuration keys every package shares.

They run before Ray starts, so a bad setting costs nothing and says plainly
what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A setting that cannot work."""


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """Resolve a Hydra config into a plain, picklable dict."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def absolute_data_root(root: str) -> str:
    """Make ``dataset.root`` absolute against the directory the user ran from.

    Hydra does not change the working directory here (``hydra.job.chdir`` is
    false), so a relative root is relative to the launch directory.
    """
    try:
        from hydra.utils import to_absolute_path

        return to_absolute_path(root)
    except ValueError:  # outside a Hydra run
        return str(Path(root).expanduser().resolve())


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_common(config: dict[str, Any], algorithms: tuple[str, ...]) -> None:
    """Validate the shared top-level keys.

    Parameters
    ----------
    config : dict
        The resolved configuration.
    algorithms : tuple of str
        The algorithm names the package accepts.

    Raises
    ------
    ConfigError
        On the first setting that cannot work.
    """
    _require(
        config["algorithm"] in algorithms,
        f"algorithm={config['algorithm']!r} is not one of {list(algorithms)}",
    )
    n = config["num_clients"]
    _require(isinstance(n, int) and n >= 1, f"num_clients must be >= 1, got {n}")
    k = config["clients_per_round"]
    _require(
        isinstance(k, int) and 1 <= k <= n,
        f"clients_per_round must lie in 1..num_clients={n}, got {k}",
    )
    for key in ("num_rounds", "local_epochs", "batch_size"):
        _require(
            isinstance(config[key], int) and config[key] >= 1,
            f"{key} must be a positive integer, got {config[key]}",
        )
    _require(config["lr"] > 0, f"lr must be positive, got {config['lr']}")
    _require(config["eval_every"] >= 0, "eval_every must be >= 0")
    resources = config["client_resources"]
    _require(resources["num_cpus"] > 0, "client_resources.num_cpus must be positive")
    _require(
        0 <= resources["num_gpus"] <= 1,
        f"client_resources.num_gpus must lie in [0, 1], got {resources['num_gpus']}",
    )
