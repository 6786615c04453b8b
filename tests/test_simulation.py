"""What ``quiet_simulation`` changes for one simulation, and that it undoes it."""

from __future__ import annotations

import logging
import os
import warnings

import pytest

from pflcore.run.simulation import quiet_simulation

RAY_TIP = "Tip: In future versions of Ray, Ray will no longer override accelerator"


@pytest.fixture(autouse=True)
def keep_flower_logger():
    logger = logging.getLogger("flwr")
    level, propagate = logger.level, logger.propagate
    yield
    logger.setLevel(level)
    logger.propagate = propagate


def warn_like_ray() -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn(RAY_TIP, FutureWarning, stacklevel=1)
        warnings.warn("something else", FutureWarning, stacklevel=1)
    return caught


def test_quiet_sets_the_workers_level_hides_the_tip_and_restores(monkeypatch):
    monkeypatch.delenv("FLWR_LOG_LEVEL", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_simulation(verbose=False):
            assert os.environ["FLWR_LOG_LEVEL"] == "ERROR"
            assert logging.getLogger("flwr").level == logging.ERROR
            warnings.warn(RAY_TIP, FutureWarning, stacklevel=1)
            warnings.warn("something else", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
    assert "FLWR_LOG_LEVEL" not in os.environ
    assert len(warn_like_ray()) == 2  # the filter is gone afterwards


def test_a_level_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("FLWR_LOG_LEVEL", "DEBUG")
    with quiet_simulation(verbose=False):
        assert os.environ["FLWR_LOG_LEVEL"] == "DEBUG"
    assert os.environ["FLWR_LOG_LEVEL"] == "DEBUG"


def test_verbose_changes_nothing_but_flowers_info_level(monkeypatch):
    monkeypatch.delenv("FLWR_LOG_LEVEL", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_simulation(verbose=True):
            assert "FLWR_LOG_LEVEL" not in os.environ
            assert logging.getLogger("flwr").level == logging.INFO
            warnings.warn(RAY_TIP, FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [RAY_TIP]


def test_the_in_memory_grid_polls_every_5_ms_and_other_grids_are_left_alone():
    from types import SimpleNamespace

    from pflcore.run.simulation import PULL_INTERVAL_S, poll_quickly

    in_memory = SimpleNamespace(pull_interval=0.1)  # Flower's InMemoryGrid default
    poll_quickly(in_memory)
    assert in_memory.pull_interval == PULL_INTERVAL_S == 0.005
    remote = SimpleNamespace()  # a deployment grid has no pull_interval
    poll_quickly(remote)
    assert not hasattr(remote, "pull_interval")


def test_flower_still_names_the_polling_attribute_we_set():
    import inspect

    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    assert "pull_interval" in inspect.signature(InMemoryGrid.__init__).parameters
    assert "self.pull_interval" in inspect.getsource(InMemoryGrid.send_and_receive)


def test_the_feeder_hands_each_nodes_messages_over_and_waits_10_ms_between_passes():
    import queue
    from types import SimpleNamespace

    from pflcore.run.simulation import FEED_INTERVAL_S, _feed_messages

    pending = {3: ["a", "b"], 7: ["c"]}
    asked: list[tuple[int, int]] = []

    def get_message_ins(node_id: int, limit: int) -> list[str]:
        asked.append((node_id, limit))
        return [pending[node_id].pop(0)] if pending[node_id] else []

    waits: list[float] = []

    class Stop:
        def is_set(self) -> bool:
            return len(waits) == 3

        def wait(self, seconds: float) -> None:
            waits.append(seconds)

    out: queue.Queue[str] = queue.Queue()
    _feed_messages(
        SimpleNamespace(get_message_ins=get_message_ins), out, {3: 0, 7: 1}, Stop()
    )
    assert [out.get_nowait() for _ in range(out.qsize())] == ["a", "c", "b"]
    assert asked == [(3, 1), (7, 1)] * 3  # one message per node per pass
    assert waits == [FEED_INTERVAL_S] * 3 == [0.01] * 3


def test_flower_still_starts_the_feeder_we_replace_and_it_is_replaced():
    import inspect

    from flwr.server.superlink.fleet.vce import vce_api

    from pflcore.run.simulation import _feed_messages, feed_messages_quickly

    source = inspect.getsource(vce_api)
    # The loop we copy, and run_api looking the function up by name when it starts.
    assert "state.get_message_ins(node_id=node_id, limit=1)" in source
    assert "f_stop.wait(0.1)" in source
    assert "target=add_messages_to_queue," in inspect.getsource(vce_api.run_api)
    original = vce_api.add_messages_to_queue
    try:
        feed_messages_quickly()
        assert vce_api.add_messages_to_queue is _feed_messages
    finally:
        vce_api.add_messages_to_queue = original
