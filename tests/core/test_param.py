"""Image parameterizations: shapes and range, colour basis, starting images, seeds, the Fourier
scale, and that an optimizer can move the image."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from featviz import param as P
from featviz.param.color import (
    COLOR_CORRELATION,
    COLOR_CORRELATION_SVD_SQRT,
    from_valid_rgb,
    rgb_to_decorrelated,
)

SIZES = [8, 7, (6, 9), (9, 6)]
KINDS = [(fft, dec) for fft in (True, False) for dec in (True, False)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hw(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def natural_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A [3,H,W] image with values inside (0.02, 0.98)."""
    return 0.02 + 0.96 * torch.rand(3, h, w, generator=gen(seed)).clamp(0.001, 0.999)


# ------------------------------------------------------------------------------ shape/range


@pytest.mark.parametrize("fft,decorrelate", KINDS)
@pytest.mark.parametrize("size", SIZES)
def test_image_is_a_module_giving_rgb_in_unit_range(fft, decorrelate, size):
    h, w = hw(size)
    p = P.image(size, 2, fft=fft, decorrelate=decorrelate, generator=gen())
    assert isinstance(p, nn.Module)
    assert p.batch == 2 and p.size == (h, w)
    img = p()
    assert img.shape == (2, 3, h, w)
    assert torch.isfinite(img).all()
    assert img.min() >= 0 and img.max() <= 1
    assert len(list(p.parameters())) >= 1
    assert all(q.requires_grad for q in p.parameters())


@pytest.mark.parametrize("fft", [True, False])
def test_even_extreme_raw_values_stay_in_range(fft):
    p = P.image((5, 6), 1, fft=fft)
    with torch.no_grad():
        for q in p.parameters():
            q.normal_(0, 50, generator=gen())
    img = p()
    assert img.min() >= 0 and img.max() <= 1
    assert img.std() > 0.1  # not stuck at grey


def test_clamp_validity_stays_in_range():
    p = P.image(8, 2, valid="clamp", generator=gen())
    with torch.no_grad():
        for q in p.parameters():
            q.normal_(0, 50, generator=gen())
    img = p()
    assert img.min() >= 0 and img.max() <= 1


# ------------------------------------------------------------------------------ colour


def test_color_correlation_is_normalized_by_its_largest_column():
    norms = COLOR_CORRELATION.norm(dim=0)
    assert norms.max().item() == pytest.approx(1.0, abs=1e-6)
    # the same matrix up to that factor (lucid: 0.4620)
    factor = COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
    assert factor.item() == pytest.approx(0.462, abs=1e-3)
    torch.testing.assert_close(COLOR_CORRELATION * factor, COLOR_CORRELATION_SVD_SQRT)


def test_decorrelated_to_rgb_mixes_like_lucid_and_inverts():
    t = torch.randn(2, 3, 4, 5, generator=gen())
    rgb = P.decorrelated_to_rgb(t)
    # lucid: t_flat @ color_correlation_normalized.T over the channel axis
    want = (t.permute(0, 2, 3, 1) @ COLOR_CORRELATION.T).permute(0, 3, 1, 2)
    torch.testing.assert_close(rgb, want)
    torch.testing.assert_close(rgb_to_decorrelated(rgb), t, atol=1e-5, rtol=0)
    torch.testing.assert_close(P.decorrelated_to_rgb(rgb_to_decorrelated(t)), t, atol=1e-5,
                               rtol=0)


def test_decorrelate_mixes_channels_only_when_asked():
    for decorrelate, mixed in ((True, True), (False, False)):
        p = P.image(6, 1, fft=False, decorrelate=decorrelate)
        with torch.no_grad():
            p.raw.raw.zero_()
            p.raw.raw[:, 0] = 2.0  # only the first raw channel (the luminance-like one)
        img = p()
        changed = (img - 0.5).abs().amax(dim=(0, 2, 3)) > 1e-3
        assert changed.tolist() == ([True, True, True] if mixed else [True, False, False])


# ------------------------------------------------------------------------- starting images


@pytest.mark.parametrize("fft,decorrelate", KINDS)
@pytest.mark.parametrize("size", SIZES)
def test_set_image_round_trips(fft, decorrelate, size):
    h, w = hw(size)
    img = natural_image(h, w)
    p = P.image(size, 2, fft=fft, decorrelate=decorrelate, generator=gen())
    assert p.set_image(img) is p
    out = p()
    torch.testing.assert_close(out, img[None].expand(2, -1, -1, -1), atol=1e-3, rtol=0)
    q = P.image(size, 2, fft=fft, decorrelate=decorrelate, init=img)
    torch.testing.assert_close(q(), out, atol=1e-3, rtol=0)


@pytest.mark.parametrize("fft,decorrelate", KINDS)
def test_saturated_pixels_are_pulled_in_only_slightly(fft, decorrelate):
    img = (torch.rand(3, 8, 9, generator=gen()) > 0.5).float()  # exactly 0 and 1
    img[0, 0, :2] = torch.tensor([0.001, 0.999])
    p = P.image((8, 9), 1, fft=fft, decorrelate=decorrelate, init=img)
    out = p()
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], img, atol=5e-4, rtol=0)


