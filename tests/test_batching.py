"""A training call's batches drawn up front equal what the per-batch loop drew."""

from __future__ import annotations

import pytest
import torch

from pflcore.local.batching import draw_batch, epoch_plan, step_plan
from pflcore.local.transforms import BatchTransform


def per_batch_reference(n, epochs, batch_size, padding, flip, seed):
    """What the per-batch loop drew, in its order: permutation, then each batch's
    crop rows, crop columns and flip mask (written out independently)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() == 1 and n > 1:
                continue
            draws = []
            if padding:
                draws.append(
                    torch.randint(0, 2 * padding + 1, (len(idx),), generator=g)
                )
                draws.append(
                    torch.randint(0, 2 * padding + 1, (len(idx),), generator=g)
                )
            if flip:
                draws.append(torch.rand(len(idx), generator=g) < 0.5)
            out.append((idx, draws))
    return out


@pytest.mark.parametrize(
    ("n", "batch_size", "padding", "flip"),
    [
        (23, 5, 2, True),
        (21, 5, 0, True),
        (20, 7, 3, False),
        (9, 4, 0, False),
        (1, 4, 1, True),
    ],
)
def test_epoch_plan_draws_what_the_per_batch_loop_drew(n, batch_size, padding, flip):
    transform = BatchTransform((0.5,), (0.2,), crop_padding=padding, flip=flip)
    plan = epoch_plan(n, 3, batch_size, transform, torch.Generator().manual_seed(4))
    moved = plan.to(torch.device("cpu"))
    expected = per_batch_reference(n, 3, batch_size, padding, flip, 4)
    assert len(plan) == len(expected)
    for (idx, draws), (want_idx, want_draws) in zip(moved, expected, strict=True):
        assert torch.equal(idx, want_idx)
        assert len(draws) == len(want_draws)
        for got, want in zip(draws, want_draws, strict=True):
            assert got.dtype == want.dtype and torch.equal(got, want)


def test_step_plan_draws_each_batch_then_its_augmentation():
    transform = BatchTransform((0.5,), (0.2,), crop_padding=1, flip=True)
    plan = step_plan(10, 4, 3, torch.Generator().manual_seed(2), transform)
    g = torch.Generator().manual_seed(2)
    for idx, draws in plan.to(torch.device("cpu")):
        assert torch.equal(idx, torch.randperm(10, generator=g)[:3])
        assert torch.equal(draws[0], torch.randint(0, 3, (3,), generator=g))
        assert torch.equal(draws[1], torch.randint(0, 3, (3,), generator=g))
        assert torch.equal(draws[2], torch.rand(3, generator=g) < 0.5)
    plain = step_plan(10, 2, 3, torch.Generator().manual_seed(2))
    assert [d for _, d in plain] == [None, None]  # not augmented
    with pytest.raises(ValueError, match="cannot draw a batch of 11"):
        draw_batch(10, 11, torch.Generator())


def test_transform_with_drawn_augmentation_equals_the_transform_drawing_itself():
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    transform = BatchTransform((0.3, 0.4, 0.5), (0.2, 0.2, 0.3), 10, 2, True)
    direct = transform(x, train=True, generator=torch.Generator().manual_seed(8))
    draws = transform.draw(6, torch.Generator().manual_seed(8))
    assert torch.equal(transform.apply(x, draws), direct)
    assert torch.equal(transform.apply(x, None), transform(x, train=False))


# -- the loops give what a per-batch loop gives, bit for bit -------------------------


def per_batch_epochs(model, x, y, optimizer, transform, epochs, batch_size, g):
    """SGD epochs drawing each batch's indices and augmentation as it goes."""
    model.train()
    n, total, samples = x.shape[0], 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() == 1 and n > 1:
                continue
            loss = torch.nn.functional.cross_entropy(
                model(transform(x[idx], train=True, generator=g)), y[idx]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach() * idx.numel())
            samples += idx.numel()
    return total / samples


def small_net() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 5),
    )


DATA = (
    torch.randint(
        0,
        256,
        (41, 3, 10, 10),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    ),
    torch.arange(41) % 5,
)


@pytest.mark.parametrize("batch_size", [8, 20, 40])
def test_train_epochs_equals_the_per_batch_loop(batch_size):
    from pflcore.local.training import make_sgd, train_epochs

    x, y = DATA
    transform = BatchTransform(
        (0.4, 0.5, 0.6), (0.2, 0.3, 0.25), crop_padding=2, flip=True
    )
    reference = small_net()
    ref_opt = make_sgd(reference.parameters(), 0.05, 0.9)
    ref_loss = per_batch_epochs(
        reference,
        x,
        y,
        ref_opt,
        transform,
        3,
        batch_size,
        torch.Generator().manual_seed(9),
    )
    model = small_net()
    stats = train_epochs(
        model,
        x,
        y,
        make_sgd(model.parameters(), 0.05, 0.9),
        transform,
        epochs=3,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(9),
        device=torch.device("cpu"),
    )
    # the loss is summed on the device in float32 by both; the weights match bitwise
    assert stats.loss == pytest.approx(ref_loss, rel=1e-6)
    for (key, value), ref in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(value, ref), key


@pytest.mark.parametrize("variant", ["fo", "hf"])
def test_perfedavg_update_equals_the_per_step_loop(variant):
    from perfedavg.algorithm import meta_step, perfedavg_update

    x, y = DATA
    transform = BatchTransform(
        (0.4, 0.5, 0.6), (0.2, 0.3, 0.25), crop_padding=1, flip=True
    )
    reference = small_net()
    g = torch.Generator().manual_seed(4)
    total = 0.0
    for _ in range(3):
        batches = []
        for _ in range(3):
            idx = draw_batch(41, 6, g)
            batches.append((transform(x[idx], train=True, generator=g), y[idx]))
        total += meta_step(
            reference, tuple(batches), alpha=0.03, beta=0.1, variant=variant, delta=1e-3
        )
    model = small_net()
    stats = perfedavg_update(
        model,
        x,
        y,
        transform,
        steps=3,
        batch_size=6,
        alpha=0.03,
        beta=0.1,
        variant=variant,
        delta=1e-3,
        generator=torch.Generator().manual_seed(4),
        device=torch.device("cpu"),
    )
    assert stats.loss == total / 3  # the same float32 losses, summed in the same order
    for (key, value), ref in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(value, ref), key
