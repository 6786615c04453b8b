"""A training call's random draws, made up front and moved to the device in one copy.

A loop that draws each batch's indices and augmentations from a CPU generator as
it goes makes several small, blocking host-to-device copies per batch on a GPU.
Those draws depend on nothing the model computes, so the same calls in the same
order can be made before the first step: the values are exactly the ones the
per-batch loop drew, and they reach the device in one copy per call
(:meth:`BatchPlan.to`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from pflcore.local.transforms import BatchTransform


def draw_batch(
    num_samples: int, batch_size: int, generator: torch.Generator
) -> torch.Tensor:
    """Indices of one minibatch: no repeats within it, independent of other batches.

    Parameters
    ----------
    num_samples : int
        Size of the split the batch is drawn from.
    batch_size : int
        Batch size; must not exceed ``num_samples``.
    generator : torch.Generator
        CPU generator of the draw.

    Returns
    -------
    torch.Tensor
        ``int64`` indices, shape ``(batch_size,)``.

    Raises
    ------
    ValueError
        If the split is smaller than one batch.
    """
    if not 1 <= batch_size <= num_samples:
        raise ValueError(
            f"cannot draw a batch of {batch_size} from {num_samples} samples"
        )
    return torch.randperm(num_samples, generator=generator)[:batch_size]


@dataclass(frozen=True)
class BatchPlan:
    """The indices and augmentation draws of a sequence of batches.

    Attributes
    ----------
    indices : torch.Tensor
        ``int64``: every batch's indices, one batch after the other.
    draws : list of torch.Tensor
        The transform's per-sample draws (see :meth:`BatchTransform.draw`),
        each aligned with ``indices``; empty without augmentation.
    bounds : list of tuple of int
        ``[start, stop)`` of each batch in ``indices``.
    augment : bool
        Whether the batches are augmented (``draws`` may still be empty when
        the transform has no augmentation).
    """

    indices: torch.Tensor
    draws: list[torch.Tensor]
    bounds: list[tuple[int, int]]
    augment: bool

    def __len__(self) -> int:
        return len(self.bounds)

    def batch(self, i: int) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Batch ``i``'s indices and draws (``None`` when not augmented)."""
        start, stop = self.bounds[i]
        draws = [d[start:stop] for d in self.draws] if self.augment else None
        return self.indices[start:stop], draws

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[torch.Tensor] | None]]:
        return (self.batch(i) for i in range(len(self)))

    def to(self, device: torch.device) -> BatchPlan:
        """The plan on ``device``, moved in one copy (all draws packed as int64)."""
        if self.indices.numel() == 0:
            empty = [d.to(device) for d in self.draws]
            return BatchPlan(self.indices.to(device), empty, self.bounds, self.augment)
        packed = torch.cat([self.indices, *(d.to(torch.int64) for d in self.draws)])
        moved = packed.to(device).split(self.indices.numel())
        draws = [m.to(d.dtype) for m, d in zip(moved[1:], self.draws, strict=True)]
        return BatchPlan(moved[0], draws, self.bounds, self.augment)


def _plan(
    batches: list[torch.Tensor], draws: list[list[torch.Tensor]], augment: bool
) -> BatchPlan:
    bounds, start = [], 0
    for idx in batches:
        bounds.append((start, start + idx.numel()))
        start += idx.numel()
    indices = torch.cat(batches) if batches else torch.empty(0, dtype=torch.int64)
    columns = [torch.cat(c) for c in zip(*draws, strict=True)] if draws else []
    return BatchPlan(indices, columns, bounds, augment)


def epoch_plan(
    num_samples: int,
    epochs: int,
    batch_size: int,
    transform: BatchTransform,
    generator: torch.Generator,
) -> BatchPlan:
    """Whole epochs of shuffled minibatches, augmented (on the CPU generator).

    Each epoch draws a permutation, then each batch's augmentation in turn; a
    one-sample trailing batch is left out (BatchNorm cannot train on one
    sample) unless the split has one sample only.
    """
    batches: list[torch.Tensor] = []
    draws: list[list[torch.Tensor]] = []
    for _ in range(epochs):
        order = torch.randperm(num_samples, generator=generator)
        for start in range(0, num_samples, batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() == 1 and num_samples > 1:
                continue
            batches.append(idx)
            draws.append(transform.draw(idx.numel(), generator))
    return _plan(batches, draws, augment=True)


def step_plan(
    num_samples: int,
    num_batches: int,
    batch_size: int,
    generator: torch.Generator,
    transform: BatchTransform | None = None,
) -> BatchPlan:
    """``num_batches`` independently drawn batches (:func:`draw_batch`).

    Each batch's augmentation is drawn right after its indices; with
    ``transform=None`` the batches are not augmented.
    """
    batches: list[torch.Tensor] = []
    draws: list[list[torch.Tensor]] = []
    for _ in range(num_batches):
        batches.append(draw_batch(num_samples, batch_size, generator))
        if transform is not None:
            draws.append(transform.draw(batch_size, generator))
    return _plan(batches, draws, augment=transform is not None)
