"""Every client's data splits: the loaded samples and each client's indices."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Self

import numpy as np
import torch

from pflcore.config.seeds import Stream, derive_seed
from pflcore.data.images import ImageData
from pflcore.data.partition import ClientSplit

SPLIT_NAMES = ("train", "val", "test")
Split = tuple[torch.Tensor, torch.Tensor]  # (x uint8 (N, C, H, W), y int64)


@dataclass(frozen=True)
class ClientData:
    """The loaded samples and every client's indices into them, per split.

    Attributes
    ----------
    data : ImageData
        The loaded dataset (classes, channels, normalisation statistics).
    pools : dict
        ``{split: (x uint8 (N, C, H, W), y int64)}``: what the split's indices
        point into. Splits cut from one pooled set share one pool.
    indices : dict
        ``{split: [client j's sorted indices into the pool]}`` for the splits
        the partition makes (``train`` and ``test``; ``val`` where the
        algorithm holds out a validation split).

    Packages subclass it only to add what their partition records (FedPer's
    client names, FedFomo's latent distributions, pFedHN's class shares).
    """

    data: ImageData
    pools: dict[str, Split]
    indices: dict[str, list[np.ndarray]]

    @classmethod
    def from_split(
        cls,
        data: ImageData,
        x: torch.Tensor,
        y: torch.Tensor,
        split: ClientSplit,
        **extra: Any,
    ) -> Self:
        """Train and test indices of ``split`` into one pooled ``(x, y)``."""
        indices = {"train": list(split.train), "test": list(split.test)}
        return cls(data, cls.shared_pool(x, y, indices), indices, **extra)

    @staticmethod
    def shared_pool(
        x: torch.Tensor, y: torch.Tensor, indices: dict[str, list[np.ndarray]]
    ) -> dict[str, Split]:
        """``pools`` for splits that all index one pooled ``(x, y)``."""
        return {name: (x, y) for name in indices}

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.indices["train"])

    def split_of(self, pid: int, name: str) -> Split:
        """Client ``pid``'s ``(x, y)`` in split ``name``, gathered on the CPU."""
        if name not in self.indices:
            raise ValueError(
                f"split must be one of {sorted(self.indices)}, got {name!r}"
            )
        x, y = self.pools[name]
        idx = torch.from_numpy(self.indices[name][pid])
        return x[idx], y[idx]

    def size(self, pid: int, name: str = "train") -> int:
        """Client ``pid``'s number of samples in split ``name``."""
        return int(self.indices[name][pid].size)

    def sizes(self) -> dict[str, list[int]]:
        """Samples per client in each split."""
        return {name: [int(i.size) for i in idx] for name, idx in self.indices.items()}

    def class_counts(self, splits: tuple[str, ...] = ("train", "test")) -> np.ndarray:
        """Per-client class counts, shape ``(clients, len(splits), classes)``."""
        c = self.data.num_classes
        out = np.zeros((self.num_clients, len(splits), c), dtype=np.int64)
        for s, name in enumerate(splits):
            labels = self.pools[name][1].numpy()
            for j, idx in enumerate(self.indices[name]):
                out[j, s] = np.bincount(labels[idx], minlength=c)
        return out

    def tuning_view(self, seed: int) -> Self:
        """The splits a tuning run sees: the test split replaced by held-out validation.

        Each client's validation samples are split in two by a seeded draw
        (client by client, so a node holding one client's file draws the same
        halves): the first half stays the ``val`` split a method may select or
        weigh on, the second half becomes the ``test`` split every evaluation
        reports. The real test split is dropped, so nothing a tuning run
        records has read it, and no method scores on what it selected on.

        Raises
        ------
        ValueError
            If there is no validation split or a client holds fewer than two
            validation samples.
        """
        if "val" not in self.indices:
            raise ValueError("this partition holds out no validation split")
        kept, scored = [], []
        for pid, idx in enumerate(self.indices["val"]):
            if idx.size < 2 and self.size(pid) == 0:  # a node's foreign client
                kept.append(idx)
                scored.append(idx)
                continue
            if idx.size < 2:
                raise ValueError(
                    f"client {pid} holds {idx.size} validation sample(s); "
                    "a tuning run needs at least 2 (one to keep, one to score)"
                )
            order = np.random.default_rng(
                derive_seed(seed, pid, Stream.TUNING)
            ).permutation(idx.size)
            half = idx.size // 2
            kept.append(np.sort(idx[order[:half]]))
            scored.append(np.sort(idx[order[half:]]))
        indices = {**self.indices, "val": kept, "test": scored}
        pools = {**self.pools, "test": self.pools["val"]}
        return replace(self, pools=pools, indices=indices)
