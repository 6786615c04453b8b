"""The resolved configuration as Flower's flat run config, and back, losslessly.

Flower's ``context.run_config`` (``[tool.flwr.app.config]``, ``flwr run
--run-config``) holds flat keys with ``bool``, ``int``, ``float`` or ``str``
values. The suite's configuration is nested and also holds ``None``, lists
and empty groups. :func:`to_run_config` writes nested groups as dotted keys
(``dataset.root``), keeps every scalar as it is (so a ``--run-config
'lr=0.05'`` override reads naturally), and writes each other value as JSON
text, naming those keys in :data:`JSON_KEYS`; :func:`from_run_config`
inverts it exactly.

Given the package's settings schema, :func:`to_run_config` flattens along the
schema's groups only, so the keys are exactly the schema's leaves (what an
app declares in its ``[tool.flwr.app.config]``, where every key an override
names must be declared); leaves the configuration leaves out are named in
:data:`UNSET_KEYS`, so a declared default never stands in for a setting the
run did not have. Keys under ``pfl.`` are the suite's own (reserved).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

RESERVED_PREFIX = "pfl."
JSON_KEYS = "pfl.json-keys"  # comma-separated keys whose values are JSON text
UNSET_KEYS = "pfl.unset-keys"  # comma-separated declared keys this run does not have

Scalar = bool | int | float | str


def to_run_config(
    config: dict[str, Any],
    groups: Iterable[str] | None = None,
    leaves: Iterable[str] | None = None,
) -> dict[str, Scalar]:
    """Flatten ``config`` into Flower run-config entries.

    Parameters
    ----------
    config : dict
        The nested configuration.
    groups : iterable of str, optional
        Dotted paths of the groups to flatten through (a schema's groups);
        any other dict is one value, written as JSON. None flattens every
        non-empty dict.
    leaves : iterable of str, optional
        Every key the schema declares; those ``config`` lacks are written as
        ``""`` and listed in :data:`UNSET_KEYS`.

    Raises
    ------
    ValueError
        If a key is not a string, is empty, or contains ``.`` or ``,`` (they
        would not survive the round trip), or a key is reserved.
    """
    flat: dict[str, Scalar] = {}
    encoded: list[str] = []
    descend = None if groups is None else set(groups)

    def walk(prefix: str, value: Any) -> None:
        is_group = not prefix or (value if descend is None else prefix in descend)
        if isinstance(value, dict) and is_group:
            for key, item in value.items():
                if not isinstance(key, str) or not key or "." in key or "," in key:
                    raise ValueError(
                        f"config key {key!r} under {prefix!r} cannot be flattened"
                    )
                walk(f"{prefix}.{key}" if prefix else key, item)
        elif isinstance(value, bool | int | float | str):
            flat[prefix] = value
        else:  # None, lists, dicts that are not groups
            flat[prefix] = json.dumps(value)
            encoded.append(prefix)

    walk("", config)
    if any(key.startswith(RESERVED_PREFIX) for key in flat):
        raise ValueError(f"keys under {RESERVED_PREFIX!r} are reserved")
    flat[JSON_KEYS] = ",".join(encoded)
    if leaves is not None:
        unset = [key for key in leaves if key not in flat]
        flat.update(dict.fromkeys(unset, ""))  # declared, so an override may set it
        flat[UNSET_KEYS] = ",".join(unset)
    return flat


def _listed(flat: dict[str, Any], key: str) -> set[str]:
    return {k for k in str(flat.get(key, "")).split(",") if k}


def from_run_config(flat: dict[str, Any]) -> dict[str, Any]:
    """The nested configuration that :func:`to_run_config` flattened.

    Keys under ``pfl.`` and the keys :data:`UNSET_KEYS` names are left out.
    A JSON key overridden with a plain value (``--run-config 'x=0.5'`` for a
    key whose default is ``null``) keeps that value.
    """
    encoded, unset = _listed(flat, JSON_KEYS), _listed(flat, UNSET_KEYS)
    config: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith(RESERVED_PREFIX) or key in unset:
            continue
        *groups, leaf = key.split(".")
        node = config
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = _decoded(value) if key in encoded else value
    return config


def _decoded(value: Any) -> Any:
    """A JSON key's value: decoded JSON text, or an override's plain value."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:  # an override gave plain text (``x="abc"``)
        return value
