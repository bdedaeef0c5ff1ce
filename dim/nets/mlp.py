"""The one MLP builder: a stack of Linear + activation layers ending in a Linear to ``out_dim``.

Used by the prior discriminator, the NDM discriminator and the MINE critics.  The result is a
plain ``nn.Sequential`` laid out ``[Linear, act, Linear, act, ..., Linear]``, so its state_dict
keys are ``0.weight, 0.bias, 2.weight, ...`` (checkpoints written before this builder existed
load unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int = 1,
    activation: Callable[[], nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """``in_dim -> hidden[0] -> ... -> hidden[-1] -> out_dim``, ``activation()`` after each hidden.

    Args:
        in_dim: input features.
        hidden: widths of the hidden layers, in order (empty: a single Linear).
        out_dim: output features (1: one score per input row).
        activation: a zero-argument factory of the activation module, called once per hidden
            layer (e.g. ``nn.SiLU`` or ``functools.partial(nn.ReLU, inplace=True)``).

    Returns:
        The network; layers are created in order, so a seeded build is reproducible.
    """
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), activation()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)
