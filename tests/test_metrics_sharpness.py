"""Tests of flowlib.metrics.sharpness (PIE's Table 1 metric: variance of the Laplace-filtered image)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlib.metrics import sharpness


@given(value=st.floats(0.0, 1.0), size=st.integers(3, 10))
@settings(max_examples=25, deadline=None)
def test_constant_image_has_zero_sharpness(value: float, size: int) -> None:
    assert sharpness(torch.full((2, 1, size, size), value)) == pytest.approx(0.0, abs=1e-12)


def test_single_bright_pixel_by_hand() -> None:
    """A 5x5 image with one pixel of 1 in the middle: the valid 3x3 activations are
    [[0,1,0],[1,-4,1],[0,1,0]] (the kernel itself), mean 0, variance (4*1 + 16)/9 = 20/9."""
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1.0
    assert sharpness(image) == pytest.approx(20.0 / 9.0)
    # 8-neighbour kernel: activations are eight 1s and one -8: mean 0, variance (8 + 64) / 9 = 8.
    assert sharpness(image, kernel="laplace8") == pytest.approx(8.0)


def test_vertical_stripes_by_hand() -> None:
    """Columns alternating 0, 1: the Laplacian is -2 on 1-columns and +2 on 0-columns (the vertical neighbours
    are equal), so every activation is +-2 in equal number (valid 4x4 output of a 6x6 image): variance 4."""
    image = (torch.arange(6) % 2).float().expand(6, 6).reshape(1, 1, 6, 6)
    assert sharpness(image) == pytest.approx(4.0)


def test_average_over_images_and_uint8() -> None:
    flat = torch.zeros(1, 1, 5, 5)
    spike = flat.clone()
    spike[0, 0, 2, 2] = 1.0
    assert sharpness(torch.cat([flat, spike])) == pytest.approx(10.0 / 9.0)
    assert sharpness((spike * 255).to(torch.uint8)) == pytest.approx(20.0 / 9.0)
    assert sharpness(spike[:, 0]) == pytest.approx(20.0 / 9.0)  # (N, H, W) is accepted


def test_blur_lowers_sharpness() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 16, 16, generator=generator)
    blurred = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1)
    assert sharpness(blurred) < sharpness(images)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kernel"):
        sharpness(torch.zeros(1, 1, 5, 5), kernel="sobel")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        sharpness(torch.zeros(5, 5))
