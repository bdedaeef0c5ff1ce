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


class GaussianConcatCritic(nn.Module):
    """T(x, y) = Gaussian log density ratio + MLP([x; y]) (the ``gauss`` critic, the default).

    The first term is ``log p(x, y) / (p(x) p(y))`` of the Gaussian with the covariance of the
    training pairs (set by :meth:`fit`, then frozen): the optimal critic when the dependence is
    Gaussian, as it is after the copula transform for every task whose X and Y are coordinatewise
    monotone maps of jointly normal variables.  The second term is a :class:`ConcatCritic` whose
    output layer starts at zero, so training starts from the Gaussian critic and the MLP only
    learns what the Gaussian misses (heavy-tailed, sharp or bent dependence).  With ``fit`` never
    called the first term is zero and this is a plain concat critic.

    Args:
        x_dim, y_dim, hidden, layers, activation: as for :class:`ConcatCritic`.
    """

    a_xx: Tensor
    a_xy: Tensor
    a_yy: Tensor
    const: Tensor
    center_x: Tensor
    center_y: Tensor

    def __init__(
        self, x_dim: int, y_dim: int, hidden: int = 256, layers: int = 1, activation: str = "silu"
    ) -> None:
        super().__init__()
        self.residual = ConcatCritic(x_dim, y_dim, hidden, layers, activation)
        last = self.residual.body[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.register_buffer("a_xx", torch.zeros(x_dim, x_dim))
        self.register_buffer("a_xy", torch.zeros(x_dim, y_dim))
        self.register_buffer("a_yy", torch.zeros(y_dim, y_dim))
        self.register_buffer("const", torch.zeros(()))
        self.register_buffer("center_x", torch.zeros(x_dim))
        self.register_buffer("center_y", torch.zeros(y_dim))

    @torch.no_grad()
    def fit(self, x: Tensor, y: Tensor, ridge: float = 1e-3) -> float:
        """Set the Gaussian term from training pairs; returns its plug-in MI (nats)."""
        z = torch.cat([x, y], 1).double()
        dx = x.shape[1]
        cov = torch.cov(z.T).reshape(z.shape[1], z.shape[1])
        cov = cov + ridge * torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
        prec = torch.linalg.inv(cov)
        a = -0.5 * prec
        a[:dx, :dx] += 0.5 * torch.linalg.inv(cov[:dx, :dx])
        a[dx:, dx:] += 0.5 * torch.linalg.inv(cov[dx:, dx:])
        logdet = torch.linalg.slogdet
        mi = 0.5 * (logdet(cov[:dx, :dx])[1] + logdet(cov[dx:, dx:])[1] - logdet(cov)[1])
        mean = z.mean(0)
        self.center_x.copy_(mean[:dx])
        self.center_y.copy_(mean[dx:])
        self.a_xx.copy_(a[:dx, :dx])
        self.a_xy.copy_(a[:dx, dx:])
        self.a_yy.copy_(a[dx:, dx:])
        # log p(x,y) - log p(x) - log p(y) = quadratic form + this constant.
        self.const.copy_(mi)
        return float(mi)

    @torch.no_grad()
    def scale_gaussian(self, factor: float) -> None:
        """Multiply the Gaussian term (quadratic form and constant) by ``factor``, in place.

        ``factor`` < 1 shrinks the fitted log density ratio toward the constant critic: what the
        estimator's validation-chosen shrinkage uses (:data:`dim.mine.estimator.GAUSS_SHRINK`).
        """
        for buf in (self.a_xx, self.a_xy, self.a_yy, self.const):
            buf.mul_(factor)

    def _centred(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return x - self.center_x, y - self.center_y

    def _quad(self, x: Tensor) -> Tensor:
        return ((x @ self.a_xx) * x).sum(-1)

    def _quad_y(self, y: Tensor) -> Tensor:
        return ((y @ self.a_yy) * y).sum(-1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Scores of matched rows, shape ``(B,)``."""
        cx, cy = self._centred(x, y)
        gauss = self._quad(cx) + self._quad_y(cy) + 2 * ((cx @ self.a_xy) * cy).sum(-1)
        return gauss + self.const + self.residual(x, y)

    def pair_scores(self, x: Tensor, y: Tensor) -> Tensor:
        """All pairs: ``S[i, j] = T(x_i, y_j)``."""
        cx, cy = self._centred(x, y)
        gauss = self._quad(cx)[:, None] + self._quad_y(cy)[None, :] + 2 * (cx @ self.a_xy) @ cy.T
        return gauss + self.const + self.residual.pair_scores(x, y)

    def candidate_scores(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        """``S[i, k] = T(x_i, y_{idx[i, k]})``."""
        cx, cy = self._centred(x, y)
        cyk = cy[idx]
        gauss = self._quad(cx)[:, None] + self._quad_y(cyk)
        gauss = gauss + 2 * ((cx @ self.a_xy)[:, None, :] * cyk).sum(-1)
        return gauss + self.const + self.residual.candidate_scores(x, y, idx)


# A critic built by :func:`build_critic`: what the training loop and the estimators accept.
Critic: TypeAlias = "ConcatCritic | SeparableCritic | GaussianConcatCritic"

CRITICS: dict[str, Callable[..., Critic]] = {
    "gauss": GaussianConcatCritic,
    "concat": ConcatCritic,
    "separable": SeparableCritic,
}
# What ``dim-mine`` uses where its ``model.layers`` / ``model.embed`` are null.
CRITIC_DEFAULTS: dict[str, dict[str, int]] = {
    "gauss": {"hidden": 64, "layers": 2},
    "concat": {"hidden": 256, "layers": 1},
    "separable": {"hidden": 256, "layers": 2, "embed": 32},
}


def build_critic(name: str, x_dim: int, y_dim: int, **kwargs: int | str) -> Critic:
    """Build a critic by name (``concat`` or ``separable``) for inputs of the given widths."""
    if name not in CRITICS:
        raise DimError(f"unknown critic '{name}'; choose one of: {', '.join(CRITICS)}")
    if name in ("concat", "gauss"):
        kwargs.pop("embed", None)
    return CRITICS[name](x_dim, y_dim, **kwargs)


@torch.no_grad()
def chunked_pair_scores(critic: Critic, x: Tensor, y: Tensor, rows: int = 128) -> Tensor:
    """``critic.pair_scores`` computed in row chunks, to bound memory on large evaluation blocks."""
    return torch.cat([critic.pair_scores(x[i : i + rows], y) for i in range(0, len(x), rows)])
