"""Novel clients drawn at a chosen distance from the training clients.

pFedHN's Section 5.3 holds clients out of training and fits only their
embedding afterwards, plotting accuracy against how far each novel client's
class distribution lies from the training clients'. The paper does not
publish the split; this module is the suite's, with every choice fixed here:

* The training clients are the authors' partition of the first
  ``num_clients - K`` partition-ids (``pfedhn.dataset``), unchanged.
* Novel client ``k`` (partition-id ``num_clients - K + k``) gets a class
  mix ``p_k ~ Dirichlet(alpha * 1)``, ``per_concentration`` clients for each
  ``alpha`` in ``novel.dirichlet``: large ``alpha`` gives mixes near uniform
  (close to the training population), small ``alpha`` mixes on one or two
  classes (far from it).
* In each split (train, validation, test) it gets ``sizes[split]`` images
  with that mix (floors, then the largest remainders), taken at random from
  the split's pool before the authors' cut; the training clients are then
  cut from what is left, by the authors' rule.
* Distances are total variation, ``0.5 * sum |p - q|``, of the novel
  client's realised training-split class mix from (a) the training
  population's pooled training-split mix and (b) the nearest single training
  client's; both are recorded per client.
"""

from __future__ import annotations

import numpy as np

from pflcore.config.seeds import stream_rng
from pflcore.data.partition import PartitionError

# Tag of the novel clients' stream, for their mixes and draws (fixed: it
# defines the clients).
NOVEL_STREAM = 11


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """``0.5 * sum |p - q|`` of two distributions over the same classes."""
    return float(0.5 * np.abs(np.asarray(p, float) - np.asarray(q, float)).sum())


def draw_mixes(
    concentrations: list[float], per_concentration: int, num_classes: int, seed: int
) -> list[tuple[float, np.ndarray]]:
    """``(alpha, p)`` for every novel client, in partition-id order."""
    rng = stream_rng(seed, NOVEL_STREAM)
    return [
        (float(a), rng.dirichlet(np.full(num_classes, float(a))))
        for a in concentrations
        for _ in range(per_concentration)
    ]


def class_counts(mix: np.ndarray, size: int) -> np.ndarray:
    """``size`` images split by ``mix``: floors, then the largest remainders."""
    exact = np.asarray(mix, float) * size
    counts = np.floor(exact).astype(np.int64)
    short = size - int(counts.sum())
    if short:
        # stable order: ties go to the lower class index
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def take_for_novel(
    labels: np.ndarray,
    mixes: list[tuple[float, np.ndarray]],
    size: int,
    split: str,
    seed: int,
) -> list[np.ndarray]:
    """Each novel client's ``size`` indices into ``labels``, drawn by its mix.

    Raises
    ------
    PartitionError
        If a class has fewer images in the split than the novel clients need.
    """
    num_classes = len(mixes[0][1])
    stream = 1 + ("train", "val", "test").index(split)
    rng = stream_rng(seed, NOVEL_STREAM, stream)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    out = []
    for _, mix in mixes:
        mine = []
        for c, n in enumerate(class_counts(mix, size)):
            if n > pools[c].size:
                raise PartitionError(
                    f"the novel clients need more {split} images of class {c} than "
                    f"the split holds; lower novel.sizes.{split} or the number of "
                    "novel clients"
                )
            mine.append(pools[c][:n])
            pools[c] = pools[c][n:]
        out.append(np.sort(np.concatenate(mine)).astype(np.int64))
    return out


def distances(
    novel_labels: list[np.ndarray], training_labels: list[np.ndarray], num_classes: int
) -> list[tuple[float, float]]:
    """``(tv_population, tv_nearest)`` of every novel client's training mix."""

    def mix(labels: np.ndarray) -> np.ndarray:
        counts = np.bincount(labels, minlength=num_classes).astype(float)
        return counts / counts.sum()

    population = mix(np.concatenate(training_labels))
    train_mixes = [mix(y) for y in training_labels]
    out = []
    for y in novel_labels:
        p = mix(y)
        out.append(
            (
                total_variation(p, population),
                min(total_variation(p, q) for q in train_mixes),
            )
        )
    return out
