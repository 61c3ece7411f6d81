"""Conditioner networks: the (non-invertible) neural networks inside coupling layers and factor-out priors.

They never need to be invertible themselves; a coupling layer stays invertible whatever they compute. Their last
layer is zero-initialised by default, so a coupling layer built around them starts as the identity map, which makes
deep flows stable at the start of training (Kingma & Dhariwal, 2018, Section 3.3).

Conditional flows: built with ``context_features=K``, a network also takes a context ``(B, K)`` (a label embedding,
an observation) as ``net(x, context)``; it is concatenated to the input (features for :class:`MLP`, constant
channels for :class:`ConvNet`, every hidden layer's input for :class:`MADE`'s first layer). Built without it, a
network takes ``net(x)`` only, exactly as before.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["MLP", "MADE", "ConvNet", "ResidualBlock"]


def _check_context(network: str, context: Tensor | None, context_features: int, batch_size: int) -> None:
    """Raise a ``ValueError`` that says what to pass unless ``context`` matches ``context_features``."""
    if context_features == 0:
        if context is not None:
            raise ValueError(
                f"{network} was built without context (context_features=0) but got a context of shape "
                f"{tuple(context.shape)}; build it with context_features={context.shape[-1]} for a conditional flow"
            )
        return
    if context is None:
        raise ValueError(
            f"{network} was built with context_features={context_features}: pass context of shape "
            f"(B, {context_features})"
        )
    if context.dim() != 2 or context.shape != (batch_size, context_features):
        raise ValueError(
            f"{network} expects context of shape ({batch_size}, {context_features}), got {tuple(context.shape)}"
        )


def _zero_init(layer: nn.Linear | nn.Conv2d) -> None:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class MLP(nn.Module):
    """A fully connected network ``(B, in_features) -> (B, out_features)``.

    Arguments:
        in_features: input size.
        out_features: output size (twice the transformed features for an affine coupling: log-scale and shift).
        hidden_features: width of every hidden layer.
        num_hidden_layers: number of hidden layers (0 gives a single linear layer).
        activation: activation class, instantiated once per hidden layer.
        zero_init_last: zero the last layer's weight and bias so the network outputs 0 at initialisation.
        context_features: size ``K`` of a context ``(B, K)`` concatenated to the input (0: unconditional).

    Shapes: ``net(x)``: ``(B, in_features) -> (B, out_features)``; with ``context_features=K``,
    ``net(x, context)`` with ``context`` of shape ``(B, K)``.

    Example:
        >>> import torch
        >>> net = MLP(4, 8, hidden_features=16)
        >>> net(torch.randn(3, 4)).shape
        torch.Size([3, 8])
        >>> bool((net(torch.randn(3, 4)) == 0).all())  # zero-initialised last layer
        True
        >>> MLP(4, 8, hidden_features=16, context_features=2)(torch.randn(3, 4), torch.randn(3, 2)).shape
        torch.Size([3, 8])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 256,
        num_hidden_layers: int = 2,
        activation: type[nn.Module] = nn.ReLU,
        zero_init_last: bool = True,
        context_features: int = 0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.context_features = context_features
        layers: list[nn.Module] = []
        width = in_features + context_features
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden_features), activation()]
            width = hidden_features
        last = nn.Linear(width, out_features)
        if zero_init_last:
            _zero_init(last)
        layers.append(last)
        self.network = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"MLP expects input of shape (B, {self.in_features}), got {tuple(x.shape)}")
        if context is None and self.context_features == 0:
            return self.network(x)
        _check_context("MLP", context, self.context_features, x.shape[0])
        return self.network(torch.cat([x, context], dim=1))