@pytest.mark.parametrize("fft", [True, False])
def test_set_image_per_batch_images(fft):
    imgs = torch.stack([natural_image(7, 10, seed=s) for s in range(3)])
    p = P.image((7, 10), 3, fft=fft, init=imgs.double())
    torch.testing.assert_close(p(), imgs, atol=1e-3, rtol=0)
    assert p().dtype == torch.float32


@pytest.mark.parametrize("fft", [True, False])
def test_starting_image_can_still_be_optimized(fft):
    img = natural_image(8, 8)
    p = P.image(8, 1, fft=fft, init=img)
    p().mean().backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in p.parameters())


# ---------------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("fft", [True, False])
def test_same_seed_same_image_different_seed_differs(fft):
    a = P.image(12, 2, fft=fft, generator=gen(3))()
    b = P.image(12, 2, fft=fft, generator=gen(3))()
    c = P.image(12, 2, fft=fft, generator=gen(4))()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # each image of the batch is its own noise


# ---------------------------------------------------------------------------------- Fourier


@pytest.mark.parametrize("decorrelate", [True, False])
def test_fourier_init_is_low_contrast_grey(decorrelate):
    img = P.image(64, 2, fft=True, decorrelate=decorrelate, generator=gen())()
    assert img.std().item() < 0.05
    assert img.std().item() > 0  # but not constant
    assert abs(img.mean().item() - 0.5) < 0.02


def test_rfft2_frequencies():
    f = P.rfft2_frequencies(8, 10)
    assert f.shape == (8, 6)
    assert f[0, 0] == 0
    assert f[0, 5].item() == pytest.approx(0.5)  # Nyquist in x
    assert f[4, 0].item() == pytest.approx(0.5)  # Nyquist in y
    assert f.max().item() == pytest.approx(0.5 * 2 ** 0.5)
    assert torch.equal(f[1], f[-1])  # negative y frequencies have the same magnitude


@pytest.mark.parametrize("size", [(8, 10), (9, 7), (16, 16)])
def test_fourier_scale_down_weights_high_frequencies(size):
    h, w = size
    raw = P.image(size, 1).raw
    scale = raw.scale
    assert scale.shape == (h, w // 2 + 1)
    freqs = P.rfft2_frequencies(h, w)
    assert scale[0, 0] == scale.max()
    assert scale[0, 0] > 3 * scale[h // 2, w // 2]
    # non-increasing in frequency
    order = freqs.flatten().argsort()
    by_freq = scale.flatten()[order]
    assert (by_freq[1:] <= by_freq[:-1] + 1e-6).all()
    assert by_freq[0] > by_freq[-1]


def test_pixel_loss_gradient_is_largest_at_low_frequencies():
    h, w = 8, 10
    p = P.image((h, w), 1, fft=True, decorrelate=False)
    p()[0, 0, 3, 4].backward()
    g = torch.view_as_complex(p.raw.spectrum.grad)[0, 0].abs()
    low = torch.stack([g[0, 1], g[1, 0], g[1, 1], g[-1, 1]])
    high = g[h // 2, 1:]
    assert low.min() > 2 * high.max()
    assert g[:, 1:-1].max() == g[0, 1] or g[:, 1:-1].max() == g[1, 0]


# ---------------------------------------------------------------------------- optimization


@pytest.mark.parametrize("fft,decorrelate", KINDS)
def test_adam_fits_a_target_image(fft, decorrelate):
    target = 0.2 + 0.6 * torch.rand(1, 3, 16, 16, generator=gen(1))
    p = P.image(16, 1, fft=fft, decorrelate=decorrelate, generator=gen())
    opt = torch.optim.Adam(p.parameters(), lr=0.05)
    first = ((p() - target) ** 2).mean().item()
    for step in range(50):
        loss = ((p() - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in p.parameters())
        opt.step()
    final = ((p() - target) ** 2).mean().item()
    assert final < 0.4 * first


# --------------------------------------------------------------------------------- errors


def test_bad_sizes_and_batches_raise():
    with pytest.raises(ValueError, match="batch"):
        P.image(8, 0)
    for size in (1, (1, 5), (5, 1), 0):
        with pytest.raises(ValueError, match="at least 2x2"):
            P.image(size)
    P.image(2)  # the smallest allowed


@pytest.mark.parametrize("fft", [True, False])
def test_set_image_with_the_wrong_shape_names_the_expected_shape(fft):
    p = P.image((6, 9), 2, fft=fft)
    with pytest.raises(ValueError, match=r"\[B,3,6,9\]"):
        p.set_image(torch.rand(3, 9, 6))
    with pytest.raises(ValueError, match=r"\[B,3,6,9\]"):
        p.set_image(torch.rand(1, 4, 6, 9))
    with pytest.raises(ValueError, match=r"\[B,3,6,9\]"):
        P.image((6, 9), 1, fft=fft, init=torch.rand(3, 8, 8))


def test_from_valid_rgb_rejects_unknown_mode():
    with pytest.raises(ValueError, match="sigmoid"):
        from_valid_rgb(torch.rand(1, 3, 2, 2), valid="bogus")
    with pytest.raises(ValueError, match="sigmoid"):
        P.image(4, valid="bogus")()
