"""Every featviz result shows itself in a notebook: ``_repr_png_`` gives PNG bytes PIL reads,
of bounded size; ``_repr_html_`` gives HTML that parses, with its pictures inline as base64
PNG, of bounded length; ``repr`` is short. And the progress bar behaves in a notebook."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import pytest
import torch
from conftest import make_tiny
from PIL import Image

import featviz
from featviz import deconv, featuremaps, inversion, receptive_field
from featviz import objectives as obj
from featviz.core import notebook
from featviz.core.render import recorder

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_SIDE = notebook.MAX_SIDE
IMG = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


class _Strict(HTMLParser):
    """Collects the tags; every start tag that needs an end must get one, in order."""

    VOID = {"img", "br", "hr", "meta", "input"}

    def __init__(self):
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


def check_png(data: bytes) -> Image.Image:
    assert isinstance(data, bytes)
    pic = Image.open(io.BytesIO(data))
    pic.load()
    assert pic.format == "PNG" and 0 < max(pic.size) <= MAX_SIDE
    return pic


def check_html(text: str, images: int = 1) -> list[Image.Image]:
    assert isinstance(text, str) and len(text) <= notebook.MAX_HTML
    parser = _Strict()
    parser.feed(text)
    parser.close()
    assert parser.open == [], f"unclosed tags {parser.open}"
    pics = [check_png(base64.b64decode(m)) for m in IMG.findall(text)]
    assert len(pics) >= images
    return pics


def check_repr(result: object, most: int = 400) -> None:
    text = repr(result)
    assert len(text) <= most and "tensor(" not in text, text


def check(result: object, images: int = 1) -> None:
    """The display forms :data:`featviz.display.RICH` promises for the result's class."""
    forms = featviz.display.RICH[type(result)]
    if "png" in forms:
        check_png(result._repr_png_())
    if "html" in forms:
        check_html(result._repr_html_(), images)
    check_repr(result)


@pytest.fixture(scope="module")
def tiny():
    return make_tiny()


@pytest.fixture(scope="module")
def photo():
    torch.manual_seed(1)
    return torch.rand(1, 3, 32, 32)


def test_render_result_single_batch_and_snapshots(tiny):
    one = featviz.render(tiny, obj.channel("conv3", 0), steps=4, size=32, progress=False)
    check(one)
    batch = featviz.render(tiny, obj.channel("conv3", [0, 1, 2]), steps=4, size=32,
                           thresholds=(2,), progress=False)
    check(batch, images=2)  # the final grid and the snapshots' rows
    assert "channel" in batch._repr_html_() and "snapshots" in batch._repr_html_()
    assert Image.open(io.BytesIO(batch._repr_png_())).size != \
        Image.open(io.BytesIO(one._repr_png_())).size


