"""Images of any channel count (issue 18): grayscale on a real trained model (scikit-learn's
digits), 13 multispectral bands, band correlations measured from the user's data, and the
errors that say what to change when a parameterization and a model disagree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DIGIT_SIZE, DigitNet, hook_free, make_tiny, wrap_digits
from PIL import Image
from torch import nn

import featviz
from featviz import objectives as obj
from featviz import param as P
from featviz import transforms as T
from featviz.errors import FeatvizError

# lucid's jitter, pad and rotation scaled to a 16-px image (the standard preset pads 12 px)
SMALL = [T.pad(2), T.jitter(4), T.rotate([-10, 10])]


def sentinel(seed: int = 0, channels: int = 13) -> nn.Module:
    """A random 13-band net (Sentinel-2 has 13 bands; or ``channels``), 32 px."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    with torch.no_grad():  # default init gives a tiny gain; make the image matter
        net[0].weight.mul_(3)
    return featviz.models.wrap(net, mean=[0.5] * channels, std=[0.25] * channels, input_size=32)


# -- the grayscale digits model ---------------------------------------------------------
@pytest.fixture(scope="module")
def class_renders(digits_model):
    """The ten digit classes rendered on the trained model and on its random twin, with the
    same seed, steps and transforms."""
    torch.manual_seed(1)
    twin = wrap_digits(DigitNet()).eval()
    objective = sum(obj.logit(k, batch=k) for k in range(10))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: two threads spin on a busy 2-core machine
    try:
        return {name: featviz.render(m, objective, steps=64, seed=0, transforms=SMALL,
                                     progress=False).images
                for name, m in (("trained", digits_model), ("random", twin))}
    finally:
        torch.set_num_threads(before)


def test_the_digits_model_learned_its_classes(digits, digits_model):
    x, y = digits["test"]
    with torch.no_grad():
        accuracy = (digits_model(x).argmax(1) == y).float().mean()
    assert accuracy > 0.9
    assert featviz.core.model_info.input_channels(digits_model) == 1


def test_grayscale_renders_of_the_trained_model_show_its_classes(digits_model, class_renders):
    """Render asks the model for its channels: grayscale images, no colour decorrelation.
    The trained model recognises the classes rendered on it (softmax 0.998, 10 of 10 when
    measured) and not those rendered on its random twin (0.02, 0 of 10)."""
    trained, random = class_renders["trained"], class_renders["random"]
    assert trained.shape == random.shape == (10, 1, DIGIT_SIZE, DIGIT_SIZE)
    with torch.no_grad():
        logits_trained, logits_random = digits_model(trained), digits_model(random)
    p_trained = logits_trained.softmax(1).diagonal()
    p_random = logits_random.softmax(1).diagonal()
    hits = (logits_trained.argmax(1) == torch.arange(10)).sum()
    print(f"\ndigits, trained model's softmax of the rendered class: {p_trained.mean():.3f} on "
          f"its own renders ({int(hits)}/10 top-1), {p_random.mean():.3f} on its random "
          f"twin's ({int((logits_random.argmax(1) == torch.arange(10)).sum())}/10); its logit "
          f"{logits_trained.diagonal().mean():.2f} vs {logits_random.diagonal().mean():.2f}")
    assert p_trained.mean() > 0.8 and hits >= 8
    assert p_random.mean() < 0.3
    assert p_trained.mean() > 3 * p_random.mean()
    assert hook_free(digits_model)


def test_grayscale_saves_as_grayscale(class_renders, tmp_path):
    images = class_renders["trained"]
    with Image.open(featviz.images.save(images[:1], tmp_path / "one.png")) as im:
        assert im.mode == "L" and im.size == (DIGIT_SIZE, DIGIT_SIZE)
        want = (images[0, 0] * 255 + 0.5).to(torch.uint8).numpy()
        assert np.array_equal(np.asarray(im), want)
    with Image.open(featviz.images.save(images, tmp_path / "grid.png",
                                        labels=[str(k) for k in range(10)])) as im:
        assert im.mode == "L"


