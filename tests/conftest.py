"""Shared test setup."""

import contextlib
import fcntl
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

# held by a test marked own_ray from its fixtures' set-up to their tear-down
OWN_RAY_LOCK = Path(tempfile.gettempdir()) / "pfl-tests-own-ray.lock"


@pytest.fixture(autouse=True)
def flower_task_identity():
    """Messages built outside a running Flower app need a run/node identity."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@pytest.fixture(scope="session", autouse=True)
def shared_ray_cluster():
    """Stop the Ray cluster the session's runs joined, if one was started."""
    yield
    from tests.mainrun import stop_shared_ray

    stop_shared_ray()


@pytest.fixture
def restore_flags(monkeypatch):
    """Restore the determinism flags and CUBLAS_WORKSPACE_CONFIG after a test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[2:4]
    torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])


def pytest_collection_modifyitems(config, items):
    """Mark tests not marked ``slow`` as ``fast``; skip ``cuda`` tests without CUDA."""
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available())")
    for item in items:
        if "slow" not in item.keywords:
            item.add_marker(pytest.mark.fast)
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


class SlowWorkInFastTierError(RuntimeError):
    """A test of the fast tier tried to start Ray or a subprocess."""


_refused: list[str] = []


def _refuse(what: str):
    def refuse(*args, **kwargs):
        _refused.append(what)
        raise SlowWorkInFastTierError(f"{what} in a test not marked slow")

    return refuse


def _popen_refusing_programs(popen):
    """``Popen`` that refuses Python interpreters and shells (the suite's runs).

    Libraries' own small probes (joblib asking ``lscpu`` for the core count)
    stay allowed: they are not the work the fast tier leaves out.
    """

    def guarded_popen(args, *rest, **kwargs):
        program = args if isinstance(args, str) else str(next(iter(args)))
        name = os.path.basename(program.split()[0]) if program else ""
        if program == sys.executable or "python" in name or name in ("bash", "sh"):
            _refused.append(f"subprocess {name}")
            raise SlowWorkInFastTierError(f"subprocess {name} in a fast test")
        return popen(args, *rest, **kwargs)

    return guarded_popen


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Run tests marked ``own_ray`` one at a time on this machine.

    They start Ray with its default ports or Flower's local SuperLink on its
    fixed port, so two of them at once (two pytest-xdist workers, or two test
    sessions) would take each other's ports. A file lock, not an xdist group:
    it covers module fixtures and other sessions too, and xdist 3.8's
    ``loadgroup`` does not group under pytest 9.2 (it renames the items
    through ``_nodeid``, which pytest no longer reads).
    """
    if item.get_closest_marker("own_ray") is None:
        return (yield)
    with OWN_RAY_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    """Refuse Ray and subprocesses while a fast test (and its fixtures) set up."""
    with _fast_tier_guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Refuse Ray and subprocesses while a fast test runs.

    Refusals are also checked after the test, so code that catches the error
    (a main that records a failed run) cannot hide it.
    """
    with _fast_tier_guard(item):
        result = yield
    if "slow" not in item.keywords and _refused:
        what = _refused[0]
        _refused.clear()
        pytest.fail(
            f"{what} in a test not marked slow: mark it @pytest.mark.slow "
            "(the fast tier runs no Ray and no subprocess)"
        )
    return result


@contextlib.contextmanager
def _fast_tier_guard(item):
    if "slow" in item.keywords:
        yield
        return
    import subprocess

    import flwr.simulation
    import ray

    _refused.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flwr.simulation, "run_simulation", _refuse("run_simulation"))
        patch.setattr(ray, "init", _refuse("ray.init"))
        patch.setattr(subprocess, "Popen", _popen_refusing_programs(subprocess.Popen))
        yield
