"""Invertible layers of flowlib: one contract (:mod:`flowlib.transforms.base`), layers grouped by family.

``forward(x) -> (z, logabsdet)`` maps data to latent, ``inverse(z) -> (x, logabsdet)`` maps back; log-dets have
shape ``(batch,)``. Conditional layers also take ``context=`` (``(B, K)``) in both directions.

Families: couplings (additive, affine, PIE, rational-quadratic spline), autoregressive (MAF), invertible linear
maps, reshapes, factor-out (``Split``), pre-processing (``Logit``).
"""

from __future__ import annotations

from flowlib.transforms.autoregressive import MaskedAutoregressive
from flowlib.transforms.base import (
    Compose,
    InputDtypeError,
    InputShapeError,
    Inverse,
    InverseNotAvailable,
    Transform,
    batch_zeros,
)
from flowlib.transforms.coupling import (
    AdditiveCoupling,
    AffineCoupling,
    PIECoupling,
    channel_mask,
    checkerboard_mask,
    half_mask,
)
from flowlib.transforms.linear import (
    ActNorm,
    Householder1x1Conv,
    HouseholderLinear,
    Invertible1x1Conv,
    Permutation,
    Reverse,
    Scaling,
)
from flowlib.transforms.preprocess import InputOutsideDomainError, Logit
from flowlib.transforms.reshape import Flatten, Reshape, Squeeze
from flowlib.transforms.spline import RationalQuadraticCoupling, rational_quadratic_spline
from flowlib.transforms.split import Split, gaussian_log_prob

__all__ = [
    "Transform",
    "Compose",
    "Inverse",
    "InputDtypeError",
    "InputShapeError",
    "InverseNotAvailable",
    "InputOutsideDomainError",
    "batch_zeros",
    "checkerboard_mask",
    "channel_mask",
    "half_mask",
    "AdditiveCoupling",
    "AffineCoupling",
    "PIECoupling",
    "RationalQuadraticCoupling",
    "rational_quadratic_spline",
    "MaskedAutoregressive",
    "HouseholderLinear",
    "Householder1x1Conv",
    "Invertible1x1Conv",
    "Permutation",
    "Reverse",
    "ActNorm",
    "Scaling",
    "Squeeze",
    "Flatten",
    "Reshape",
    "Split",
    "gaussian_log_prob",
    "Logit",
]
