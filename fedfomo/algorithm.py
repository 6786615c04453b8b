"""FedFomo's maths as pure functions (no Flower import).

Zhang, Sapra, Fidler, Yeung, Alvarez, *Personalized Federated Learning with
First Order Model Optimization*, ICLR 2021 (arXiv:2012.08565). The client
weighs each candidate model n by w_n = (L(θ_b) - L(θ_n)) / ‖θ_n - θ_b‖ on
its validation split (:func:`fomo_weights`) and moves its baseline by the
normalised positive weights (:func:`fomo_update`); the server keeps the
affinity matrix P that the signed weights update (:func:`update_affinity`)
and picks each client's candidates epsilon-greedily from it
(:func:`choose_candidates`, :func:`exploration_rate`), optionally clustering
clients on P (:func:`cluster_clients`). The tests check each against hand-worked
values.
"""

from __future__ import annotations

import numpy as np
import torch

from fedfomo.settings import NORMS

DISTANCE_FLOOR = 1e-12

State = dict[str, torch.Tensor]


# -- the client's FOMO update ---------------------------------------------------


def model_distance(a: State, b: State, norm: str = "l1") -> float:
    """Distance between two models over their floating tensors.

    Parameters
    ----------
    a, b : dict
        State dicts with the same keys.
    norm : str
        ``l1``: sum of absolute differences (the authors' default);
        ``l2``: Euclidean norm of the flattened difference;
        ``l2_squared``: its square (what the authors' ``l2`` option returns).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    # Summed tensor by tensor in float64 on the tensors' device, read once.
    device = next(iter(a.values())).device if a else torch.device("cpu")
    total = torch.zeros((), dtype=torch.float64, device=device)
    for key, value in a.items():
        if not torch.is_floating_point(value):
            continue
        diff = value.detach().double() - b[key].detach().double()
        total += diff.abs().sum() if norm == "l1" else diff.square().sum()
    distance = float(total)
    return distance**0.5 if norm == "l2" else distance


def fomo_weights(
    baseline_loss: float, candidate_losses: np.ndarray, distances: np.ndarray
) -> np.ndarray:
    """w_n = (L(θ_b) - L(θ_n)) / max(‖θ_n - θ_b‖, 1e-12), signs kept."""
    losses = np.asarray(candidate_losses, dtype=np.float64)
    dist = np.maximum(np.asarray(distances, dtype=np.float64), DISTANCE_FLOOR)
    return (float(baseline_loss) - losses) / dist


def normalized_positive(weights: np.ndarray) -> np.ndarray:
    """max(w, 0) / Σ max(w, 0); all zeros when no weight is positive."""
    positive = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    total = positive.sum()
    return positive / total if total > 0 else positive


def fomo_update(baseline: State, candidates: list[State], weights: np.ndarray) -> State:
    """θ_b + Σ_n w̄_n (θ_n - θ_b), with w̄ the normalised positive weights.

    Returns a copy of the baseline when no weight is positive. Non-floating
    tensors are kept from the baseline.
    """
    shares = normalized_positive(weights)
    out: State = {}
    for key, base in baseline.items():
        if not torch.is_floating_point(base):
            out[key] = base.clone()
            continue
        acc = base.detach().double().clone()
        for share, cand in zip(shares, candidates, strict=True):
            if share > 0:
                acc += share * (cand[key].detach().double() - base.double())
        out[key] = acc.to(base.dtype)
    return out


# -- the learning-rate schedule (FedFomo's local update, also its baselines') ----


def round_lr(
    lr: float, server_round: int, *, lr_decay: float = 1.0, lr_min: float = 0.0
) -> float:
    """``lr * lr_decay ** (server_round - 1)``, floored at ``lr_min``."""
    decay = float(lr_decay)
    floor = float(lr_min)
    return max(float(lr) * decay ** (server_round - 1), floor)


# -- the server's affinity matrix and candidates -----------------------------------

SELF_AFFINITY = 0.1
SUM_FLOOR = 1e-9


def exploration_rate(
    round_index: int, initial: float = 0.3, decay: float = 0.05
) -> float:
    """ε_t = max(0, initial - decay * t)."""
    return max(0.0, initial - decay * round_index)


def initial_affinity(num_clients: int) -> np.ndarray:
    """P with P_ii = 0.1 and all other entries 0."""
    return np.eye(num_clients) * SELF_AFFINITY


def choose_candidates(
    affinity_row: np.ndarray,
    pool: list[int],
    client: int,
    count: int,
    epsilon: float,
    rng: np.random.Generator,
) -> list[int]:
    """Pick up to ``count`` other clients from ``pool``, epsilon-greedily.

    For each slot a uniform draw below ``epsilon`` takes the next client of a
    random permutation of the pool; otherwise the next client in descending
    affinity (ties in random order). Clients already chosen are skipped.

    Parameters
    ----------
    affinity_row : numpy.ndarray
        P_i, client ``client``'s affinity to every client.
    pool : list of int
        Clients that uploaded last round (``client`` itself is excluded).
    client : int
        The receiving client.
    count : int
        M - 1.
    epsilon : float
        Exploration probability.
    rng : numpy.random.Generator
        The run's exploration generator.

    Returns
    -------
    list of int
        The chosen partition-ids, in the order chosen.
    """
    others = np.array(sorted(p for p in set(pool) if p != client), dtype=np.int64)
    wanted = min(count, others.size)
    if wanted <= 0:
        return []
    explore = iter(rng.permutation(others).tolist())
    ties = rng.random(others.size)
    greedy = iter(others[np.lexsort((ties, -affinity_row[others]))].tolist())
    chosen: list[int] = []
    while len(chosen) < wanted:
        source = explore if rng.random() < epsilon else greedy
        for candidate in source:
            if candidate not in chosen:
                chosen.append(candidate)
                break
    return chosen


def update_affinity(
    affinity: np.ndarray, client: int, candidates: list[int], weights: list[float]
) -> None:
    """P_{i,n} += w_n / max(|Σ_m w_m|, 1e-9) for every candidate, in place.

    The sum runs over all the client's weights (negative ones included, before
    clipping); the cluster and global candidates (negative ids) take part in
    the sum but have no entry in P.
    """
    total = max(abs(float(np.sum(weights))), SUM_FLOOR)
    for n, w in zip(candidates, weights, strict=True):
        if n >= 0:
            affinity[client, n] += w / total


def softmax_rows(affinity: np.ndarray) -> np.ndarray:
    """Each row of P as a softmax, exp(P_i) / sum exp(P_i).

    The authors' ``--softmax_client_weights``, used for the clustering only.
    """
    shifted = affinity - affinity.max(axis=1, keepdims=True)
    expd = np.exp(shifted)
    return expd / expd.sum(axis=1, keepdims=True)


def cluster_clients(affinity: np.ndarray, num_clusters: int, seed: int) -> np.ndarray:
    """The authors' clusters of clients: spectral clustering of the symmetrised softmax.

    ``A = (S + S^T) / 2`` with ``S`` the row-softmax of P, clustered by
    ``sklearn.cluster.SpectralClustering(affinity="precomputed", n_init=10,
    assign_labels="discretize", random_state=seed)`` (``GlobalServer``'s
    ``get_adjacency_matrix`` and ``update_server_models`` in NVlabs/FedFomo).

    Returns
    -------
    numpy.ndarray
        Cluster id of every client, ``0..num_clusters-1``.
    """
    from sklearn.cluster import SpectralClustering

    soft = softmax_rows(affinity)
    symmetric = (soft + soft.T) / 2
    if num_clusters == 1:
        return np.zeros(affinity.shape[0], dtype=np.int64)
    model = SpectralClustering(
        n_clusters=num_clusters,
        affinity="precomputed",
        n_init=10,
        random_state=seed,
        assign_labels="discretize",
    )
    return np.asarray(model.fit_predict(symmetric), dtype=np.int64)
