"""Building blocks: the activation grid's cells agree with their own positions, the semantic
dictionary ranks and reuses renders, the group-shared parameterization mixes as it says, and
the HTML page of all views displays in a browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings

import pytest
import torch
from conftest import HANG_GUARD_S, IMAGES, hook_free

import featviz
from featviz.core.param import group_shared
from featviz.core.param.shared_parts import GROUP_WEIGHT, OWN_WEIGHT
from featviz.errors import FeatvizError
from featviz.face import blocks_page
from featviz.face.cli import main
from featviz.methods.activation_grid import activation_grid, check_cell, layer_vectors
from featviz.methods.building_blocks import building_blocks
from featviz.methods.semantic_dictionary import channel_renders, semantic_dictionary

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_group_shared_images_mix_own_and_group_parts_by_the_weights():
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    p = group_shared(8, weights, seed=3)
    raw = p.raw
    expected = OWN_WEIGHT * raw.own() + GROUP_WEIGHT * torch.einsum(
        "ng,gchw->nchw", weights, raw.groups())
    torch.testing.assert_close(raw(), expected)
    assert p().shape == (3, 3, 8, 8) and p.seeds == [3, 4, 5]
    # image 2 takes both groups: a change to group 0 moves images 0 and 2, not image 1
    before = p().detach()
    with torch.no_grad():
        raw.groups.spectrum[0].add_(0.5)
    moved = (p().detach() - before).abs().flatten(1).amax(1)
    assert moved[0] > 0 and moved[2] > 0 and moved[1] == 0
    with pytest.raises(ValueError, match=r"one row per image"):
        featviz.param.GroupSharedRaw(torch.ones(4, 2), (3, 3, 8, 8))


def test_no_groups_leave_each_image_its_own_part():
    """activation_grid(groups=0): no group image at all (an empty FFT batch failed on MKL)."""
    raw = group_shared(8, torch.zeros(3, 0), seed=3).raw
    torch.testing.assert_close(raw(), OWN_WEIGHT * raw.own())


def test_activation_grid_on_a_tiny_model(tiny, one_thread):
    photo = torch.rand(1, 3, 8, 8)
    with warnings.catch_warnings():  # "stayed at about zero" for the zero vectors' cells
        warnings.simplefilter("ignore")
        grid = activation_grid(tiny, photo, "act3", cell=16, steps=24, groups=2, seed=0,
                               cossim_pow=1,
                               progress=False, record_every=1)
    assert grid.shape == (4, 4) and grid.cells.shape == (16, 3, 16, 16)
    assert grid.picture().shape == (1, 3, 64, 64)
    torch.testing.assert_close(grid.picture()[0, :, 16:32, 32:48], grid.cells[1 * 4 + 2])
    assert grid.beside_photo().shape[2] == 64
    live = grid.vectors.reshape(16, -1).norm(dim=1) > 0  # a zero vector has nothing to show
    rose = grid.render.history[-1] > grid.render.history[0]
    assert live.sum() >= 8 and rose[live].float().mean() > 0.8
    assert grid.groups is not None and grid.groups.maps.shape == (2, 4, 4)
    assert hook_free(tiny)
    with pytest.raises(FeatvizError, match="no spatial positions"):
        layer_vectors(tiny, photo, "fc")


def test_activation_grid_cells_agree_with_their_own_positions(inceptionv1):
    photo = featviz.images.load(IMAGES / "pets.jpg", 112)
    grid = activation_grid(inceptionv1, photo, "mixed4d", cell=32, steps=64, seed=0,
                           progress=False)
    agree = grid.agreement(inceptionv1)
    n = agree.shape[0]
    own = agree.diagonal()
    others = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    others = torch.where(others == torch.arange(n), (others + 1) % n, others)
    random_other = agree[torch.arange(n), others]
    # each cell looks more like its own position than like a random other one
    assert (own > random_other).float().mean() >= 0.8
    assert own.mean() > random_other.mean() + 0.1
    # cells too small to reach a layer are refused with the smallest size that works, not
    # silently resized to 224 px (many times slower)
    with pytest.raises(FeatvizError, match="use cells of at least 31 px"):
        check_cell(inceptionv1, "mixed5a", 16)


def test_semantic_dictionary_ranks_channels_and_renders_each_once(tiny, one_thread, tmp_path):
    photo = torch.rand(1, 3, 16, 16)
    d = semantic_dictionary(tiny, photo, "act3", n=3, size=16, steps=4, folder=tmp_path,
                            progress=False)
    vectors = layer_vectors(tiny, photo, "act3")
    assert d.shape == (8, 8) and d.channels.shape == (8, 8, 3)
    torch.testing.assert_close(d.values, vectors.topk(3, dim=-1).values)
    assert set(d.renders) == set(d.channels.unique().tolist())
    c, value, picture = d.entry(2, 5)[0]
    assert c == int(vectors[2, 5].argmax()) and picture.shape == (3, 16, 16)
    written = sorted(p.name for p in (tmp_path / "act3").iterdir())
    assert written == [f"c{c:04d}.png" for c in sorted(d.renders)]
    # a second photo reuses the pictures in the folder: nothing new is rendered
    again = channel_renders(tiny, "act3", list(d.renders), folder=tmp_path, steps=0)
    assert set(again) == set(d.renders)
    assert d.figure([(0, 0), (2, 5)]).size[0] > 0
    with pytest.raises(FeatvizError, match=r"valid: y 0-7, x 0-7"):
        d.entry(8, 0)
    with pytest.raises(FeatvizError, match=r"valid: 1-16"):
        semantic_dictionary(tiny, photo, "act3", n=17, progress=False)


def _blocks(tiny):
    photo = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return building_blocks(tiny, photo, "act3", groups=2, n=2, classes=3, size=16, cell=16,
                           steps=2, progress=False)


def test_building_blocks_make_every_view(tiny, one_thread):
    blocks = _blocks(tiny)
    assert set(blocks.grids) == {"act3"} and blocks.dictionary.shape == (8, 8)
    assert blocks.group_renders.images.shape[0] == 2
    table = blocks.group_classes
    assert table.values.shape == (2, 3) and table.classes == [c for c, _, _ in
                                                              blocks.top_classes[:3]]
    # the table is each class logit's gradient x activation split over the groups: its
    # column sums come back to the whole layer's attribution, up to the factorization's error
    attr = featviz.attribution.attribute(tiny, blocks.image, "act3", table.classes[0],
                                         method="gradient")
    recon = torch.einsum("khw,kc->chw", blocks.groups.maps, blocks.groups.directions)
    whole = (attr.gradients[0] * recon).sum()
    torch.testing.assert_close(table.values[:, 0].sum(), whole, rtol=1e-4, atol=1e-4)
    assert hook_free(tiny)


@pytest.mark.skipif(CHROMIUM is None, reason="headless browser test needs Debian's chromium "
                    "package (apt-get install chromium); .ci/run installs it when it can")
@pytest.mark.slow
def test_blocks_page_displays_in_headless_chromium(tiny, one_thread, tmp_path):
    page = blocks_page.write(_blocks(tiny), tmp_path / "blocks.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
             "--dump-dom"]
    dom = subprocess.run([CHROMIUM, *flags, page.as_uri()], capture_output=True, text=True,
                         timeout=HANG_GUARD_S).stdout
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images="(\d+)"', dom)
    assert loaded and total, "the page's load script did not run"
    assert int(loaded.group(1)) == int(total.group(1)) >= 9  # every picture decoded
    entry = re.search(r"<div id=\"entry\">(.*?)</div>", dom, re.S).group(1)
    assert entry.count("<figure>") == 2 and "channel" in entry  # the hover panel filled


@pytest.mark.slow
def test_blocks_command_writes_the_page(tmp_path, capsys):
    out = tmp_path / "page.html"
    code = main(["blocks", str(IMAGES / "pets.jpg"), "--model", "cifar_resnet20", "--weights",
                 "random", "--layer", "layer3", "--steps", "2", "--render-size", "16", "--cell",
                 "16", "--groups", "2", "--classes", "2", "--out", str(out)])
    assert code == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "activation grid layer3" in text and f"wrote {out}" in text
    assert main(["blocks", str(IMAGES / "pets.jpg"), "--model", "cifar_resnet20", "--weights",
                 "random", "--layer", "layer9", "--out", str(out)]) == 2
    assert "layer3" in capsys.readouterr().err  # the closest real names


def test_a_layer_with_negative_values_takes_pca_groups(tiny, one_thread):
    photo = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with pytest.raises(FeatvizError, match="pca"):
        building_blocks(tiny, photo, "conv3", groups=2, n=2, classes=2, size=16, cell=16,
                        steps=1, progress=False)
    blocks = building_blocks(tiny, photo, "conv3", groups=2, n=2, classes=2, size=16, cell=16,
                             steps=1, method="pca", progress=False)
    assert blocks.groups.method == "pca" and blocks.groups.maps.min() < 0
    assert hook_free(tiny)
