"""Coupling layers and their masks: NICE's additive coupling, RealNVP's affine coupling and PIE's two-sided coupling.

A coupling layer splits its input with a binary ``mask``: the part where ``mask == 1`` passes unchanged and conditions
an element-wise invertible map of the rest. The conditioner (any network) sees ``x * mask`` only, so the inverse can
recompute it from the output, and the Jacobian is triangular: its log-determinant is the sum of the log-scales.
Log-scales are bounded with ``scale_bound * tanh(raw / scale_bound)`` so no layer can blow up or collapse a value.

Conditional couplings: give the layer a conditioner built with ``context_features=K`` (e.g.
``MLP(D, 2 * D, context_features=K)``) and call ``layer(x, context=c)`` / ``layer.inverse(z, context=c)`` with ``c``
of shape ``(B, K)``; the conditioner then sees ``(x * mask, c)``. Without a context nothing changes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlib.transforms._shapes import check_event_shape, sum_except_batch
from flowlib.transforms.base import Transform

__all__ = [
    "checkerboard_mask",
    "channel_mask",
    "half_mask",
    "AdditiveCoupling",
    "AffineCoupling",
    "PIECoupling",
]


def checkerboard_mask(num_channels: int, height: int, width: int, parity: int = 0) -> Tensor:
    """A ``(C, H, W)`` float 0/1 checkerboard: pixel ``(i, j)`` is 1 where ``(i + j) % 2 == parity``.

    Example:
        >>> checkerboard_mask(1, 2, 3)
        tensor([[[1., 0., 1.],
                 [0., 1., 0.]]])
    """
    rows = torch.arange(height).view(height, 1)
    columns = torch.arange(width).view(1, width)
    pattern = ((rows + columns) % 2 == parity).float()
    return pattern.expand(num_channels, height, width).clone()


def channel_mask(num_channels: int, height: int, width: int, parity: int = 0) -> Tensor:
    """A ``(C, H, W)`` float 0/1 mask that is 1 on the first ``C // 2`` channels (parity 0) or on the others (parity 1).

    Example:
        >>> channel_mask(4, 1, 1).flatten()
        tensor([1., 1., 0., 0.])
    """
    if num_channels < 2:
        raise ValueError(f"channel_mask needs at least 2 channels, got {num_channels}; use checkerboard_mask instead")
    mask = torch.zeros(num_channels, height, width)
    mask[: num_channels // 2] = 1.0
    return mask if parity == 0 else 1.0 - mask


def half_mask(num_features: int, parity: int = 0) -> Tensor:
    """A ``(D,)`` float 0/1 mask that is 1 on the first ``D // 2`` features (parity 0) or on the others (parity 1).

    Example:
        >>> half_mask(5, parity=1)
        tensor([0., 0., 1., 1., 1.])
    """
    if num_features < 2:
        raise ValueError(f"half_mask needs at least 2 features, got {num_features}")
    mask = torch.zeros(num_features)
    mask[: num_features // 2] = 1.0
    return mask if parity == 0 else 1.0 - mask


def _bounded(raw: Tensor, bound: float) -> Tensor:
    """Soft clamp to ``(-bound, bound)``: ``bound * tanh(raw / bound)`` (identity near 0)."""
    return bound * torch.tanh(raw / bound)


def _describe_mask(mask: Tensor) -> str:
    return f"mask_shape={tuple(mask.shape)}, num_conditioning={int(mask.sum())}/{mask.numel()}"


def _condition(conditioner: nn.Module, inputs: Tensor, context: Tensor | None) -> Tensor:
    """``conditioner(inputs)``, or ``conditioner(inputs, context)`` for a conditional flow."""
    return conditioner(inputs) if context is None else conditioner(inputs, context)


class _MaskedCoupling(Transform):
    """Shared mask handling: stores ``mask`` as a buffer and checks the input has the mask's shape."""

    accepts_context = True

    def __init__(self, mask: Tensor):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.get_default_dtype())
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must contain only 0 and 1")
        self.register_buffer("mask", mask)

    def _check(self, x: Tensor) -> None:
        check_event_shape(type(self).__name__, x, self.mask.shape)

    def _scale_and_shift(
        self, conditioner: nn.Module, inputs: Tensor, scale_bound: float, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        out = _condition(conditioner, inputs, context)
        if out.shape[1] != 2 * inputs.shape[1] or out.shape[2:] != inputs.shape[2:]:
            expected = (inputs.shape[0], 2 * inputs.shape[1], *inputs.shape[2:])
            raise ValueError(
                f"{type(self).__name__}: the conditioner must map {tuple(inputs.shape)} to {expected} "
                f"(log-scale and shift stacked on dim 1), got {tuple(out.shape)}"
            )
        raw_log_scale, shift = out.chunk(2, dim=1)
        return _bounded(raw_log_scale, scale_bound), shift


class AdditiveCoupling(_MaskedCoupling):
    """NICE additive coupling ``y = x + (1 - mask) * t(x * mask)``; volume preserving (log-det 0).

    Arguments:
        mask: 0/1 tensor of the event shape, ``(D,)`` or ``(C, H, W)``; ``mask == 1`` passes unchanged.
        conditioner: network mapping ``(B, *event_shape)`` to ``(B, *event_shape)``.

    Shapes: ``(B, *mask.shape) -> (B, *mask.shape)``, log-det ``(B,)``.

    References:
        NICE: Non-linear Independent Components Estimation. Dinh, Krueger, Bengio, 2014. arXiv:1410.8516.

    Example:
        >>> import torch
        >>> from flowlib.nets import MLP
        >>> layer = AdditiveCoupling(half_mask(4), MLP(4, 4, hidden_features=8, zero_init_last=False))
        >>> x = torch.randn(3, 4)
        >>> z, logabsdet = layer(x)
        >>> torch.allclose(layer.inverse(z)[0], x, atol=1e-6), logabsdet.tolist()
        (True, [0.0, 0.0, 0.0])
    """

    def __init__(self, mask: Tensor, conditioner: nn.Module):
        super().__init__(mask)
        self.conditioner = conditioner

    def _shift(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        shift = _condition(self.conditioner, x * self.mask, context)
        if shift.shape != x.shape:
            raise ValueError(f"AdditiveCoupling: the conditioner must map {tuple(x.shape)} to the same shape, "
                             f"got {tuple(shift.shape)}")
        return (1.0 - self.mask) * shift

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        return x + self._shift(x, context), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(z)
        return z - self._shift(z, context), z.new_zeros(z.shape[0])

    def extra_repr(self) -> str:
        return _describe_mask(self.mask)


class AffineCoupling(_MaskedCoupling):
    """RealNVP affine coupling ``y = x * mask + (1 - mask) * (x * exp(log_s) + t)``, ``(log_s, t)`` from ``x * mask``.

    ``log_s = scale_bound * tanh(raw_s / scale_bound)`` keeps every scale in ``(e^-bound, e^bound)``. With a
    zero-initialised conditioner the layer starts as the identity.

    Arguments:
        mask: 0/1 tensor of the event shape, ``(D,)`` or ``(C, H, W)``; ``mask == 1`` passes unchanged.
        conditioner: network mapping ``(B, C, ...)`` to ``(B, 2C, ...)``: raw log-scale and shift stacked on dim 1.
        scale_bound: bound on the absolute log-scale.

    Shapes: ``(B, *mask.shape) -> (B, *mask.shape)``, log-det ``(B,)`` = sum of the log-scales.

    References:
        Density estimation using Real NVP. Dinh, Sohl-Dickstein, Bengio, 2016. arXiv:1605.08803.

    Example:
        >>> import torch
        >>> from flowlib.nets import ConvNet
        >>> layer = AffineCoupling(checkerboard_mask(1, 4, 4), ConvNet(1, 2, hidden_channels=8, zero_init_last=False))
        >>> x = torch.randn(2, 1, 4, 4)
        >>> z, logabsdet = layer(x)
        >>> x_back, inverse_logabsdet = layer.inverse(z)
        >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(logabsdet, -inverse_logabsdet, atol=1e-5)
        (True, True)
    """

    def __init__(self, mask: Tensor, conditioner: nn.Module, scale_bound: float = 2.0):
        super().__init__(mask)
        if scale_bound <= 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        self.conditioner = conditioner
        self.scale_bound = scale_bound

    def _parameters_from(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._scale_and_shift(self.conditioner, x * self.mask, self.scale_bound, context)
        free = 1.0 - self.mask
        return log_scale * free, shift * free

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        log_scale, shift = self._parameters_from(x, context)
        return x * torch.exp(log_scale) + shift, sum_except_batch(log_scale)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(z)
        log_scale, shift = self._parameters_from(z, context)  # z * mask == x * mask
        return (z - shift) * torch.exp(-log_scale), -sum_except_batch(log_scale)

    def extra_repr(self) -> str:
        return f"{_describe_mask(self.mask)}, scale_bound={self.scale_bound}"


class PIECoupling(_MaskedCoupling):
    """PIE coupling (Eq. 18): both parts are transformed, one after the other.

    With ``x1`` the part where ``mask == 0`` and ``x2`` the part where ``mask == 1``::

        y1 = s1(x2) * x1 + b1(x2)        # conditioner1 sees x * mask
        y2 = s2(y1) * x2 + b2(y1)        # conditioner2 sees y1 * (1 - mask)

    with ``s = exp(scale_bound * tanh(raw / scale_bound))`` always positive; log-det = sum log s1 + sum log s2.

    Arguments:
        mask: 0/1 tensor of the event shape, ``(D,)`` or ``(C, H, W)``.
        conditioner1, conditioner2: networks mapping ``(B, C, ...)`` to ``(B, 2C, ...)`` (raw log-scale, shift).
        scale_bound: bound on the absolute log-scales.

    Shapes: ``(B, *mask.shape) -> (B, *mask.shape)``, log-det ``(B,)``.

    References:
        Pseudo-Invertible Encoder. Beitler, Sosnovik, Smeulders, 2021. arXiv:2111.00619 (Eq. 18).

    Example:
        >>> import torch
        >>> from flowlib.nets import MLP
        >>> nets = [MLP(4, 8, hidden_features=8, zero_init_last=False) for _ in range(2)]
        >>> layer = PIECoupling(half_mask(4), *nets)
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(layer.inverse(layer(x)[0])[0], x, atol=1e-5)
        True
    """

    def __init__(self, mask: Tensor, conditioner1: nn.Module, conditioner2: nn.Module, scale_bound: float = 2.0):
        super().__init__(mask)
        if scale_bound <= 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        self.conditioner1 = conditioner1
        self.conditioner2 = conditioner2
        self.scale_bound = scale_bound

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        kept, free = self.mask, 1.0 - self.mask
        log_s1, b1 = self._scale_and_shift(self.conditioner1, x * kept, self.scale_bound, context)
        y1 = (x * torch.exp(log_s1) + b1) * free  # Eq. 18, first line (on the mask == 0 part)
        log_s2, b2 = self._scale_and_shift(self.conditioner2, y1, self.scale_bound, context)
        y2 = (x * torch.exp(log_s2) + b2) * kept  # Eq. 18, second line (on the mask == 1 part)
        logabsdet = sum_except_batch(log_s1 * free) + sum_except_batch(log_s2 * kept)
        return y1 + y2, logabsdet

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(z)
        kept, free = self.mask, 1.0 - self.mask
        y1 = z * free
        log_s2, b2 = self._scale_and_shift(self.conditioner2, y1, self.scale_bound, context)
        x2 = (z - b2) * torch.exp(-log_s2) * kept  # Eq. 18, inverse of the second line
        log_s1, b1 = self._scale_and_shift(self.conditioner1, x2, self.scale_bound, context)
        x1 = (z - b1) * torch.exp(-log_s1) * free  # Eq. 18, inverse of the first line
        logabsdet = sum_except_batch(log_s1 * free) + sum_except_batch(log_s2 * kept)
        return x1 + x2, -logabsdet

    def extra_repr(self) -> str:
        return f"{_describe_mask(self.mask)}, scale_bound={self.scale_bound}"
