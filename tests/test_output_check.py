"""A run folder that cannot be created, for whatever reason, is one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pflcore.config import ConfigError
from pflcore.experiment import open_recorder
from pflcore.output_check import unwritable_reason


def cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    found = {
        "a file on the way": (blocker / "run", f"{blocker} is a file, not a folder"),
        "a file where the folder goes": (blocker, f"{blocker} is a file, not a folder"),
        "a name too long": (tmp_path / ("x" * 300) / "run", "File name too long"),
        "a NUL in the name": (Path(f"{tmp_path}/a\0b"), "null"),
    }
    if Path("/proc/self").is_dir():  # read-only even for root
        found["a read-only file system"] = (Path("/proc/self/run"), "/proc/self")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        found["no permission"] = (locked / "run", f"{locked} is not writable")
    return found


def test_every_reason_a_folder_cannot_be_written_is_one_line(tmp_path):
    for name, (folder, reason) in cases(tmp_path).items():
        said = unwritable_reason(folder)
        assert said is not None and reason in said and "\n" not in said, (name, said)


def test_a_folder_that_can_be_written_is_created_and_left_clean(tmp_path):
    folder = tmp_path / "new" / "run"
    assert unwritable_reason(folder) is None
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_the_recorder_refuses_a_folder_it_cannot_write_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = {"seed": 0}
    with pytest.raises(ConfigError) as error:
        open_recorder(config, str(blocker / "run"))
    assert str(error.value) == (
        f"run folder {blocker / 'run'} cannot be written: {blocker} is a file, "
        "not a folder"
    )
