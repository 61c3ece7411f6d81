"""Base distributions of flowlib.

* :mod:`flowlib.distributions.continuous`: densities for flows (standard normal and logistic, diagonal Gaussian).
* :mod:`flowlib.distributions.discretized`: discretized logistic (and its mixture) for integer data, the priors of
  Integer Discrete Flows; their CDF tables for the rANS coder live in :mod:`flowlib.coding.cdf`.
* :mod:`flowlib.distributions.torch_base`: any ``torch.distributions.Distribution`` as a flow's base.
"""

from __future__ import annotations

from flowlib.distributions.continuous import DiagonalGaussian, StandardLogistic, StandardNormal
from flowlib.distributions.discretized import DiscretizedLogistic, DiscretizedLogisticMixture
from flowlib.distributions.torch_base import TemperatureNotSupportedError, TorchDistribution

__all__ = [
    "StandardNormal",
    "StandardLogistic",
    "DiagonalGaussian",
    "DiscretizedLogistic",
    "DiscretizedLogisticMixture",
    "TemperatureNotSupportedError",
    "TorchDistribution",
]
