"""The feature-map viewer: capture, grids, statistics, compare, HTML report, in a browser."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import pytest
import torch
from conftest import HANG_GUARD_S, hook_free, make_tiny
from PIL import Image

from featviz import featuremaps as fm
from featviz.errors import FeatvizError, UnknownNameError


def _img(seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.rand(1, 3, 32, 32)


def test_capture_matches_the_layers_and_cleans_up():
    model = make_tiny()
    maps = fm.capture(model, _img(), ["conv1", "conv3", "fc"])
    assert maps.layers == ["conv1", "conv3", "fc"]
    assert maps.acts["conv3"].shape == (16, 16, 16) and maps.acts["fc"].shape == (10,)
    with torch.no_grad():
        expected = model.net.conv1(_img())[0]
    torch.testing.assert_close(maps.acts["conv1"], expected)
    assert maps.logits.shape == (10,)
    assert hook_free(model)


def test_capture_all_keeps_values_before_inplace_ops():
    model = make_tiny()
    maps = fm.capture(model, _img(), "all")
    assert {"conv1", "relu", "conv3", "act3", "fc"} <= set(maps.layers)
    assert (maps.acts["conv3"] < 0).any()  # conv3's own output, before the in-place ReLU6
    assert maps.acts["act3"].min() >= 0


def test_memory_cap_is_a_clear_error():
    model = make_tiny()
    with pytest.raises(FeatvizError, match="memory cap"):
        fm.capture(model, _img(), "all", max_bytes=10_000)
    assert hook_free(model)  # the error flew out of a hook: every hook is gone all the same


def test_bad_inputs():
    with pytest.raises(UnknownNameError, match="'conv2'"):
        fm.capture(make_tiny(), _img(), ["conv_2"])
    with pytest.raises(ValueError, match=r"\[1,3,H,W\]"):
        fm.capture(make_tiny(), torch.rand(1, 1, 32, 32), "all")


@pytest.mark.parametrize("normalize", ["channel", "layer", "none"])
def test_grid_normalizations(normalize):
    maps = fm.capture(make_tiny(), _img(), ["conv2"])
    pic = maps.grid("conv2", normalize=normalize)
    assert isinstance(pic, Image.Image) and pic.size[0] > 4 * 32


def test_grid_per_channel_uses_the_full_range():
    acts = {"x": torch.stack([torch.linspace(0, 1, 64).view(8, 8), torch.full((8, 8), 5.0)])}
    maps = fm.FeatureMaps(acts, torch.zeros(1, 3, 8, 8), None)
    tiles = fm.colorize(torch.stack([torch.zeros(8, 8), torch.ones(8, 8)]))
    assert not torch.equal(tiles[0], tiles[1])
    with pytest.raises(ValueError, match="channel, layer, none"):
        maps.grid("x", normalize="zscore")


def test_stats_and_histograms():
    maps = fm.capture(make_tiny(), _img(), ["conv1", "relu"])
    rows = {r[0]: r for r in maps.stats().rows}
    a = maps.acts["relu"]
    assert rows["relu"][2] == pytest.approx(float(a.mean()))
    assert rows["relu"][4] == pytest.approx(float((a <= 0).float().mean()))
    assert "| relu |" in str(maps.stats())
    assert maps.histograms().size[0] > 100


def test_top_classes_with_names(tmp_path):
    model = make_tiny()
    (tmp_path / "names.txt").write_text("\n".join(f"class{i}, alias" for i in range(10)))
    top = fm.top_classes(model, _img(), k=3, labels=tmp_path / "names.txt")
    with torch.no_grad():
        probs = model(_img()).softmax(1)[0]
    assert [t[0] for t in top] == probs.topk(3).indices.tolist()
    assert top[0][1] == f"class{top[0][0]}" and abs(sum(p for *_, p in top)) <= 1
    with pytest.raises(FeatvizError, match="3 class names for a model with 10"):
        fm.top_classes(model, _img(), labels=["a", "b", "c"])


def test_compare_centering_numbers():
    model = make_tiny()
    img = _img()
    same = fm.compare(model, img, img, ["conv1", "conv3"])
    assert all(r[1] == pytest.approx(1) and r[2] == pytest.approx(1) for r in same.rows)
    assert same.kl == pytest.approx(0, abs=1e-6) and same.top1_agree
    shifted = fm.compare(model, img, img + 0.5, ["conv1"])
    # conv1 is affine: a constant shift leaves each normalized map almost the same
    assert shifted.rows[0][2] > 0.9


def test_compare_all_layers_includes_the_vector_ones(tmp_path):
    """The README's call, compare(model, a, b) over every layer, the classifier's [C] vector
    included: its map correlation is NaN (no maps), its variance ratio a number."""
    model = make_tiny()
    img = _img()
    cmp = fm.compare(model, img, img + 0.1)
    rows = {layer: (ratio, corr) for layer, ratio, corr in cmp.rows}
    assert rows["conv1"][1] > 0.9 and rows["fc"][0] > 0 and math.isnan(rows["fc"][1])
    assert cmp.report(tmp_path / "c.html").is_file()


def test_report_is_self_contained(tmp_path):
    out = fm.report(make_tiny(), _img(), tmp_path / "r.html", labels=[f"c{i}" for i in range(10)])
    page = out.read_text()
    assert "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") >= 5
    assert "id='layers'" in page and "softmax top-5" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless browser test needs Debian's chromium "
                    "package (apt-get install chromium); .ci/run installs it when it can")
@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    out = fm.report(make_tiny(), _img(), tmp_path / "r.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--virtual-time-budget=5000", "--dump-dom",
                          out.as_uri()], capture_output=True, text=True,
                         timeout=HANG_GUARD_S).stdout
    match = re.search(r'data-images-loaded="(\d+)"', dom)
    assert match, "the page's load script did not run"
    shown = dom.count("<img")
    assert int(match.group(1)) == shown >= 5  # every image decoded
    assert "<nav id=\"layers\">" in dom and "conv3" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1000,800",
                    out.as_uri()], capture_output=True, timeout=HANG_GUARD_S)
    assert Image.open(shot).size == (1000, 800)


@pytest.fixture(scope="module")
def random_inception():
    """InceptionV1 as ``load`` builds it, with random weights: its layer names and aliases are
    what these tests read, not what it learned."""
    import featviz

    torch.manual_seed(0)
    return featviz.models.load("inceptionv1", weights=None, device="cpu")


def test_report_names_layers_by_path_and_alias_and_says_which_channels(tmp_path,
                                                                        random_inception):
    layers = ["conv1", "inception4a", "mixed4b"]  # paths and an alias, as a user gives them
    out = fm.report(random_inception, _img(), tmp_path / "r.html", layers=layers,
                    max_channels=32)
    page = out.read_text()
    # lucid's names beside the module paths, in the headings and the side bar
    assert "<h2>inception4a (mixed4a)</h2>" in page and "<h2>conv1 (conv2d0)</h2>" in page
    assert "<h2>mixed4b (inception4b)</h2>" in page
    assert "<a href='#inception4a'>inception4a (mixed4a)</a>" in page
    # 512 channels in inception4a and inception4b, 64 in conv1: which ones each grid shows
    assert page.count("channels 0-31 of 512 (the first 32, in order") == 2
    assert "all 64 channels" not in page and "channels 0-31 of 64" in page
    # the top classes by the model's own names, not by index
    names = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td>", page)
    assert len(names) == 5 and all(name != index for index, name in names)


def test_the_notebook_view_says_which_channels_and_names_aliases(random_inception):
    maps = fm.capture(random_inception, _img(), ["inception4a", "conv2"])
    assert maps.title("inception4a") == "inception4a (mixed4a)"
    assert maps.title("conv2") == "conv2 (conv2d1)"
    view = maps._repr_html_()
    assert "inception4a (mixed4a)" in view and "channels 0-15 of 512" in view


def test_shown_channels_in_words():
    assert fm.shown_channels(512, 32).startswith("channels 0-31 of 512 (the first 32")
    assert fm.shown_channels(16, 32) == "all 16 channels"
    assert fm.shown_channels(600, None) == "all 600 channels"
    assert fm.shown_channels(1, 32) == "its one channel"
    plain = fm.capture(make_tiny(), _img(), ["conv1"])  # a model without aliases
    assert plain.title("conv1") == "conv1" and plain.other_names == {}
