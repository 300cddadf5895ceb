"""Transformation robustness: sizes, exact pixel copies, randomness per image, fusion, errors."""

from __future__ import annotations

import math

import pytest
import torch

import featviz.transforms as T

# Integer shifts land on pixel centres; grid_sample's float32 coordinates put them off by a few
# 1e-6 px, so a "copy" is exact to about 1e-5 (more for big canvases, see the xfail test below).
COPY_TOL = 1e-4


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ramp(h: int, w: int, channels: int = 3) -> torch.Tensor:
    """A linear image f(y, x) = 0.1 + 0.013 y + 0.021 x (different per channel): bilinear
    resampling reproduces it exactly, so any affine warp can be checked against a formula."""
    y = torch.arange(h, dtype=torch.float32)[:, None]
    x = torch.arange(w, dtype=torch.float32)[None, :]
    chans = [0.1 + (0.013 + 0.002 * c) * y + (0.021 - 0.003 * c) * x for c in range(channels)]
    return torch.stack(chans)[None]


def ramp_at(h: int, w: int, ys: torch.Tensor, xs: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """The ramp's value at (possibly fractional) source coordinates."""
    return torch.stack([0.1 + (0.013 + 0.002 * c) * ys + (0.021 - 0.003 * c) * xs
                        for c in range(channels)])[None]


def crops(img: torch.Tensor, out: tuple[int, int], d: int) -> torch.Tensor:
    """All crops of ``img`` [C,H,W] of size ``out`` at offsets (oy, ox) in 0..d: [(d+1)^2,C,h,w]."""
    h, w = out
    return torch.stack([img[:, oy:oy + h, ox:ox + w] for oy in range(d + 1) for ox in range(d + 1)])


def match_offsets(out: torch.Tensor, img: torch.Tensor, d: int) -> torch.Tensor:
    """For each image of ``out`` [B,C,h,w], the one (oy, ox) at which it is a crop of ``img``."""
    cand = crops(img, out.shape[-2:], d)
    err = (out[:, None] - cand[None]).abs().amax(dim=(2, 3, 4))  # [B, (d+1)^2]
    hits = err < COPY_TOL
    assert (hits.sum(1) == 1).all(), "some output is not a crop of the input at one offset"
    idx = hits.float().argmax(1)
    return torch.stack([idx // (d + 1), idx % (d + 1)], 1)


# --------------------------------------------------------------------------------------- pad


@pytest.mark.parametrize("width", [1, 5])
def test_pad_grows_fills_grey_and_copies_interior(width):
    x = torch.rand(2, 3, 9, 13, generator=gen())
    y = T.pad(width)(x)
    assert y.shape == (2, 3, 9 + 2 * width, 13 + 2 * width)
    interior = y[:, :, width:-width, width:-width]
    torch.testing.assert_close(interior, x, atol=COPY_TOL, rtol=0)
    border = torch.ones_like(y, dtype=torch.bool)
    border[:, :, width:-width, width:-width] = False
    torch.testing.assert_close(y[border], torch.full_like(y[border], 0.5), atol=1e-6, rtol=0)


def test_pad_custom_fill_value():
    x = torch.rand(1, 3, 6, 6, generator=gen())
    y = T.pad(3, fill=0.2)(x)
    assert torch.allclose(y[..., :3, :], torch.tensor(0.2), atol=1e-6)
    assert torch.allclose(y[..., :, -3:], torch.tensor(0.2), atol=1e-6)
    torch.testing.assert_close(y[..., 3:-3, 3:-3], x, atol=COPY_TOL, rtol=0)


def test_pad_zero_is_identity():
    x = torch.rand(1, 3, 7, 5, generator=gen())
    torch.testing.assert_close(T.pad(0)(x), x, atol=COPY_TOL, rtol=0)


def test_pad_edge_repeats_the_edge_pixels():
    x = torch.rand(1, 3, 6, 8, generator=gen())
    y = T.pad(3, mode="edge")(x)
    assert y.shape == (1, 3, 12, 14)
    torch.testing.assert_close(y[..., 3:-3, 3:-3], x, atol=COPY_TOL, rtol=0)
    for k in range(3):
        torch.testing.assert_close(y[..., 3:-3, k], x[..., :, 0], atol=COPY_TOL, rtol=0)
        torch.testing.assert_close(y[..., 3:-3, -1 - k], x[..., :, -1], atol=COPY_TOL, rtol=0)
        torch.testing.assert_close(y[..., k, 3:-3], x[..., 0, :], atol=COPY_TOL, rtol=0)


def test_pad_mirror_repeats_the_edge_pixel():
    x = torch.rand(1, 3, 6, 8, generator=gen())
    y = T.pad(2, mode="mirror")(x)
    torch.testing.assert_close(y[..., 2:-2, 2:-2], x, atol=COPY_TOL, rtol=0)
    # mirrored about the image boundary, the edge pixel repeated (numpy's "symmetric")
    torch.testing.assert_close(y[..., 2:-2, :2], x[..., :, :2].flip(-1), atol=COPY_TOL, rtol=0)


def test_integer_shifts_copy_pixels_closely_on_a_big_canvas():
    x = torch.rand(1, 3, 224, 224, generator=gen())
    y = T.pad(12)(x)
    torch.testing.assert_close(y[..., 12:-12, 12:-12], x, atol=2e-4, rtol=0)
    torch.testing.assert_close(T.Compose([T.pad(12), T.crop(224)])(x), x, atol=2e-4, rtol=0)


# ------------------------------------------------------------------------------------ jitter


def test_jitter_outputs_are_exact_crops_covering_all_offsets():
    d = 4
    img = torch.rand(3, 12, 12, generator=gen(1))
    batch = img[None].expand(256, -1, -1, -1)
    out = T.jitter(d)(batch, gen(2))
    assert out.shape == (256, 3, 12 - d, 12 - d)
    off = match_offsets(out, img, d)
    for axis in (0, 1):  # y, x
        counts = torch.bincount(off[:, axis], minlength=d + 1)
        # every offset 0..d occurs (uniform: ~51 each), so the content moves both ways
        assert (counts >= 20).all(), f"offsets on axis {axis} are not uniform over 0..d: {counts}"
    # x and y offsets are drawn separately
    assert (off[:, 0] != off[:, 1]).any()
    # each image of the batch gets its own draw
    assert len({tuple(o) for o in off.tolist()}) > 15


def test_jitter_non_square_and_zero():
    x = torch.rand(3, 3, 10, 15, generator=gen())
    assert T.jitter(3)(x, gen()).shape == (3, 3, 7, 12)
    torch.testing.assert_close(T.jitter(0)(x, gen()), x, atol=COPY_TOL, rtol=0)


def test_jitter_needs_a_larger_image():
    with pytest.raises(ValueError, match="larger than 6"):
        T.jitter(6)(torch.rand(1, 3, 6, 10))


# ------------------------------------------------------------------------------- randomness


@pytest.mark.parametrize("make", [T.standard, lambda: T.distill(32), lambda: T.jitter(5)])
def test_same_seed_repeats_different_seed_differs(make):
    x = torch.rand(4, 3, 32, 32, generator=gen())
    t = make()
    a = t(x, gen(7))
    b = t(x, gen(7))
    c = t(x, gen(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_generator_leaves_the_global_rng_alone():
    x = torch.rand(2, 3, 32, 32, generator=gen())
    state = torch.get_rng_state()
    T.standard()(x, gen(3))
    assert torch.equal(torch.get_rng_state(), state)


# ----------------------------------------------------------------------------- scale/rotate


def test_scale_and_rotate_keep_the_size():
    x = torch.rand(3, 3, 11, 16, generator=gen())
    assert T.scale([0.9, 1.1])(x, gen()).shape == x.shape
    assert T.scale((0.8, 1.2))(x, gen()).shape == x.shape
    assert T.rotate([-10, 10])(x, gen()).shape == x.shape
    assert T.rotate((-30.0, 30.0))(x, gen()).shape == x.shape


def test_rotate_zero_and_scale_one_are_identity():
    x = torch.rand(2, 3, 13, 10, generator=gen())
    torch.testing.assert_close(T.rotate([0])(x), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(T.scale([1.0])(x), x, atol=1e-5, rtol=0)


def test_rotate_90_is_rot90():
    x = torch.rand(2, 3, 16, 16, generator=gen())
    y = T.rotate([90])(x)
    errs = [(y - torch.rot90(x, k, (2, 3)))[..., 1:-1, 1:-1].abs().max().item() for k in (1, 3)]
    assert min(errs) < 1e-4, errs
    assert max(errs) > 0.1  # and not both (the image is not symmetric)


def test_two_quarter_turns_are_a_half_turn():
    x = torch.rand(1, 3, 12, 12, generator=gen())
    y = T.Compose([T.rotate([90]), T.rotate([90])])(x)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], torch.rot90(x, 2, (2, 3))[..., 1:-1, 1:-1],
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("h,w", [(15, 15), (15, 21), (16, 12)])
def test_scale_zooms_in_about_the_centre(h, w):
    x = ramp(h, w)
    y = T.scale([2.0])(x)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ys = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    xs = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    want = ramp_at(h, w, cy + (ys - cy) / 2, cx + (xs - cx) / 2)
    torch.testing.assert_close(y, want, atol=1e-4, rtol=0)
    if h % 2 and w % 2:
        torch.testing.assert_close(y[..., h // 2, w // 2], x[..., h // 2, w // 2], atol=1e-5,
                                   rtol=0)


def test_scale_down_shows_grey_fill_in_the_corners():
    x = torch.zeros(1, 3, 16, 16)
    y = T.scale([0.5])(x)
    assert torch.allclose(y[..., 0, 0], torch.tensor(0.5), atol=1e-6)
    assert torch.allclose(y[..., 8, 8], torch.tensor(0.0), atol=1e-6)


@pytest.mark.parametrize("h,w", [(17, 17), (15, 23)])
def test_rotate_turns_about_the_centre(h, w):
    x = ramp(h, w)
    y = T.rotate([30])(x)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ys = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w) - cy
    xs = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w) - cx
    a = math.radians(30)
    best = math.inf
    for sign in (1, -1):  # either direction of turning counts
        s, c = sign * math.sin(a), math.cos(a)
        sy, sx = cy - s * xs + c * ys, cx + c * xs + s * ys
        inside = (sy >= 0) & (sy <= h - 1) & (sx >= 0) & (sx <= w - 1)
        assert inside.sum() > h * w / 3
        want = ramp_at(h, w, sy, sx)
        best = min(best, (y - want)[..., inside].abs().max().item())
    assert best < 1e-4


# ---------------------------------------------------------------------------------- Compose


def test_pad_then_jitter_is_a_crop_of_the_padded_image():
    img = torch.rand(3, 10, 10, generator=gen(1))
    batch = img[None].expand(64, -1, -1, -1)
    out = T.Compose([T.pad(4), T.jitter(4)])(batch, gen(2))
    assert out.shape == (64, 3, 14, 14)
    padded = T.pad(4)(img[None])[0]
    off = match_offsets(out, padded, 4)
    assert set(off[:, 0].tolist()) == set(range(5))
    assert set(off[:, 1].tolist()) == set(range(5))


def test_compose_resamples_a_run_of_affine_transforms_once(monkeypatch):
    calls = []
    resample = T._resample
    monkeypatch.setattr(T, "_resample", lambda *a: calls.append(1) or resample(*a))
    x = torch.rand(2, 3, 32, 32, generator=gen())
    T.standard()(x, gen())
    assert len(calls) == 1
    calls.clear()
    T.Compose([T.pad(2), lambda t: t * 1.0, T.jitter(2), T.rotate([5])])(x, gen())
    assert len(calls) == 2


def test_fused_zoom_in_and_out_loses_nothing():
    """Fusing multiplies the matrices: x2 then x0.5 is the identity, while warping twice
    would throw away the border at the first step."""
    x = torch.rand(1, 3, 16, 16, generator=gen())
    fused = T.Compose([T.scale([2.0]), T.scale([0.5])])(x)
    torch.testing.assert_close(fused, x, atol=1e-5, rtol=0)
    twice = T.scale([0.5])(T.scale([2.0])(x))
    assert (twice - x).abs().max() > 0.1


def test_fused_equals_one_transform_after_another():
    """Order matters (a shift and a zoom about the centre do not commute): the fused result
    equals applying the transforms one by one with the same random draws."""
    h, w = 24, 30
    x = ramp(h, w).expand(8, -1, -1, -1)
    ts = [T.jitter(6), T.scale([2.0, 1.5]), T.rotate([20, -35])]
    fused = T.Compose(ts)(x, gen(5))
    g = gen(5)
    y = x
    for t in ts:
        y = t(y, g)
    # a linear image stays linear under both; only the warped-in border differs
    centre = (slice(None), slice(None), slice(6, 12), slice(8, 16))
    torch.testing.assert_close(fused[centre], y[centre], atol=1e-4, rtol=0)
    assert fused.shape == y.shape == (8, 3, h - 6, w - 6)


def test_non_affine_callables_run_in_order():
    seen = []

    def plus_one(t):
        seen.append(("plus_one", tuple(t.shape[-2:])))
        return t + 1

    class Times2(T.Transform):
        def __call__(self, t, generator=None):
            seen.append(("times2", tuple(t.shape[-2:]), generator))
            return t * 2

    g = gen()
    x = torch.zeros(1, 3, 8, 8)
    y = T.Compose([T.pad(2), plus_one, T.jitter(2), Times2()])(x, g)
    assert [s[0] for s in seen] == ["plus_one", "times2"]
    assert seen[0][1] == (12, 12)  # after the pad
    assert seen[1][1] == (10, 10)  # after the jitter
    assert seen[1][2] is g  # Transform subclasses get the generator
    # zeros padded with 0.5, + 1, then * 2 gives 2 and 3 (the other order would give 1 and 2);
    # the 10x10 crop of the 12x12 canvas always holds both interior and border
    assert y.shape == (1, 3, 10, 10)
    assert set(torch.round(y * 1000).unique().tolist()) == {2000.0, 3000.0}


# ---------------------------------------------------------------------------- presets/resolve


def test_preset_output_sizes():
    assert T.standard().out_size((224, 224)) == (236, 236)
    assert T.distill(224).out_size((224, 224)) == (224, 224)
    assert T.distill((40, 56)).out_size((40, 56)) == (40, 56)
    x = torch.rand(2, 3, 64, 64, generator=gen())
    assert T.standard()(x, gen()).shape == (2, 3, 76, 76)
    assert T.distill(64)(x, gen()).shape == (2, 3, 64, 64)


def test_standard_on_224():
    x = torch.rand(1, 3, 224, 224, generator=gen())
    assert T.standard()(x, gen()).shape == (1, 3, 236, 236)


def test_resolve():
    x = torch.rand(2, 3, 32, 32, generator=gen())
    std = T.resolve("standard", 224)
    assert std.out_size((224, 224)) == (236, 236)
    assert torch.equal(std(x, gen(1)), T.standard()(x, gen(1)))
    torch.testing.assert_close(T.resolve("distill", 32)(x, gen(1)), T.distill(32)(x, gen(1)))
    for spec in (None, "none"):
        assert torch.equal(T.resolve(spec, 32)(x, gen()), x)
    given = T.resolve([T.pad(3)], 32)
    assert given.out_size((32, 32)) == (38, 38)
    torch.testing.assert_close(given(x, gen()), T.pad(3)(x), atol=0, rtol=0)
    assert T.resolve((T.jitter(2), T.jitter(2)), 32)(x, gen()).shape == (2, 3, 28, 28)
    assert T.resolve([], 32)(x, gen()) is x  # an empty list is the identity, not the defaults

    def f(t, g=None):
        return t

    assert T.resolve(f, 32) is f


def test_resolve_unknown_preset_names_the_presets():
    with pytest.raises(ValueError) as err:
        T.resolve("bogus", 224)
    for name in ("bogus", "standard", "distill", "none"):
        assert name in str(err.value)
    with pytest.raises(TypeError):
        T.resolve(3, 224)


# ---------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("make", [
    lambda: T.pad(3), lambda: T.jitter(3), lambda: T.scale([1.2]), lambda: T.rotate([15]),
    T.standard, lambda: T.distill(24),
])
def test_gradient_flows_back_to_the_input(make):
    x = torch.rand(2, 3, 24, 24, generator=gen()).requires_grad_(True)
    w = torch.rand(make().out_size((24, 24)), generator=gen(1))
    (make()(x, gen()) * w).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    assert (x.grad[0].abs().sum() > 0) and (x.grad[1].abs().sum() > 0)


# -------------------------------------------------------------------------------- errors


def test_bad_arguments_raise_useful_errors():
    with pytest.raises(ValueError, match=r"jitter must be >= 0.*-1"):
        T.jitter(-1)
    with pytest.raises(ValueError, match=r"pad width must be >= 0.*-1"):
        T.pad(-1)
    with pytest.raises(ValueError, match=r"constant, mirror, edge.*'bogus'"):
        T.pad(2, mode="bogus")
    with pytest.raises(ValueError, match="positive"):
        T.scale([1.0, 0.0])
    with pytest.raises(ValueError, match="positive"):
        T.scale([])
    with pytest.raises(ValueError, match="angle"):
        T.rotate([])
    with pytest.raises(ValueError, match="larger than the image"):
        T.crop(40)(torch.rand(1, 3, 32, 32))
    with pytest.raises(TypeError, match="callables"):
        T.Compose([T.pad(1), 3])


def test_tuple_is_a_range_list_is_a_choice():
    g = gen()
    a = T._pick((-10, 10), torch.rand(500, generator=g))
    assert a.min() >= -10 and a.max() <= 10 and len(a.unique()) > 100
    b = T._pick([-10, 10], torch.rand(500, generator=g))
    assert set(b.tolist()) == {-10.0, 10.0}


# --------------------------------------------------------------------------- image streams


def test_streams_read_the_same_numbers_however_they_are_read():
    """k rows at once are k reads of one row, also across the streams' block boundary."""
    one, many = T.ImageStreams([3, 9], block=5), T.ImageStreams([3, 9], block=5)
    singles = torch.cat([one.rows(2, 1) for _ in range(12)])
    chunks = torch.cat([many.rows(2, 4), many.rows(2, 3), many.rows(2, 5)])
    assert torch.equal(singles, chunks)
    # each image has its own stream: image 1 of a pair is image 0 of its own batch
    alone = T.ImageStreams([9], block=5)
    assert torch.equal(torch.cat([alone.rows(1, 3) for _ in range(4)])[:, 0], singles[:, 1])
    with pytest.raises(ValueError, match="at most 5 numbers"):
        one.rows(2, 6)
    with pytest.raises(ValueError, match="batch of 2 images, not 3"):
        one.rows(3, 1)


@pytest.mark.parametrize("make", [T.standard, lambda: T.distill(40)])
@pytest.mark.heavy
def test_planned_matrices_equal_drawing_call_by_call(make, monkeypatch):
    """With image streams, Compose builds many calls' matrices at once; the images are those
    of building them call by call (forced here by a non-affine step at the end), over more
    calls than one plan holds and than one block of the streams."""
    fast, slow = make(), make()
    slow.transforms.append(lambda t: t)
    resampled = []
    sample = T._sample
    monkeypatch.setattr(T, "_sample", lambda *a: resampled.append(1) or sample(*a))
    x = torch.rand(3, 3, 40, 40, generator=gen())
    a, b = T.ImageStreams([1, 2, 3]), T.ImageStreams([1, 2, 3])
    calls = 3 * T.Compose.plan_steps
    for _ in range(calls):
        torch.testing.assert_close(fast(x, a), slow(x, b), atol=1e-5, rtol=0)
    assert len(resampled) == 2 * calls  # one resampling per call on either path
    # a new render (new streams) starts a new plan instead of reusing the old one
    again = T.ImageStreams([1, 2, 3])
    torch.testing.assert_close(fast(x, again), slow(x, T.ImageStreams([1, 2, 3])), atol=1e-5,
                               rtol=0)
