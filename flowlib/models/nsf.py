"""Neural Spline Flow with coupling layers (RQ-NSF (C), Durkan et al., 2019) for vectors.

Each layer keeps half of the features and maps the other half through a monotonic rational-quadratic spline whose
``K`` bin widths, heights and ``K - 1`` inner derivatives come from an MLP of the kept half (the coupling
variant of the paper); the halves swap every layer. Outside ``[-B, B]`` the splines are the identity (linear tails), so the
flow acts on data standardised to a few units. With ``context_features=K`` every MLP also sees a context and the
model is the conditional density ``p(x | c)``.

Reference: Neural Spline Flows. Conor Durkan, Artur Bekasov, Iain Murray, George Papamakarios, 2019.
arXiv:1906.04068.
"""

from __future__ import annotations

from flowlib.distributions import StandardNormal
from flowlib.models.flow import Flow
from flowlib.nets import MLP
from flowlib.transforms import Compose, RationalQuadraticCoupling, half_mask

__all__ = ["neural_spline_flow"]


def neural_spline_flow(
    num_features: int = 2,
    *,
    num_couplings: int = 4,
    num_bins: int = 8,
    tail_bound: float = 3.0,
    hidden_features: int = 64,
    num_hidden_layers: int = 2,
    context_features: int = 0,
) -> Flow:
    """A coupling Neural Spline Flow over ``(B, num_features)`` with a standard normal base.

    Arguments:
        num_features: ``D`` (at least 2).
        num_couplings: spline couplings, alternating which half is transformed (at least 2).
        num_bins, tail_bound: ``K`` bins on ``[-B, B]`` (see :class:`~flowlib.transforms.RationalQuadraticCoupling`).
        hidden_features, num_hidden_layers: each MLP conditioner (``3K - 1`` outputs per transformed feature).
        context_features: ``K_c > 0`` builds the conditional flow ``p(x | c)`` with ``c`` of shape ``(B, K_c)``.

    Example:
        >>> import torch
        >>> flow = neural_spline_flow(2, num_couplings=2, hidden_features=16)
        >>> flow.log_prob(torch.randn(3, 2)).shape, flow.sample(4).shape
        (torch.Size([3]), torch.Size([4, 2]))
    """
    if num_features < 2:
        raise ValueError(f"a coupling needs at least 2 features, got num_features={num_features}")
    if num_couplings < 2:
        raise ValueError(f"num_couplings must be at least 2 so that every feature is transformed, got {num_couplings}")
    layers = [
        RationalQuadraticCoupling(
            half_mask(num_features, parity=index % 2),
            MLP(num_features, (3 * num_bins - 1) * num_features, hidden_features, num_hidden_layers,
                context_features=context_features),
            num_bins=num_bins,
            tail_bound=tail_bound,
        )
        for index in range(num_couplings)
    ]
    return Flow(Compose(*layers), StandardNormal((num_features,)))
