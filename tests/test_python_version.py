"""An interpreter older than the dependencies need is told so in one line."""

import subprocess
import sys
from pathlib import Path

import pytest

from pflcore.pyversion import MINIMUM, python_too_old

REPO = Path(__file__).resolve().parents[1]


def old_pythons() -> list[str]:
    """Interpreters older than 3.11 here (system or pyenv builds), newest first."""
    found: list[Path] = []
    for minor in (10, 9, 8, 7, 6):
        found += [p for p in [Path(f"/usr/bin/python3.{minor}")] if p.is_file()]
        pyenv = Path("~/.pyenv/versions").expanduser()
        found += sorted(pyenv.glob(f"3.{minor}.*/bin/python"))
    return [str(p) for p in found]


OLD_PYTHONS = old_pythons()


def test_minimum_is_what_flower_needs():
    from importlib.metadata import metadata

    assert metadata("flwr")["Requires-Python"].startswith(">=3.11")
    assert MINIMUM == (3, 11)


@pytest.mark.parametrize(
    ("version", "too_old"),
    [
        ((3, 10, 13, "final", 0), True),
        ((3, 6, 15), True),
        ((2, 7, 18), True),
        ((3, 11, 0, "final", 0), False),
        ((3, 13, 1), False),
        ((4, 0, 0), False),
    ],
)
def test_versions_below_three_eleven_get_one_line(version, too_old):
    message = python_too_old(version)
    assert (message is not None) == too_old
    if too_old:
        assert "\n" not in message
        assert "3.11 or newer" in message
        assert ".".join(str(v) for v in version[:3]) in message


def test_this_interpreter_passes():
    assert sys.version_info >= (3, 11)
    assert python_too_old() is None


@pytest.mark.slow
@pytest.mark.skipif(not OLD_PYTHONS, reason="no Python older than 3.11 on this machine")
@pytest.mark.parametrize(
    "module", ["fedper.main", "pfedhn.main", "pflcore.reports.plots"]
)
def test_an_old_interpreter_running_an_entry_point_gets_one_line(tmp_path, module):
    python = OLD_PYTHONS[0]  # the newest of the old ones
    result = subprocess.run(
        [str(python), "-m", module],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: this suite needs Python 3.11 or newer")
