"""A run folder that cannot be made, or a model unfit for the images: one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pflcore.config import ConfigError
from pflcore.run.experiment import open_recorder
from pflcore.run.output_check import blocked_reason, unwritable_reason


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


def test_the_dry_check_finds_what_needs_no_write_and_creates_nothing(tmp_path):
    for name, (folder, reason) in cases(tmp_path).items():
        if name in ("a read-only file system", "a name too long", "a NUL in the name"):
            continue
        assert blocked_reason(folder) == reason, name
    assert "longer than 255 bytes" in str(blocked_reason(tmp_path / ("x" * 300)))
    assert "NUL" in str(blocked_reason(f"{tmp_path}/a\0b"))
    assert blocked_reason(tmp_path / "new" / "run") is None
    assert not (tmp_path / "new").exists()


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


def test_a_model_that_cannot_take_the_images_is_refused_before_ray():
    import fedper.main
    from tests.test_schema_domains import compose_quick

    config = compose_quick("fedper", "dataset.image_size=3")  # small_cnn needs 4
    with pytest.raises(ConfigError) as error:
        fedper.main.PACKAGE.prepare(config)
    message = str(error.value)
    assert message.startswith(
        "model.name=small_cnn with dataset.image_size=3 cannot take 1x3x3 images ("
    )
    assert "\n" not in message


def test_the_model_probe_changes_neither_the_model_nor_the_random_streams():
    import torch

    from pflcore.local.model_check import check_model_input

    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Dropout(0.5)
    ).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    check_model_input(model, 1, 8, "test")
    assert torch.equal(torch.rand(4), expected)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(ConfigError, match=r"^test cannot take 1x2x2 images \("):
        check_model_input(model, 1, 2, "test")
