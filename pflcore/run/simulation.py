"""From a resolved config to Flower's Ray simulation, and client identity.

Node ids are random, so the server first asks every node for its
``partition-id`` (a ``query`` round) and from then on addresses clients by
partition-id, sampling them with a seeded generator.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flwr.app import (
    Context,
    Message,
    MessageType,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from pflcore.fl.protocol import ClientError, identity_of
from pflcore.run.stopping import (
    ending_new_processes,
    federating,
    raise_if_stopped,
    start_reaper,
    stop_between_polls,
)

log = logging.getLogger(__name__)
# Flower's state database imports alembic lazily, before ``quiet_logging`` can run,
# and alembic logs one INFO line per plugin on import; silence it up front.
logging.getLogger("alembic").setLevel(logging.WARNING)


def quiet_logging(verbose: bool) -> None:
    """Keep Flower's log lines out of the driver's terminal unless asked.

    Quiet, only errors pass; this hides Flower's per-round INFO lines and the
    ``run_simulation`` deprecation banner (a WARNING). Verbose keeps INFO.
    """
    level = logging.INFO if verbose else logging.ERROR
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.setLevel(level)
    flwr_logger.propagate = False  # it has its own console handler
    logging.getLogger("alembic").setLevel(logging.WARNING)


# Ray's driver warns at every ``ray.init`` that a future release will stop hiding
# GPUs from actors with ``num_gpus=0``; ``client_device`` decides from the config,
# so the change cannot matter here.
RAY_GPU_TIP = r"Tip: In future versions of Ray"
# Read by Flower's logger when a Ray worker imports it: quiet, the workers log
# errors only (no "Manually terminating ClientAppActor" at shutdown).
WORKER_LOG_LEVEL = ("FLWR_LOG_LEVEL", "ERROR")


@contextmanager
def quiet_simulation(verbose: bool) -> Iterator[None]:
    """Silence Flower's and Ray's routine messages for one simulation.

    Quiet (``verbose=False``): Flower logs errors only in the driver and in
    the Ray workers (which inherit this process's environment when Ray
    starts; a ``FLWR_LOG_LEVEL`` the user set is kept), and Ray's GPU
    FutureWarning is ignored. Errors, and whatever a client prints, still
    reach the terminal. The environment is restored afterwards. Verbose:
    nothing is changed beyond Flower's INFO level.
    """
    quiet_logging(verbose)
    key, level = WORKER_LOG_LEVEL
    if verbose or key in os.environ:
        with _ignore_ray_gpu_tip(not verbose):
            yield
        return
    os.environ[key] = level
    try:
        with _ignore_ray_gpu_tip(True):
            yield
    finally:
        os.environ.pop(key, None)


@contextmanager
def _ignore_ray_gpu_tip(ignore: bool) -> Iterator[None]:
    with warnings.catch_warnings():
        if ignore:
            warnings.filterwarnings(
                "ignore", message=RAY_GPU_TIP, category=FutureWarning
            )
        yield


def discover_partitions(
    grid: Grid, num_nodes: int, timeout: float = 600.0
) -> dict[int, int]:
    """Map partition-id to node id by querying every node once.

    Parameters
    ----------
    grid : Grid
        The server's grid.
    num_nodes : int
        Number of nodes expected to register.
    timeout : float
        Seconds to wait for all nodes.

    Returns
    -------
    dict
        ``{partition_id: node_id}``.
    """
    deadline = time.time() + timeout
    while len(node_ids := list(grid.get_node_ids())) < num_nodes:
        raise_if_stopped()
        if time.time() > deadline:
            raise ClientError(f"only {len(node_ids)} of {num_nodes} nodes registered")
        time.sleep(0.05)
    messages = [
        Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY)
        for node in node_ids
    ]
    mapping: dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            raise ClientError(
                f"node {reply.metadata.src_node_id}: {reply.error.reason}"
            )
        pid = identity_of(reply.content)
        mapping[pid] = reply.metadata.src_node_id
    if sorted(mapping) != list(range(num_nodes)):
        raise ClientError(
            f"expected partition-ids 0..{num_nodes - 1}, got {sorted(mapping)}"
        )
    return mapping


PULL_INTERVAL_S = 0.005
# 10 ms, not 5: each pass queries the link state once per node (50 for pFedHN),
# and at 5 ms those passes took CPU from the training client.
FEED_INTERVAL_S = 0.01


def poll_quickly(grid: Grid) -> None:
    """Let the in-memory grid look for replies every 5 ms instead of 100 ms.

    ``InMemoryGrid.send_and_receive`` sleeps ``pull_interval`` between looks,
    so every round with replies waits up to that long after its last reply
    (about 0.05 s on average, 0.1 s at worst, twice in an evaluated round);
    for pFedHN on MNIST that was a third of a round. A look is a dictionary
    query under a lock, so 200 a second cost nothing measurable. Grids
    without the attribute (deployment) are left alone.
    """
    if hasattr(grid, "pull_interval"):
        grid.pull_interval = PULL_INTERVAL_S


def _feed_messages(
    state: Any, queue: Any, nodes_mapping: dict[int, int], f_stop: Any
) -> None:
    """Flower 1.41's ``vce_api.add_messages_to_queue``, looking every 5 ms.

    Same loop as Flower's (one ``get_message_ins`` per node, then wait), with
    :data:`FEED_INTERVAL_S` instead of 0.1 s between passes.
    """
    while not f_stop.is_set():
        for node_id in nodes_mapping:
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
        f_stop.wait(FEED_INTERVAL_S)


def feed_messages_quickly() -> None:
    """Let the Ray engine hand new messages to its workers within 10 ms, not 100 ms.

    The simulation engine's feeder thread looks for new messages every 0.1 s,
    so every message waited 0.05 s on average before a worker started it:
    with the grid's own polling fixed this was 18 % of a pFedHN MNIST round
    (``bench.pfedhn_speed``). Flower offers no setting for it, so the module
    function the engine starts its thread with is replaced (``run_api`` looks
    it up when the run starts); ``tests/test_simulation.py`` fails if a Flower
    upgrade changes that function. Only the embedded engine is affected.
    """
    from flwr.server.superlink.fleet.vce import vce_api

    vce_api.add_messages_to_queue = _feed_messages


def build_server_app(
    main_loop: Callable[[Grid, dict[int, int]], None], num_clients: int
) -> ServerApp:
    """A ServerApp that learns the partition map, then runs ``main_loop``.

    Parameters
    ----------
    main_loop : callable
        ``main_loop(grid, partition_to_node)``: the algorithm's rounds.
    num_clients : int
        Number of SuperNodes to wait for.
    """
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        poll_quickly(grid)
        stop_between_polls(grid)
        main_loop(grid, discover_partitions(grid, num_clients))

    return app


def run_federation(
    server_app: ServerApp,
    client_app: ClientApp,
    num_clients: int,
    client_resources: dict[str, Any],
    verbose: bool = False,
    ray_address: str | None = None,
) -> None:
    """Run the apps on Flower's Ray simulation engine.

    Parameters
    ----------
    server_app, client_app : ServerApp, ClientApp
        The apps.
    num_clients : int
        Number of virtual SuperNodes (one per partition).
    client_resources : dict
        ``num_cpus`` and ``num_gpus`` per client; a GPU fraction below 1 packs
        several clients on one GPU.
    verbose : bool
        Keep Flower's INFO logging and Flower's and Ray's warnings (see
        :func:`quiet_simulation`).
    ray_address : str, optional
        Join the running Ray cluster there (``ray.init(address=...)``): its
        nodes host the client actors. ``None`` starts a private Ray.

    SIGINT and SIGTERM stop it within seconds (:mod:`pflcore.run.stopping`), and
    no process it starts outlives it: those still running when it returns
    are ended, and a reaper ends them should this process be killed.
    """
    # Flower 1.41 deprecates run_simulation for `flwr run`, which needs a SuperLink
    # process and loads the apps by module path (a one-round quick run: 1.4-1.7 x the
    # embedded run's 44 s here, bench.launcher_startup, docs/DEPLOYMENT.md). The
    # embedded default keeps it for an in-process run with no server to start;
    # launcher=flwr is the supported path (pflcore.run.launch). The banner it logs is a
    # WARNING that quiet_simulation keeps off the terminal unless verbose=true.
    from flwr.simulation import run_simulation

    resources: dict[str, Any] = {
        "num_cpus": float(client_resources.get("num_cpus", 1)),
        "num_gpus": float(client_resources.get("num_gpus", 0.0)),
    }
    init_args: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": True}
    if ray_address is not None:
        init_args["address"] = ray_address
    feed_messages_quickly()
    start_reaper()
    with ending_new_processes(), federating(), quiet_simulation(verbose):
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_clients,
            backend_name="ray",
            backend_config={
                "client_resources": resources,
                "init_args": init_args,
            },
            verbose_logging=verbose,
        )
