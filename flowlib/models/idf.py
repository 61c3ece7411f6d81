"""Integer Discrete Flows (IDF): a flow on the integers, so its likelihood is a code length.

Reference:
    Integer Discrete Flows and Lossless Compression. Emiel Hoogeboom, Jorn W.T. Peters, Rianne van den Berg,
    Max Welling. NeurIPS 2019. arXiv:1905.07376. Official code: github.com/jornpeters/integer_discrete_flows.

The method, in the order of this file (equation labels are this file's; the flow blog post numbers the prior
Eq. 13):

(1) Discrete change of variables. For a bijection ``f: Z^D -> Z^D`` no volume changes, so ``P_X(x) = P_Z(f(x))``,
    and ``-log2 P_X(x)`` is the length in bits of an entropy code of ``x`` (rANS codes ``z = f(x)`` under ``P_Z``).
(2) Integer discrete coupling. Split ``x = [x_a, x_b]`` over channels and keep ``x_a``:
    ``z_a = x_a``, ``z_b = x_b + round(t(x_a))``, inverse ``x_b = z_b - round(t(z_a))``,
    exact on the integers for any neural network ``t``.
(3) Straight-through rounding: the gradient of ``round`` is taken to be the identity, ``d round(y) / dy := 1``.
(4) Architecture: ``L`` levels; level ``l`` is a squeeze, ``K`` integer flow layers (a fixed channel permutation
    then a coupling (2)), and a factor-out ``y_{l-1} -> [z_l, y_l]`` for ``l < L``; the last level maps
    ``y_{L-1} -> z_L``. Hence ``log P(x) = sum_{l<L} log P(z_l | y_l) + log P(z_L)``.
(5) Priors: each factored-out ``z_l`` is a discretized logistic (unit bins ``[z - 1/2, z + 1/2]``, blog Eq. 13)
    whose mean and log-scale come from a small network on the kept ``y_l``, or optionally a mixture of ``M'`` of
    them whose means, log-scales and weights all come from that network, (5b)
    ``P(z_l | y_l) = sum_m pi_m(y_l) DLogistic(z_l | mu_m(y_l), s_m(y_l))``,
    which can say "background or ink" for a pixel-like value where one logistic must spread over both; the top
    ``z_L`` has a mixture of ``M`` discretized logistics with learnable parameters per dimension (the paper: about
    5 components suffice).
(6) Loss: bits per dimension ``-log2 P(x) / D``, the rate an ideal entropy coder achieves.

Conventions of flowlib's IDF:

* Pixels ``x in {0..255}`` are centred as ``x - 128`` (values in ``-128..127``) before the first level. The
  networks see their integer inputs divided by 128 and their outputs are multiplied by 16 to give shifts and prior
  means in integer units. (A larger output factor, such as 128 to match the input, makes every Adam step move the
  rounded shifts and the prior means by several integers, so the priors cannot become sharp in a short training
  run.) Latents stay integers of any size (no clipping); the priors put mass on all integers.
* Training runs in float32 with (3). The *coding path* runs on float64 tensors that hold integers: every network
  then works in exact dyadic arithmetic (weights rounded to multiples of ``2^-16``, activations to ``2^-18``, every
  product and partial sum exactly representable, checked) so its outputs do not depend on the order of summation,
  the thread count or the device; prior parameters are then rounded to multiples of ``2^-12`` before any coding
  table is built. Encoder and decoder thus compute bit-identical shifts and distributions. The float64 path is the
  model the file is coded with; :meth:`IDF.log_prob` with ``exact=True`` gives its ideal code length.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import nullcontext
from functools import partial
from typing import NamedTuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from flowlib.distributions.discretized import DiscretizedLogistic, DiscretizedLogisticMixture
from flowlib.metrics import bits_per_dim
from flowlib.transforms import Compose, InputShapeError, Permutation, Squeeze, Transform, batch_zeros

__all__ = [
    "ACTIVATION_BITS",
    "IDF",
    "PARAMETER_BITS",
    "PIXEL_OFFSET",
    "WEIGHT_BITS",
    "ConditionalLogisticPrior",
    "ConditionerNet",
    "ExactArithmeticError",
    "IDFLevel",
    "IntegerAdditiveCoupling",
    "MixturePrior",
    "parameter_groups",
    "round_ste",
    "train_idf",
    "warmup_cosine",
]

PIXEL_OFFSET = 128  # x - 128: pixels centred on zero
INPUT_SCALE = 128.0  # networks see integers / 128 (a power of two: exact)
OUTPUT_SCALE = 16.0  # network outputs are multiplied by 16: shifts and prior means in integer units
WEIGHT_BITS = 16  # coding path: weights and biases on the grid 2^-16
ACTIVATION_BITS = 18  # coding path: network activations on the grid 2^-18
PARAMETER_BITS = 12  # coding path: prior means and log-scales on the grid 2^-12 before building tables
MEAN_LR_FACTOR = 5.0  # learning rate of the top prior's means, in units of the base rate (see parameter_groups)
LOG_SCALE_MIN, LOG_SCALE_MAX = -6.0, 6.0  # prior scales between e^-6 (one certain bin) and e^6 (~ 400 values)


class ExactArithmeticError(ArithmeticError, ValueError):
    """The coding path's fixed-point arithmetic would lose exactness: the network's weights or activations are too
    large (or not finite). Raised by :meth:`IDF.forward_integer` and :func:`flowlib.compress.codec.compress` for a model
    whose weights have diverged; :func:`flowlib.compress.codec.decompress` reports it as a corrupt stream."""


def round_ste(x: Tensor) -> Tensor:
    """Round to the nearest integer, with the straight-through gradient of Eq. (3): ``d round(x)/dx := 1``."""
    return x + (torch.round(x) - x).detach()


def quantize(x: Tensor, bits: int) -> Tensor:
    """Round to the nearest multiple of ``2^-bits`` (exact in float64 for the values used here)."""
    return torch.round(x * 2.0**bits) / 2.0**bits


EXACT_BLOCK = 2048  # pixel positions per block of the exact network: a block's activations stay in the CPU cache
_EXACT_LIMIT = 2.0**52  # integers below this, and every partial sum of them, are exact in float64


class _IntegerLayer(NamedTuple):
    """A convolution of the coding path in integer units of ``2^-WEIGHT_BITS`` (float64 integers)."""

    weight: Tensor  # (C_out, k * k * C_in), columns ordered kernel row, kernel column, channel
    bias: Tensor  # (C_out, 1), already in the units of the sums, 2^-(WEIGHT_BITS + ACTIVATION_BITS)
    norm: Tensor  # max over outputs of sum |weight|: a sum's bound per unit of input bound
    bias_bound: Tensor  # max |bias|
    kernel: int  # 1 or 3

    @classmethod
    def of(cls, conv: nn.Conv2d) -> _IntegerLayer:
        weight = torch.round(conv.weight.detach().double() * 2.0**WEIGHT_BITS)
        bias = torch.round(conv.bias.detach().double() * 2.0**WEIGHT_BITS) * 2.0**ACTIVATION_BITS
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise ExactArithmeticError("the network has weights that are not finite (NaN or inf): retrain the model")
        matrix = weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
        return cls(matrix, bias.view(-1, 1), matrix.abs().sum(dim=1).max(), bias.abs().max(), conv.kernel_size[0])

    def __call__(self, x: Tensor, bound: Tensor) -> Tensor:
        """``W x + bias`` (C_out, B, H, W) in units of ``2^-34`` for integer activations ``x`` (C, B, H, W) in units
        of ``2^-18`` with ``|x| <= bound``: exact, after checking that no partial sum can reach ``2^52`` (so any
        order of the sums, on any number of threads, BLAS library or device, gives these integers).

        A 3x3 layer (padding 1) with at least as many output as input channels is one matrix product with the nine
        zero-padded shifted copies of ``x``; with fewer, each kernel tap is applied as a 1x1 map (nine narrow outputs
        instead of nine copies of a wide input) and the nine maps are added at their offsets.
        """
        reach = bound * self.norm + self.bias_bound
        if not reach < _EXACT_LIMIT:
            raise ExactArithmeticError(
                f"exact network bound {reach.item():.3g} (in units of 2^-34) reaches 2^52: the network's activations "
                "are too large for exact float64 arithmetic; the model's weights have diverged, retrain it"
            )
        channels, batch, height, width = x.shape
        out_channels = len(self.bias)
        if self.kernel == 1:
            return torch.addmm(self.bias, self.weight, x.reshape(channels, -1)).view(-1, batch, height, width)
        if out_channels >= channels:
            padded = F.pad(x, (1, 1, 1, 1))
            shifted = [padded[:, :, i : i + height, j : j + width] for i in range(3) for j in range(3)]
            inputs = torch.stack(shifted).view(9 * channels, -1)
            return torch.addmm(self.bias, self.weight, inputs).view(-1, batch, height, width)
        taps = self.weight.view(out_channels, 3, 3, channels).permute(1, 2, 0, 3).reshape(-1, channels)
        taps = F.pad((taps @ x.reshape(channels, -1)).view(3, 3, out_channels, batch, height, width), (1, 1, 1, 1))
        out = self.bias.view(-1, 1, 1, 1).expand(out_channels, batch, height, width).clone()
        for i in range(3):  # tap (i, j) at (y', x') adds to the output at (y' + 1 - i, x' + 1 - j)
            for j in range(3):
                out += taps[i, j, :, :, i : i + height, j : j + width]
        return out


def _exact_network(layers: nn.ModuleList, x: Tensor) -> Tensor:
    """The :class:`ConditionerNet` ``3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv`` on the coding path, exactly.

    ``x`` (B, C, H, W) float64 on the grid ``2^-ACTIVATION_BITS``. Every quantity is held as an integer: inputs and
    activations ``A`` in units of ``2^-18``, weights ``W`` and biases in ``2^-16``, so a layer's sums ``W A`` are
    integers in units of ``2^-34``; the next activation is ``relu(round(sum / 2^16))`` (in ``2^-18`` again). Below
    ``2^52`` every product and partial sum of integers is exact in float64 (checked per layer), so the output does
    not depend on the order of summation (:class:`_IntegerLayer`). The images go through in blocks of about
    :data:`EXACT_BLOCK` pixel positions, so that a block's activations stay in the CPU cache. Returns the network's
    output in real units (float64, exact).
    """
    first_layer, middle_layer, last_layer = (_IntegerLayer.of(conv) for conv in layers)
    batch, _, height, width = x.shape
    integers = x.transpose(0, 1) * 2.0**ACTIVATION_BITS  # (C, B, H, W)
    input_bound = integers.abs().max() if batch else 0.0
    out = x.new_empty(len(last_layer.bias), batch, height, width)
    step = max(1, EXACT_BLOCK // (height * width))
    for first in range(0, batch, step):
        images = slice(first, first + step)
        hidden, bound = integers[:, images], input_bound
        for layer in (first_layer, middle_layer):
            hidden = layer(hidden, bound).mul_(2.0**-WEIGHT_BITS).round_().clamp_min_(0)  # ReLU after rounding
            bound = hidden.max()
        out[:, images] = last_layer(hidden, bound)
    return out.transpose(0, 1) * 2.0 ** -(WEIGHT_BITS + ACTIVATION_BITS)


class ConditionerNet(nn.Module):
    """The network ``t`` of a coupling (2) or of a prior (5): 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv.

    Arguments:
        in_channels, out_channels: channels of ``(B, C_in, H, W) -> (B, C_out, H, W)``.
        hidden_channels: width of the two hidden layers.

    The last layer starts at zero, so couplings start as the identity. Float64 inputs (the coding path) run in
    exact dyadic arithmetic (see the module docstring) and must lie on the grid ``2^-ACTIVATION_BITS``.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 32):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
                nn.Conv2d(hidden_channels, hidden_channels, 1),
                nn.Conv2d(hidden_channels, out_channels, 3, padding=1),
            ]
        )
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float64:
            return _exact_network(self.layers, x)
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class IntegerAdditiveCoupling(Transform):
    """Integer discrete coupling, Eq. (2): ``z_b = x_b + round(t(x_a))`` over channels; log-det 0.

    Arguments:
        num_channels: channels ``C`` of the ``(B, C, H, W)`` input; the first ``C // 2`` are kept (``x_a``).
        hidden_channels: width of ``t`` (a :class:`ConditionerNet`).

    Inputs hold integers (float32 for training, float64 for the exactly reproducible coding path); outputs too.

    Example:
        >>> coupling = IntegerAdditiveCoupling(4)
        >>> nn.init.normal_(coupling.conditioner.layers[-1].weight)  # doctest: +ELLIPSIS
        Parameter...
        >>> x = torch.randint(-128, 128, (2, 4, 3, 3)).double()
        >>> z, logabsdet = coupling(x)
        >>> bool((coupling.inverse(z)[0] == x).all()), bool((z == z.round()).all()), logabsdet.tolist()
        (True, True, [0.0, 0.0])
    """

    def __init__(self, num_channels: int, hidden_channels: int = 32):
        super().__init__()
        if num_channels < 2:
            raise ValueError(f"an integer coupling needs at least 2 channels to split, got {num_channels}")
        self.num_channels = num_channels
        self.num_kept = num_channels // 2
        self.conditioner = ConditionerNet(self.num_kept, num_channels - self.num_kept, hidden_channels)

    def shift(self, x_a: Tensor) -> Tensor:
        """``round(t(x_a))`` in integer units, with the straight-through gradient (3)."""
        return round_ste(OUTPUT_SCALE * self.conditioner(x_a / INPUT_SCALE))

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise InputShapeError(
                f"IntegerAdditiveCoupling expects (B, {self.num_channels}, H, W), got {tuple(x.shape)}"
            )
        return x[:, : self.num_kept], x[:, self.num_kept :]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._split(x)
        z_b = x_b + self.shift(x_a)  # Eq. (2)
        return torch.cat([x_a, z_b], dim=1), batch_zeros(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        z_a, z_b = self._split(z)
        x_b = z_b - self.shift(z_a)  # Eq. (2), inverse
        return torch.cat([z_a, x_b], dim=1), batch_zeros(z)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, num_kept={self.num_kept}"


class ConditionalLogisticPrior(nn.Module):
    """``P(z_l | y_l)`` of a factor-out: a discretized logistic, Eq. (5), or a mixture of them, Eq. (5b), whose
    parameters come from ``y_l``.

    Arguments:
        context_channels: channels of the kept ``y_l``.
        num_channels: channels ``C`` of the factored-out ``z_l``.
        hidden_channels: width of the network.
        initial_log_scale: log-scale at initialisation (the network's last layer starts at zero).
        num_components: ``1``: one discretized logistic per value (mean, log-scale); ``M' > 1``: a mixture (5b)
            (means, log-scales and weight logits of ``M'`` components per value). The component means start spread
            over the centred pixel range, so the components can specialise.

    Example:
        >>> prior = ConditionalLogisticPrior(2, 2, hidden_channels=8, num_components=3)
        >>> distribution = prior(torch.zeros(4, 2, 5, 5))
        >>> tuple(distribution.means.shape), tuple(distribution.log_prob(torch.zeros(4, 2, 5, 5)).shape)
        ((4, 2, 5, 5, 3), (4, 2, 5, 5))
    """

    def __init__(
        self,
        context_channels: int,
        num_channels: int,
        hidden_channels: int = 32,
        initial_log_scale: float = 3.0,
        num_components: int = 1,
    ):
        super().__init__()
        if num_components < 1:
            raise ValueError(f"num_components must be at least 1, got {num_components}")
        self.num_channels, self.num_components = num_channels, num_components
        num_parameters = 2 if num_components == 1 else 3 * num_components  # (mean, log-scale[, logit]) per component
        self.net = ConditionerNet(context_channels, num_parameters * num_channels, hidden_channels)
        self.initial_log_scale = initial_log_scale
        if num_components > 1:
            # output channel (parameter p, component m, channel c) is p * M' * C + m * C + c; the means of the
            # components start at -96 .. 96 (in integer units) instead of all at 0, which would keep them identical
            spread = torch.linspace(-0.75, 0.75, num_components) * INPUT_SCALE / OUTPUT_SCALE
            with torch.no_grad():
                self.net.layers[-1].bias[: num_components * num_channels] = spread.repeat_interleave(num_channels)

    def forward(self, context: Tensor) -> DiscretizedLogistic | DiscretizedLogisticMixture:
        """The distribution of ``z_l`` given ``y_l = context`` ``(B, C_y, H, W)``; quantized on the coding path.

        A mixture has its components last: parameters of shape ``(B, C, H, W, M')``.
        """
        out = self.net(context / INPUT_SCALE)
        exact = context.dtype == torch.float64
        if self.num_components == 1:
            mean, log_scale = out.chunk(2, dim=1)
            logits = None
        else:
            batch, _, height, width = out.shape
            out = out.view(batch, 3, self.num_components, self.num_channels, height, width).permute(1, 0, 3, 4, 5, 2)
            mean, log_scale, logits = out.unbind(0)  # each (B, C, H, W, M')
        mean = OUTPUT_SCALE * mean
        log_scale = (log_scale + self.initial_log_scale).clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        if exact:
            mean, log_scale = quantize(mean, PARAMETER_BITS), quantize(log_scale, PARAMETER_BITS)
        if logits is None:
            return DiscretizedLogistic(mean, log_scale)
        return DiscretizedLogisticMixture(mean, log_scale, quantize(logits, PARAMETER_BITS) if exact else logits)


class MixturePrior(nn.Module):
    """``P(z_L)`` of the top level, Eq. (5): a mixture of discretized logistics, parameters learned per dimension.

    Arguments:
        event_shape: ``(C, H, W)`` of ``z_L``.
        num_components: mixture components ``M`` (means start spread over the centred pixel range).
    """

    def __init__(self, event_shape: tuple[int, ...], num_components: int = 5):
        super().__init__()
        self.event_shape = tuple(event_shape)
        spread = torch.linspace(-0.75, 0.75, num_components) if num_components > 1 else torch.zeros(1)
        # means are stored in units of INPUT_SCALE (like the networks' outputs), so optimiser steps suit them
        self.scaled_means = nn.Parameter(spread.expand(*self.event_shape, num_components).clone())
        self.log_scales = nn.Parameter(torch.full((*self.event_shape, num_components), 3.0))
        self.logit_weights = nn.Parameter(torch.zeros(*self.event_shape, num_components))

    def forward(self, exact: bool = False) -> DiscretizedLogisticMixture:
        """The distribution of one ``z_L`` (shape ``(C, H, W)``, components last); quantized float64 if ``exact``."""
        means, log_scales = INPUT_SCALE * self.scaled_means, self.log_scales.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        logit_weights = self.logit_weights
        if exact:
            means, log_scales, logit_weights = (
                quantize(value.detach().double(), PARAMETER_BITS) for value in (means, log_scales, logit_weights)
            )
        return DiscretizedLogisticMixture(means, log_scales, logit_weights)


class IDFLevel(nn.Module):
    """One level of Eq. (4): squeeze, ``K`` x (permutation, integer coupling), then factor-out (or the top prior).

    Arguments:
        in_shape: ``(C, H, W)`` of ``y_{l-1}``.
        num_couplings: ``K``.
        hidden_channels: width of the networks.
        last: whether this is the top level (no factor-out; a :class:`MixturePrior`).
        num_components: mixture components of the top prior.
        seed: seed of the fixed channel permutations.
        factor_components: components of the factor-out prior (``1``: one discretized logistic, Eq. 5; more: Eq. 5b).
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_couplings: int,
        hidden_channels: int,
        last: bool,
        num_components: int = 5,
        seed: int = 0,
        factor_components: int = 1,
    ):
        super().__init__()
        channels, height, width = in_shape
        if height % 2 or width % 2:
            raise InputShapeError(f"an IDF level squeezes by 2 and needs even height and width, got {in_shape}")
        channels, height, width = 4 * channels, height // 2, width // 2
        layers: list[Transform] = [Squeeze(2)]
        for index in range(num_couplings):
            layers += [Permutation(channels, seed=seed + index), IntegerAdditiveCoupling(channels, hidden_channels)]
        self.flow = Compose(*layers)
        self.last = last
        self.num_kept = channels if last else channels // 2
        if last:
            self.prior = MixturePrior((channels, height, width), num_components)
        else:
            self.prior = ConditionalLogisticPrior(
                self.num_kept, channels - self.num_kept, hidden_channels, num_components=factor_components
            )
        self.latent_shape = (channels - (0 if last else self.num_kept), height, width)
        self.out_shape = (self.num_kept, height, width)

    def forward(self, y: Tensor) -> tuple[Tensor | None, Tensor]:
        """``y_{l-1} -> (y_l, z_l)``; for the top level ``(None, z_L)``."""
        h, _ = self.flow(y)
        if self.last:
            return None, h
        return h[:, : self.num_kept], h[:, self.num_kept :]

    def inverse(self, kept: Tensor | None, latent: Tensor) -> Tensor:
        """``(y_l, z_l) -> y_{l-1}`` (``kept=None`` for the top level)."""
        h = latent if kept is None else torch.cat([kept, latent], dim=1)
        return self.flow.inverse(h)[0]

    def distribution(
        self, kept: Tensor | None, exact: bool = False
    ) -> DiscretizedLogistic | DiscretizedLogisticMixture:
        """The prior of ``z_l``: conditioned on ``kept`` for a factor-out, per dimension (``(C, H, W)``) at the top."""
        return self.prior(exact) if self.last else self.prior(kept)


class IDF(nn.Module):
    """Integer Discrete Flow for ``uint8`` images, Eqs. (1)-(6).

    Arguments:
        image_shape: ``(C, H, W)``; ``H`` and ``W`` divisible by ``2^num_levels``.
        num_levels: ``L``.
        num_couplings: ``K`` couplings per level.
        hidden_channels: width of every network.
        num_components: components of the top prior's mixture.
        factor_components: components of each factor-out prior: ``1`` (default) a single discretized logistic
            (Eq. 5), more a conditional mixture (Eq. 5b).

    Example:
        >>> model = IDF((1, 8, 8), num_levels=2, num_couplings=2, hidden_channels=8)
        >>> x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
        >>> latents = model.forward_integer(x)
        >>> [tuple(z.shape) for z in latents], bool((model.inverse_integer(latents) == x).all())
        ([(3, 2, 4, 4), (3, 8, 2, 2)], True)
        >>> model.log_prob(x).shape
        torch.Size([3])
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_levels: int = 2,
        num_couplings: int = 4,
        hidden_channels: int = 32,
        num_components: int = 5,
        factor_components: int = 1,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        factor = 2**num_levels
        if len(self.image_shape) != 3 or self.image_shape[1] % factor or self.image_shape[2] % factor:
            raise InputShapeError(
                f"IDF with num_levels={num_levels} halves the height and width at every level, so they must stay "
                f"even: image_shape must be (C, H, W) with H and W divisible by {factor}; got {self.image_shape} "
                "(crop or pad the images, or use fewer levels)"
            )
        self.config = dict(
            image_shape=list(image_shape), num_levels=num_levels, num_couplings=num_couplings,
            hidden_channels=hidden_channels, num_components=num_components, factor_components=factor_components,
        )
        levels, shape = [], self.image_shape
        for index in range(num_levels):
            level = IDFLevel(
                shape, num_couplings, hidden_channels, last=index == num_levels - 1,
                num_components=num_components, seed=100 * index, factor_components=factor_components,
            )
            levels.append(level)
            shape = level.out_shape
        self.levels = nn.ModuleList(levels)

    @property
    def num_dims(self) -> int:
        return math.prod(self.image_shape)

    def _centre(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            expected = ", ".join(map(str, self.image_shape))
            raise InputShapeError(f"IDF expects images of shape (B, {expected}), got {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            raise TypeError(f"IDF expects uint8 pixels in 0..255, got dtype {x.dtype}; convert with x.to(torch.uint8)")
        return x.to(dtype) - PIXEL_OFFSET

    def _levels_forward(self, y: Tensor) -> list[tuple[Tensor | None, Tensor]]:
        outputs = []
        for level in self.levels:
            kept, latent = level(y)
            outputs.append((kept, latent))
            y = kept
        return outputs

    def log_prob(self, x: Tensor, exact: bool = False) -> Tensor:
        """``log P(x)`` in nats, ``(B,)``, of ``uint8`` images ``(B, C, H, W)``, Eq. (4).

        ``exact=True`` evaluates the coding path (float64, quantized networks and priors, no gradients): the ideal
        code length of the file :func:`flowlib.compress.codec.compress` writes is ``-log2 P`` of this value.
        """
        context = torch.no_grad() if exact else nullcontext()
        with context:
            outputs = self._levels_forward(self._centre(x, torch.float64 if exact else torch.float32))
            total = torch.zeros(x.shape[0], dtype=torch.float64 if exact else torch.float32, device=x.device)
            for level, (kept, latent) in zip(self.levels, outputs):
                log_prob = level.distribution(kept, exact).log_prob(latent)  # Eq. (5)
                total = total + log_prob.flatten(1).sum(1)
        return total

    def bits_per_dim(self, x: Tensor, exact: bool = False) -> Tensor:
        """``-log2 P(x) / D``, ``(B,)``, Eq. (6) (a discrete model: bin width 1)."""
        return bits_per_dim(self.log_prob(x, exact), self.num_dims, bin_width=1)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`log_prob` (training path)."""
        return self.log_prob(x)

    @torch.no_grad()
    def forward_integer(self, x: Tensor, return_contexts: bool = False):
        """The latents ``[z_1, ..., z_L]`` (``int64``) of ``uint8`` images, computed on the exact coding path.

        With ``return_contexts=True`` also returns ``[y_1, ..., y_{L-1}, None]`` (float64), the kept parts that
        condition each level's prior.
        """
        outputs = self._levels_forward(self._centre(x, torch.float64))
        latents = [latent.to(torch.int64) for _, latent in outputs]
        if return_contexts:
            return latents, [kept for kept, _ in outputs]
        return latents

    @torch.no_grad()
    def inverse_latent_level(self, index: int, kept: Tensor | None, latent: Tensor) -> Tensor:
        """Undo level ``index`` on the coding path: ``(y_l, z_l) -> y_{l-1}`` (float64 integers)."""
        return self.levels[index].inverse(kept, latent.to(torch.float64))

    @torch.no_grad()
    def inverse_integer(self, latents: list[Tensor]) -> Tensor:
        """``uint8`` images ``(B, C, H, W)`` from latents ``[z_1, ..., z_L]``, inverting :meth:`forward_integer`.

        Raises ``ValueError`` if the latents are not integers (NaN, infinite or fractional values) or do not map to
        pixels in ``0..255`` (they were not made by this model).
        """
        if len(latents) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} latent tensors (one per level), got {len(latents)}")
        y = None
        for index in reversed(range(len(self.levels))):
            latent, expected = latents[index], self.levels[index].latent_shape
            if tuple(latent.shape[1:]) != expected or len(latent) != len(latents[0]):
                raise InputShapeError(
                    f"latent {index} should have shape ({len(latents[0])}, {expected}), got {tuple(latent.shape)}"
                )
            if latent.is_floating_point() and not bool((torch.isfinite(latent) & (latent == latent.round())).all()):
                raise ValueError(f"latent {index} holds values that are not integers (NaN, inf or fractions)")
            y = self.inverse_latent_level(index, y, latent)
        pixels = y + PIXEL_OFFSET
        if bool(((pixels < 0) | (pixels > 255)).any()):
            raise ValueError("these latents do not decode to pixels in 0..255; they were not produced by this model")
        return pixels.to(torch.uint8)

    @torch.no_grad()
    def prior(self, index: int, context: Tensor | None) -> DiscretizedLogistic | DiscretizedLogisticMixture:
        """The quantized coding-path prior of ``z_index`` given its context ``y_index`` (``None`` for the top).

        Means and log-scales are multiples of ``2^-PARAMETER_BITS`` computed in exact arithmetic, so encoder and
        decoder build identical coding tables from them on any machine. For the top level the distribution has
        the event shape ``(C, H, W)`` (the same for every image).
        """
        level = self.levels[index]
        if level.last:
            return level.distribution(None, exact=True)
        return level.distribution(context.to(torch.float64))


# --------------------------------------------------------------------------------------------------------------
# Training: minimise Eq. (6) with straight-through gradients (3)
# --------------------------------------------------------------------------------------------------------------


def parameter_groups(model: IDF, lr: float) -> list[dict]:
    """Optimiser groups: couplings at ``lr``, the factor-out prior networks at ``2.5 lr``, the top prior's
    per-dimension log-scales and mixture logits at ``25 lr`` and its means at ``MEAN_LR_FACTOR * lr``.

    Prior log-scales start broad and must shrink by several nats, and per-dimension parameters get one gradient
    each, so at the base rate Adam moves them only ``lr`` per step; the paper trains for hundreds of epochs with one
    rate, our short runs need the priors to catch up quickly. The means are the exception: they are stored in units
    of ``INPUT_SCALE`` (128 integers), so one Adam step moves a mean by ``128 * rate`` integers whatever its
    gradient. At ``25 lr`` (``lr = 3e-3``: 10 integers a step) the components that explain few values, whose tiny
    gradients Adam normalises to full steps, random-walk out of the range of the latents and die; the longer the
    learning rate stays high, the more die. On MNIST (the chapter's ``standard`` sizes, batch 32, cosine schedule)
    4,500 steps then ended at 2.44 bits/dim where 1,500 steps had reached 1.85 (57 % of the top components with
    weight below 1e-3 and 46 % of the means outside the range of the latents, against 25 % and 26 %). With the means
    at ``5 lr`` (1.9 integers a step) both lengths end at 1.84 (two seeds each: 1.83 and 1.84 after 1,500 steps,
    1.78 and 1.90 after 4,500); at ``lr`` they end at 2.01 and 1.83.
    """
    top_means, top, conditional, rest = [], [], [], []
    for name, parameter in model.named_parameters():
        if ".prior.net." in name:
            conditional.append(parameter)
        elif name.endswith(".prior.scaled_means"):
            top_means.append(parameter)
        elif ".prior." in name:
            top.append(parameter)
        else:
            rest.append(parameter)
    return [dict(params=rest, lr=lr), dict(params=conditional, lr=2.5 * lr), dict(params=top, lr=25 * lr),
            dict(params=top_means, lr=MEAN_LR_FACTOR * lr)]


IDFData = Union[str, Tensor, Dataset, DataLoader, Iterable]


def train_idf(
    model: IDF,
    data: IDFData,
    *,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    warmup_steps: int = 0,
    train_subset: int | None = None,
    eval_images: int | Tensor | None = 1000,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    compile: bool | str | dict = False,
    precision: str = "float32",
) -> dict:
    """Train ``model`` by minimising the bits per dimension (6) with Adam (:func:`parameter_groups`), a linear
    warm-up over ``warmup_steps`` and a cosine learning-rate decay to zero at the last step.

    Arguments:
        data: ``uint8`` training images ``(B, C, H, W)`` in any of these forms: a dataset name (``"mnist"``,
            ``"fashion_mnist"``, ``"cifar10"``: its training split, ``train_subset`` images if given); a tensor of
            images; a ``Dataset`` whose items are images or ``(image, label)`` pairs; a ``DataLoader`` (or any
            iterable) of such batches, used as it is (``batch_size`` and ``train_subset`` then do not apply).
        epochs, max_steps: passes over the data, or at most this many steps (the schedule ends at the last).
        eval_images: the test images evaluated after each epoch: a ``uint8`` tensor, or a number of images of the
            named dataset's test split (no evaluation for other data, or for ``None``).
        device: where to train (default :func:`flowlib.device.default_device`). On a GPU a named dataset or a
            tensor stays whole in GPU memory (:class:`flowlib.data.TensorBatches`).
        progress, compile, precision: passed to :func:`flowlib.train.fit`.

    Returns metadata for :func:`flowlib.train.train_or_load`: the model config, device, seconds, steps, the mean
    training bits/dim per epoch and the bits/dim of the evaluation images after each epoch.
    """
    from flowlib.data import batch_inputs, load_images
    from flowlib.device import resolve_device
    from flowlib.train import fit

    device = resolve_device(device)
    loader = _idf_batches(data, batch_size, train_subset, device)
    if not hasattr(loader, "__len__") and max_steps is None:
        raise ValueError("train_idf needs max_steps when the data is an iterable without a length")
    length = len(loader) if hasattr(loader, "__len__") else max_steps
    steps_per_epoch = length if max_steps is None else min(length, max_steps)
    total_steps = steps_per_epoch * epochs if max_steps is None else min(max_steps, length * epochs)
    optimizer = torch.optim.Adam(parameter_groups(model, lr), fused=True if device.type == "cuda" else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, warmup_steps=warmup_steps,
                                                                     total_steps=max(1, total_steps)))
    if isinstance(eval_images, int) and isinstance(data, str):
        eval_images = load_images(data, "test", subset=eval_images)[0]
    test_images = eval_images.to(device) if isinstance(eval_images, Tensor) else None

    def loss_fn(model: IDF, batch) -> Tensor:
        return model.bits_per_dim(batch_inputs(batch)).mean()  # Eq. (6)

    def eval_fn(model: IDF) -> float:
        return float(torch.cat([model.bits_per_dim(part) for part in test_images.split(500)]).mean())

    name = data if isinstance(data, str) else type(data).__name__
    history = fit(
        model, loss_fn, loader, epochs=epochs, max_steps=max_steps, optimizer=optimizer, scheduler=scheduler,
        eval_fn=eval_fn if test_images is not None else None, device=device, progress=progress, desc=f"IDF {name}",
        compile=compile, precision=precision,
    )
    per_epoch = [
        sum(chunk) / len(chunk)
        for chunk in (
            history.train_loss[i : i + steps_per_epoch] for i in range(0, len(history.train_loss), steps_per_epoch)
        )
    ]
    return dict(
        config=model.config, dataset=name, device=device.type, seconds=round(history.seconds, 1),
        steps=len(history.train_loss), batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
        train_bits_per_dim=per_epoch, test_bits_per_dim=history.eval_loss,
        eval_images=0 if test_images is None else len(test_images),
    )


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate factor of optimiser step ``step`` (from 0): linear from ``1 / warmup_steps`` to 1, then a
    half cosine from 1 that reaches 0 at ``total_steps``, one step after the last (as ``CosineAnnealingLR``).

    Example:
        >>> [round(warmup_cosine(step, warmup_steps=2, total_steps=6), 3) for step in range(7)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _idf_batches(data: IDFData, batch_size: int, subset: int | None, device: torch.device) -> Iterable:
    """Shuffled training batches (dropping the last, smaller one) of ``data`` in any form :func:`train_idf` takes."""
    from flowlib.data import as_batches, image_loader

    on_cpu = device.type == "cpu"
    if isinstance(data, str):
        return image_loader(data, "train", batch_size, subset=subset, form="uint8", shuffle=True, drop_last=True,
                            device=None if on_cpu else device)
    if isinstance(data, Tensor):
        if subset is not None:
            data = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:subset]]
        data = data.to(device)  # batched where the model is
    elif not isinstance(data, (Dataset, DataLoader, Iterable)):
        raise TypeError(f"train_idf takes a dataset name, a uint8 tensor, a Dataset or a DataLoader; got {type(data)}")
    return as_batches(data, batch_size, shuffle=True, drop_last=True)
