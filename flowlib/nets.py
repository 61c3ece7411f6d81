"""Conditioner networks: the (non-invertible) neural networks inside coupling layers and factor-out priors.

They never need to be invertible themselves; a coupling layer stays invertible whatever they compute. Their last
layer is zero-initialised by default, so a coupling layer built around them starts as the identity map, which makes
deep flows stable at the start of training (Kingma & Dhariwal, 2018, Section 3.3).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLP", "ConvNet", "ResidualBlock"]


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

    Example:
        >>> import torch
        >>> net = MLP(4, 8, hidden_features=16)
        >>> net(torch.randn(3, 4)).shape
        torch.Size([3, 8])
        >>> bool((net(torch.randn(3, 4)) == 0).all())  # zero-initialised last layer
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 256,
        num_hidden_layers: int = 2,
        activation: type[nn.Module] = nn.ReLU,
        zero_init_last: bool = True,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden_features), activation()]
            width = hidden_features
        last = nn.Linear(width, out_features)
        if zero_init_last:
            _zero_init(last)
        layers.append(last)
        self.network = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"MLP expects input of shape (B, {self.in_features}), got {tuple(x.shape)}")
        return self.network(x)


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

    Example:
        >>> import torch
        >>> net = ConvNet(2, 4, hidden_channels=8, num_blocks=1)
        >>> net(torch.randn(3, 2, 6, 6)).shape
        torch.Size([3, 4, 6, 6])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 64,
        num_blocks: int = 2,
        zero_init_last: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        last = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        if zero_init_last:
            _zero_init(last)
        self.network = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
            *[ResidualBlock(hidden_channels) for _ in range(num_blocks)],
            nn.ReLU(),
            last,
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ConvNet expects input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.network(x)
