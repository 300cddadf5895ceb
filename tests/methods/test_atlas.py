"""Activation atlases: resumable collection, layout, grid, render, class atlases, the page and
the command."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import HANG_GUARD_S, SHARED, hook_free

import featviz
from featviz.errors import FeatvizError
from featviz.face import atlas_page
from featviz.face.cli import main
from featviz.methods import atlas, atlas_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SAMPLE = SHARED / "imagenet-sample"


def _photos(n: int = 12, seed: int = 0) -> list[tuple[torch.Tensor, int]]:
    """A small dataset of (image, class) items: smooth random pictures of 3 classes."""
    g = torch.Generator().manual_seed(seed)
    small = [torch.rand(3, 8, 8, generator=g) for _ in range(n)]
    return [(torch.nn.functional.interpolate(s[None], size=32, mode="bilinear")[0], i % 3)
            for i, s in enumerate(small)]


class Interrupted(Exception):
    pass


class Flaky:
    """A dataset that fails at item ``fail_at`` (an interrupted run), or never."""

    def __init__(self, items, fail_at: int | None = None):
        self.items, self.fail_at = items, fail_at

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        if self.fail_at is not None and i >= self.fail_at:
            raise Interrupted(f"stopped at item {i}")
        return self.items[i]


def _where(store: atlas_store.ActivationStore) -> list[tuple[int, int, int]]:
    return list(zip(*(store.column(c).tolist() for c in ("image", "y", "x")), strict=True))


def test_collection_resumes_without_duplicates_after_an_interruption(tiny, one_thread,
                                                                     tmp_path, monkeypatch):
    items = _photos(10)
    whole = atlas_store.collect(tiny, items, "act3", tmp_path / "whole", batch_size=3,
                                positions=5, progress=False)
    # interrupted inside the stream after 2 batches: 6 images done, the rest still to do
    with pytest.raises(Interrupted):
        atlas_store.collect(tiny, Flaky(items, fail_at=7), "act3", tmp_path / "s",
                            batch_size=3, positions=5, progress=False)
    assert atlas_store.ActivationStore.open(tmp_path / "s").manifest["done"] == 6
    # interrupted between a shard and its manifest: an orphan shard the manifest does not list
    real = atlas_store.write_text
    calls = {"n": 0}

    def dies_once(path, text):
        calls["n"] += 1
        if calls["n"] == 1:
            raise Interrupted("killed before the manifest")
        return real(path, text)

    monkeypatch.setattr(atlas_store, "write_text", dies_once)
    with pytest.raises(Interrupted):
        atlas_store.collect(tiny, items, "act3", tmp_path / "s", batch_size=3, positions=5,
                            progress=False)
    assert len(list((tmp_path / "s").glob("shard_*.npz"))) == 3  # the orphan is there
    resumed = atlas_store.collect(tiny, items, "act3", tmp_path / "s", batch_size=3,
                                  positions=5, progress=False)
    again = atlas_store.collect(tiny, items, "act3", tmp_path / "s", batch_size=3,
                                positions=5, progress=False)  # finished: nothing added
    assert len(resumed) == len(again) == len(whole) == 50
    assert len(set(_where(resumed))) == 50 and _where(resumed) == _where(whole)
    np.testing.assert_array_equal(resumed.vectors(), whole.vectors())
    np.testing.assert_array_equal(resumed.column("label"), [i % 3 for i in range(10)
                                                            for _ in range(5)])
    assert resumed.vectors().dtype == np.float32 and next(resumed.shards())["vectors"].dtype \
        == np.float16
    with pytest.raises(FeatvizError, match="other settings"):
        atlas_store.collect(tiny, items, "act3", tmp_path / "s", positions=4, progress=False)
    with pytest.raises(FeatvizError, match="closest"):
        atlas_store.collect(tiny, items, "act33", tmp_path / "t", progress=False)
    assert hook_free(tiny)


def test_a_folder_resumes_by_skipping_its_done_files(tiny, one_thread, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (img, _) in enumerate(_photos(5)):
        featviz.images.save(img[None], folder / f"{i}.png")
    first = atlas_store.collect(tiny, str(folder), "act3", tmp_path / "s", batch_size=2,
                                positions="all", progress=False, stop_after=1)
    assert first.manifest["done"] == 2 and len(first) == 2 * 16 * 16
    done = atlas_store.collect(tiny, str(folder), "act3", tmp_path / "s", batch_size=2,
                               progress=False)
    assert len(done) == 5 * 256 and [n.rsplit("/", 1)[1] for n in done.images] == [
        f"{i}.png" for i in range(5)]


@pytest.fixture
def store(tiny, one_thread, tmp_path):
    return atlas_store.collect(tiny, _photos(24), "act3", tmp_path / "store", batch_size=8,
                               positions=16, attribute=[1, 2], progress=False)


def test_layout_is_seeded_and_repeatable(store):
    a = atlas.layout(store, "tsne", fit_on=150, seed=3)
    b = atlas.layout(store, "tsne", fit_on=150, seed=3)
    c = atlas.layout(store, "tsne", fit_on=150, seed=4)
    assert a.method == "tsne" and a.xy.shape == (len(store), 2) and len(a.fitted) == 150
    np.testing.assert_array_equal(a.xy, b.xy)
    assert not np.allclose(a.xy, c.xy)
    assert a.xy.min() == 0 and a.xy.max() == 1


@pytest.mark.slow  # umap-learn compiles with numba on first use: tens of seconds
def test_umap_layout_is_seeded_and_repeatable(store):
    pytest.importorskip("umap", reason="umap-learn is optional (pip install 'featviz[atlas]'); "
                                       "the t-SNE fallback is tested without it")
    a, b = (atlas.layout(store, "umap", fit_on=200, seed=1) for _ in range(2))
    assert a.method == "umap" and a.xy.shape == (len(store), 2)
    np.testing.assert_allclose(a.xy, b.xy)


def test_missing_umap_names_the_extra_and_the_fallback(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now raises ImportError
    with pytest.raises(FeatvizError, match=r"featviz\[atlas\].*layout='tsne'"):
        atlas.layout(store, "umap")
    assert atlas._method("auto") == "tsne"
    with pytest.raises(FeatvizError, match="unknown layout"):
        atlas.layout(store, "pca")


def test_grid_cell_averages_equal_a_direct_computation(store):
    where = atlas.layout(store, "tsne", fit_on=len(store), seed=0)
    g = atlas.grid(store, where, 4, min_count=5)
    vectors = store.vectors()
    col = np.minimum((where.xy[:, 0] * 4).astype(int), 3)
    row = np.minimum((where.xy[:, 1] * 4).astype(int), 3)
    expected = {}
    for r in range(4):
        for c in range(4):
            inside = (row == r) & (col == c)
            if inside.sum() >= 5:
                expected[r, c] = (vectors[inside].mean(0), inside.sum())
    assert {tuple(rc) for rc in g.cells.tolist()} == set(expected)
    for k, (r, c) in enumerate(g.cells.tolist()):
        np.testing.assert_allclose(g.means[k], expected[r, c][0], rtol=1e-5, atol=1e-6)
        assert g.counts[k] == expected[r, c][1]
        shares = dict(g.top_classes[k])
        labels = store.column("label")[(row == r) & (col == c)]
        top = np.bincount(labels).argmax()
        assert shares[str(top)] == pytest.approx(np.mean(labels == top))
        assert all(row[i] == r and col[i] == c for i in g.examples[k])
    assert g.dropped == len({(r, c) for r, c in zip(row, col, strict=True)}) - len(expected)
    with pytest.raises(FeatvizError, match="no cell of the 2x2 grid has 1000"):
        atlas.grid(store, where, 2, min_count=1000)


def test_too_few_vectors_are_refused(tiny, one_thread, tmp_path):
    small = atlas_store.collect(tiny, _photos(1), "act3", tmp_path / "s", positions=3,
                                progress=False)
    with pytest.raises(FeatvizError, match="too few to lay out"):
        atlas.layout(small, "tsne")


def test_class_selection_keeps_the_vectors_with_the_top_positive_attribution(tiny, store):
    # the stored attribution is gradient x activation of the class logit, summed over channels
    images = torch.stack([img for img, _ in _photos(24)[:8]])
    attr = featviz.attribution.attribute(tiny, images, "act3", 1, method="gradient")
    per_position = attr.values.sum(1)
    first = next(store.shards())
    got = first["attribution"][:, 0]
    want = per_position[first["image"], first["y"], first["x"]].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    column = store.column("attribution")[:, 0]
    chosen = atlas.select(store, 1, top=0.1)
    assert len(chosen) == min(round(0.1 * len(store)), int((column > 0).sum()))
    rest = np.setdiff1d(np.flatnonzero(column > 0), chosen)
    assert (column[chosen] > 0).all() and column[chosen].min() >= column[rest].max()
    with pytest.raises(FeatvizError, match="attributions to classes"):
        atlas.select(store, 7)


def test_composition_puts_each_render_at_its_cell(one_thread):
    cells = np.array([[0, 2], [1, 0], [2, 1]])
    tiles = torch.stack([torch.full((3, 4, 4), v) for v in (0.1, 0.5, 0.9)])
    pic = atlas.compose(cells, tiles, 3)[0]
    assert pic.shape == (3, 12, 12)
    for (r, c), v in zip(cells.tolist(), (0.1, 0.5, 0.9), strict=True):
        torch.testing.assert_close(pic[:, 4 * r:4 * r + 4, 4 * c:4 * c + 4],
                                   torch.full((3, 4, 4), v))
    assert (pic[:, 0:4, 0:4] == 1).all()  # an empty cell stays white


def _tiny_atlas(tiny, store, classes=None, **kw):
    with warnings.catch_warnings():  # "stayed at about zero" for faint cells
        warnings.simplefilter("ignore")
        if classes:
            return atlas.class_atlas(tiny, store, classes, 3, top=0.2, method="tsne", cell=16,
                                     steps=8, min_count=1, progress=False, **kw)
        return atlas.activation_atlas(tiny, store, 4, method="tsne", fit_on=len(store),
                                      cell=16, steps=8, min_count=2, progress=False, **kw)


def test_atlas_on_a_tiny_model_renders_and_composes_every_cell(tiny, store):
    made = _tiny_atlas(tiny, store)
    k = len(made.grid.cells)
    assert made.renders.shape == (k, 3, 16, 16) and len(made.classes) == k
    plain = made.picture(density=None)
    for i, (r, c) in enumerate(made.grid.cells.tolist()):
        torch.testing.assert_close(plain[0, :, 16 * r:16 * r + 16, 16 * c:16 * c + 16],
                                   made.renders[i, :3].float())
    faded = made.picture()
    fullest = int(made.grid.counts.argmax())
    r, c = made.grid.cells[fullest]
    torch.testing.assert_close(faded[0, :, 16 * r:16 * r + 16, 16 * c:16 * c + 16],
                               made.renders[fullest, :3].float())
    assert made.picture(density="size", labels=True, cell=32).shape == (1, 3, 128, 128)
    assert made.agreement(tiny).shape == (k, k)
    assert "Atlas(act3: " in repr(made) and "<img" in made._repr_html_()
    assert made._repr_png_()[:4] == b"\x89PNG"
    assert featviz.display.RICH[type(made)] == ("html", "png")
    assert hook_free(tiny)


def test_two_class_atlas_marks_which_class_each_cell_speaks_for(tiny, store):
    pair = _tiny_atlas(tiny, store, classes=[1, 2])
    assert pair.selected == ("1", "2") and set(pair.side.tolist()) <= {0, 1}
    assert len(pair.side) == len(pair.grid.cells)
    members = np.unique(np.concatenate([atlas.select(store, c, top=0.2) for c in (1, 2)]))
    np.testing.assert_array_equal(pair.grid.members, members)
    with pytest.raises(FeatvizError, match="one class or compares two"):
        atlas.class_atlas(tiny, store, [1, 2, 3])


def test_each_cell_render_agrees_with_its_own_average_more_than_its_neighbours(
        inceptionv1, one_thread, tmp_path):
    if not SAMPLE.is_dir():
        pytest.skip(f"the labelled ImageNet sample is not at {SAMPLE}")
    photos = featviz.dataset.LabelledFolder(SAMPLE)
    photos.files = photos.files[::50]  # 20 photos of 20 classes
    store = atlas_store.collect(inceptionv1, photos, "mixed4c", tmp_path / "s", positions=8,
                                batch_size=10, progress=False)
    made = atlas.activation_atlas(inceptionv1, store, 3, method="tsne", min_count=4, cell=32,
                                  steps=48, classes=False, progress=False)
    cos = made.agreement(inceptionv1).numpy()
    table = made.grid.cell_index()
    own, near = [], []
    for k, (r, c) in enumerate(made.grid.cells.tolist()):
        around = [table[i, j] for i in range(max(0, r - 1), min(3, r + 2))
                  for j in range(max(0, c - 1), min(3, c + 2)) if (i, j) != (r, c)
                  and table[i, j] >= 0]
        if around:
            own.append(cos[k, k])
            near.append(cos[k, around].mean())
    assert len(own) >= 4
    assert np.mean(own) > np.mean(near) + 0.05, (own, near)


def _chromium_dom(page, tmp_path) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
             "--dump-dom"]
    return subprocess.run([CHROMIUM, *flags, page.as_uri()], capture_output=True, text=True,
                          timeout=HANG_GUARD_S).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="headless browser test needs Debian's chromium "
                    "package (apt-get install chromium); .ci/run installs it when it can")
@pytest.mark.slow
def test_atlas_page_displays_in_headless_chromium(tiny, store, tmp_path):
    photos = tmp_path / "photos"  # the page crops source patches from the photo files
    photos.mkdir()
    for i, (img, _) in enumerate(_photos(12)):
        featviz.images.save(img[None], photos / f"{i}.png")
    folder_store = atlas_store.collect(tiny, str(photos), "act3", tmp_path / "fs",
                                       positions=16, progress=False)
    made = _tiny_atlas(tiny, folder_store)
    page = atlas_page.write(made, folder_store, tmp_path / "atlas.html", patches=3)
    text = page.read_text()
    cells = json.loads(re.search(r"var CELLS=(\[.*?\]);var FIRST", text).group(1))
    assert len(cells) == len(made.grid.cells)
    assert all(c["count"] >= 2 and c["top"] is not None and c["patches"] for c in cells)
    dom = _chromium_dom(page, tmp_path)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images="(\d+)"', dom)
    assert loaded and total, "the page's load script did not run"
    assert int(loaded.group(1)) == int(total.group(1)) >= 3  # every picture decoded
    entry = re.search(r'<div id="entry">(.*?)</div>', dom, re.S).group(1)
    assert "vectors" in entry and "render of cell" in entry and 'class="patch"' in entry


@pytest.mark.slow
def test_atlas_command_runs_end_to_end_and_refuses_an_unknown_layer(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    lines = ["file\tclass_index\tclass_name"]
    for i, (img, cls) in enumerate(_photos(9)):
        featviz.images.save(img[None], photos / f"{i}.png")
        lines.append(f"{i}.png\t{cls}\tclass {cls}")
    (photos / "labels.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "atlas.html"
    args = ["atlas", str(photos), "--model", "cifar_resnet20", "--weights", "random",
            "--layer", "layer2", "--store", str(tmp_path / "store"), "--positions", "16",
            "--grid", "3", "--min-count", "2", "--layout", "tsne", "--cell", "16", "--steps",
            "2", "--png", str(tmp_path / "atlas.png"), "--out", str(out)]
    assert main(args) == 0 and out.is_file() and (tmp_path / "atlas.png").is_file()
    assert "144 vectors" in capsys.readouterr().out
    bad = [a if a != "layer2" else "layer9" for a in args]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "unknown layer 'layer9'" in err and "layer2" in err and len(err.splitlines()) == 1
