"""Invertible linear maps that mix features or channels: Householder reflections, Glow's LU 1x1 convolution,
fixed permutations, ActNorm and NICE's diagonal scaling.

Every layer here acts along dim 1 and accepts vectors ``(B, D)`` and images ``(B, C, H, W)`` (applied at every
pixel, so its log-determinant is multiplied by ``H * W``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowlib.transforms._shapes import check_channels
from flowlib.transforms.base import InputShapeError, Transform, batch_zeros

__all__ = [
    "HouseholderLinear",
    "Householder1x1Conv",
    "Invertible1x1Conv",
    "Permutation",
    "Reverse",
    "ActNorm",
    "Scaling",
]


def _num_positions(x: Tensor) -> int:
    """How many positions a per-channel map acts on: 1 for ``(B, D)``, ``H * W`` for ``(B, C, H, W)``."""
    return math.prod(x.shape[2:])


def _apply_matrix(matrix: Tensor, x: Tensor) -> Tensor:
    """``matrix @ x`` along dim 1, for ``(B, C)`` or ``(B, C, H, W)``."""
    if x.dim() == 2:
        return x @ matrix.T
    return torch.einsum("ij,bj...->bi...", matrix, x)


def _per_channel(parameter: Tensor, x: Tensor) -> Tensor:
    """View a ``(C,)`` parameter so that it broadcasts against ``x`` along dim 1."""
    return parameter.view(1, -1, *([1] * (x.dim() - 2)))


class HouseholderLinear(Transform):
    """Orthogonal map ``W = H(v_1) ... H(v_K)`` with reflections ``H(v) = I - 2 v v^T / |v|^2`` (PIE Eq. 19).

    ``W`` is exactly orthogonal, so the log-determinant is 0 and the inverse is ``W^T`` (no matrix inverse needed).
    The vectors are normalised inside the product, so their scale never matters.

    Arguments:
        num_features: size ``D`` of dim 1.
        num_reflections: number ``K`` of reflections.

    Shapes: ``(B, D) -> (B, D)`` (or ``(B, D, H, W)``, acting per pixel), log-det ``(B,)`` of zeros.

    References:
        Unitary triangularization of a nonsymmetric matrix. Householder, 1958. J. ACM 5(4).
        PIE: Pseudo-Invertible Encoder. Beitler, Sosnovik, Smeulders, 2021. arXiv:2111.00619 (Eq. 19).

    Example:
        >>> import torch
        >>> layer = HouseholderLinear(4)
        >>> x = torch.randn(3, 4)
        >>> z, logabsdet = layer(x)
        >>> torch.allclose(layer.inverse(z)[0], x, atol=1e-6), torch.allclose(z.norm(dim=1), x.norm(dim=1))
        (True, True)
    """

    def __init__(self, num_features: int, num_reflections: int = 3):
        super().__init__()
        if num_reflections < 1:
            raise ValueError(f"num_reflections must be at least 1, got {num_reflections}")
        self.num_features = num_features
        self.vectors = nn.Parameter(torch.randn(num_reflections, num_features))

    def matrix(self) -> Tensor:
        """The ``(D, D)`` orthogonal matrix ``W``."""
        units = self.vectors / self.vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
        weight = torch.eye(self.num_features, dtype=units.dtype, device=units.device)
        for unit in units:
            weight = weight - 2.0 * torch.outer(weight @ unit, unit)  # W <- W H(v)
        return weight

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_channels(type(self).__name__, x, self.num_features)
        return _apply_matrix(self.matrix(), x), batch_zeros(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_channels(type(self).__name__, z, self.num_features)
        return _apply_matrix(self.matrix().T, z), batch_zeros(z)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, num_reflections={self.vectors.shape[0]}"


class Householder1x1Conv(HouseholderLinear):
    """Householder-parametrised invertible 1x1 convolution: :class:`HouseholderLinear` over channels at every pixel.

    Arguments:
        num_channels: channels ``C``.
        num_reflections: number of reflections.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``, log-det ``(B,)`` of zeros.

    References:
        PIE: Pseudo-Invertible Encoder. Beitler, Sosnovik, Smeulders, 2021. arXiv:2111.00619 (Section 4.3).

    Example:
        >>> import torch
        >>> layer = Householder1x1Conv(3)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> torch.allclose(layer.inverse(layer(x)[0])[0], x, atol=1e-6)
        True
    """

    def __init__(self, num_channels: int, num_reflections: int = 3):
        super().__init__(num_channels, num_reflections)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_features}, num_reflections={self.vectors.shape[0]}"


class Invertible1x1Conv(Transform):
    """Glow's invertible 1x1 convolution with an LU-parametrised weight ``W = P L (U + diag(sign * exp(log_s)))``.

    ``P`` is a fixed permutation, ``L`` unit lower-triangular, ``U`` strictly upper-triangular; the log-determinant
    is ``H * W * sum(log_s)`` and never needs a determinant. Initialised from a random rotation.

    Arguments:
        num_channels: channels ``C``.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)`` (or ``(B, C)``), log-det ``(B,)``.

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions. Kingma, Dhariwal, 2018. arXiv:1807.03039.

    Example:
        >>> import torch
        >>> layer = Invertible1x1Conv(3)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> z, logabsdet = layer(x)
        >>> torch.allclose(layer.inverse(z)[0], x, atol=1e-5)
        True
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = num_channels
        rotation, _ = torch.linalg.qr(torch.randn(num_channels, num_channels, dtype=torch.float64))
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper)
        dtype = torch.get_default_dtype()
        self.register_buffer("permutation", permutation.to(dtype))
        self.register_buffer("sign", torch.sign(diagonal).to(dtype))
        self.register_buffer("lower_mask", torch.tril(torch.ones(num_channels, num_channels), -1).to(dtype))
        self.lower = nn.Parameter(torch.tril(lower, -1).to(dtype))
        self.upper = nn.Parameter(torch.triu(upper, 1).to(dtype))
        self.log_scale = nn.Parameter(torch.log(diagonal.abs()).to(dtype))

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.num_channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_scale))
        return lower, upper

    def matrix(self) -> Tensor:
        """The ``(C, C)`` weight ``W``."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def inverse_matrix(self) -> Tensor:
        """``W^-1 = U^-1 L^-1 P^T`` by triangular solves (no general matrix inverse)."""
        lower, upper = self._factors()
        eye = torch.eye(self.num_channels, dtype=lower.dtype, device=lower.device)
        lower_inverse = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        upper_inverse = torch.linalg.solve_triangular(upper, eye, upper=True)
        return upper_inverse @ lower_inverse @ self.permutation.T

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_channels(type(self).__name__, x, self.num_channels)
        logabsdet = _num_positions(x) * self.log_scale.sum()
        return _apply_matrix(self.matrix(), x), logabsdet.repeat(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_channels(type(self).__name__, z, self.num_channels)
        logabsdet = -_num_positions(z) * self.log_scale.sum()
        return _apply_matrix(self.inverse_matrix(), z), logabsdet.repeat(z.shape[0])

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, parametrisation='LU'"


class Permutation(Transform):
    """A fixed permutation along ``dim``; log-det 0.

    Arguments:
        permutation: a permutation of ``range(n)`` as a tensor, or ``n`` for a random one drawn with ``seed``.
        dim: the dimension to permute (1 = features or channels).
        seed: seed of the random permutation when ``permutation`` is an int.

    Shapes: any ``(B, ...)`` with size ``n`` along ``dim``; log-det ``(B,)`` of zeros.

    References:
        Density estimation using Real NVP. Dinh, Sohl-Dickstein, Bengio, 2016. arXiv:1605.08803.

    Example:
        >>> import torch
        >>> layer = Permutation(torch.tensor([2, 0, 1]))
        >>> layer(torch.tensor([[10.0, 11.0, 12.0]]))[0]
        tensor([[12., 10., 11.]])
    """

    def __init__(self, permutation: Tensor | int, dim: int = 1, seed: int = 0):
        super().__init__()
        if isinstance(permutation, int):
            generator = torch.Generator().manual_seed(seed)
            permutation = torch.randperm(permutation, generator=generator)
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        if permutation.dim() != 1 or not torch.equal(permutation.sort().values, torch.arange(len(permutation))):
            raise ValueError(f"permutation must be a 1-d permutation of range(n), got {permutation.tolist()}")
        if dim == 0:
            raise ValueError("Permutation cannot act on the batch dimension (dim=0)")
        self.dim = dim
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def _check(self, x: Tensor) -> None:
        size = len(self.permutation)
        if x.dim() <= self.dim or x.shape[self.dim] != size:
            raise InputShapeError(
                f"Permutation expects size {size} along dim {self.dim}, got input of shape {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        return x.index_select(self.dim, self.permutation), batch_zeros(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self._check(z)
        return z.index_select(self.dim, self.inverse_permutation), batch_zeros(z)

    def extra_repr(self) -> str:
        shown = self.permutation.tolist()
        text = str(shown) if len(shown) <= 8 else f"[{', '.join(map(str, shown[:8]))}, ...]"
        return f"permutation={text}, dim={self.dim}"


class Reverse(Transform):
    """Reverse the order along ``dim`` (RealNVP/NICE alternate which half is transformed this way); log-det 0.

    Arguments:
        dim: the dimension to reverse (1 = features or channels).

    Shapes: any ``(B, ...)``; log-det ``(B,)`` of zeros.

    References:
        NICE: Non-linear Independent Components Estimation. Dinh, Krueger, Bengio, 2014. arXiv:1410.8516.

    Example:
        >>> import torch
        >>> Reverse()(torch.tensor([[1.0, 2.0, 3.0]]))[0]
        tensor([[3., 2., 1.]])
    """

    def __init__(self, dim: int = 1):
        super().__init__()
        if dim == 0:
            raise ValueError("Reverse cannot act on the batch dimension (dim=0)")
        self.dim = dim

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() <= self.dim:
            raise InputShapeError(f"Reverse(dim={self.dim}) needs at least {self.dim + 1} dims, got {tuple(x.shape)}")
        return x.flip(self.dim), batch_zeros(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward(z)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class ActNorm(Transform):
    """Per-channel affine map ``y = (x + bias) * exp(log_scale)`` with data-dependent initialisation (Glow).

    The first forward call in training mode sets ``bias`` and ``log_scale`` so that this batch comes out with zero
    mean and unit variance per channel; afterwards they are ordinary parameters. ``initialized`` is a buffer, so a
    loaded checkpoint is never re-initialised. A first batch holding NaN or infinite values is refused with a
    ``ValueError`` (its statistics would make every parameter NaN for good); the layer then stays uninitialised.

    Reading the buffer is a host synchronisation on a GPU, so the layer remembers in a Python flag that it is
    initialised: after the first training call no forward pass reads device memory from the host, and
    ``torch.compile`` traces a branch-free graph (run one step eagerly first, as :func:`flowlib.train.fit` does).
    ``load_state_dict`` clears the flag, so the buffer is read again once.

    Arguments:
        num_features: channels ``C`` (or features ``D``).

    Shapes: ``(B, C)`` or ``(B, C, H, W)``, log-det ``(B,)`` = ``H * W * sum(log_scale)``.

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions. Kingma, Dhariwal, 2018. arXiv:1807.03039.

    Example:
        >>> import torch
        >>> layer = ActNorm(2)
        >>> z, _ = layer(3.0 + 5.0 * torch.randn(64, 2))  # first call initialises
        >>> z.mean(0).abs().max() < 1e-5, (z.std(0, unbiased=False) - 1).abs().max() < 1e-3
        (tensor(True), tensor(True))
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("initialized", torch.tensor(False))
        self._known_initialized = False  # a host-side copy of `initialized` once it is True (see the class doc)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = False  # the loaded buffer decides; read it again on the next training call

    def _is_initialized(self) -> bool:
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized)
        return self._known_initialized

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        values = x.transpose(0, 1).reshape(self.num_features, -1)
        if values.shape[1] < 2:
            raise ValueError(
                "ActNorm initialises from the statistics of its first training batch and needs at least 2 values "
                f"per channel, got input of shape {tuple(x.shape)}; call it first on a larger batch"
            )
        if not bool(torch.isfinite(values).all()):
            raise ValueError(
                "ActNorm initialises from the statistics of its first training batch, and this batch holds NaN or "
                "infinite values, which would make its parameters NaN for good; check the data and the layers "
                "before this one (the layer stays uninitialised)"
            )
        self.bias.copy_(-values.mean(dim=1))
        self.log_scale.copy_(-torch.log(values.std(dim=1, unbiased=False) + 1e-6))
        self.initialized.fill_(True)
        self._known_initialized = True

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_channels(type(self).__name__, x, self.num_features)
        if self.training and not self._is_initialized():
            self._initialize(x)
        z = (x + _per_channel(self.bias, x)) * torch.exp(_per_channel(self.log_scale, x))
        return z, (_num_positions(x) * self.log_scale.sum()).repeat(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_channels(type(self).__name__, z, self.num_features)
        x = z * torch.exp(-_per_channel(self.log_scale, z)) - _per_channel(self.bias, z)
        return x, (-_num_positions(z) * self.log_scale.sum()).repeat(z.shape[0])

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, initialized={bool(self.initialized)}"


class Scaling(Transform):
    """NICE's diagonal scaling ``y = x * exp(s)``, the only non-volume-preserving layer of NICE; log-det ``sum(s)``.

    Arguments:
        num_features: features ``D`` (or channels ``C``, one scale per channel).

    Shapes: ``(B, D)`` or ``(B, C, H, W)``, log-det ``(B,)``.

    References:
        NICE: Non-linear Independent Components Estimation. Dinh, Krueger, Bengio, 2014. arXiv:1410.8516 (Sec. 3.3).

    Example:
        >>> import torch
        >>> layer = Scaling(2)
        >>> with torch.no_grad():
        ...     _ = layer.log_scale.copy_(torch.tensor([0.0, 1.0]))
        >>> layer(torch.ones(1, 2))[1].tolist()
        [1.0]
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features
        self.log_scale = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_channels(type(self).__name__, x, self.num_features)
        z = x * torch.exp(_per_channel(self.log_scale, x))
        return z, (_num_positions(x) * self.log_scale.sum()).repeat(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_channels(type(self).__name__, z, self.num_features)
        x = z * torch.exp(-_per_channel(self.log_scale, z))
        return x, (-_num_positions(z) * self.log_scale.sum()).repeat(z.shape[0])

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}"