class ResidualBlock(nn.Module):
    """``h + conv3x3(relu(conv3x3(relu(h))))`` at constant width; ``(B, C, H, W) -> (B, C, H, W)``.

    Arguments:
        num_channels: channels ``C`` in and out.

    Example:
        >>> import torch
        >>> ResidualBlock(8)(torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(num_channels, num_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(num_channels, num_channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ConvNet(nn.Module):
    """A small ResNet of 3x3 convolutions keeping the spatial size: ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    No normalisation layers, so its output never depends on the batch (batch size 1 and train/eval behave alike).

    Arguments:
        in_channels: input channels.
        out_channels: output channels (twice the transformed channels for an affine coupling).
        hidden_channels: width of the residual blocks.
        num_blocks: number of :class:`ResidualBlock` between the input and output convolutions.
        zero_init_last: zero the last convolution so the network outputs 0 at initialisation.
        context_features: size ``K`` of a context ``(B, K)`` appended as ``K`` constant input channels (0: none).

    Shapes: ``net(x)``: ``(B, C_in, H, W) -> (B, C_out, H, W)``; with ``context_features=K``, ``net(x, context)``
    with ``context`` of shape ``(B, K)``.

    Example:
        >>> import torch
        >>> net = ConvNet(2, 4, hidden_channels=8, num_blocks=1)
        >>> net(torch.randn(3, 2, 6, 6)).shape
        torch.Size([3, 4, 6, 6])
        >>> ConvNet(2, 4, 8, 1, context_features=10)(torch.randn(3, 2, 6, 6), torch.randn(3, 10)).shape
        torch.Size([3, 4, 6, 6])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 64,
        num_blocks: int = 2,
        zero_init_last: bool = True,
        context_features: int = 0,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.context_features = context_features
        last = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        if zero_init_last:
            _zero_init(last)
        self.network = nn.Sequential(
            nn.Conv2d(in_channels + context_features, hidden_channels, 3, padding=1),
            *[ResidualBlock(hidden_channels) for _ in range(num_blocks)],
            nn.ReLU(),
            last,
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ConvNet expects input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if context is None and self.context_features == 0:
            return self.network(x)
        _check_context("ConvNet", context, self.context_features, x.shape[0])
        planes = context[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.network(torch.cat([x, planes], dim=1))


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 ``mask`` of shape ``(out_features, in_features)``."""

    def __init__(self, mask: Tensor, bias: bool = True):
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation: output ``i`` depends on inputs ``0..i-1`` only.

    Hidden unit ``k`` gets a degree ``m(k)`` in ``1..D-1`` (cycled); a weight from unit ``a`` to unit ``b`` is kept
    only where ``m(b) >= m(a)`` (hidden layers, inputs numbered ``1..D``) and ``d > m(a)`` for output ``d``
    (Germain et al. 2015). A context ``(B, K)`` feeds the first hidden layer through an unmasked linear
    map, so every output may depend on it.

    Arguments:
        num_features: ``D``, inputs in autoregressive order ``0..D-1``.
        num_outputs_per_feature: ``P`` parameters per feature (2 for MAF's shift and log-scale).
        hidden_features: width of every hidden layer (at least ``D - 1`` so every degree is present).
        num_hidden_layers: number of hidden layers (at least 1).
        context_features: size ``K`` of an optional context (0: none).
        zero_init_last: zero the output layer so the network outputs 0 at initialisation.

    Shapes: ``(B, D) -> (B, P, D)``: ``out[:, p, i]`` is parameter ``p`` of feature ``i``.

    References:
        MADE: Masked Autoencoder for Distribution Estimation. Germain, Gregor, Murray, Larochelle, 2015.
        arXiv:1502.03509.

    Example:
        >>> import torch
        >>> made = MADE(3, num_outputs_per_feature=2, hidden_features=8, zero_init_last=False)
        >>> x = torch.randn(1, 3, requires_grad=True)
        >>> made(x)[0, :, 1].sum().backward()  # parameters of feature 1 depend on feature 0 only
        >>> (x.grad != 0).tolist()
        [[True, False, False]]
    """

    def __init__(
        self,
        num_features: int,
        num_outputs_per_feature: int = 2,
        hidden_features: int = 64,
        num_hidden_layers: int = 2,
        context_features: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        zero_init_last: bool = True,
    ):
        super().__init__()
        if num_features < 2:
            raise ValueError(f"MADE needs at least 2 features, got {num_features}")
        if num_hidden_layers < 1 or hidden_features < num_features - 1:
            raise ValueError(
                f"MADE needs at least one hidden layer of at least num_features - 1 = {num_features - 1} units, got "
                f"num_hidden_layers={num_hidden_layers}, hidden_features={hidden_features}"
            )
        self.num_features = num_features
        self.num_outputs_per_feature = num_outputs_per_feature
        self.context_features = context_features
        input_degrees = torch.arange(1, num_features + 1)
        hidden_degrees = torch.arange(hidden_features) % (num_features - 1) + 1
        layers: list[nn.Module] = [MaskedLinear((hidden_degrees[:, None] >= input_degrees[None, :]).float())]
        for _ in range(num_hidden_layers - 1):
            layers += [activation(), MaskedLinear((hidden_degrees[:, None] >= hidden_degrees[None, :]).float())]
        output_degrees = input_degrees.repeat(num_outputs_per_feature)  # (P * D,), parameter-major
        last = MaskedLinear((output_degrees[:, None] > hidden_degrees[None, :]).float())
        if zero_init_last:
            _zero_init(last)
        self.hidden = nn.Sequential(*layers)
        self.context_layer = nn.Linear(context_features, hidden_features, bias=False) if context_features else None
        self.output = nn.Sequential(activation(), last)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"MADE expects input of shape (B, {self.num_features}), got {tuple(x.shape)}")
        _check_context("MADE", context, self.context_features, x.shape[0])
        first, *rest = self.hidden
        hidden = first(x)
        if self.context_layer is not None:
            hidden = hidden + self.context_layer(context)
        for layer in rest:
            hidden = layer(hidden)
        return self.output(hidden).view(x.shape[0], self.num_outputs_per_feature, self.num_features)