def test_receptive_fields_projections_and_inversion_on_the_digits_model(digits, digits_model,
                                                                        one_thread):
    x, _ = digits["test"]
    trf = featviz.receptive_field.theoretical(digits_model, "conv3")
    assert trf.size == (9, 9) and trf.jump == (4, 4)  # 3 + 2*1 + 2*2 px: stride 1, 2, 2
    erf = featviz.receptive_field.effective(digits_model, "conv3", inputs=list(x[:8]),
                                            samples=8)
    assert erf.map.shape == (DIGIT_SIZE, DIGIT_SIZE) and erf.samples == 8
    assert erf.area() <= 9 * 9  # the gradient stays inside the theoretical field
    proj = featviz.deconv.project(digits_model, x[:2], "conv2", 3, mode="guided")
    assert proj.pixels.shape == (2, 1, DIGIT_SIZE, DIGIT_SIZE) and proj.pixels.abs().sum() > 0
    top = featviz.deconv.top_k(digits_model, list(x[:40]), "conv2", [0, 3], k=3)
    assert all(e.patch.shape[0] == 1 for entries in top.entries.values() for e in entries)
    inv = featviz.inversion.invert(digits_model, x[:1], "conv2", steps=48, progress=False)
    assert inv.image.shape == (1, 1, DIGIT_SIZE, DIGIT_SIZE)
    assert inv.feature_error < 0.5 * inv.start_error
    assert hook_free(digits_model)


def test_occlusion_and_feature_maps_on_the_digits_model(digits, digits_model, tmp_path,
                                                        one_thread):
    x, y = digits["test"]
    occ = featviz.deconv.occlusion(digits_model, x[:1], target_class=int(y[0]), patch=4,
                                   stride=2)
    assert occ.drops.shape == (7, 7) and occ.overlay().shape == (3, DIGIT_SIZE, DIGIT_SIZE)
    assert occ.save(tmp_path / "occ.png").exists()
    maps = featviz.featuremaps.capture(digits_model, x[0])
    assert maps.acts["conv1"].shape == (16, DIGIT_SIZE, DIGIT_SIZE)
    page = featviz.featuremaps.report(digits_model, x[0], out=tmp_path / "r.html")
    assert page.exists()


