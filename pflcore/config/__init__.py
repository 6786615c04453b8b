"""The composed Hydra config as plain data, and the error bad settings raise.

The checks themselves are declared with the fields they check
(``pflcore.config.settings``, ``pflcore.config.shared`` and each package's
``settings`` module).
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