def test_small_images_are_enlarged_and_large_ones_capped():
    big = notebook.png(Image.new("RGB", (3000, 1000)))
    small = notebook.png(Image.new("RGB", (32, 16)))
    assert Image.open(io.BytesIO(big)).size == (MAX_SIDE, MAX_SIDE // 3)
    assert max(Image.open(io.BytesIO(small)).size) >= notebook.MIN_SIDE


def test_the_budget_bounds_the_html():
    rng = torch.Generator().manual_seed(0)
    noise = featviz.images.to_pil(torch.rand(3, 512, 512, generator=rng))  # does not compress
    page = notebook.Budget(limit=300_000)
    for _ in range(6):
        page.image(noise)
    text = page.html("noise")
    assert len(text) <= 300_000 + 1000 and page.dropped > 0 and "left out" in text
    check_html(text)


def test_projection_and_occlusion(tiny, photo):
    check(deconv.project(tiny, torch.cat([photo, photo.flip(-1)]), "conv3", 1))
    check(featviz.occlusion.occlusion(tiny, photo, "conv3", 1, patch=8, stride=8))


def test_top_k_and_its_entries(tiny):
    gen = torch.Generator().manual_seed(0)
    top = deconv.top_k(tiny, [torch.rand(3, 32, 32, generator=gen) for _ in range(6)], "conv3",
                       [0, 1], k=3, batch_size=3, mode=["deconvnet", "guided"])
    check(top, images=2)
    check(top.entries[0][0])


def test_inversion_and_sweep(tiny, photo):
    sweep = inversion.invert_layers(tiny, photo, ["conv2", "conv3"], steps=2, progress=False)
    check(sweep)
    check(sweep.results[0])
    assert "PSNR" in sweep._repr_html_()


def test_receptive_fields(tiny):
    trf = receptive_field.theoretical(tiny, "conv3")
    check_html(trf._repr_html_(), images=0)
    fields = receptive_field.effective_layers(tiny, ["conv2", "conv3"], samples=2,
                                              input_size=32)
    check(fields, images=1)
    check(fields.fields[0])


def test_feature_maps_stats_and_comparison(tiny, photo):
    maps = featuremaps.capture(tiny, photo)
    check(maps, images=2)
    check_html(maps.stats()._repr_html_(), images=0)
    check(featuremaps.compare(tiny, photo, photo.flip(-1)))


@pytest.mark.heavy
def test_feature_maps_of_many_layers_show_a_few(tiny, photo):
    maps = featuremaps.capture(tiny, photo)
    many = featuremaps.FeatureMaps({f"l{i}": maps.acts["conv3"] for i in range(40)},
                                   maps.image, None)
    text = many._repr_html_()
    check_html(text)
    assert "12 of 40 layers" in text and len(IMG.findall(text)) == 13  # input + 12 layers


def test_sweep_result_and_folder(tiny, tmp_path):
    res = featviz.sweep.sweep(tiny, tmp_path, ["conv3"], "0-2", steps=2, size=32,
                              log=lambda _: None)
    check(res, images=1)
    check_html(featviz.display.SweepFolder(tmp_path)._repr_html_())
    assert "not found" in featviz.display.SweepFolder(tmp_path / "none")._repr_html_()


def test_display_html_and_png_helpers(tiny):
    res = featviz.render(tiny, obj.channel("conv3", 0), steps=2, size=32, progress=False)
    assert featviz.display.html(res) == res._repr_html_()
    assert featviz.display.png(res) == res._repr_png_()
    with pytest.raises(featviz.FeatvizError, match="no PNG"):
        featviz.display.png(receptive_field.theoretical(tiny, "conv3"))


def test_the_progress_bar_is_tqdm_autos_and_quiet(tiny, capsys):
    from tqdm.auto import tqdm

    bar = recorder._progress(10, True, "x")
    try:
        assert isinstance(bar, tqdm) and not bar.leave and bar.mininterval >= 0.5
    finally:
        bar.close()
    capsys.readouterr()
    featviz.render(tiny, obj.channel("conv3", 0), steps=3, size=32, progress=False)
    inversion.invert(tiny, torch.rand(1, 3, 32, 32), "conv3", steps=2, progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_the_bar_redraws_at_most_every_interval(tiny, capsys, monkeypatch):
    # a render whose records come every step redraws the bar a few times, not once a step
    monkeypatch.setattr(recorder, "BAR_INTERVAL", 60.0)
    featviz.render(tiny, obj.channel("conv3", 0), steps=40, size=32, record_every=1)
    err = capsys.readouterr().err
    assert err.count("\r") <= 4, err


def test_building_block_results_show_themselves(tiny, photo):
    from featviz.methods.building_blocks import building_blocks

    blocks = building_blocks(tiny, photo[:, :, :16, :16], "act3", groups=2, n=2, classes=2,
                             size=16, cell=16, steps=2, progress=False)
    check(blocks.dictionary)
    check(blocks.grids["act3"])
    check(blocks.groups)
    check(blocks.group_classes, images=0)
    check(blocks, images=3)  # dictionary, grid, groups
    attr = featviz.attribution.attribute(tiny, photo, "act3", 0, steps=4)
    check(attr)
    assert "completeness gap" in repr(attr) and "top channels" in attr._repr_html_()
    assert set(featviz.display.RICH) >= {type(blocks), type(blocks.groups), type(attr)}
