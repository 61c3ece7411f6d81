"""Masked autoregressive transform: the layer of Masked Autoregressive Flow (Papamakarios et al., 2017).

Each feature is shifted and scaled by functions of the features before it (Section 3 of the paper)::

    x_i = u_i exp(alpha_i) + mu_i,   (mu_i, alpha_i) = f_i(x_1, ..., x_{i-1})

so the data-to-latent direction ``u_i = (x_i - mu_i) exp(-alpha_i)`` needs one pass of a MADE network for all
``i`` at once, and the Jacobian is triangular with ``log |det du/dx| = -sum_i alpha_i``. The inverse
(sampling) recomputes ``x`` one feature at a time, ``D`` passes. MAF is therefore fast to train and to evaluate
densities, slow to sample; stacking layers with reversed orders (:class:`~flowlib.transforms.Reverse`) lets every
feature depend on every other.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowlib.nets import MADE
from flowlib.transforms._shapes import check_event_shape
from flowlib.transforms.base import Transform
from flowlib.transforms.coupling import _bounded

__all__ = ["MaskedAutoregressive"]


class MaskedAutoregressive(Transform):
    """Affine autoregressive transform ``u_i = (x_i - mu_i(x_<i)) exp(-alpha_i(x_<i))`` with a MADE conditioner.

    ``alpha = scale_bound * tanh(raw / scale_bound)`` bounds every log-scale, as in flowlib's couplings; the MADE's
    zero-initialised output layer makes the layer start as the identity.

    Arguments:
        num_features: ``D``.
        hidden_features, num_hidden_layers: the MADE's width (at least ``D - 1``) and depth.
        context_features: size ``K`` of a context ``(B, K)`` for a conditional MAF (0: none).
        scale_bound: bound on ``|alpha|``.

    Shapes: ``(B, D) -> (B, D)``, log-det ``(B,)``; ``forward`` is one network pass, ``inverse`` ``D`` passes.

    References:
        Masked Autoregressive Flow for Density Estimation. Papamakarios, Pavlakou, Murray, 2017. arXiv:1705.07057.
        MADE: Masked Autoencoder for Distribution Estimation. Germain, Gregor, Murray, Larochelle, 2015.
        arXiv:1502.03509.

    Example:
        >>> layer = MaskedAutoregressive(3, hidden_features=8)
        >>> with torch.no_grad():
        ...     _ = layer.made.output[-1].weight.normal_()  # leave the identity start
        >>> x = torch.randn(4, 3)
        >>> z, logabsdet = layer(x)
        >>> x_back, inverse_logabsdet = layer.inverse(z)
        >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(logabsdet, -inverse_logabsdet, atol=1e-5)
        (True, True)
        >>> later_changed = x + torch.tensor([0.0, 1.0, 1.0])
        >>> torch.equal(layer(later_changed)[0][:, 0], z[:, 0])  # u_1 does not depend on x_2, x_3
        True
    """

    accepts_context = True

    def __init__(
        self,
        num_features: int,
        hidden_features: int = 64,
        num_hidden_layers: int = 2,
        context_features: int = 0,
        scale_bound: float = 2.0,
    ):
        super().__init__()
        if scale_bound <= 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        self.num_features = num_features
        self.scale_bound = scale_bound
        self.made = MADE(num_features, 2, hidden_features, num_hidden_layers, context_features=context_features)

    def _shift_and_log_scale(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        out = self.made(x) if context is None else self.made(x, context)
        return out[:, 0], _bounded(out[:, 1], self.scale_bound)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape(type(self).__name__, x, (self.num_features,))
        shift, log_scale = self._shift_and_log_scale(x, context)
        return (x - shift) * torch.exp(-log_scale), -log_scale.sum(dim=1)  # u and log|det du/dx|

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape(type(self).__name__, z, (self.num_features,))
        x = torch.zeros_like(z)
        log_scale = torch.zeros_like(z)
        for index in range(self.num_features):  # x_i needs x_1..x_{i-1}: one MADE pass per feature
            shift, log_scale = self._shift_and_log_scale(x, context)
            column = z[:, index] * torch.exp(log_scale[:, index]) + shift[:, index]
            x = x.index_copy(1, torch.tensor([index], device=z.device), column[:, None])  # out of place (autograd)
        return x, log_scale.sum(dim=1)  # the last pass saw every x_j that any log-scale depends on

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, scale_bound={self.scale_bound}"
