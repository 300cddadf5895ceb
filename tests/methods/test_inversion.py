"""Feature inversion matches activations far better than its start, with clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import IMAGES, hook_free, make_tiny
from torch import nn

import featviz
from featviz import inversion, metrics
from featviz.errors import FeatvizError, UnknownNameError
from featviz.hooks import INPUT

FAST = dict(steps=120, size=32, progress=False)


def _photo():
    torch.manual_seed(0)
    # a smooth image: low-frequency noise, as photos are
    return torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4), (32, 32), mode="bilinear",
                                           align_corners=False)


def test_inversion_error_far_below_start():
    model = make_tiny()
    res = inversion.invert(model, _photo(), "conv2", **FAST)
    print(f"feature error: start {res.start_error:.3f} -> {res.feature_error:.4f}")
    assert res.feature_error < 0.2 * res.start_error
    assert res.image.shape == (1, 3, 32, 32)
    assert hook_free(model)


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.heavy
def test_pixel_and_fourier_and_cosine(fft):
    model = make_tiny()
    res = inversion.invert(model, _photo(), "conv1", fft=fft, kind="cosine", **FAST)
    assert res.feature_error < 0.5 * res.start_error


def test_matching_objective_is_normalized_error():
    target = torch.randn(2, 4, 5, 5)
    act = torch.randn(2, 4, 5, 5)
    value = inversion.matching("l", target)({"l": act})
    expected = -((act - target) ** 2).flatten(1).sum(1) / (target ** 2).sum()
    torch.testing.assert_close(value, expected)


def test_priors_follow_the_paper():
    img = torch.full((1, 3, 8, 8), 0.5)
    assert float(inversion.alpha_norm()({INPUT: img})) == 0
    img[:, 0, 0, 0] = 0.5 + inversion.B  # one pixel of one channel at the typical magnitude
    assert math.isclose(float(inversion.alpha_norm()({INPUT: img})), 1 / 64, rel_tol=1e-5)
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 3, 8, 8) * inversion.V
    # dx = V everywhere: each channel contributes 1, summed over 3 channels
    assert math.isclose(float(inversion.tv_beta()({INPUT: ramp})), 3.0, rel_tol=1e-4)


def test_zero_target_is_a_clear_error():
    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.fill_(-1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv(x))

    with pytest.raises(FeatvizError, match="all zero"):
        inversion.invert(Dead(), torch.rand(1, 3, 16, 16), "relu", steps=2, progress=False)


def test_wrong_size_is_resized_with_a_note():
    model = make_tiny()
    with pytest.warns(UserWarning, match="resizing the 48x40 image to 32x32"):
        res = inversion.invert(model, torch.rand(1, 3, 48, 40), "conv1", steps=2, progress=False)
    assert res.original.shape == (1, 3, 32, 32)


def test_unknown_layer():
    with pytest.raises(UnknownNameError, match="'conv2'"):
        inversion.invert(make_tiny(), _photo(), "conv_2", steps=2, progress=False)


def test_psnr_and_ssim_are_the_metrics_ones():
    """PSNR and SSIM live in featviz.metrics; the old names here still reach them."""
    assert inversion.psnr is metrics.psnr and inversion.ssim is metrics.ssim


def test_sweep_and_caricature(tmp_path):
    model = make_tiny()
    sweep = inversion.invert_layers(model, _photo(), ["conv1", "conv3"], steps=30, progress=False)
    assert [r.layer for r in sweep.results] == ["conv1", "conv3"]
    assert "| conv3 |" in sweep.table()
    assert sweep.save(tmp_path / "row.png").exists()
    car = inversion.caricature(model, _photo(), "conv3", steps=40, progress=False)
    target = inversion.features(model, car.original, "conv3")
    got = inversion.features(model, car.image, "conv3")
    # exaggerates: more aligned with the photo's activations than random noise is
    noise = inversion.features(model, torch.rand(1, 3, 32, 32), "conv3")
    cos = torch.nn.functional.cosine_similarity
    assert cos(got.flatten(), target.flatten(), 0) > cos(noise.flatten(), target.flatten(), 0)


def test_real_mobilenet_features2_and_14(mobilenet):
    img = featviz.images.load(IMAGES / "cat.jpg", size=224)
    shallow = inversion.invert(mobilenet, img, "features.2", steps=1000, progress=False)
    print(f"features.2: error {shallow.start_error:.3f} -> {shallow.feature_error:.4f}, "
          f"PSNR {shallow.psnr:.1f} dB")
    assert shallow.feature_error < 0.1 and shallow.psnr >= 18
    deep = inversion.invert(mobilenet, img, "features.14", steps=1000, progress=False)
    print(f"features.14: error {deep.start_error:.3f} -> {deep.feature_error:.4f}, "
          f"PSNR {deep.psnr:.1f} dB")
    assert deep.psnr >= 13 and deep.feature_error < 0.5 * deep.start_error
