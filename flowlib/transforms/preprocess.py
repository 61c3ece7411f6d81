"""Pre-processing bijections between the data cube ``[0, 1]^D`` and ``R^D``."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional

from flowlib.transforms._shapes import sum_except_batch
from flowlib.transforms.base import Transform

__all__ = ["Logit", "InputOutsideDomainError"]


def _is_compiling() -> bool:
    """Whether ``torch.compile`` is tracing this call (``torch.compiler.is_compiling``, torch >= 2.3)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling is not None and is_compiling())


class InputOutsideDomainError(ValueError):
    """Raised when a transform gets values outside the set it is defined on (e.g. ``Logit`` outside ``[0, 1]``)."""


class Logit(Transform):
    """Map ``[0, 1]`` to ``R``: ``y = logit(alpha + (1 - 2 alpha) x)``, with its exact log-det.

    Squeezing into ``[alpha, 1 - alpha]`` first keeps the output finite at the edges 0 and 1 of dequantized pixels.
    The log-det per entry is ``log(1 - 2 alpha) - log p - log(1 - p)`` with ``p = alpha + (1 - 2 alpha) x``; the
    inverse is a sigmoid, its log-det computed with ``logsigmoid`` so it stays finite for large ``|y|``.

    Arguments:
        alpha: margin in ``[0, 0.5)``; ``alpha = 0`` is the plain logit (infinite at 0 and 1).
        check_domain: whether ``forward`` raises :class:`InputOutsideDomainError` for inputs outside ``[0, 1]``
            (NaN included). ``None`` (default): check CPU tensors only. The check reads a result back to the host,
            which on a GPU stalls the pipeline once per call, so there (and inside ``torch.compile``) it is skipped
            unless ``check_domain=True``; out-of-domain values then give NaN log-likelihoods, which
            :func:`flowlib.train.fit` reports as a :class:`~flowlib.train.NonFiniteLossError`.

    Shapes: any ``(B, ...)`` with entries in ``[0, 1]``; log-det ``(B,)``.

    References:
        Density estimation using Real NVP. Dinh, Sohl-Dickstein, Bengio, 2016. arXiv:1605.08803 (Section 4.1).

    Example:
        >>> import torch
        >>> layer = Logit(alpha=0.05)
        >>> x = torch.tensor([[0.0, 0.5, 1.0]])
        >>> y, logabsdet = layer(x)
        >>> [round(v, 4) for v in y[0].tolist()]
        [-2.9444, 0.0, 2.9444]
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-6)
        True
    """

    def __init__(self, alpha: float = 0.05, check_domain: bool | None = None):
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha
        self.check_domain = check_domain

    def _check_domain(self, x: Tensor) -> None:
        inside = (x >= 0) & (x <= 1)  # False for NaN, unlike (x < 0) | (x > 1)
        if not bool(inside.all()):
            outside = x[~inside]
            raise InputOutsideDomainError(
                f"Logit expects inputs in [0, 1], got {outside.numel()} value(s) outside it (e.g. "
                f"{float(outside[0]):.4g}; NaN counts as outside); scale the data to [0, 1] first "
                "(e.g. flowlib.data.dequantize) and check the data for NaN"
            )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check = self.check_domain
        if check is None:
            check = x.device.type == "cpu" and not _is_compiling()
        if check:
            self._check_domain(x)
        p = self.alpha + (1.0 - 2.0 * self.alpha) * x
        log_p, log_one_minus_p = torch.log(p), torch.log1p(-p)
        logabsdet = sum_except_batch(math.log(1.0 - 2.0 * self.alpha) - log_p - log_one_minus_p)
        return log_p - log_one_minus_p, logabsdet

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = (torch.sigmoid(z) - self.alpha) / (1.0 - 2.0 * self.alpha)
        log_derivative = functional.logsigmoid(z) + functional.logsigmoid(-z) - math.log(1.0 - 2.0 * self.alpha)
        return x, sum_except_batch(log_derivative)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + ("" if self.check_domain is None else f", check_domain={self.check_domain}")
