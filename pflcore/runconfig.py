"""The resolved configuration as Flower's flat run config, and back, losslessly.

Flower's ``context.run_config`` (``[tool.flwr.app.config]``, ``flwr run
--run-config``) holds flat keys with ``bool``, ``int``, ``float`` or ``str``
values. The suite's configuration is nested and also holds ``None``, lists
and empty groups. :func:`to_run_config` writes nested groups as dotted keys
(``dataset.root``), keeps every scalar as it is (so a ``--run-config
'lr=0.05'`` override reads naturally), and writes each other value as JSON
text, naming those keys in :data:`JSON_KEYS`; :func:`from_run_config`
inverts it exactly.
"""

from __future__ import annotations

import json
from typing import Any

JSON_KEYS = "pfl.json-keys"  # comma-separated keys whose values are JSON text

Scalar = bool | int | float | str


def to_run_config(config: dict[str, Any]) -> dict[str, Scalar]:
    """Flatten ``config`` into Flower run-config entries.

    Raises
    ------
    ValueError
        If a key is not a string, is empty, or contains ``.`` or ``,`` (they
        would not survive the round trip).
    """
    flat: dict[str, Scalar] = {}
    encoded: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and (value or not prefix):
            for key, item in value.items():
                if not isinstance(key, str) or not key or "." in key or "," in key:
                    raise ValueError(
                        f"config key {key!r} under {prefix!r} cannot be flattened"
                    )
                walk(f"{prefix}.{key}" if prefix else key, item)
        elif isinstance(value, bool | int | float | str):
            flat[prefix] = value
        else:  # None, lists, empty groups
            flat[prefix] = json.dumps(value)
            encoded.append(prefix)

    walk("", config)
    if JSON_KEYS in flat:
        raise ValueError(f"{JSON_KEYS!r} is reserved")
    flat[JSON_KEYS] = ",".join(encoded)
    return flat


def from_run_config(flat: dict[str, Any]) -> dict[str, Any]:
    """The nested configuration that :func:`to_run_config` flattened."""
    encoded = {k for k in str(flat.get(JSON_KEYS, "")).split(",") if k}
    config: dict[str, Any] = {}
    for key, value in flat.items():
        if key == JSON_KEYS:
            continue
        *groups, leaf = key.split(".")
        node = config
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = json.loads(value) if key in encoded else value
    return config
