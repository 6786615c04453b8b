"""Checks of the configuration keys every package shares.

They run before Ray starts, so a bad setting costs nothing and says plainly
what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

AVERAGING_RULES = ("samples", "uniform")  # the server's averaging rule


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


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{dotted.key: value}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def require(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``True``/``False`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (booleans are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    require(
        config["algorithm"] in algorithms,
        f"algorithm={config['algorithm']!r} is not one of {list(algorithms)}",
    )
    n = config["num_clients"]
    require(is_int(n) and n >= 1, f"num_clients must be >= 1, got {n!r}")
    k = config["clients_per_round"]
    require(
        is_int(k) and 1 <= k <= n,
        f"clients_per_round must lie in 1..num_clients={n}, got {k!r}",
    )
    for key in ("num_rounds", "local_epochs", "batch_size", "eval_batch_size"):
        require(
            is_int(config[key]) and config[key] >= 1,
            f"{key} must be a positive integer, got {config[key]!r}",
        )
    require(
        is_int(config["eval_every"]) and config["eval_every"] >= 0,
        f"eval_every must be an integer >= 0, got {config['eval_every']!r}",
    )
    require(is_int(config["seed"]), f"seed must be an integer, got {config['seed']!r}")
    policy = config.get("on_client_failure", "stop")
    require(
        policy in ("stop", "tolerate"),
        f"on_client_failure must be 'stop' or 'tolerate', got {policy!r}",
    )
    every = config.get("checkpoint_every", 0)
    require(
        is_int(every) and every >= 0,
        f"checkpoint_every must be an integer >= 0, got {every!r}",
    )
    resume = config.get("resume")
    require(
        resume is None or (isinstance(resume, str) and Path(resume).is_dir()),
        f"resume must name an existing run folder, got {resume!r}",
    )
    require(
        config.get("averaging") in AVERAGING_RULES,
        f"averaging must be one of {list(AVERAGING_RULES)}, "
        f"got {config.get('averaging')!r}",
    )
    for key in ("lr", "timeout_s"):
        value = config[key]
        require(is_number(value) and value > 0, f"{key} must be > 0, got {value!r}")
    require(
        is_number(config["momentum"]) and 0 <= config["momentum"] < 1,
        f"momentum must lie in [0, 1), got {config['momentum']!r}",
    )
    require(
        is_number(config["weight_decay"]) and config["weight_decay"] >= 0,
        f"weight_decay must be >= 0, got {config['weight_decay']!r}",
    )
    fraction = config.get("dataset", {}).get("subset_fraction", 1.0)
    require(
        is_number(fraction) and 0 < fraction <= 1,
        f"dataset.subset_fraction must lie in (0, 1], got {fraction!r}",
    )
    # GPU determinism (pflcore.devices.set_deterministic)
    deterministic = config.get("deterministic", True)
    require(
        isinstance(deterministic, bool),
        f"deterministic must be true or false, got {deterministic!r}",
    )
    check_resources(config["client_resources"])
    from pflcore.tracking import check_tracking  # here: tracking imports this module

    check_tracking(config.get("tracking", "none"))


def check_resources(resources: dict[str, Any]) -> None:
    """Validate ``client_resources`` against this machine.

    Raises
    ------
    ConfigError
        If a client asks for more CPUs than exist, a GPU share outside [0, 1],
        or a GPU share on a machine without CUDA.
    """
    import os

    import torch

    cpus, gpus = resources["num_cpus"], resources["num_gpus"]
    available = os.cpu_count() or 1
    require(
        is_number(cpus) and 0 < cpus <= available,
        f"client_resources.num_cpus must lie in (0, {available}] on this machine, "
        f"got {cpus!r}",
    )
    require(
        is_number(gpus) and 0 <= gpus <= 1,
        f"client_resources.num_gpus must lie in [0, 1], got {gpus!r}",
    )
    require(
        gpus == 0 or torch.cuda.is_available(),
        f"client_resources.num_gpus={gpus} but no CUDA device is visible; "
        "set client_resources.num_gpus=0",
    )


def reject_subset(config: dict[str, Any], instead: str) -> None:
    """Stop if ``dataset.subset_fraction`` is set where a package sizes its own data.

    Parameters
    ----------
    config : dict
        The resolved configuration.
    instead : str
        What the package offers instead, named in the message.

    Raises
    ------
    ConfigError
        If ``dataset.subset_fraction`` is present and not 1.
    """
    fraction = config.get("dataset", {}).get("subset_fraction", 1.0)
    require(
        fraction == 1,
        f"dataset.subset_fraction={fraction} is not used by this package; {instead}",
    )
