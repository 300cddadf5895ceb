"""The parameterizations beyond pixel and Fourier: MACO, Laplacian pyramid, CPPN, alpha,
aligned batches; and how render treats them (learning rate, blending, saliency map)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import IMAGES, hook_free, make_tiny
from PIL import Image
from torch import nn

import featviz
from featviz import objectives as obj
from featviz import param as P
from featviz.errors import FeatvizError
from featviz.hooks import INPUT
from featviz.objectives import Objective
from featviz.param import alpha as A

SIZES = [16, 15, (12, 17), (17, 12)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spectrum_ratio(raw: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """|rfft2(raw)| / magnitude per image, zero frequency left out: constant when the
    magnitude is kept (standardization may scale each image as a whole)."""
    ratio = torch.fft.rfft2(raw, norm="ortho").abs() / magnitude
    return ratio.flatten(2)[..., 1:].flatten(1)


def const_objective(value: float = 1.0) -> Objective:
    return Objective(lambda acts: torch.full((acts[INPUT].shape[0],), value,
                                             device=acts[INPUT].device), [INPUT], "const")


# -- MACO ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_maco_keeps_the_magnitude_fixed_while_the_phase_changes(size):
    p = P.maco(size, 2, generator=gen())
    magnitude = p.raw.magnitude.clone()
    before = p.raw().detach()
    opt = torch.optim.Adam(p.parameters(), lr=0.1)
    target = torch.rand(2, 3, *p.size, generator=gen(1))
    for _ in range(5):
        opt.zero_grad()
        ((p() - target) ** 2).mean().backward()
        opt.step()
    after = p.raw().detach()
    for raw in (before, after):
        ratio = spectrum_ratio(raw, magnitude)
        spread = ratio.std(dim=1) / ratio.mean(dim=1)
        assert spread.max() < 1e-4, spread
        assert torch.fft.rfft2(raw, norm="ortho")[..., 0, 0].abs().max() < 1e-4
    phase_change = (torch.fft.rfft2(after, norm="ortho").angle()
                    - torch.fft.rfft2(before, norm="ortho").angle()).abs()
    assert phase_change.mean() > 0.05  # the phase did move
    assert torch.equal(p.raw.magnitude, magnitude)
    assert [n for n, _ in p.named_parameters()] == ["raw.phase"]


def test_maco_images_are_valid_and_batch_independent():
    both = P.maco(16, 2, generator=[gen(3), gen(4)])()
    alone = P.maco(16, 1, generator=[gen(4)])()
    assert torch.allclose(both[1:], alone, atol=1e-6)
    assert both.min() >= 0 and both.max() <= 1 and both.shape == (2, 3, 16, 16)


def test_maco_takes_a_spectrum_tensor_or_file(tmp_path):
    spec = torch.rand(3, 16, 9) + 0.1
    torch.save(spec, tmp_path / "s.pt")
    np.save(tmp_path / "s.npy", spec.numpy())
    for given in (spec, tmp_path / "s.pt", str(tmp_path / "s.npy")):
        p = P.maco(16, 1, spectrum=given)
        assert torch.allclose(p.raw.magnitude, spec)


@pytest.mark.parametrize("shape", [(3, 16, 16), (16, 9), (1, 16, 9), (3, 15, 9)])
def test_maco_names_the_spectrum_shape_it_needs(shape):
    with pytest.raises(FeatvizError, match=r"must have shape \[3, 16, 9\].*got") as err:
        P.maco(16, spectrum=torch.rand(shape))
    assert str(list(shape)) in str(err.value)


def test_spectrum_file_errors_name_the_path(tmp_path):
    with pytest.raises(FeatvizError, match="not found.*nothere.pt"):
        P.maco(16, spectrum=tmp_path / "nothere.pt")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a tensor file")
    with pytest.raises(FeatvizError, match="bad.pt"):
        P.maco(16, spectrum=bad)


def test_mean_spectrum_needs_enough_images(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(FeatvizError, match=rf"holds 3 image.*at least {P.spectrum.MIN_IMAGES}"):
        P.mean_spectrum(tmp_path, 16)
    with pytest.raises(FeatvizError, match="not found"):
        P.mean_spectrum(tmp_path / "missing", 16)


def test_mean_spectrum_of_photos_falls_like_a_power_law(tmp_path):
    if not IMAGES.is_dir():
        pytest.skip(f"sample photos not found at {IMAGES}")
    spec = P.mean_spectrum(IMAGES, 32)
    assert spec.shape == (3, 32, 17)
    amplitude, exponent = P.fit_power_law(spec)
    assert all(0.7 < e < 2.0 for e in exponent)  # photos: roughly 1/f
    # the default is the same kind of fit, stored as constants
    default = P.power_law_spectrum(32)
    f = P.rfft2_frequencies(32, 32)
    assert default[0, 0, 1] > default[0, 0, 8] > 0 and f[0, 8] > f[0, 1]


# -- Laplacian pyramid --------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("decorrelate", [True, False])
def test_laplacian_with_one_level_is_the_pixel_image(size, decorrelate):
    lap = P.laplacian(size, 2, levels=1, decorrelate=decorrelate, generator=[gen(1), gen(2)])
    pix = P.image(size, 2, fft=False, decorrelate=decorrelate, generator=[gen(1), gen(2)])
    assert torch.equal(lap(), pix())
    img = torch.rand(2, 3, *lap.size, generator=gen(5))
    assert torch.allclose(lap.set_image(img)(), pix.set_image(img)(), atol=1e-6)


def test_laplacian_levels_are_coarse_and_sum():
    p = P.laplacian((16, 12), 1, levels=3, decorrelate=False, generator=gen())
    shapes = [tuple(level.value.shape[-2:]) for level in p.raw.levels]
    assert shapes == [(16, 12), (8, 6), (4, 3)]
    with torch.no_grad():
        for level in p.raw.levels[:2]:
            level.value.zero_()
    coarse = p.raw()
    # a 4x3 level upsampled bilinearly: neighbouring pixels barely differ
    assert (coarse[..., 1:, :] - coarse[..., :-1, :]).abs().max() < coarse.abs().max()
    with pytest.raises(ValueError, match="at most"):
        P.laplacian(8, levels=6)


# -- CPPN ---------------------------------------------------------------------------------
def test_cppn_is_in_range_and_all_its_parameters_learn():
    p = P.cppn((12, 20), 2, hidden=6, layers=3, generator=[gen(1), gen(2)])
    img = p()
    assert img.shape == (2, 3, 12, 20) and torch.allclose(img, torch.full_like(img, 0.5))
    opt = torch.optim.Adam(p.parameters(), lr=0.05)
    target = torch.rand(2, 3, 12, 20, generator=gen(3))
    for _ in range(3):
        opt.zero_grad()
        loss = ((p() - target) ** 2).mean()
        loss.backward()
        opt.step()
    grads = [q.grad for q in p.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    img = p()
    assert img.min() >= 0 and img.max() <= 1 and img.std() > 0.001
    assert p.at(40).shape == (2, 3, 40, 40)
    assert P.cppn(8).lr == pytest.approx(0.005)


def test_cppn_images_are_independent_per_generator():
    a = P.cppn(10, 2, hidden=4, layers=2, generator=[gen(1), gen(2)])
    b = P.cppn(10, 1, hidden=4, layers=2, generator=[gen(2)])
    with torch.no_grad():  # a non-zero output layer, the same for both
        a.weights[-1].fill_(0.3)
        b.weights[-1].fill_(0.3)
    assert torch.allclose(a()[1], b()[0], atol=1e-6)
    assert not torch.allclose(a()[0], a()[1])


# -- alpha --------------------------------------------------------------------------------
def test_alpha_blend_is_the_formula():
    rgba = torch.rand(2, 4, 5, 6, generator=gen(1))
    bg = torch.rand(2, 3, 5, 6, generator=gen(2))
    expected = rgba[:, :3] * rgba[:, 3:] + bg * (1 - rgba[:, 3:])
    assert torch.allclose(A.blend(rgba, bg), expected)
    assert torch.allclose(A.opacity_weight(rgba), 1 - rgba[:, 3].mean(dim=(1, 2)))


def _alpha_param(value: float) -> P.ImageParam:
    p = P.image(16, 2, fft=False, alpha=True, generator=gen())
    with torch.no_grad():
        p.raw.raw[:, 3] = value  # sigmoid(value) is the alpha
    return p


def test_render_blends_over_new_backgrounds_and_scales_by_opacity():
    model = make_tiny()
    seen = []

    def record(acts):
        seen.append(acts[INPUT].detach().clone())
        return torch.ones(acts[INPUT].shape[0])

    probe = Objective(record, [INPUT], "probe")
    opaque = _alpha_param(20.0)  # alpha = 1: the model sees the RGB part
    res = featviz.render(model, probe, opaque, steps=2, lr=0.0, transforms="none", seed=0,
                         progress=False, record_every=1)
    assert torch.allclose(seen[0], opaque()[:, :3].detach(), atol=1e-6)
    assert res.images.shape == (2, 4, 16, 16)
    assert torch.allclose(res.history[-1], torch.zeros(2), atol=1e-6)  # (1 - 1) * 1

    seen.clear()
    half = _alpha_param(0.0)  # alpha = 0.5 everywhere
    res = featviz.render(model, probe, half, steps=3, lr=0.0, transforms="none", seed=0,
                         progress=False, record_every=1)
    rgb = half()[:, :3].detach()
    backgrounds = [(x - 0.5 * rgb) / 0.5 for x in seen]
    for bg in backgrounds:  # smooth, valid colours
        assert bg.min() > -1e-4 and bg.max() < 1 + 1e-4
        assert (bg[..., 1:, :] - bg[..., :-1, :]).abs().max() < 0.5
    assert not torch.allclose(backgrounds[0], backgrounds[1])  # a new one each step
    assert not torch.allclose(backgrounds[0][0], backgrounds[0][1])  # and per image
    assert torch.allclose(res.history[-1], torch.full((2,), 0.5), atol=1e-6)
    assert hook_free(model)


def test_alpha_renders_repeat_with_a_seed_and_save_rgba(tmp_path):
    model = make_tiny()
    runs = [featviz.render(model, obj.channel("conv3", 1), P.image(16, 1, alpha=True,
                                                                   generator=gen()),
                           steps=4, seed=3, progress=False) for _ in range(2)]
    assert torch.equal(runs[0].images, runs[1].images)
    path = featviz.images.save(runs[0].images, tmp_path / "a.png")
    with Image.open(path) as im:
        assert im.mode == "RGBA"
    sheet = featviz.images.save(torch.cat([runs[0].images] * 2), tmp_path / "s.png",
                                labels=["a", "b"])
    assert sheet.exists()


def test_alpha_needs_a_three_channel_model():
    grey = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    with pytest.raises(FeatvizError, match="first convolution takes 1 channels"):
        featviz.render(grey, obj.channel("0", 0), P.image(16, alpha=True), steps=1,
                       progress=False)


def test_render_rejects_images_of_other_channel_counts():
    class TwoChannels(nn.Module):
        def forward(self):
            return torch.zeros(1, 2, 8, 8)

    with pytest.raises(FeatvizError, match=r"\[1, 2, 8, 8\]"):
        featviz.render(make_tiny(), obj.channel("conv3", 0), TwoChannels(), steps=1,
                       progress=False)


# -- aligned batches and interpolation ----------------------------------------------------
def test_aligned_images_share_their_coarse_parts():
    p = P.aligned(32, 5, generator=[gen(i) for i in range(5)])
    with torch.no_grad():
        for s in p.raw.shared:
            s.value.normal_(0, 1, generator=gen(9))
        p.raw.private.spectrum.zero_()
    img = p()
    d = lambda i, j: (img[i] - img[j]).abs().mean()  # noqa: E731
    assert d(0, 1) < d(0, 4) and d(3, 4) < d(0, 4)  # neighbours closer than the ends
    assert d(0, 4) > 0  # the interpolated parts let the ends differ
    assert len(list(p.parameters())) == 1 + len(featviz.param.shared_parts.SHARED)


def test_interpolate_weights_move_from_one_objective_to_the_other():
    a = Objective(lambda acts: torch.full((5,), 2.0), ["x"], "a")
    b = Objective(lambda acts: torch.full((5,), 10.0), ["x"], "b")
    it = obj.interpolate(a, b, 5)
    assert torch.allclose(it({}), torch.tensor([2.0, 4.0, 6.0, 8.0, 10.0]))
    assert it.batch_size == 5 and it.label(0).startswith("1*a")
    with pytest.raises(ValueError, match="at least 2"):
        obj.interpolate(a, b, 1)


def test_neighbour_difference_is_the_mean_squared_step():
    img = torch.stack([torch.full((3, 2, 2), v) for v in (0.0, 1.0, 3.0)])
    value = obj.neighbour_difference()({INPUT: img})
    assert torch.allclose(value, torch.tensor([0.5, 0.5 * (1 + 4), 2.0]))


def test_aligned_interpolation_renders_smoother_sequences():
    model = make_tiny()
    interp = obj.interpolate(obj.channel("conv3", 0), obj.channel("conv3", 5), 4)

    def roughness(p) -> float:
        # the path length from frame to frame over the distance between the ends: 1 for a
        # straight blend, about n - 1 for unrelated frames
        img = featviz.render(model, interp, p, steps=48, seed=0, progress=False).images
        steps = (img[1:] - img[:-1]).abs().mean(dim=(1, 2, 3)).sum()
        return float(steps / (img[-1] - img[0]).abs().mean())

    gens = lambda: [gen(i) for i in range(4)]  # noqa: E731
    assert roughness(P.aligned(32, 4, generator=gens())) < roughness(
        P.image(32, 4, generator=gens()))


# -- render and parameterizations ---------------------------------------------------------
def test_render_uses_the_parameterization_learning_rate():
    model = make_tiny()
    p = P.image(16, 1, generator=gen())
    start = p().detach().clone()
    p.lr = 0.0
    res = featviz.render(model, obj.channel("conv3", 1), p, steps=3, progress=False, seed=0)
    assert torch.allclose(res.images, start)
    res = featviz.render(model, obj.channel("conv3", 1), p, steps=3, lr=0.1, progress=False,
                         seed=0)
    assert not torch.allclose(res.images, start)


@pytest.mark.parametrize("factory", [
    lambda: P.maco(32, 2, generator=[gen(1), gen(2)]),
    lambda: P.laplacian(32, 2, generator=[gen(1), gen(2)]),
    lambda: P.cppn(32, 2, hidden=8, layers=3, generator=[gen(1), gen(2)]),
    lambda: P.aligned(32, 2, generator=[gen(1), gen(2)]),
    lambda: P.image(32, 2, alpha=True, generator=[gen(1), gen(2)]),
])
def test_every_parameterization_raises_a_channel_in_render(factory):
    model = make_tiny()
    target = obj.channel("conv3", [1, 2])
    res = featviz.render(model, target, factory(), steps=32, seed=0, progress=False,
                         transforms="none", record_every=1)
    assert (res.history[-1] > res.history[0]).all()
    assert hook_free(model)


def test_maco_render_returns_a_saliency_map_where_the_unit_looks():
    model = make_tiny()
    unit = obj.neuron("conv1", 2, x=4, y=4)  # a 3x3 receptive field around pixel (4, 4)
    res = featviz.render(model, unit, P.maco(24, 1, generator=gen()), steps=4, seed=0,
                         progress=False, transforms="none")
    t = res.saliency
    assert res.transparency is t  # the earlier name
    assert t.shape == (1, 1, 24, 24) and float(t.max()) == pytest.approx(1.0)
    inside = t[0, 0, 3:6, 3:6]
    outside = t.clone()
    outside[0, 0, 3:6, 3:6] = 0
    assert inside.sum() > 0 and outside.max() < 1e-6
    rgba = res.with_transparency()
    assert rgba.shape == (1, 4, 24, 24)
    plain = featviz.render(model, unit, P.image(24, 1), steps=1, progress=False)
    assert plain.saliency is None
    with pytest.raises(FeatvizError, match="no saliency map"):
        plain.with_transparency()


def test_the_default_spectrum_constants_are_the_fit_of_the_sample_photos():
    if not IMAGES.is_dir():
        pytest.skip(f"sample photos not found at {IMAGES}")
    amplitude, exponent = P.fit_power_law(P.mean_spectrum(IMAGES, 224))
    stored = P.spectrum.EXPONENT
    assert np.allclose(exponent, stored, atol=5e-3), (exponent, stored)
    assert np.allclose(amplitude, P.spectrum.AMPLITUDE, rtol=5e-3)


def test_make_builds_each_kind_and_refuses_options_it_cannot_use():
    for kind in P.KINDS:
        img = P.make(kind, 12, 2, generator=[gen(1), gen(2)])()
        assert img.shape == (2, 3, 12, 12), kind
    assert P.make("pixel", 12, alpha=True)().shape == (1, 4, 12, 12)
    with pytest.raises(FeatvizError, match="unknown parameterization 'mac0'; closest: 'maco'"):
        P.make("mac0", 12)
    with pytest.raises(FeatvizError, match="alpha works with the fourier and pixel images"):
        P.make("laplacian", 12, alpha=True)
    with pytest.raises(FeatvizError, match="spectrum is the magnitude of maco"):
        P.make("fourier", 12, spectrum=torch.ones(3, 12, 7))
    with pytest.raises(FeatvizError, match="CPPN cannot start from an image"):
        P.make("cppn", 12, init=torch.rand(1, 3, 12, 12))


def test_auto_transforms_follow_the_parameterization():
    from featviz.render import preferred_transforms

    assert preferred_transforms(P.cppn(8)) == "none"
    assert preferred_transforms(P.image(8)) == "standard"
    model = make_tiny()
    seen = []

    objective = obj.channel("conv3", 1)

    def model_saw_the_image(p, **kw) -> bool:
        start = p().detach().clone()
        seen.clear()
        # the model's input as the transforms hand it over
        spy = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
        try:
            featviz.render(model, objective, p, steps=1, progress=False, **kw)
        finally:
            spy.remove()
        return seen[-1].shape == start.shape and torch.allclose(seen[-1], start, atol=1e-6)

    assert model_saw_the_image(P.cppn(20, generator=gen()))
    assert not model_saw_the_image(P.image(20, generator=gen()))
    assert not model_saw_the_image(P.cppn(20, generator=gen()), transforms="standard")


# -- what each parameterization declares -------------------------------------------------
DECLARED = {  # factory -> (lr, transforms preset, saliency): the documented defaults
    "fourier": (lambda: P.image(8), 0.05, "standard", False),
    "pixel": (lambda: P.image(8, fft=False), 0.05, "standard", False),
    "rgba": (lambda: P.image(8, alpha=True), 0.05, "standard", False),
    "maco": (lambda: P.maco(8), 0.2, "standard", True),
    "laplacian": (lambda: P.laplacian(8), 0.05, "standard", False),
    "cppn": (lambda: P.cppn(8), 0.005, "none", False),
    "aligned": (lambda: P.aligned(8, 2), 0.05, "standard", False),
}


@pytest.mark.parametrize("name", list(DECLARED))
def test_every_factory_declares_its_defaults(name):
    """Each factory gives a Parameterization whose learning rate, transforms preset and
    saliency wish are the documented ones (README table, --lr help), and whose forward()
    matches its declared channels."""
    make, lr, transforms, saliency = DECLARED[name]
    p = make()
    assert isinstance(p, P.Parameterization)
    assert (p.lr, p.transforms, p.saliency) == (pytest.approx(lr), transforms, saliency)
    assert p().shape[1] == p.out_channels == (4 if name == "rgba" else 3)
    kind = {"rgba": "fourier", "aligned": None}.get(name, name)
    if kind is not None:
        assert P.make(kind, 8).lr == pytest.approx(lr)


def test_render_reads_what_a_parameterization_declares_and_nothing_else():
    """A subclass's declarations steer render; a plain module's stray attributes do not."""

    class Declared(P.Parameterization):
        lr = 0.0
        transforms = "none"
        saliency = True

        def __init__(self):
            super().__init__(1, (16, 16), seeds=[5])
            self.x = nn.Parameter(torch.zeros(1, 3, 16, 16))

        def forward(self):
            return torch.sigmoid(self.x)

    model = make_tiny()
    seen = []
    probe = Objective(lambda a: seen.append(a[INPUT].shape) or a["conv3"][:, 1].mean((1, 2)),
                      ["conv3"], "probe")
    res = featviz.render(model, probe, Declared(), steps=2, progress=False)
    assert torch.equal(res.images, torch.full((1, 3, 16, 16), 0.5))  # lr 0: nothing moved
    assert res.saliency is not None and res.seeds == [5]
    assert seen == [(1, 3, 16, 16)] * 2

    class Plain(nn.Module):  # declares nothing: a stray `lr` or `transforms` is not read
        lr, transforms, saliency = 0.0, "none", True

        def __init__(self):
            super().__init__()
            self.x = nn.Parameter(torch.zeros(1, 3, 16, 16))

        def forward(self):
            return torch.sigmoid(self.x)

    res = featviz.render(model, probe, Plain(), steps=2, progress=False, seed=0)
    assert not torch.equal(res.images, torch.full((1, 3, 16, 16), 0.5))
    assert res.saliency is None


def test_seed_repeats_a_factory_and_drawn_seeds_are_recorded():
    a, b = P.image(8, 2, seed=7), P.image(8, 2, seed=7)
    assert torch.equal(a(), b()) and a.seeds == [7, 8] and a.seed_given
    single = P.image(8, 1, seed=8)
    assert torch.equal(a()[1:], single())  # image i depends on seed + i alone
    drawn = P.cppn(8, 2)
    assert len(drawn.seeds) == 2 and not drawn.seed_given
    with pytest.raises(ValueError, match="seed or generators"):
        P.image(8, seed=1, generator=gen())


def test_maco_images_are_shown_contrast_stretched_as_the_papers_figures(tiny):
    """MACO's raw images are a sigmoid of a unit-variance signal (low contrast by
    construction); its paper shows them clipped at the 1st/99th percentile and scaled to [0, 1],
    and so do ``result.shown()`` and ``result.save``; the raw images stay in ``images``."""
    res = featviz.render(tiny, featviz.objectives.channel("conv2", 0),
                         featviz.param.maco(32, batch=2, seed=0), steps=2, progress=False)
    raw, shown = res.images, res.shown()
    assert res.display == "stretch"
    for r, s in zip(raw, shown, strict=True):
        assert float(s.max() - s.min()) > 0.99 > float(r.max() - r.min())
        inner = (r > r.quantile(0.02)) & (r < r.quantile(0.98))
        assert torch.corrcoef(torch.stack([r[inner], s[inner]]))[0, 1] > 0.999  # monotone
    plain = featviz.render(tiny, featviz.objectives.channel("conv2", 0),
                           featviz.param.image(32, seed=0), steps=2, progress=False)
    assert plain.display is None and torch.equal(plain.shown(), plain.images)
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert torch.equal(featviz.images.stretch(flat), flat)  # nothing to stretch
