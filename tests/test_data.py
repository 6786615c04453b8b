"""Dataset loading from the real on-disk formats, and the batch transforms.

Every expectation is computed independently (numpy) from what ``fakedata``
wrote, never from the loader's own output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pflcore.data.images import (
    KNOWN_DATASETS,
    DatasetNotFoundError,
    ImageData,
    load_dataset,
)
from pflcore.local.transforms import BatchTransform, random_crop
from tests.fakedata import write_cifar10, write_cifar100, write_mnist


@pytest.fixture(autouse=True)
def _fresh_cache():
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


def _nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def _assert_tensor_equals(actual: torch.Tensor, expected: np.ndarray, dtype) -> None:
    assert isinstance(actual, torch.Tensor)
    assert actual.dtype == dtype
    assert tuple(actual.shape) == expected.shape
    np.testing.assert_array_equal(actual.numpy(), expected)


# --------------------------------------------------------------------------
# published formats
# --------------------------------------------------------------------------


def test_cifar10_loads_exact_pixels_and_labels(tmp_path: Path):
    written = write_cifar10(tmp_path, per_batch=20, test=30, seed=3)
    data = load_dataset("cifar10", str(tmp_path))

    assert data.name == "cifar10"
    assert data.num_classes == 10
    assert data.channels == 3 and data.image_size == 32
    _assert_tensor_equals(data.x_train, _nhwc_to_nchw(written["x_train"]), torch.uint8)
    _assert_tensor_equals(data.x_test, _nhwc_to_nchw(written["x_test"]), torch.uint8)
    _assert_tensor_equals(
        data.y_train, written["y_train"].astype(np.int64), torch.int64
    )
    _assert_tensor_equals(data.y_test, written["y_test"].astype(np.int64), torch.int64)
    assert data.x_train.shape == (100, 3, 32, 32)
    assert data.x_test.shape == (30, 3, 32, 32)


def test_cifar10_channel_planes_are_not_mixed(tmp_path: Path):
    # One known pixel, checked by hand: the pickle rows hold R, G, B planes.
    written = write_cifar10(tmp_path, per_batch=10, test=10, seed=1)
    data = load_dataset("cifar10", str(tmp_path))
    img = written["x_train"][7]  # (32, 32, 3) as written, HWC
    for c in range(3):
        assert int(data.x_train[7, c, 5, 11]) == int(img[5, 11, c])
        assert int(data.x_train[7, c, 31, 0]) == int(img[31, 0, c])


def test_cifar100_loads_exact_pixels_and_fine_labels(tmp_path: Path):
    written = write_cifar100(tmp_path, train=200, test=100, seed=5)
    data = load_dataset("cifar100", str(tmp_path))

    assert data.name == "cifar100"
    assert data.num_classes == 100
    _assert_tensor_equals(data.x_train, _nhwc_to_nchw(written["x_train"]), torch.uint8)
    _assert_tensor_equals(data.x_test, _nhwc_to_nchw(written["x_test"]), torch.uint8)
    # fine labels (0..99), not the coarse ones (0..19)
    _assert_tensor_equals(data.y_train, np.arange(200) % 100, torch.int64)
    _assert_tensor_equals(data.y_test, np.arange(100) % 100, torch.int64)
    assert int(data.y_train.max()) == 99


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_mnist_idx_loads_exact_pixels_and_labels(tmp_path: Path, gz: bool):
    written = write_mnist(tmp_path, train=60, test=20, seed=2, gz=gz)
    raw = sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir())
    assert all(name.endswith(".gz") == gz for name in raw)

    data = load_dataset("mnist", str(tmp_path))
    assert data.name == "mnist"
    assert data.num_classes == 10
    assert data.channels == 1 and data.image_size == 28
    _assert_tensor_equals(data.x_train, written["x_train"][:, None, :, :], torch.uint8)
    _assert_tensor_equals(data.x_test, written["x_test"][:, None, :, :], torch.uint8)
    _assert_tensor_equals(data.y_train, np.arange(60) % 10, torch.int64)
    _assert_tensor_equals(data.y_test, np.arange(20) % 10, torch.int64)


def test_pooled_concatenates_train_then_test(tmp_path: Path):
    written = write_mnist(tmp_path, train=30, test=10, seed=0)
    data = load_dataset("mnist", str(tmp_path))
    x, y = data.pooled(include_test=True)
    expected_x = np.concatenate([written["x_train"], written["x_test"]])[:, None]
    _assert_tensor_equals(x, expected_x, torch.uint8)
    _assert_tensor_equals(
        y, np.concatenate([np.arange(30) % 10, np.arange(10) % 10]), torch.int64
    )
    x_only, _ = data.pooled(include_test=False)
    assert x_only.shape[0] == 30


# --------------------------------------------------------------------------
# .npz source
# --------------------------------------------------------------------------


def _gray_images(n: int = 12, h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def _rgb_images(n: int = 12, h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    # (N, H, W, C)
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW"])
def test_npz_gray_layouts_give_the_same_nchw_tensor(tmp_path: Path, layout: str):
    gray = _gray_images()
    expected = gray[:, None, :, :]  # (N, 1, H, W), built by hand
    stored = {
        "NHW": gray,
        "NHWC": gray[:, :, :, None],
        "NCHW": gray[:, None, :, :],
    }[layout]
    y = np.arange(12) % 4
    file = tmp_path / "d.npz"
    np.savez(file, x_train=stored, y_train=y, x_test=stored[:5], y_test=y[:5])

    data = load_dataset("npz", str(tmp_path), "default", str(file))
    _assert_tensor_equals(data.x_train, expected, torch.uint8)
    _assert_tensor_equals(data.x_test, expected[:5], torch.uint8)
    _assert_tensor_equals(data.y_train, y.astype(np.int64), torch.int64)
    assert data.num_classes == 4


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_npz_rgb_layouts_give_the_same_nchw_tensor(tmp_path: Path, layout: str):
    rgb = _rgb_images(seed=4)
    expected = np.ascontiguousarray(np.transpose(rgb, (0, 3, 1, 2)))
    stored = rgb if layout == "NHWC" else expected
    file = tmp_path / "d.npz"
    np.savez(file, x_train=stored, y_train=np.arange(12) % 3)

    data = load_dataset("npz", str(tmp_path), "default", str(file))
    _assert_tensor_equals(data.x_train, expected, torch.uint8)
    assert data.channels == 3


def test_npz_train_only_has_no_test_split(tmp_path: Path):
    gray = _gray_images(n=6)
    file = tmp_path / "train_only.npz"
    np.savez(file, x_train=gray, y_train=np.array([0, 1, 2, 0, 1, 2]))
    data = load_dataset("npz", str(tmp_path), "default", str(file))
    assert data.x_test is None and data.y_test is None
    assert data.num_classes == 3
    x, y = data.pooled(include_test=True)
    assert x.shape == (6, 1, 8, 8) and y.shape == (6,)


def test_npz_without_x_train_names_the_keys(tmp_path: Path):
    file = tmp_path / "bad.npz"
    np.savez(file, images=_gray_images(n=4), y_train=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="x_train") as info:
        load_dataset("npz", str(tmp_path), "default", str(file))
    message = str(info.value)
    assert "images" in message  # the keys actually present
    assert "y_train" in message


def test_cifar10_from_npz_path_relative_to_root(tmp_path: Path):
    rgb = _rgb_images(n=10, h=32, w=32, seed=9)
    (tmp_path / "sub").mkdir()
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    np.savez(tmp_path / "sub" / "c10.npz", x_train=rgb, y_train=labels)

    data = load_dataset("cifar10", str(tmp_path), "npz", "sub/c10.npz")
    assert data.name == "cifar10"
    # labels only reach 4, but the dataset's class count is CIFAR-10's
    assert data.num_classes == 10
    _assert_tensor_equals(data.x_train, _nhwc_to_nchw(rgb), torch.uint8)
    _assert_tensor_equals(data.y_train, labels.astype(np.int64), torch.int64)


def test_npz_labels_beyond_the_named_dataset_are_rejected(tmp_path: Path):
    np.savez(
        tmp_path / "m.npz", x_train=_gray_images(n=3), y_train=np.array([0, 5, 10])
    )
    with pytest.raises(ValueError, match="10 classes"):
        load_dataset("mnist", str(tmp_path), "npz", "m.npz")


# --------------------------------------------------------------------------
# missing or unknown datasets
# --------------------------------------------------------------------------


def test_missing_cifar10_names_the_path_and_hints(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "download" in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_cifar10_batch_is_the_one_named(tmp_path: Path):
    write_cifar10(tmp_path, per_batch=4, test=4)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", str(tmp_path))
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in str(info.value)


def test_missing_cifar100_names_the_path_and_hints(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar100", str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "cifar-100-python") in message
    assert "download" in message


def test_missing_mnist_names_the_path_and_hints(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "download" in message


def test_missing_mnist_file_is_the_one_named(tmp_path: Path):
    write_mnist(tmp_path, train=10, test=10, gz=True)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", str(tmp_path))


def test_missing_npz_names_the_path_and_hints(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("npz", str(tmp_path), "default", "nowhere/data.npz")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "data.npz") in message
    assert "dataset.path" in message


def test_missing_cifar10_npz_names_the_path(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", str(tmp_path), "npz", "c10.npz")
    assert str(tmp_path / "c10.npz") in str(info.value)


def test_unknown_name_lists_the_choices(tmp_path: Path):
    with pytest.raises(ValueError, match="imagenet") as info:
        load_dataset("imagenet", str(tmp_path))
    message = str(info.value)
    for choice in ("cifar10", "cifar100", "mnist", "digits", "npz"):
        assert choice in message
    assert set(KNOWN_DATASETS) == {"cifar10", "cifar100", "mnist", "digits", "npz"}


def test_unknown_source_is_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match="source"):
        load_dataset("cifar10", str(tmp_path), "hdf5")


# --------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------


def test_digits_loads_1797_8x8_gray_images(tmp_path: Path):
    data = load_dataset("digits", str(tmp_path))
    assert data.x_train.shape == (1797, 1, 8, 8)
    assert data.x_train.dtype == torch.uint8
    assert data.y_train.shape == (1797,) and data.y_train.dtype == torch.int64
    assert data.x_test is None and data.y_test is None
    assert data.num_classes == 10 and data.channels == 1
    assert int(data.x_train.min()) == 0 and int(data.x_train.max()) == 255
    assert set(data.y_train.tolist()) == set(range(10))


# --------------------------------------------------------------------------
# channel statistics
# --------------------------------------------------------------------------


def test_channel_stats_match_numpy():
    # > 4096 samples so the chunked accumulation is exercised.
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (5000, 3, 4, 4), dtype=np.uint8)
    x[:, 1] //= 3  # make the channels differ
    data = ImageData(
        "synthetic",
        torch.from_numpy(x),
        torch.zeros(5000, dtype=torch.int64),
        None,
        None,
        1,
    )
    mean, std = data.channel_stats()
    values = x.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, values.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(std, values.std(axis=(0, 2, 3)), rtol=1e-7)
    assert len(mean) == len(std) == 3


def test_channel_stats_of_loaded_cifar_match_numpy(tmp_path: Path):
    written = write_cifar10(tmp_path, per_batch=10, test=10, seed=7)
    mean, std = load_dataset("cifar10", str(tmp_path)).channel_stats()
    values = written["x_train"].astype(np.float64) / 255.0  # NHWC
    np.testing.assert_allclose(mean, values.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(std, values.std(axis=(0, 1, 2)), rtol=1e-7)


# --------------------------------------------------------------------------
# batch transforms
# --------------------------------------------------------------------------

MEAN = (0.2, 0.5, 0.7)
STD = (0.3, 0.25, 0.1)


def _batch(
    b: int = 8, c: int = 3, h: int = 8, w: int = 8, seed: int = 0
) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (b, c, h, w), dtype=np.uint8))


def _normalise(x: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    m = np.asarray(mean, dtype=np.float64).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float64).reshape(1, -1, 1, 1)
    return (x.astype(np.float64) / 255.0 - m) / s


def _hand_crop(x: np.ndarray, p: int, off_y, off_x) -> np.ndarray:
    b, _, h, w = x.shape
    padded = np.zeros((b, x.shape[1], h + 2 * p, w + 2 * p), dtype=x.dtype)
    padded[:, :, p : p + h, p : p + w] = x
    return np.stack(
        [
            padded[i, :, off_y[i] : off_y[i] + h, off_x[i] : off_x[i] + w]
            for i in range(b)
        ]
    )


def test_eval_mode_is_plain_normalisation():
    x = _batch()
    transform = BatchTransform(MEAN, STD, crop_padding=4, flip=True)
    out = transform(x, train=False, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), _normalise(x.numpy()), rtol=1e-5, atol=1e-5)
    # the input batch is left untouched
    np.testing.assert_array_equal(x.numpy(), _batch().numpy())


@pytest.mark.parametrize("size", [16, 5])
def test_resize_gives_the_requested_size(size: int):
    x = _batch(b=4, h=8, w=8)
    out = BatchTransform(MEAN, STD, image_size=size)(x, train=False)
    assert out.shape == (4, 3, size, size)
    assert out.dtype == torch.float32


def test_resize_keeps_a_constant_image_constant():
    x = torch.full((2, 1, 8, 8), 51, dtype=torch.uint8)
    out = BatchTransform((0.0,), (1.0,), image_size=20)(x, train=False)
    assert out.shape == (2, 1, 20, 20)
    np.testing.assert_allclose(out.numpy(), 0.2, atol=1e-6)


@pytest.mark.parametrize("padding", [1, 4])
def test_random_crop_matches_hand_crop_at_drawn_offsets(padding: int):
    x = _batch(b=16, c=3, h=8, w=6, seed=1).to(torch.float32)
    out = random_crop(x, padding, torch.Generator().manual_seed(123))

    g = torch.Generator().manual_seed(123)
    off_y = torch.randint(0, 2 * padding + 1, (16,), generator=g).numpy()
    off_x = torch.randint(0, 2 * padding + 1, (16,), generator=g).numpy()
    assert len(set(zip(off_y.tolist(), off_x.tolist(), strict=True))) > 1
    expected = _hand_crop(x.numpy(), padding, off_y, off_x)
    assert out.shape == x.shape
    np.testing.assert_array_equal(out.numpy(), expected)


def test_random_crop_offsets_are_per_sample_and_cover_the_range():
    # Same image in every slot: differing outputs can only come from the offsets.
    p = 2
    x = _batch(b=1, c=1, h=5, w=5, seed=2).to(torch.float32).repeat(200, 1, 1, 1)
    out = random_crop(x, p, torch.Generator().manual_seed(0)).numpy()
    distinct = {out[i].tobytes() for i in range(200)}
    assert 10 < len(distinct) <= (2 * p + 1) ** 2
    # each output is one of the 25 hand-computed crops
    crops = {
        _hand_crop(x[:1].numpy(), p, [oy], [ox])[0].tobytes()
        for oy in range(2 * p + 1)
        for ox in range(2 * p + 1)
    }
    assert distinct <= crops


def test_train_crop_through_batch_transform_matches_hand_computation():
    p = 3
    x = _batch(b=10, seed=5)
    transform = BatchTransform(MEAN, STD, crop_padding=p, flip=False)
    out = transform(x, train=True, generator=torch.Generator().manual_seed(77))

    g = torch.Generator().manual_seed(77)
    off_y = torch.randint(0, 2 * p + 1, (10,), generator=g).numpy()
    off_x = torch.randint(0, 2 * p + 1, (10,), generator=g).numpy()
    # crop of the [0, 1]-scaled image, zero padding, then normalise
    cropped = _hand_crop(x.numpy().astype(np.float64) / 255.0, p, off_y, off_x)
    m = np.asarray(MEAN).reshape(1, -1, 1, 1)
    s = np.asarray(STD).reshape(1, -1, 1, 1)
    np.testing.assert_allclose(out.numpy(), (cropped - m) / s, rtol=1e-5, atol=1e-5)


def test_flip_gives_input_or_mirror_and_both_occur():
    x = _batch(b=64, c=3, h=6, w=7, seed=8)
    transform = BatchTransform((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), flip=True)
    out = transform(x, train=True, generator=torch.Generator().manual_seed(4)).numpy()
    plain = x.numpy().astype(np.float64) / 255.0
    mirror = plain[:, :, :, ::-1]
    kinds = []
    for i in range(64):
        same = np.allclose(out[i], plain[i], atol=1e-6)
        flipped = np.allclose(out[i], mirror[i], atol=1e-6)
        assert same != flipped, f"sample {i} is neither the input nor its mirror"
        kinds.append(flipped)
    assert any(kinds) and not all(kinds)


def test_flip_draws_follow_the_generator():
    x = _batch(b=32, c=1, h=4, w=5, seed=9)
    transform = BatchTransform((0.0,), (1.0,), flip=True)
    out = transform(x, train=True, generator=torch.Generator().manual_seed(21)).numpy()
    flips = (torch.rand(32, generator=torch.Generator().manual_seed(21)) < 0.5).numpy()
    plain = x.numpy().astype(np.float64) / 255.0
    expected = np.where(flips[:, None, None, None], plain[:, :, :, ::-1], plain)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_augmentations_are_off_in_eval_and_without_padding():
    x = _batch(b=8, seed=10)
    # padding 0 and no flip: training output is the plain normalisation too
    out = BatchTransform(MEAN, STD)(x, train=True, generator=torch.Generator())
    np.testing.assert_allclose(out.numpy(), _normalise(x.numpy()), rtol=1e-5, atol=1e-5)
