"""Image-quality measures order synthetic images with known spectra correctly."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny

from featviz import metrics, transforms
from featviz import objectives as obj

N = 64


def _checkerboard() -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(N), torch.arange(N), indexing="ij")
    return ((x + y) % 2).float().expand(3, N, N)


def _gradient() -> torch.Tensor:
    return torch.linspace(0, 1, N).view(1, 1, N).expand(3, N, N)


def _noise() -> torch.Tensor:
    return torch.rand(3, N, N, generator=torch.Generator().manual_seed(0))


def test_high_frequency_share_orders_known_spectra():
    board, smooth, noise = (metrics.high_frequency_share(f()) for f in
                            (_checkerboard, _gradient, _noise))
    assert board > 0.99  # all power at the Nyquist corner
    assert smooth < 0.05
    # white noise: power spread evenly, so the share is the area above half Nyquist (~0.8)
    assert 0.7 < noise < 0.9
    assert smooth < noise < board


def test_checkerboard_energy_orders_known_spectra():
    board, smooth, noise = (metrics.checkerboard_energy(f()) for f in
                            (_checkerboard, _gradient, _noise))
    assert board > 1e6
    assert 0.3 < noise < 3  # no preferred frequency
    assert board > noise and board > smooth


def test_stride_four_grid_is_seen():
    img = torch.rand(3, N, N, generator=torch.Generator().manual_seed(1)) * 0.1
    img[:, ::4, ::4] += 1.0
    plain = torch.rand(3, N, N, generator=torch.Generator().manual_seed(1)) * 0.1
    assert metrics.checkerboard_energy(img, strides=(4,)) > 10 * metrics.checkerboard_energy(
        plain, strides=(4,))


def test_objective_value_and_robustness():
    model = make_tiny()
    objective = obj.channel("conv2", 1)
    imgs = torch.rand(2, 3, 32, 32)
    plain = metrics.objective_value(model, objective, imgs)
    assert plain.shape == (2,)
    same = metrics.robust_objective(model, objective, imgs, transforms.Compose([]), draws=3)
    torch.testing.assert_close(same, plain)
    moved = metrics.robust_objective(model, objective, imgs, transforms.standard(), draws=3)
    assert not torch.allclose(moved, plain)


def test_steps_to_fraction():
    hist = torch.tensor([[0.0, 5.0], [5.0, 5.0], [9.0, 5.0], [10.0, 5.0]])
    assert metrics.steps_to_fraction(hist, [1, 2, 3, 4]) == [3, 1]


def test_psnr():
    a = torch.rand(1, 3, 16, 16) * 0.5
    assert metrics.psnr(a, a) == float("inf")
    # a uniform error of 0.1 is a mean squared error of 0.01: 20 dB
    assert math.isclose(metrics.psnr(a, a + 0.1), 20.0, abs_tol=1e-4)
    assert metrics.psnr(a, a + 0.01) > metrics.psnr(a, a + 0.1)


def test_ssim():
    a = torch.rand(1, 3, 16, 16)
    assert math.isclose(metrics.ssim(a, a), 1.0, abs_tol=1e-4)
    assert math.isclose(metrics.ssim(a[0], a[0]), 1.0, abs_tol=1e-4)  # [3,H,W] works too
    assert metrics.ssim(a, torch.rand(1, 3, 16, 16)) < 0.5
    assert metrics.ssim(a, (a + 0.05).clamp(0, 1)) > metrics.ssim(a, torch.rand(1, 3, 16, 16))


def test_saturated_share_counts_pixels_with_any_channel_at_the_ends():
    img = torch.full((3, 10, 10), 0.5)
    img[0, :2] = 1.0  # two rows with red at the top of its range
    img[2, 9, :5] = 0.01  # half a row with blue at the bottom
    assert metrics.saturated_share(img) == pytest.approx(0.25)
    assert metrics.saturated_share(img[None].expand(2, -1, -1, -1)) == pytest.approx(0.25)
    assert metrics.saturated_share(torch.full((3, 4, 4), 0.5)) == 0.0


class _OneSize(torch.nn.Module):
    """Takes 32-px images only, as a ViT checks its input size."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        assert x.shape[-2:] == (32, 32), f"got {tuple(x.shape[-2:])}"
        return self.conv(x)


def test_a_held_out_objective_fits_the_views_to_a_model_of_one_size():
    import featviz

    model = featviz.models.wrap(_OneSize(), input_size=32, fixed_size=True)
    images = torch.rand(2, 3, 32, 32)
    held = metrics.robust_objective(model, obj.channel("conv", 1), images, transforms.standard(),
                                    draws=3, seed=0)
    assert held.shape == (2,) and torch.isfinite(held).all()
    # one hook session for all draws, and the same draws as one at a time from one generator
    gen = torch.Generator().manual_seed(0)
    one_by_one = sum(metrics.objective_value(model, obj.channel("conv", 1), images,
                                             transforms.standard(), gen) for _ in range(3)) / 3
    torch.testing.assert_close(held, one_by_one)
