"""NICE: a stack of additive coupling layers, a diagonal scaling and a factorised logistic prior.

Reference:
    NICE: Non-linear Independent Components Estimation. Laurent Dinh, David Krueger, Yoshua Bengio, 2014.
    arXiv:1410.8516.

Method (Sections 2-3 of the paper; ``h = f(x)`` is data -> latent, the direction of ``Transform.forward``):

* Change of variables with a factorised prior (Section 2)::

      log p_X(x) = sum_d log p_Hd(f_d(x)) + log |det df(x)/dx|

* Additive coupling (Section 3.2): split the dimensions into two sets ``I1, I2``; ::

      y_I1 = x_I1,        y_I2 = x_I2 + m(x_I1)

  with ``m`` any network (here an MLP). The Jacobian is unit lower-triangular, so ``log |det| = 0``; the inverse is
  ``x_I2 = y_I2 - m(y_I1)``. Consecutive layers swap the roles of ``I1`` and ``I2``; with four layers every
  dimension is changed at least twice (Section 3.4). In flowlib the split is a 0/1 ``mask`` (1 on ``I1``).

* Rescaling (Section 3.3): additive couplings preserve volume, so a last diagonal scaling ``S`` lets the model
  spend volume where it needs it: ``log p_X(x) = sum_d [log p_Hd(f_d(x)) + log |S_dd|]``.

* Prior (Section 3.4): the standard logistic, ``log p_Hd(h_d) = -log(1 + exp(h_d)) - log(1 + exp(-h_d))``.

MNIST setup of the paper (Section 5.1): 4 couplings, ``m`` with 5 hidden layers of 1000 ReLU units, partition of
the 784 pixels into odd and even indices, logistic prior, uniform dequantization to ``[0, 1]``, Adam with
``lr=1e-3, betas=(0.9, 0.01), eps=1e-4``; test log-likelihood 1980.50 nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from flowlib.distributions import StandardLogistic, StandardNormal
from flowlib.models.flow import Flow
from flowlib.nets import MLP
from flowlib.transforms import AdditiveCoupling, Compose, Flatten, Scaling, Transform, half_mask

__all__ = ["nice", "interleaved_mask", "initialize_scaling"]


def interleaved_mask(num_features: int, parity: int = 0) -> Tensor:
    """A ``(D,)`` 0/1 mask that is 1 on the even indices (parity 0) or on the odd ones (parity 1): NICE's partition.

    Example:
        >>> interleaved_mask(5).tolist()
        [1.0, 0.0, 1.0, 0.0, 1.0]
    """
    if num_features < 2:
        raise ValueError(f"a coupling mask needs at least 2 features, got {num_features}")
    return (torch.arange(num_features) % 2 == parity).to(torch.get_default_dtype())


def nice(
    event_shape: int | Sequence[int],
    *,
    num_couplings: int = 4,
    hidden_features: int = 1000,
    num_hidden_layers: int = 5,
    partition: str = "interleaved",
    prior: str = "logistic",
) -> Flow:
    """Build NICE for vectors ``(B, D)`` or images ``(B, C, H, W)`` (flattened to ``D = C*H*W`` first).

    Arguments:
        event_shape: ``D`` for vectors (2 for the 2-D toys) or ``(C, H, W)`` for images (``(1, 28, 28)`` for MNIST).
        num_couplings: number of additive coupling layers (4 in the paper).
        hidden_features, num_hidden_layers: the MLP ``m`` of each coupling (1000 and 5 in the paper on MNIST).
        partition: ``"interleaved"`` (odd/even indices, the paper's choice) or ``"half"`` (first/second half).
        prior: ``"logistic"`` (the paper) or ``"normal"``.

    Returns:
        a :class:`~flowlib.models.flow.Flow` whose ``log_prob`` takes ``(B, *event_shape)``.

    Example:
        >>> flow = nice(2, hidden_features=16, num_hidden_layers=2)
        >>> flow.log_prob(torch.randn(5, 2)).shape
        torch.Size([5])
    """
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    if len(shape) not in (1, 3):
        raise ValueError(f"event_shape must be D or (C, H, W), got {shape}")
    num_features = math.prod(shape)
    if num_features < 2:
        raise ValueError(f"NICE needs at least 2 dimensions to split, got event_shape={shape}")
    if num_couplings < 2:
        raise ValueError(f"num_couplings must be at least 2 so every dimension is transformed, got {num_couplings}")
    make_mask = {"interleaved": interleaved_mask, "half": half_mask}.get(partition)
    if make_mask is None:
        raise ValueError(f"partition must be 'interleaved' or 'half', got {partition!r}")
    priors = {"logistic": StandardLogistic, "normal": StandardNormal}
    if prior not in priors:
        raise ValueError(f"prior must be 'logistic' or 'normal', got {prior!r}")

    layers: list[Transform] = [Flatten(shape)] if len(shape) == 3 else []
    for index in range(num_couplings):
        # Section 3.2: y_I2 = x_I2 + m(x_I1); the next layer swaps I1 and I2 (parity alternates).
        conditioner = MLP(num_features, num_features, hidden_features, num_hidden_layers)
        layers.append(AdditiveCoupling(make_mask(num_features, parity=index % 2), conditioner))
    layers.append(Scaling(num_features))  # Section 3.3: diagonal scaling S, log|det| = sum_d log|S_dd|
    return Flow(Compose(*layers), priors[prior]((num_features,)))  # Section 3.4: factorised prior on h


@torch.no_grad()
def initialize_scaling(flow: Flow, x: Tensor, eps: float = 1e-3) -> None:
    """Data-dependent start for NICE's diagonal scaling (ours, not the paper's): ``S_dd = 1 / std_d`` of a batch.

    The additive couplings preserve volume, so only ``S`` can stretch the data to the width of the prior; trained
    from ``S = I`` with Adam it needs thousands of steps just to grow (the paper trains for thousands of epochs).
    Untrained couplings are the identity (zero-initialised last layers), so after this call the first batch reaches
    the prior with unit standard deviation per dimension.

    Arguments:
        flow: a model built by :func:`nice`, before training.
        x: a batch of training data ``(B, *event_shape)``.
        eps: floor on the standard deviation (for constant dimensions).
    """
    scaling = flow.transform[-1]
    if not isinstance(scaling, Scaling):
        raise TypeError("initialize_scaling expects a flow built by nice(), whose last layer is Scaling")
    h = x
    for layer in list(flow.transform)[:-1]:
        h, _ = layer(h)
    scaling.log_scale.copy_(-torch.log(h.std(dim=0) + eps))
