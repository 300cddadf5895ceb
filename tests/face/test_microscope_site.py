"""The microscope site's store (data/<layer>/<task>.json, microscope.json) and its pages, on a
small site: a real two-step sweep of a tiny CNN over two layers and a third layer not swept
yet, with made-up task results; in a real browser where one is installed."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import stat
import warnings
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from _browser import IMAGES_SHOWN, Browser, needs_chromium, serve
from conftest import make_tiny
from PIL import Image

from featviz import images
from featviz import sweep as sw
from featviz.errors import FeatvizError
from featviz.face.microscope import pages, store

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = ["conv1", "conv2", "conv3"]  # conv1 is in the site but not swept yet
SHAPES = {"conv1": [8, 32, 32], "conv2": [16, 16, 16], "conv3": [16, 16, 16]}
REASON = "caricatures need a classifier's logits <here>"


def _png(path: Path, seed: int) -> None:
    images.save(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(seed)), path)


def _photos(root: Path) -> Path:
    """Four made-up photos with a labels.tsv, so the sweep keeps each unit's top-3 patches and
    their photos' classes."""
    photos = root / "photos"
    photos.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(4):
        arr = (torch.rand(24, 24, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(photos / f"p{i}.png")
    (photos / "labels.tsv").write_text("file\tclass_name\tclass_index\n" + "".join(
        f"p{i}.png\tclass {i}, thing\t{i}\n" for i in range(4)))
    return photos


def _tasks(site: Path) -> None:
    """Made-up results: conv2 has every task (caricatures not applicable), conv3 only its
    connections (tuning not applicable), conv1 none."""
    folder = store.layer_dir(site, "conv2")
    for i in range(2):
        _png(folder / f"photo_{i}.png", i)
        _png(folder / f"dream_{i}.png", 10 + i)
    _png(folder / "groups.png", 20)
    _png(folder / "facets" / "c0000.png", 30)
    store.write_task(site, "conv2", "dreams", {"items": [
        {"photo": f"p{i}.png", "original": f"photo_{i}.png", "file": f"dream_{i}.png"}
        for i in range(2)]}, 1.5)
    store.write_not_applicable(site, "conv2", "caricatures", REASON)
    store.write_task(site, "conv2", "groups", {"photo": "p0.png", "file": "groups.png", "k": 6},
                     2.0)
    store.write_task(site, "conv2", "weights", {
        "source": "conv1", "target": "conv3", "source_error": None, "target_error": None,
        "incoming": {"0": {"positive": [[4, 0.7]], "negative": [[5, -0.2]]}},
        "outgoing": {"0": {"positive": [[1, 0.4]], "negative": [[3, -0.1]]}}}, 3.0)
    angles = [0, 45, 90, 135]
    store.write_task(site, "conv2", "tuning", {"families": {"lines": {
        "period": 180, "orientations": angles, "units": {"0": {
            "curve": [1.0, 0.3, 0.1, 0.3], "circular_variance": 0.42, "unimodal": True,
            "preferred": 0, "member": True}}}}}, 4.0)
    store.write_task(site, "conv2", "classes", {"units": {"0": [["tabby cat", 0.8],
                                                                ["tiger cat", 0.5]]},
                                                "photos": 4}, 0.5)
    store.write_task(site, "conv2", "facets", {"units": {"0": "facets/c0000.png"}}, 6.0)
    store.write_task(site, "conv3", "weights", {
        "source": "conv2", "target": None, "source_error": None, "target_error": None,
        "incoming": {"0": {"positive": [[2, 0.9], [1, 0.5]], "negative": [[3, -0.4]]}},
        "outgoing": {}}, 1.0)
    store.write_not_applicable(site, "conv3", "tuning", "no stimulus fits a 4-pixel field")
    # an error message kept as the reason, naming a file of this machine
    store.write_not_applicable(site, "conv3", "groups", f"cannot read {site}/photos/x.png")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, its pages written: conv2 units 0-3 and conv3 units 0-1 swept."""
    root = tmp_path_factory.mktemp("microscope")
    site, photos = root / "site", _photos(root)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    kw = {"steps": 2, "size": 16, "images": photos, "k": 3, "log": lambda msg: None}
    sw.sweep(make_tiny(), site / store.SWEEP_DIR, ["conv2"], "0-3", **kw)
    sw.sweep(make_tiny(), site / store.SWEEP_DIR, ["conv3"], "0-1", **kw)
    torch.set_num_threads(before)
    store.write_meta(site, {
        "model": "tiny", "weights": str(root / "weights" / "tiny.pth"), "setting": "quick",
        "settings": {"steps": 2, "size": 16, "k": 3, "photos": str(photos)},
        "layers": LAYERS, "shapes": SHAPES, "started": "2025-01-01T00:00:00+00:00",
        "updated": "2025-01-01T00:01:00+00:00"})
    _tasks(site)
    assert pages.write_site(site) == site / "index.html"
    return site


def _pages(site: Path) -> dict[str, str]:
    return {p.relative_to(site).as_posix(): p.read_text() for p in site.rglob("*.html")
            if store.SWEEP_DIR not in p.relative_to(site).parts}


# ---- the store ------------------------------------------------------------------------------


def test_write_task_lands_whole_and_reads_back_equal(tmp_path, monkeypatch):
    payload = {"photo": "a.png", "file": "groups.png", "k": 6, "nested": {"x": [1, 2.5]}}
    path = store.write_task(tmp_path, "mixed 3b", "groups", payload, 1.23456)
    assert path == tmp_path / store.DATA_DIR / "mixed_3b" / "groups.json" == \
        store.task_file(tmp_path, "mixed 3b", "groups")
    back = store.read_task(tmp_path, "mixed 3b", "groups")
    assert back == {**payload, "seconds": 1.235, "written": back["written"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", back["written"])
    plain = tmp_path / "plain"
    with open(plain, "w"):  # the mode a plain open() gives here
        pass
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    # a write that fails at the rename leaves the old file as it was, and no temporary file
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(FeatvizError, match="cannot write"):
        store.write_task(tmp_path, "mixed 3b", "groups", {"k": 7}, 0.0)
    monkeypatch.undo()
    assert store.read_task(tmp_path, "mixed 3b", "groups") == back
    assert sorted(p.name for p in path.parent.iterdir()) == ["groups.json"]
    assert store.is_done(tmp_path, "mixed 3b", "groups")
    assert not store.is_done(tmp_path, "mixed 3b", "dreams")
    assert list(store.read_layer(tmp_path, "mixed 3b")) == ["groups"]


def test_unknown_task_and_unstorable_payloads_are_refused(tmp_path):
    with pytest.raises(FeatvizError, match="unknown microscope task 'dream'; the tasks are "
                                           "dreams, caricatures, groups, weights, tuning"):
        store.write_task(tmp_path, "a", "dream", {}, 0.0)
    with pytest.raises(FeatvizError, match="facets"):
        store.read_task(tmp_path, "a", "costs")
    with pytest.raises(FeatvizError, match="cannot store the groups result of a"):
        store.write_task(tmp_path, "a", "groups", {"file": Path("x")}, 0.0)
    data = tmp_path / store.DATA_DIR
    assert not data.exists() or not list(data.rglob("*.json"))
    # NaN is stored as null: the files stay strict JSON
    store.write_task(tmp_path, "a", "tuning", {"v": float("nan"), "w": [float("inf"), 1.0]}, 0)
    text = store.task_file(tmp_path, "a", "tuning").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the file"))["w"] == \
        [None, 1.0]


def test_a_broken_task_file_is_reported_and_counts_as_missing(site, tmp_path):
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    broken = store.task_file(copy, "conv2", "groups")
    broken.write_text('{"photo": "p0.png", "file": ')  # edited by hand and left so
    with pytest.warns(UserWarning, match=r"groups\.json is not valid JSON .*not computed yet"):
        assert store.read_task(copy, "conv2", "groups") is None
    store.task_file(copy, "conv2", "classes").write_text("[1, 2]")
    with pytest.warns(UserWarning, match="holds a JSON list, not an object"):
        assert not store.is_done(copy, "conv2", "classes")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pages.write_site(copy)
    assert any("groups.json" in str(w.message) for w in caught)
    groups = re.search(r"<section id='groups'>.*?</section>",
                       (copy / "conv2" / "index.html").read_text()).group(0)
    assert "not computed yet" in groups and "<img" not in groups
    # valid JSON of the wrong shape, and images outside the data folder: shown as missing
    store.write_task(copy, "conv2", "weights", {"source": "conv1", "incoming": [1]}, 0)
    store.write_task(copy, "conv2", "tuning", {"families": {"lines": {"units": [], "period": "x"},
                                                            "edges": 3}}, 0)
    store.write_task(copy, "conv2", "facets", {"units": {"0": "/etc/passwd"}}, 0)
    store.write_task(copy, "conv2", "dreams", {"items": [{"photo": "p", "file": "../../x.png"}]},
                     "1")
    store.write_task(copy, "conv2", "classes", {"units": {"0": 5}}, 0)
    with pytest.warns(UserWarning, match="groups.json"):
        pages.write_site(copy)
    unit = (copy / "conv2" / "0.html").read_text()
    assert "image missing: /etc/passwd" in unit and "src='/etc" not in unit
    assert "not computed yet for this unit" in unit
    assert "image missing: ../../x.png" in (copy / "conv2" / "index.html").read_text()


def test_meta_round_trip_keeps_a_weights_file_by_name_and_sizes_add_up(tmp_path):
    store.write_meta(tmp_path, {"model": "m", "weights": "/home/someone/w.pth", "layers": ["a"]})
    assert store.read_meta(tmp_path) == {"model": "m", "weights": "w.pth", "layers": ["a"]}
    assert store.read_meta(tmp_path / "nowhere") == {}
    (tmp_path / "microscope.json").write_text("{")
    with pytest.warns(UserWarning, match="microscope.json is not valid JSON"):
        assert store.read_meta(tmp_path) == {}
    (tmp_path / "f" / "g").mkdir(parents=True)
    (tmp_path / "f" / "a").write_bytes(b"x" * 10)
    (tmp_path / "f" / "g" / "b").write_bytes(b"y" * 5)
    (tmp_path / "f" / "link").symlink_to(tmp_path / "f" / "a")
    assert store.folder_bytes(tmp_path / "f") == 15 and store.folder_bytes(tmp_path / "no") == 0
    assert store.layer_page("mixed 3b") == "mixed_3b/index.html"
    assert store.unit_page("mixed 3b", 326) == "mixed_3b/326.html"


# ---- the pages ------------------------------------------------------------------------------


def test_the_index_lists_every_layer_with_its_counts_and_costs(site):
    page = (site / "index.html").read_text()
    rows = dict(re.findall(r"<tr><td><a href='(\w+)/index.html'>\w+</a></td>(.*?)</tr>", page))
    assert list(rows) == LAYERS
    assert "<td class='num'>0 of 8</td>" in rows["conv1"]  # the shape's channels: not swept
    assert "<td class='num'>4 of 4</td>" in rows["conv2"]  # the sweep's plan
    assert "<td class='num'>2 of 2</td>" in rows["conv3"]
    assert rows["conv2"].count("class='done'") == 6 and rows["conv2"].count("class='na'") == 1
    assert f"title='does not apply: {html.escape(REASON)}'" in \
        rows["conv2"]
    assert rows["conv1"].count("title='not computed yet'") == len(store.TASKS)
    assert "<td class='num'>17.0 s</td>" in rows["conv2"]  # 1.5 + 0 + 2 + 3 + 4 + 0.5 + 6
    assert "16×16×16" in rows["conv2"] and "MB</td>" in rows["conv2"]
    assert "model tiny · weights tiny.pth · setting quick · steps 2" in page
    assert "6 units finished in 3 layers" in page and "No unit is finished" not in page


def test_unit_pages_sit_at_stable_urls_and_link_their_connections(site):
    assert sorted(p.name for p in (site / "conv2").glob("*.html")) == \
        ["0.html", "1.html", "2.html", "3.html", "index.html"]
    assert sorted(p.name for p in (site / "conv3").glob("*.html")) == \
        ["0.html", "1.html", "index.html"]
    assert sorted(p.name for p in (site / "conv1").glob("*.html")) == ["index.html"]
    unit = (site / "conv3" / "0.html").read_text()
    incoming = re.search(r"<div id='incoming'>.*?</div></div></div>", unit).group(0)
    assert "<a href='../conv2/2.html'>conv2 unit 2</a>" in incoming
    assert "<a href='../conv2/1.html'>conv2 unit 1</a>" in incoming
    assert "<a href='../conv2/3.html'>conv2 unit 3</a>" in incoming  # a negative one
    assert "src='../_sweep/conv2/c0002.png'" in incoming and "+0.9" in incoming
    assert "none: no later layer of the site takes this one" in unit
    first = (site / "conv2" / "0.html").read_text()
    # conv1 has no unit pages yet: named, not linked; conv3 unit 3 was never swept: the same
    assert "conv1 unit 4" in first and "conv1/4.html" not in first
    assert "<a href='../conv3/1.html'>conv3 unit 1</a>" in first
    assert "conv3 unit 3" in first and "conv3/3.html" not in first
    assert "rel='next'>unit 1 →</a>" in first and "first unit" in first
    second = (site / "conv2" / "1.html").read_text()
    assert "<a href='../conv2/0.html' rel='prev'>" in second
    assert "<a href='../conv2/index.html'>conv2</a>" in second
    assert "<a href='../index.html'>all layers</a>" in second


def test_a_unit_page_shows_every_view(site):
    page = (site / "conv2" / "0.html").read_text()
    assert "class='vis'" in page and "src='../_sweep/conv2/c0000.png'" in page
    assert "src='../_data/conv2/facets/c0000.png'" in page
    assert "src='../_sweep/conv2/c0000_top3.png'" in page
    rec = next(r for r in sw.read_manifests(site / store.SWEEP_DIR) if (r["layer"], r["channel"]) ==
               ("conv2", 0))
    for source, cls in zip(rec["topk"]["sources"], rec["topk"]["classes"], strict=True):
        assert f"<li>{source} — {cls}</li>" in page
    assert "<li>tabby cat <span class='settings'>0.8</span></li>" in page
    assert "by attribution over 4 photos" in page
    svg = re.search(r"<svg.*?</svg>", page).group(0)
    assert svg.count("class='preferred'") == 2  # a 180-degree period: both ways round
    points = re.search(r"points='([^']*)'", svg).group(1).split()
    assert len(points) == 8 and points[0] == "184.0,100.0"  # 0 degrees, the top response
    assert "circular variance 0.42 · unimodal · preferred 0°" in page
    assert "member of the family: <b>yes</b>" in page


def test_missing_and_not_applicable_views_say_so(site):
    unit = (site / "conv3" / "0.html").read_text()
    for section in ("facets", "classes"):
        part = re.search(rf"<section id='{section}'>.*?</section>", unit).group(0)
        assert "<p class='missing'>not computed yet</p>" in part
    tuning = re.search(r"<section id='tuning'>.*?</section>", unit).group(0)
    assert "does not apply: no stimulus fits a 4-pixel field" in tuning
    layer = (site / "conv2" / "index.html").read_text()
    assert f"does not apply: {html.escape(REASON)}" in layer
    assert REASON not in layer  # escaped
    assert "src='../_data/conv2/dream_1.png'" in layer
    assert "src='../_data/conv2/photo_1.png'" in layer
    assert "src='../_data/conv2/groups.png'" in layer
    assert "does not apply: cannot read x.png" in (site / "conv3" / "index.html").read_text()
    empty = (site / "conv1" / "index.html").read_text()
    assert "not computed yet: no unit of this layer is finished" in empty
    assert empty.count("not computed yet") >= 4  # units, dreams, caricatures, groups


def test_no_page_holds_a_machine_path_and_every_link_resolves(site):
    for name, text in _pages(site).items():
        assert str(site.parent) not in text and "/tmp" not in text, name
        assert "src='data:" not in text and "http://" not in text.replace(
            "http://www.w3.org/2000/svg", ""), name  # images by file, nothing from elsewhere
        for target in re.findall(r"(?:href|src)='(?!data:,')([^']*)'", text):
            assert not target.startswith("/"), (name, target)
            path = (site / name).parent / unquote(target.split("#")[0])
            assert path.is_file(), f"{name} links to {target}, which does not exist"


def test_a_site_with_no_finished_unit_still_has_an_index(tmp_path):
    store.write_meta(tmp_path, {"model": "m", "layers": ["a.b"], "shapes": {"a.b": [4, 2, 2]}})
    index = pages.write_site(tmp_path)
    page = index.read_text()
    assert "No unit is finished yet" in page and "0 of 4" in page
    assert (tmp_path / "a.b" / "index.html").is_file()
    assert sorted(p.name for p in (tmp_path / "a.b").iterdir()) == ["index.html"]
    with pytest.raises(FeatvizError, match="holds no readable microscope.json"):
        pages.write_site(tmp_path / "a.b")
    with pytest.raises(FeatvizError, match="microscope site not found"):
        pages.write_site(tmp_path / "nowhere")


# ---- in a browser ---------------------------------------------------------------------------


def _links_resolve(browser: Browser, base: str, site: Path) -> int:
    hrefs = browser.value("[...document.querySelectorAll('a[href]')].map(a => a.href)")
    for url in hrefs:
        assert url.startswith(base), url
        path = site / unquote(urlsplit(url).path).lstrip("/")
        assert path.is_file(), f"{url} leads nowhere"
    return len(hrefs)


@needs_chromium
@pytest.mark.slow  # a browser
def test_the_site_renders_in_headless_chromium(site, tmp_path):
    browser = Browser(tmp_path / "profile")
    try:
        with serve(site) as base:
            for name in ("index.html", "conv2/index.html", "conv2/0.html"):
                errors = browser.open(f"{base}/{name}")
                assert errors == [], f"{name} logged errors: {errors}"
                assert browser.value(IMAGES_SHOWN), f"an image of {name} did not load"
                shown = browser.value("document.body.getAttribute('data-images-loaded')")
                assert int(shown) == browser.value("document.images.length"), name
                assert _links_resolve(browser, base, site) >= 3
                browser.screenshot(tmp_path / f"{name.replace('/', '_')}.png")
            assert browser.value("document.querySelector('svg polygon.curve') !== null")
        # and from the file system, with no server
        assert browser.open((site / "conv3" / "0.html").as_uri()) == []
        assert browser.value(IMAGES_SHOWN) and browser.value("document.images.length") >= 3
    finally:
        browser.close()
