"""pFedHN's server step as pure functions (no Flower import).

Shamsian, Navon, Fetaya, Chechik, *Personalized Federated Learning using
Hypernetworks*, ICML 2021. A client j trains the weights theta_j the
hypernetwork h(v_j; phi) generated for it and returns delta_j = theta_j -
theta_j'; the server steps phi and the embeddings along
(d theta_j / d (phi, v_j))^T delta_j, the vector-Jacobian product the authors'
``trainer.py`` takes with ``grad_outputs = old - new``
(:func:`hypernetwork_step`). A novel client steps its embedding alone with
phi frozen (:func:`embedding_step`). ``tests/test_pfedhn_strategy.py`` checks
the step against the gradient of an explicit objective.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

Weights = dict[str, torch.Tensor]


def hypernetwork_step(
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    generated: Iterable[tuple[Weights, Weights]],
    num_clients: int,
    clip: float,
) -> None:
    """One step of ``optimizer`` on ``params`` from the clients' deltas.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer over ``params`` (phi and the embeddings).
    params : list of torch.nn.Parameter
        Everything the gradient is clipped over.
    generated : iterable of (dict, dict)
        Per client, the weights theta_j the hypernetwork generated (still
        attached to its graph) and the delta_j the client returned; consumed
        one client at a time, so at most one client's graph need be held.
    num_clients : int
        The number of pairs: each VJP is divided by it (the mean over clients).
    clip : float
        The maximum gradient norm over ``params``.
    """
    optimizer.zero_grad(set_to_none=True)
    for theta, delta in generated:
        torch.autograd.backward(
            list(theta.values()),
            grad_tensors=[delta[k] / num_clients for k in theta],
        )
    torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()


def embedding_step(
    embedding: torch.Tensor,
    generate: Callable[[torch.Tensor], Weights],
    delta: Weights,
    optimizer: torch.optim.Optimizer,
    clip: float,
) -> None:
    """Step a novel client's ``embedding`` along its VJP, phi left untouched.

    The gradient is taken with respect to ``embedding`` alone, so phi's
    ``.grad`` is never written.
    """
    theta = generate(embedding)
    (grad,) = torch.autograd.grad(
        list(theta.values()), [embedding], grad_outputs=[delta[k] for k in theta]
    )
    embedding.grad = grad
    torch.nn.utils.clip_grad_norm_([embedding], clip)
    optimizer.step()
