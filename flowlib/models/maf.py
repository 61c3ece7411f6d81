"""Masked Autoregressive Flow (Papamakarios et al., 2017) for vectors.

A stack of MADE-parameterised affine autoregressive layers, the order of the features reversed between layers so
that every feature conditions every other. Densities take one network pass
per layer; sampling takes ``D`` passes per layer. The paper also puts batch normalisation between layers; flowlib
leaves it out (its output would depend on the batch, and the layers already start as the identity). With
``context_features=K`` every MADE also sees a context: the conditional MAF ``p(x | c)`` of the paper.

Reference: Masked Autoregressive Flow for Density Estimation. George Papamakarios, Theo Pavlakou, Iain Murray,
2017. arXiv:1705.07057.
"""

from __future__ import annotations

from flowlib.distributions import StandardNormal
from flowlib.models.flow import Flow
from flowlib.transforms import Compose, MaskedAutoregressive, Reverse, Transform

__all__ = ["maf"]


def maf(
    num_features: int = 2,
    *,
    num_layers: int = 5,
    hidden_features: int = 64,
    num_hidden_layers: int = 2,
    context_features: int = 0,
) -> Flow:
    """A MAF over ``(B, num_features)`` with a standard normal base.

    Arguments:
        num_features: ``D`` (at least 2).
        num_layers: autoregressive layers, with the feature order reversed between consecutive ones.
        hidden_features, num_hidden_layers: each MADE.
        context_features: ``K > 0`` builds the conditional flow ``p(x | c)`` with ``c`` of shape ``(B, K)``.

    Example:
        >>> import torch
        >>> flow = maf(3, num_layers=2, hidden_features=8)
        >>> flow.log_prob(torch.randn(4, 3)).shape, flow.sample(2).shape
        (torch.Size([4]), torch.Size([2, 3]))
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    layers: list[Transform] = []
    for index in range(num_layers):
        if index > 0:
            layers.append(Reverse())
        layers.append(MaskedAutoregressive(num_features, hidden_features, num_hidden_layers, context_features))
    return Flow(Compose(*layers), StandardNormal((num_features,)))
