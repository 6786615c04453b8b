"""Equal-sized clients with skewed label mixes, and a per-client three-way split.

Each client draws ``samples_per_client`` images without replacement from
per-class queues (:class:`ClassPools`): with a Dirichlet(alpha) label mix
(:func:`dirichlet_parts`, as Per-FedAvg's Jiang et al. pipeline draws them) or
with ``k`` distinct classes in equal shares (:func:`class_parts`). Both
return ``parts[j]``, client ``j``'s index arrays, one per class it holds;
:func:`split_three_ways` cuts every part into train, validation and test, so
each split of a client has that client's label mix.
"""

from __future__ import annotations

import numpy as np

from pflcore.data.partition import PartitionError

SPLITS = ("train", "val", "test")


class ClassPools:
    """Per-class queues of shuffled sample indices, drawn from without replacement.

    Parameters
    ----------
    labels : numpy.ndarray
        Label of every pooled sample.
    num_classes : int
        Number of classes.
    rng : numpy.random.Generator
        The queues' shuffles, class by class.
    """

    def __init__(
        self, labels: np.ndarray, num_classes: int, rng: np.random.Generator
    ) -> None:
        self.queues = [
            rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)
        ]
        self.used = [0] * num_classes

    def remaining(self) -> np.ndarray:
        """Samples left in each class's queue."""
        return np.array(
            [q.size - u for q, u in zip(self.queues, self.used, strict=True)]
        )

    def take(self, c: int, count: int) -> np.ndarray:
        """The next ``count`` indices of class ``c``.

        Raises
        ------
        PartitionError
            If the class has fewer samples left.
        """
        start = self.used[c]
        if start + count > self.queues[c].size:
            raise PartitionError(
                f"class {c} has {self.queues[c].size} samples but the partition needs "
                f"at least {start + count}: use fewer clients or fewer samples "
                "per client"
            )
        self.used[c] = start + count
        return self.queues[c][start : start + count]


def _check_sizes(num_clients: int, samples_per_client: int, available: int) -> None:
    if samples_per_client < 2:
        raise PartitionError(
            f"partition.samples_per_client must be >= 2, got {samples_per_client}"
        )
    if num_clients * samples_per_client > available:
        raise PartitionError(
            f"{num_clients} clients x {samples_per_client} samples exceed the "
            f"{available} images of the dataset"
        )


def dirichlet_parts(
    labels: np.ndarray,
    num_classes: int,
    num_clients: int,
    samples_per_client: int,
    alpha: float,
    rng: np.random.Generator,
    pools: ClassPools,
) -> list[list[np.ndarray]]:
    """Each client's Dirichlet(alpha) mix of ``samples_per_client`` images.

    A client draws its label proportions, then multinomial counts; a class
    that runs out is masked and the rest renormalised (if every class of the
    mix is used up, any class left), until the client has its images.

    Parameters
    ----------
    labels : numpy.ndarray
        Label of every pooled sample.
    num_classes : int
        Number of classes.
    num_clients : int
        Number of clients.
    samples_per_client : int
        Images per client (at least 2).
    alpha : float
        Concentration of the label mixes (> 0; small is skewed).
    rng : numpy.random.Generator
        The mixes' and counts' stream.
    pools : ClassPools
        The queues the images are taken from.

    Returns
    -------
    list of list of numpy.ndarray
        ``parts[j]``: client ``j``'s indices, one array per class it holds.

    Raises
    ------
    PartitionError
        If a setting is impossible or the data cannot supply every client.
    """
    if alpha <= 0:
        raise PartitionError(f"partition.alpha must be > 0, got {alpha}")
    _check_sizes(num_clients, samples_per_client, labels.size)
    parts: list[list[np.ndarray]] = []
    for _ in range(num_clients):
        mix = rng.dirichlet(np.full(num_classes, alpha))
        counts = np.zeros(num_classes, dtype=np.int64)
        need = samples_per_client
        while need > 0:
            left = pools.remaining() - counts
            weights = mix * (left > 0)
            if weights.sum() <= 0:  # the mix's classes are used up: any class left
                weights = (left > 0).astype(np.float64)
            draw = rng.multinomial(need, weights / weights.sum())
            draw = np.minimum(draw, left)
            counts += draw
            need -= int(draw.sum())
        parts.append([pools.take(c, int(n)) for c, n in enumerate(counts) if n > 0])
    return parts


