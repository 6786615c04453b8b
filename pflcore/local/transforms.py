"""Batch-wise normalisation and augmentation on the training device.

Batches are normalised and augmented as they are drawn, on the device they
train on, never sample by sample through PIL; the random draws can be made
apart from the transform so that a training loop moves a whole call's
batches in one copy (:mod:`pflcore.local.batching`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


class BatchTransform:
    """Turn a uint8 batch into a normalised float batch on its device.

    The random augmentations can be drawn apart from the transform
    (:meth:`draw`, on the CPU generator, in the order :meth:`__call__` draws
    them) and applied later (:meth:`apply`, with the draws on the batch's
    device): a training loop draws a whole call's batches up front and moves
    them to the device in one copy (:mod:`pflcore.local.batching`). The
    normalisation constants are kept on each device they are used on.

    Parameters
    ----------
    mean, std : sequence of float
        Per-channel statistics in [0, 1] units.
    image_size : int, optional
        Resize (bilinear) to this side length; ``None`` keeps the stored size.
    crop_padding : int
        Random-crop padding in pixels (0 disables the crop); training only.
    flip : bool
        Random horizontal flips; training only.
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        image_size: int | None = None,
        crop_padding: int = 0,
        flip: bool = False,
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.image_size = image_size
        self.crop_padding = crop_padding
        self.flip = flip
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(
        self,
        x: torch.Tensor,
        train: bool,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Transform a batch.

        Parameters
        ----------
        x : torch.Tensor
            ``uint8`` batch ``(B, C, H, W)`` on the training device.
        train : bool
            Apply the random augmentations.
        generator : torch.Generator, optional
            CPU generator for the augmentation draws (reproducibility).

        Returns
        -------
        torch.Tensor
            ``float32`` batch on the same device.
        """
        if not train:
            return self.apply(x, None)
        draws = [d.to(x.device) for d in self.draw(int(x.shape[0]), generator)]
        return self.apply(x, draws)

    def draw(
        self, batch: int, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """The augmentation draws for a training batch of ``batch`` samples.

        Returns
        -------
        list of torch.Tensor
            CPU tensors of shape ``(batch,)``: the crop's row and column
            offsets (``int64``) when cropping, then the flip mask (``bool``)
            when flipping; empty without augmentation.
        """
        draws: list[torch.Tensor] = []
        if self.crop_padding > 0:
            draws.extend(crop_offsets(batch, self.crop_padding, generator))
        if self.flip:
            draws.append(torch.rand(batch, generator=generator) < 0.5)
        return draws

    def apply(self, x: torch.Tensor, draws: list[torch.Tensor] | None) -> torch.Tensor:
        """Transform a batch with given augmentation draws (``None``: evaluation).

        Parameters
        ----------
        x : torch.Tensor
            ``uint8`` batch ``(B, C, H, W)``.
        draws : list of torch.Tensor or None
            What :meth:`draw` returned for this batch, on ``x``'s device;
            ``None`` applies no augmentation.

        Returns
        -------
        torch.Tensor
            ``float32`` batch on ``x``'s device.
        """
        out = x.to(torch.float32) / 255.0  # never modifies the caller's tensor
        if draws is not None:
            rest = iter(draws)
            if self.crop_padding > 0:
                out = crop_at(out, self.crop_padding, next(rest), next(rest))
            if self.flip:
                flip = next(rest)
                out = torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)
        if self.image_size is not None and out.shape[-1] != self.image_size:
            out = F.interpolate(
                out,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
            )
        mean, std = self.constants(out.device)
        return (out - mean) / std

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalisation mean and std on ``device`` (moved there once)."""
        if device not in self._constants:
            self._constants[device] = (self.mean.to(device), self.std.to(device))
        return self._constants[device]


def crop_offsets(
    batch: int, padding: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random row and column offsets in ``[0, 2 * padding]``, one per sample (CPU)."""
    off_y = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    off_x = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    return off_y, off_x


def crop_at(
    x: torch.Tensor, padding: int, off_y: torch.Tensor, off_x: torch.Tensor
) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the input size at the given offsets.

    ``off_y`` and ``off_x`` (``int64``, one per sample, on ``x``'s device) are
    the top-left corners in the padded image; the whole batch is cropped in
    one gather.
    """
    batch, channels, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = off_y.view(-1, 1) + torch.arange(height, device=off_y.device)
    cols = off_x.view(-1, 1) + torch.arange(width, device=off_x.device)
    batch_idx = torch.arange(batch, device=x.device).view(-1, 1, 1, 1)
    chan_idx = torch.arange(channels, device=x.device).view(1, -1, 1, 1)
    return padded[
        batch_idx,
        chan_idx,
        rows.view(batch, 1, height, 1),
        cols.view(batch, 1, 1, width),
    ]


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the input size at random offsets.

    Each sample gets its own offset (drawn on the CPU generator); the whole
    batch is cropped in one gather.
    """
    off_y, off_x = crop_offsets(int(x.shape[0]), padding, generator)
    return crop_at(x, padding, off_y.to(x.device), off_x.to(x.device))
