"""The static HTML gallery of a sweep folder, in a real browser where one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings

import pytest
import torch
from conftest import HANG_GUARD_S, make_tiny
from PIL import Image

from featviz import gallery
from featviz import sweep as sw
from featviz.cli import main
from featviz.errors import FeatvizError

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A small sweep of two layers with top-3 patches from a folder of made-up photos."""
    root = tmp_path_factory.mktemp("gallery")
    photos = root / "photos"
    photos.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(4):
        arr = (torch.rand(24, 24, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(photos / f"p{i}.png")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    sw.sweep(make_tiny(), root / "run", ["conv2", "conv3"], "0-3", steps=2, size=16,
             images=photos, k=3, log=lambda msg: None)
    torch.set_num_threads(before)
    return root / "run"


def test_gallery_pages_hold_every_channel(swept):
    index = gallery.write(swept)
    assert index == swept / "index.html"
    page = index.read_text()
    assert "http://" not in page and "https://" not in page
    for layer in ("conv2", "conv3"):
        assert f"href='{gallery.page_name(layer)}'>{layer}</a></td><td>4 of 4</td>" in page
    layer_page = (swept / gallery.page_name("conv3")).read_text()
    records = {r["channel"]: r for r in sw.read_manifests(swept) if r["layer"] == "conv3"}
    for c, rec in records.items():
        assert f"<figure id='c{c}'>" in layer_page
        assert f"channel {c}<br>objective {rec['value']:.4g}" in layer_page
    assert layer_page.count("class='vis'") == 4 and layer_page.count("class='top'") == 4
    assert layer_page.count("src='data:image/png;base64,") == 8
    assert "top photos: p" in layer_page  # the photos' names, as the patches' caption
    assert not re.findall(r"src='(?!data:)", layer_page + page)  # no image by reference


def _fake_sweep(folder, layer, channels, expected):
    """A sweep folder written by hand: the gallery needs only the manifest and the files."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for c in channels:
        name = f"x/c{c:04d}.png"
        (folder / "x").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (c * 40, 90, 200)).save(folder / name)
        lines.append(json.dumps({"layer": layer, "channel": c, "value": 1.5 + c, "file": name}))
    (folder / "manifest.rank0.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "sweep.json").write_text(json.dumps(
        {"settings": {"model": "m<&>", "steps": 4}, "layers": {layer: expected}}))


def test_partial_sweep_and_names_are_escaped(tmp_path):
    _fake_sweep(tmp_path, "<b>odd</b>&layer", [0, 2, 5], list(range(8)))
    (tmp_path / "x" / "c0002.png").unlink()  # a record whose file is gone: left out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = gallery.write(tmp_path)
    assert any("c0002.png is missing" in str(w.message) for w in caught)
    page = index.read_text()
    assert "<b>odd</b>" not in page and "&lt;b&gt;odd&lt;/b&gt;&amp;layer" in page
    assert "2 of 8</td>" in page and "m&lt;&amp;&gt;" in page
    layer_page = (tmp_path / gallery.page_name("<b>odd</b>&layer")).read_text()
    assert "<figure id='c0'>" in layer_page and "<figure id='c5'>" in layer_page
    assert "<figure id='c2'>" not in layer_page


def test_gallery_errors(tmp_path, capsys):
    with pytest.raises(FeatvizError, match=r"holds no sweep manifest \(expected "
                                           r"manifest\.rank\*\.jsonl"):
        gallery.write(tmp_path)
    assert main(["gallery", str(tmp_path / "nowhere")]) == 2
    assert "sweep folder not found" in capsys.readouterr().err
    assert main(["gallery", str(tmp_path)]) == 2
    assert "featviz sweep --out" in capsys.readouterr().err


def test_gallery_command(swept, tmp_path, capsys):
    out = tmp_path / "site" / "index.html"
    assert main(["gallery", str(swept), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert (out.parent / gallery.page_name("conv2")).is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="headless browser test needs Debian's chromium "
                    "package (apt-get install chromium); .ci/run installs it when it can")
@pytest.mark.slow
def test_gallery_renders_in_headless_chromium(swept, tmp_path):
    index = gallery.write(swept)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
             "--dump-dom"]
    for page, least in ((index, 2), (swept / gallery.page_name("conv2"), 8)):
        dom = subprocess.run([CHROMIUM, *flags, page.as_uri()], capture_output=True, text=True,
                             timeout=HANG_GUARD_S).stdout
        match = re.search(r'data-images-loaded="(\d+)"', dom)
        assert match, f"the load script of {page.name} did not run"
        assert int(match.group(1)) == dom.count("<img") >= least  # every image decoded
    assert "channel 3" in dom and "all layers" in dom


def test_the_settings_line_names_a_weights_file_without_its_folder():
    from featviz.face.gallery import _settings_line

    line = _settings_line({"model": "inceptionv1", "weights": "/home/someone/models/w.pth",
                           "steps": 256})
    assert "weights w.pth" in line and "someone" not in line
    assert "weights DEFAULT" in _settings_line({"weights": "DEFAULT"})