def class_parts(
    labels: np.ndarray,
    num_classes: int,
    num_clients: int,
    samples_per_client: int,
    classes_per_client: int,
    seed: int,
) -> list[list[np.ndarray]]:
    """Each client's ``k`` distinct classes, in near-equal shares of its images.

    The classes are dealt from a seeded permutation of ``num_classes``
    repeated end to end, the next ``k`` per client: any ``k <= num_classes``
    consecutive entries are distinct, and every class is held by clients in
    turn, so the holders of two classes differ by at most one. A client's
    shares differ by at most one image.

    Parameters
    ----------
    labels : numpy.ndarray
        Label of every pooled sample.
    num_classes : int
        Number of classes.
    num_clients : int
        Number of clients.
    samples_per_client : int
        Images per client (at least ``max(2, k)``).
    classes_per_client : int
        ``k``, distinct classes per client (1..``num_classes``).
    seed : int
        Seed of the class deal (``[seed, 0]``) and of the queues (``[seed, 1]``).

    Returns
    -------
    list of list of numpy.ndarray
        ``parts[j]``: client ``j``'s indices, one array per class, in the
        order of its classes.

    Raises
    ------
    PartitionError
        If a setting is impossible or a class runs out of images.
    """
    k = classes_per_client
    if not 1 <= k <= num_classes:
        raise PartitionError(
            f"partition.classes_per_client must lie in 1..{num_classes}, got {k}"
        )
    _check_sizes(num_clients, samples_per_client, labels.size)
    if samples_per_client < k:
        raise PartitionError(
            f"partition.samples_per_client ({samples_per_client}) must be at least "
            f"classes_per_client ({k})"
        )
    deal = np.resize(
        np.random.default_rng([seed, 0]).permutation(num_classes), num_clients * k
    )
    pools = ClassPools(labels, num_classes, np.random.default_rng([seed, 1]))
    shares = np.full(k, samples_per_client // k)
    shares[: samples_per_client % k] += 1
    return [
        [
            pools.take(int(c), int(n))
            for c, n in zip(deal[j * k : (j + 1) * k], shares, strict=True)
        ]
        for j in range(num_clients)
    ]


def split_three_ways(
    parts: list[list[np.ndarray]],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, list[np.ndarray]]:
    """Cut every part of every client into train, validation and test.

    Each part is shuffled (the stream ``[seed, j]`` for client ``j``) and cut
    at ``round(test_fraction * n)`` test samples, then ``round(val_fraction *
    n)`` validation samples; the rest is training data, so each split keeps
    the client's label mix up to rounding.

    Parameters
    ----------
    parts : list of list of numpy.ndarray
        Client ``j``'s index arrays (one per class).
    val_fraction, test_fraction : float
        Shares of each part, each in (0, 1), together below 1.
    seed : int
        Seed of the shuffles.

    Returns
    -------
    dict
        ``{"train" | "val" | "test": [client j's sorted indices]}``.

    Raises
    ------
    PartitionError
        If the fractions are out of range or a client's split comes out empty.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1):
        raise PartitionError(
            "partition val_fraction and test_fraction must lie in (0, 1), got "
            f"{val_fraction} and {test_fraction}"
        )
    if val_fraction + test_fraction >= 1:
        raise PartitionError(
            f"val_fraction + test_fraction must be below 1, got "
            f"{val_fraction + test_fraction}"
        )
    out: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for j, client_parts in enumerate(parts):
        rng = np.random.default_rng([seed, j])
        cut: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
        for part in client_parts:
            shuffled = rng.permutation(part)
            n_test = round(test_fraction * shuffled.size)
            n_val = round(val_fraction * shuffled.size)
            cut["test"].append(shuffled[:n_test])
            cut["val"].append(shuffled[n_test : n_test + n_val])
            cut["train"].append(shuffled[n_test + n_val :])
        for name in SPLITS:
            joined = np.sort(np.concatenate(cut[name])).astype(np.int64)
            if joined.size == 0:
                raise PartitionError(
                    f"client {j} gets no {name} samples: raise "
                    "partition.samples_per_client or the split's fraction"
                )
            out[name].append(joined)
    return out
