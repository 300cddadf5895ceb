"""Rectangular images: every ``size`` is one side or (height, width) — render, the
parameterizations, the transforms, the methods that can take a rectangle, sweeps and the
command line's ``--size HxW`` — and the methods that cannot say so by name."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny
from PIL import Image

import featviz
from featviz import objectives as obj
from featviz import param as P
from featviz import transforms as T
from featviz.cli import main
from featviz.core import layouts, model_info, sizes
from featviz.errors import FeatvizError, SizeError

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 48, 80
RANDOM = ["--model", "mobilenet_v2", "--weights", "random", "--device", "cpu"]


# -------------------------------------------------------------------------------- sizes


def test_sizes_read_both_forms():
    assert sizes.hw(32) == (32, 32) and sizes.hw((48, 80)) == (48, 80)
    assert sizes.hw([48, 80]) == (48, 80) and sizes.hw(torch.Size([48, 80])) == (48, 80)
    assert sizes.compact((32, 32)) == 32 and sizes.compact((48, 80)) == (48, 80)
    assert sizes.text(32) == "32x32" and sizes.text((48, 80)) == "48x80"
    for bad in (3.5, "32", (1, 2, 3), True, (32, 2.0)):
        with pytest.raises(SizeError, match="size"):
            sizes.hw(bad)
    with pytest.raises(SizeError, match=r"deconv takes square images only.*not 48x80"):
        sizes.side((48, 80), "deconv")
    assert sizes.side((32, 32), "deconv") == 32


def test_input_size_keeps_a_side_and_gives_a_pair_for_a_rectangle(tiny):
    assert model_info.input_size(tiny) == 32 and model_info.input_size(tiny, 0) == 32
    assert model_info.input_size(tiny, 40) == 40
    assert model_info.input_size(tiny, (40, 40)) == 40  # a square pair is its side
    assert model_info.input_size(tiny, (H, W)) == (H, W)
    assert model_info.input_hw(tiny) == (32, 32)
    assert model_info.input_hw(tiny, (H, W)) == (H, W)
    assert model_info.input_hw(torch.nn.Conv2d(3, 3, 1)) == (224, 224)


# ------------------------------------------------------------------------------- render


def test_render_a_rectangle_on_a_tiny_model(tiny):
    res = featviz.render(tiny, obj.channel("conv3", [2, 5]), size=(H, W), steps=24, lr=0.2,
                         seed=1, progress=False, record_every=1)
    assert res.images.shape == (2, 3, H, W)
    assert (res.history[-1] > res.history[0] + 0.05).all(), res.history
    square = featviz.render(tiny, obj.channel("conv3", 2), size=32, steps=3, seed=1,
                            progress=False)
    pair = featviz.render(tiny, obj.channel("conv3", 2), size=(32, 32), steps=3, seed=1,
                          progress=False)
    assert torch.equal(square.images, pair.images)  # (s, s) is the same render as s


def test_render_a_rectangle_on_a_random_torchvision_model():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)  # SqueezeNet: no batch norm, so random weights respond clearly
    model = featviz.models.wrap(torchvision.models.squeezenet1_1(), input_size=64)
    res = featviz.render(model, obj.channel("features.5", 3), size=(H, W), steps=12, lr=0.1,
                         seed=0, progress=False, record_every=1)
    assert res.images.shape == (1, 3, H, W)
    assert res.history[-1, 0] > 1.2 * res.history[0, 0] > 0, res.history[:, 0]


def test_render_a_rectangle_on_an_unpadded_net():
    # unpadded convolutions change a rectangle's aspect: the layout is still recognized
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
    res = featviz.render(net, "channel:2:1", size=(H, W), steps=4, seed=0, progress=False)
    assert res.images.shape == (1, 3, H, W)


def test_layouts_tell_a_bordered_rectangle_from_tokens_and_swapped_axes():
    assert layouts.guess("a", torch.zeros(1, 8, 56, 88), (60, 92)) == "nchw"
    assert layouts.guess("a", torch.zeros(1, 56, 88, 8), (60, 92)) == "nhwc"
    assert layouts.guess("a", torch.zeros(1, 6, 10, 64), (H, W)) == "nhwc"
    assert layouts.guess("a", torch.zeros(1, 64, 6, 10), (H, W)) == "nchw"
    with pytest.raises(FeatvizError, match="cannot tell"):  # a square keeps its rule
        layouts.guess("a", torch.zeros(1, 8, 56, 88), (60, 60))
    with pytest.raises(FeatvizError, match="cannot tell"):  # lies across the image
        layouts.guess("a", torch.zeros(1, 8, 88, 56), (60, 92))


def test_a_neuron_on_a_rectangular_map_reads_column_x_and_row_y():
    act = torch.arange(3 * 8, dtype=torch.float32).view(1, 1, 3, 8)
    assert obj.neuron("l", 0, x=7, y=1)({"l": act}).item() == act[0, 0, 1, 7]
    assert obj.neuron("l", 0)({"l": act}).item() == act[0, 0, 1, 4]  # the centre
    with pytest.raises(FeatvizError, match="x 0-7, y 0-2"):
        obj.neuron("l", 0, x=1, y=3)({"l": act})


# ---------------------------------------------------------------------- parameterizations


@pytest.mark.parametrize("kind", list(P.KINDS))
@pytest.mark.parametrize("channels", [3, 1])
def test_every_kind_makes_rectangles(kind, channels):
    p = P.make(kind, (H, W), 2, seed=0, channels=channels)
    assert p().shape == (2, channels, H, W) and p.size == (H, W)


def test_the_other_parameterizations_make_rectangles():
    assert P.image((H, W), 2, alpha=True)().shape == (2, 4, H, W)
    assert P.aligned((H, W), 3)().shape == (3, 3, H, W)
    assert P.group_shared((H, W), torch.rand(3, 2))().shape == (3, 3, H, W)
    assert P.laplacian((H, W), 1, levels=6)().shape == (1, 3, H, W)
    assert P.cppn((H, W)).at((20, 10)).shape == (1, 3, 20, 10)
    assert P.power_law_spectrum((H, W)).shape == (3, H, W // 2 + 1)
    with pytest.raises(FeatvizError, match=rf"\[3, {H}, {W // 2 + 1}\]"):
        P.maco((H, W), spectrum=P.power_law_spectrum((W, H)))


@pytest.mark.parametrize("kind", ["fourier", "pixel", "maco", "laplacian"])
def test_a_rectangle_starts_from_a_rectangular_image(kind):
    img = torch.rand(1, 3, H, W) * 0.8 + 0.1
    p = P.make(kind, (H, W), init=img, seed=0)
    if kind != "maco":  # MACO keeps the prior's magnitude, only the phase is the image's
        torch.testing.assert_close(p(), img, atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match=rf"\[B,3,{H},{W}\]"):
        P.make(kind, (H, W), init=torch.rand(1, 3, W, H))


# ------------------------------------------------------------------------------ transforms


def _dot(h: int, w: int, y: int, x: int) -> torch.Tensor:
    img = torch.zeros(1, 1, h, w)
    img[0, 0, y, x] = 1.0
    return img


def _where(img: torch.Tensor) -> tuple[int, int]:
    flat = int(img[0, 0].argmax())
    return flat // img.shape[-1], flat % img.shape[-1]


def test_presets_know_the_size_of_a_rectangle():
    assert T.standard().out_size((H, W)) == (H + 24 - 12, W + 24 - 12)
    assert T.standard().out_size(32) == (44, 44)
    assert T.distill((H, W)).out_size((H, W)) == (H, W)
    assert T.fitted(T.standard(), (40, 64)).out_size((H, W)) == (40, 64)
    out = T.distill((H, W))(torch.rand(2, 3, H, W), torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, H, W)


def test_pad_then_crop_gives_a_rectangle_back():
    x = torch.rand(1, 3, 9, 15)
    out = T.Compose([T.pad(4), T.crop((9, 15))])(x)
    torch.testing.assert_close(out, x, atol=1e-4, rtol=0)


def test_fit_cuts_the_centre_of_a_larger_rectangle_and_stretches_a_smaller_one():
    x = torch.rand(1, 3, H, W)
    torch.testing.assert_close(T.fit((40, 64))(x), x[..., 4:44, 8:72], atol=1e-4, rtol=0)
    cols = torch.arange(30, dtype=torch.float32).view(1, 1, 1, 30).expand(1, 1, 20, 30)
    tall = T.fit((40, 30))(cols / 30)  # rows stretched, columns untouched
    assert tall.shape == (1, 1, 40, 30)
    # the first and last rows lie half outside the image (blended with the grey fill)
    torch.testing.assert_close(tall[..., 1:-1, :], (cols / 30)[:, :, :1].expand(1, 1, 38, 30),
                               atol=1e-4, rtol=0)


def test_scale_and_rotate_move_a_dot_about_the_centre_of_a_rectangle():
    cy, cx = 4, 7  # the centre of a 9x15 image
    zoomed = T.scale([2.0])(_dot(9, 15, cy + 1, cx + 2))
    assert _where(zoomed) == (cy + 2, cx + 4)
    assert zoomed.max() == pytest.approx(1.0, abs=1e-4)
    turned = T.rotate([90])(_dot(9, 15, cy, cx + 3))
    y, x = _where(turned)
    assert x == cx and abs(y - cy) == 3 and turned.max() == pytest.approx(1.0, abs=1e-4)


def test_jitter_cuts_a_shifted_window_of_a_rectangle():
    x = torch.rand(4, 1, 9, 15)
    out = T.jitter(3)(x, torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, 6, 12)
    for img, got in zip(x, out, strict=True):
        assert any(torch.allclose(got, img[:, dy:dy + 6, dx:dx + 12], atol=1e-4)
                   for dy in range(4) for dx in range(4))


# -------------------------------------------------------------------------------- methods


def test_receptive_fields_take_a_rectangle(tiny):
    rf = featviz.receptive_field
    assert rf.theoretical(tiny, "conv3", input_size=(24, 40)) == rf.theoretical(tiny, "conv3")
    field = rf.effective(tiny, "conv3", input_size=(24, 40), samples=2)
    assert field.map.shape == (24, 40) and field.unit == (6, 10)


def test_inversion_keeps_a_rectangle(tiny):
    img = torch.rand(1, 3, 24, 40)
    res = featviz.inversion.invert(tiny, img, "conv2", steps=2, size=(24, 40), progress=False)
    assert res.image.shape == (1, 3, 24, 40) and res.original.shape == (1, 3, 24, 40)


def test_top_k_reads_photos_as_rectangles(tiny):
    photos = [torch.rand(3, 30, 50, generator=torch.Generator().manual_seed(i))
              for i in range(3)]
    top = featviz.deconv.top_k(tiny, photos, "conv3", [1], k=2, size=(24, 40))
    assert len(top.entries[1]) == 2
    assert all(0 <= e.position[0] < 12 and 0 <= e.position[1] < 20 for e in top.entries[1])


def test_feature_map_tiles_keep_a_rectangle_s_aspect(tiny):
    maps = featviz.featuremaps.capture(tiny, torch.rand(1, 3, 32, 64), ["conv1"])
    pic = maps.grid("conv1", ncol=1, max_channels=2)
    tile_w = pic.width - 4  # one column, 2 px of padding either side
    assert tile_w == 48 and pic.height == 2 * 24 + 3 * 2


def test_methods_that_draw_square_tiles_refuse_a_rectangle_by_name(tiny):
    img = torch.rand(1, 3, 32, 32)
    with pytest.raises(SizeError, match=r"semantic_dictionary takes square images only.*48x80"):
        featviz.semantic_dictionary.semantic_dictionary(tiny, img, "conv3", size=(H, W))
    with pytest.raises(SizeError, match=r"building_blocks takes square images only"):
        featviz.building_blocks.building_blocks(tiny, img, "conv3", size=(H, W))


def test_an_activation_store_resumes_with_a_rectangle(tiny, tmp_path):
    photos = [torch.rand(3, 30, 50) for _ in range(4)]
    store = featviz.atlas_store.collect(tiny, photos, "conv3", tmp_path, size=(24, 40),
                                        batch_size=2, progress=False, stop_after=1)
    assert store.size == [24, 40] and store.map_shape == (12, 20)
    again = featviz.atlas_store.collect(tiny, photos, "conv3", tmp_path, size=(24, 40),
                                        batch_size=2, progress=False)
    assert len(again.images) == 4


def test_a_sweep_renders_and_resumes_rectangles(tmp_path):
    model = make_tiny()
    kw = dict(steps=2, size=(24, 40), log=lambda msg: None)
    first = featviz.sweep.sweep(model, tmp_path, ["conv3"], [0, 1], **kw)
    assert first.rendered == 2
    pics = sorted(tmp_path.rglob("*.png"))
    assert pics and all(Image.open(p).size == (40, 24) for p in pics)
    again = featviz.sweep.sweep(model, tmp_path, ["conv3"], [0, 1], **kw)
    assert again.rendered == 0 and again.skipped == 2


# --------------------------------------------------------------------------- command line


def test_cli_renders_height_by_width(tmp_path, capsys):
    out = tmp_path / "r.png"
    code = main(["render", *RANDOM, "--objective", "channel:features.2:0", "--size", "40x64",
                 "--steps", "2", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (64, 40)  # PIL gives (width, height)


@pytest.mark.parametrize("text", ["40x", "axb", "40x8", "x64", "40x64x2"])
def test_cli_names_a_bad_height_by_width(tmp_path, capsys, text):
    code = main(["render", *RANDOM, "--objective", "channel:features.2:0", "--size", text,
                 "--steps", "1", "--no-progress", "--out", str(tmp_path / "r.png")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"'{text}'" in err and "HxW (height x width" in err, err


def test_cli_size_type_reads_both_forms():
    from featviz.face import arguments

    assert arguments.size("224") == 224 and arguments.size("224x320") == (224, 320)
    assert arguments.size(" 40 X 64 ") == (40, 64) and arguments.size("64x64") == 64
