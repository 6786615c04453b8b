"""A model that cannot take the run's images is refused before Ray starts.

Without this a network too deep for small images (or a layer sized for
other inputs) fails in every client's first forward pass, inside Ray
workers, with a traceback per client.
"""

from __future__ import annotations

import copy

import torch

from pflcore.config import ConfigError


def check_model_input(
    model: torch.nn.Module, channels: int, image_size: int, settings: str
) -> None:
    """Pass two blank images through a copy of ``model`` in evaluation mode.

    The copy, evaluation mode and ``no_grad`` leave ``model``, its batch
    statistics and every random generator as they were, so records do not
    change.

    Parameters
    ----------
    model : torch.nn.Module
        The run's initial network.
    channels, image_size : int
        The images the clients will feed it (``(channels, size, size)``).
    settings : str
        The settings that chose the model and the size, for the message.

    Raises
    ------
    ConfigError
        One line: the settings, the image shape and Torch's reason.
    """
    probe = copy.deepcopy(model).eval()
    try:
        with torch.no_grad():
            probe(torch.zeros(2, channels, image_size, image_size))
    except (RuntimeError, ValueError, IndexError) as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(
            f"{settings} cannot take {channels}x{image_size}x{image_size} images "
            f"({reason})"
        ) from None
