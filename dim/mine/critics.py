"""Critics T(x, y) for estimating I(X;Y) between two arrays (MINE and friends).

Two families (Poole et al. 2019, §4):

- :class:`ConcatCritic` — an MLP on the concatenation ``[x; y]`` (the MINE paper's critic).
- :class:`SeparableCritic` — ``g(x) · h(y)``, two MLP encoders and a dot product; cheap on all
  pairs of a batch (one matrix product) but it can only express low-rank interactions.

Both expose ``forward(x, y)``, the scores of matched rows ``T(x_i, y_i)``;
``pair_scores(x, y)``, the full matrix ``S[i, j] = T(x_i, y_j)``; and
``candidate_scores(x, y, idx)``, ``S[i, k] = T(x_i, y_{idx[i, k]})`` for a chosen set of
candidates per row.  Critics know nothing about bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import torch
from torch import Tensor, nn

from dim.errors import DimError
from dim.nets.mlp import mlp

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def _activation(name: str) -> type[nn.Module]:
    """The activation class of a name (a zero-argument factory for :func:`dim.nets.mlp.mlp`)."""
    if name not in _ACTIVATIONS:
        raise DimError(f"unknown activation '{name}'; choose one of: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _check_size(hidden: int, layers: int) -> None:
    if layers < 1 or hidden < 1:
        raise DimError(f"critic needs layers >= 1 and hidden >= 1, got {layers} and {hidden}")


class ConcatCritic(nn.Module):
    """T(x, y) = MLP([x; y]).

    The first layer is linear, so ``W [x; y] = W_x x + W_y y``: for all pairs of a batch the two
    halves are computed once per row and broadcast-added, which saves the first layer's cost on
    the B² pairs (only the deeper layers run per pair).

    Args:
        x_dim: features of x.
        y_dim: features of y.
        hidden: width of the hidden layers.
        layers: number of hidden layers (>= 1).
        activation: ``relu``, ``elu``, ``silu`` or ``tanh``.
    """

    def __init__(
        self, x_dim: int, y_dim: int, hidden: int = 256, layers: int = 2, activation: str = "relu"
    ) -> None:
        super().__init__()
        _check_size(hidden, layers)
        act = _activation(activation)
        self.x_in = nn.Linear(x_dim, hidden)
        self.y_in = nn.Linear(y_dim, hidden, bias=False)
        self.act = act()
        # The remaining layers-1 hidden layers and the output layer, applied per pair.
        self.body = mlp(hidden, [hidden] * (layers - 1), 1, act)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Scores of matched rows, shape ``(B,)``."""
        return self.body(self.act(self.x_in(x) + self.y_in(y))).squeeze(-1)

    def pair_scores(self, x: Tensor, y: Tensor) -> Tensor:
        """All pairs: ``S[i, j] = T(x_i, y_j)``, shape ``(len(x), len(y))``."""
        h = self.act(self.x_in(x)[:, None, :] + self.y_in(y)[None, :, :])
        return self.body(h).squeeze(-1)

    def candidate_scores(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        """``S[i, k] = T(x_i, y_{idx[i, k]})``, shape ``idx.shape``."""
        h = self.act(self.x_in(x)[:, None, :] + self.y_in(y)[idx])
        return self.body(h).squeeze(-1)


class SeparableCritic(nn.Module):
    """T(x, y) = g(x) · h(y) with MLP encoders g, h to an ``embed``-dimensional space.

    Args:
        x_dim: features of x.
        y_dim: features of y.
        hidden: width of the encoders' hidden layers.
        layers: hidden layers per encoder.
        embed: dimension of the shared embedding space.
        activation: ``relu``, ``elu``, ``silu`` or ``tanh``.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden: int = 256,
        layers: int = 2,
        embed: int = 32,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        _check_size(hidden, layers)
        act = _activation(activation)
        self.g = mlp(x_dim, [hidden] * layers, embed, act)
        self.h = mlp(y_dim, [hidden] * layers, embed, act)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Scores of matched rows, shape ``(B,)``."""
        return (self.g(x) * self.h(y)).sum(-1)

    def pair_scores(self, x: Tensor, y: Tensor) -> Tensor:
        """All pairs: ``S[i, j] = g(x_i) · h(y_j)``, shape ``(len(x), len(y))``."""
        return self.g(x) @ self.h(y).T

    def candidate_scores(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        """``S[i, k] = g(x_i) · h(y_{idx[i, k]})``, shape ``idx.shape``."""
        return (self.g(x)[:, None, :] * self.h(y)[idx]).sum(-1)


# A critic built by :func:`build_critic`: what the training loop and the estimators accept.
Critic: TypeAlias = "ConcatCritic | SeparableCritic"

CRITICS: dict[str, Callable[..., Critic]] = {"concat": ConcatCritic, "separable": SeparableCritic}
# What ``dim-mine`` uses where its ``model.layers`` / ``model.embed`` are null.
CRITIC_DEFAULTS: dict[str, dict[str, int]] = {
    "concat": {"layers": 1},
    "separable": {"layers": 2, "embed": 32},
}


def build_critic(name: str, x_dim: int, y_dim: int, **kwargs: int | str) -> Critic:
    """Build a critic by name (``concat`` or ``separable``) for inputs of the given widths."""
    if name not in CRITICS:
        raise DimError(f"unknown critic '{name}'; choose one of: {', '.join(CRITICS)}")
    if name == "concat":
        kwargs.pop("embed", None)
    return CRITICS[name](x_dim, y_dim, **kwargs)


@torch.no_grad()
def chunked_pair_scores(critic: Critic, x: Tensor, y: Tensor, rows: int = 128) -> Tensor:
    """``critic.pair_scores`` computed in row chunks, to bound memory on large evaluation blocks."""
    return torch.cat([critic.pair_scores(x[i : i + rows], y) for i in range(0, len(x), rows)])