def test_a_grayscale_model_reads_image_files_as_luminance(digits_model, tmp_path):
    rgb = (np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    gray = featviz.images.load(tmp_path / "a.png", size=DIGIT_SIZE, channels=1)
    assert gray.shape == (1, 1, DIGIT_SIZE, DIGIT_SIZE)
    top = featviz.deconv.top_k(digits_model, tmp_path, "conv2", [1], k=1)
    assert top.entries[1][0].patch.shape[0] == 1
    with pytest.raises(FeatvizError, match="grayscale .* or RGB"):
        featviz.images.load(tmp_path / "a.png", channels=13)


# -- thirteen bands ---------------------------------------------------------------------
def test_a_thirteen_band_model_renders_and_saves_false_colour(tmp_path):
    model = sentinel()
    res = featviz.render(model, obj.channel("2", [1, 4]), steps=24, seed=0, record_every=4,
                         progress=False)
    assert res.images.shape == (2, 13, 32, 32)
    assert res.history[-1].mean() > res.history[0].mean()
    path = res.save(tmp_path / "fc.png", bands=(3, 2, 1))
    with Image.open(path) as im:
        assert im.mode == "RGB"
    one = featviz.images.save(res.images[:1], tmp_path / "one.png", bands=(3, 2, 1))
    want = (res.images[0, [3, 2, 1]].permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
    with Image.open(one) as im:
        assert np.array_equal(np.asarray(im), want)
    with Image.open(featviz.images.save(res.images[:1], tmp_path / "d.png")) as im:
        first = (res.images[0, :3].permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
        assert np.array_equal(np.asarray(im), first)  # default: the first three bands
    sheet = featviz.images.band_grid(res.images[0])
    assert sheet.mode == "L" and sheet.width > 4 * 32  # 13 tiles, about 4 x 4
    with pytest.raises(FeatvizError, match="bands must be three"):
        featviz.images.save(res.images, tmp_path / "bad.png", bands=(3, 13, 1))


def test_a_measured_band_correlation_decorrelates_a_thirteen_band_render():
    model = sentinel()
    bands = torch.rand(4, 13, 16, 16)
    matrix = P.band_correlation(bands)
    p = P.image(32, 2, channels=13, decorrelate=matrix, seed=0)
    assert p.decorrelate and torch.equal(p.correlation, matrix)
    res = featviz.render(model, obj.channel("2", [1, 4]), p, steps=4, progress=False)
    assert res.images.shape == (2, 13, 32, 32)
    start = torch.rand(1, 13, 32, 32) * 0.9 + 0.05
    q = P.image(32, 1, channels=13, decorrelate=matrix, init=start)
    torch.testing.assert_close(q().detach(), start, atol=1e-4, rtol=0)


def test_every_downstream_method_runs_on_thirteen_bands(tmp_path):
    model = sentinel()
    img = torch.rand(1, 13, 32, 32)
    proj = featviz.deconv.project(model, img, "2", 1, mode="deconvnet")
    assert proj.pixels.shape == (1, 13, 32, 32)
    assert proj.save(tmp_path / "p.png").exists()
    occ = featviz.deconv.occlusion(model, img, "2", 1, patch=8, stride=8)
    assert occ.save(tmp_path / "o.png").exists()
    trf = featviz.receptive_field.theoretical(model, "2")
    assert trf.size == (5, 5)
    erf = featviz.receptive_field.effective(model, "2", samples=2)
    assert erf.map.shape == (32, 32)
    inv = featviz.inversion.invert(model, img, "2", steps=4, progress=False)
    assert inv.image.shape == (1, 13, 32, 32)
    assert featviz.featuremaps.capture(model, img).image.shape == (1, 13, 32, 32)


# -- band correlation -------------------------------------------------------------------
def test_band_correlation_recovers_a_known_covariance_square_root(tmp_path):
    """Bands made as A z of white noise z have covariance A A^T; the measured matrix M is
    a square root of it (M M^T = cov), U sqrt(S) as captum's dataset KLT computes it."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=gen) * 0.1
    z = torch.randn(40, 5, 64, 64, generator=gen)
    bands = torch.einsum("rc,nchw->nrhw", a, z) + 0.5
    cov = a @ a.T
    m = P.band_correlation(bands, normalize=False)
    torch.testing.assert_close(m @ m.T, cov, atol=2e-4, rtol=0.02)
    u, s, _ = torch.linalg.svd(cov.double())
    torch.testing.assert_close(m.abs(), (u * s.sqrt()).abs().float(), atol=2e-3, rtol=0.05)
    normalized = P.band_correlation(bands)
    assert float(normalized.norm(dim=0).max()) == pytest.approx(1.0)
    torch.testing.assert_close(normalized, m / m.norm(dim=0).max())
    for i, item in enumerate(bands[:6]):  # a folder of arrays streams to the same matrix
        np.save(tmp_path / f"{i}.npy", item.numpy())
    torch.testing.assert_close(P.band_correlation(tmp_path), P.band_correlation(bands[:6]),
                               atol=1e-6, rtol=1e-5)


def test_band_correlation_of_rgb_photos_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = (rng.random((12, 12, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    assert P.band_correlation(tmp_path).shape == (3, 3)
    with pytest.raises(FeatvizError, match="mixed"):
        P.band_correlation([torch.rand(3, 4, 4), torch.rand(2, 4, 4)])
    with pytest.raises(FeatvizError, match="not found"):
        P.band_correlation(tmp_path / "missing")


# -- parameterizations, render's checks, models -----------------------------------------
@pytest.mark.parametrize("channels", [1, 2, 13])
@pytest.mark.parametrize("kind", list(P.KINDS))
def test_every_kind_makes_images_of_its_channels(kind, channels):
    p = P.make(kind, 12, 2, channels=channels, seed=0)
    img = p().detach()
    assert img.shape == (2, channels, 12, 12) and p.channels == p.out_channels == channels
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    assert P.aligned(12, 2, channels=channels)().shape == (2, channels, 12, 12)


def test_rgb_stays_decorrelated_by_default_and_other_counts_are_not():
    assert P.image(8).decorrelate and P.image(8, channels=3).decorrelate
    assert not P.image(8, channels=1).decorrelate and not P.image(8, channels=13).decorrelate
    assert torch.equal(P.image(8, seed=2)(), P.image(8, seed=2, decorrelate=True)())
    with pytest.raises(FeatvizError, match="ImageNet's RGB.*band_correlation"):
        P.image(8, channels=1, decorrelate=True)
    with pytest.raises(FeatvizError, match=r"\[4, 4\] tensor"):
        P.image(8, channels=4, decorrelate=torch.eye(3))
    with pytest.raises(FeatvizError, match="channels=3, not 1"):
        P.image(8, channels=1, alpha=True)
    with pytest.raises(ValueError, match="channels"):
        P.image(8, channels=0)


def test_maco_for_one_channel_keeps_its_magnitude():
    p = P.maco(16, 1, channels=1, seed=0)
    assert p().shape == (1, 1, 16, 16) and not p.decorrelate
    assert p.raw.magnitude.shape == (1, 16, 9)
    with pytest.raises(FeatvizError, match=r"shape \[1, 16, 9\]"):
        P.maco(16, channels=1, spectrum=torch.ones(3, 16, 9))


def test_render_names_both_channel_counts_when_they_differ():
    with pytest.raises(FeatvizError, match=r"3-channel images.*takes 13 channels.*"
                                           r"param.image\(\.\.\., channels=13\)"):
        featviz.render(sentinel(), obj.channel("2", 0), P.image(16), steps=1, progress=False)
    with pytest.raises(FeatvizError, match="1-channel images.*takes 3 channels"):
        featviz.render(make_tiny(), obj.channel("conv3", 0), P.image(16, channels=1), steps=1,
                       progress=False)


def test_standard_transforms_work_for_any_channel_count():
    """Grey padding fills every band: a grey image stays grey through the fused pipeline."""
    for channels in (1, 2, 13):
        pipeline = T.resolve("standard", (24, 24))
        grey = torch.full((2, channels, 24, 24), 0.5)
        out = pipeline(grey, torch.Generator().manual_seed(0))
        assert out.shape == (2, channels, 36, 36)
        torch.testing.assert_close(out, torch.full_like(out, 0.5), atol=1e-5, rtol=0)
        padded = T.pad(3)(torch.zeros(1, channels, 4, 4))
        assert padded.shape == (1, channels, 10, 10) and float(padded[:, :, 0].min()) == 0.5


def test_wrap_takes_one_statistic_per_channel():
    gray = featviz.models.wrap(nn.Conv2d(1, 2, 3), mean=(0.2,), std=(0.5,))
    assert gray.mean.shape == (1, 1, 1, 1) and featviz.core.model_info.input_channels(gray) == 1
    assert featviz.models.wrap(nn.Conv2d(1, 2, 3)).mean.shape == (1, 1, 1, 1)
    bands = featviz.models.wrap(nn.Conv2d(13, 2, 3), mean=[0.1] * 13, std=(0.3,))
    assert bands.std.shape == (1, 13, 1, 1) and float(bands.std[0, 12]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="1 or 13 values.*takes 13"):
        featviz.models.wrap(nn.Conv2d(13, 2, 3), mean=(0.1, 0.2, 0.3))
    flat = featviz.models.wrap(nn.Flatten(), mean=[0.5] * 4, std=[1.0] * 4)
    assert featviz.core.model_info.input_channels(flat) == 4  # declared by the statistics
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        gray(torch.rand(1, 3, 8, 8))


def test_four_bands_save_as_a_composite_and_an_alpha_render_as_rgba(tmp_path):
    """Four channels are ambiguous to an image file: a render of a 4-band model (RGB + NIR)
    writes its first three bands, an alpha render writes RGBA."""
    model = sentinel(channels=4)
    res = featviz.render(model, obj.channel("2", 1), steps=2, seed=0, progress=False)
    assert res.images.shape[1] == 4 and not res.alpha
    with Image.open(res.save(tmp_path / "bands.png")) as im:
        assert im.mode == "RGB"
    rgb_net = featviz.models.wrap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    rgba = featviz.render(rgb_net, obj.channel("0", 1),
                          featviz.param.image(16, alpha=True, seed=0), steps=2, progress=False)
    assert rgba.alpha
    with Image.open(rgba.save(tmp_path / "rgba.png")) as im:
        assert im.mode == "RGBA"
    with Image.open(featviz.images.save(res.images, tmp_path / "raw.png")) as im:
        assert im.mode == "RGBA"  # a bare tensor of four channels is RGBA unless told
    with Image.open(featviz.images.save(res.images, tmp_path / "b.png", alpha=False)) as im:
        assert im.mode == "RGB"


def test_layer_table_probes_with_the_models_channels_and_dtype():
    gray = sentinel(channels=1)
    rows = dict((name, shape) for name, _, shape in featviz.models.layer_table(gray, 32))
    assert rows["2"].startswith("16x")
    half = sentinel(channels=13).to(torch.bfloat16)
    assert all(shape != "not run" for _, _, shape in featviz.models.layer_table(half, 32))
