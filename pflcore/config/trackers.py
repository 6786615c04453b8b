"""The ``tracking`` setting: which trackers exist, and whether one is installed."""

from __future__ import annotations

import importlib.util
from typing import Any

from pflcore.config import ConfigError

TRACKERS = ("none", "tensorboard", "wandb")
INSTALL = {
    "tensorboard": "pip install tensorboard (or pip install -e '.[tracking]')",
    "wandb": "pip install wandb",
}


def check_tracking(value: Any) -> str:
    """Validate the ``tracking`` setting; return the tracker's name.

    ``None`` (YAML ``null``) counts as ``none``.

    Raises
    ------
    ConfigError
        If the value is not one of :data:`TRACKERS`, or its package is not
        installed (one line naming the setting and the fix).
    """
    name = "none" if value is None else value
    if name not in TRACKERS:
        raise ConfigError(
            f"tracking must be one of {', '.join(TRACKERS)}, got {value!r}"
        )
    if name != "none" and importlib.util.find_spec(name) is None:
        raise ConfigError(
            f"tracking={name} needs the {name} package, which is not installed: "
            f"{INSTALL[name]}"
        )
    return str(name)
