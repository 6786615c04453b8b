"""A running Ray cluster, as the settings check sees it before a run joins it."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
from typing import Any

from pflcore.config import ConfigError


def cluster_nodes(address: str) -> list[dict[str, float]]:
    """The resources (``CPU``, ``GPU``, ...) of every live node at ``address``.

    Connects as a short-lived Ray driver and disconnects; the run connects
    again through Flower.

    Raises
    ------
    ConfigError
        If no Ray cluster answers at ``address`` (one line naming it).
    """
    import ray

    if ray.is_initialized():  # e.g. a test's own driver
        return _alive(ray.nodes())
    if address != "auto":
        _reachable(address)  # ray.init would wait minutes for a silent address
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            ray.init(
                address=address,
                logging_level=logging.ERROR,
                log_to_driver=False,
                include_dashboard=False,
            )
    except (ConnectionError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"ray_address={address}: no Ray cluster answers there ({first}); start "
            "one with `ray start --head` or set ray_address=null"
        ) from None
    try:
        return _alive(ray.nodes())
    finally:
        ray.shutdown()


def _reachable(address: str, timeout_s: float = 3.0) -> None:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"ray_address must be host:port (or auto), got {address!r}")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout_s).close()
    except OSError as error:
        raise ConfigError(
            f"ray_address={address}: no Ray cluster answers there ({error}); start "
            "one with `ray start --head` or set ray_address=null"
        ) from None


def _alive(nodes: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [dict(n["Resources"]) for n in nodes if n.get("Alive") and n["Resources"]]
