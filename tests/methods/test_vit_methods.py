"""The methods on the tokens of a real vision transformer (ViT-Tiny/16, AugReg weights in
``../shared/models``; skipped where they or timm are absent): top-k dataset patches show a
token's own patch with the photo around it, the feature-map viewer lays tokens out as the
14 x 14 grid with the class token apart, attribution and the building blocks work on the
patch grid, activation grids and atlases drive every patch, and a sweep of a block's MLP
units runs from Python and the command line, resumes, and makes a gallery."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from conftest import IMAGES, SHARED

import featviz
from featviz.core.layouts import cls_key
from featviz.face import cli, gallery
from featviz.face import sweep as _sweep
from featviz.hooks import LayerTap, frozen
from featviz.methods import (
    activation_grid,
    atlas,
    atlas_store,
    attribution,
    building_blocks,
    deconv,
    featuremaps,
    groups,
    semantic_dictionary,
    tokens,
)

VIT_FILE = SHARED / "models" / "vit_tiny_patch16_224_augreg_imagenet.pth"
SAMPLE = SHARED / "imagenet-sample"
PATCH, GRID = 16, 14  # ViT-Tiny/16 at 224 px: 16-px patches, 14 x 14 of them

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                       reason="timm is not installed (pip install 'featviz[timm]'): ViT-Tiny "
                              "needs it"),
    pytest.mark.skipif(not VIT_FILE.is_file(),
                       reason=f"real ViT-Tiny weights not found at {VIT_FILE} (set "
                              "FEATVIZ_SHARED to the folder holding models/ and images/)"),
]


@pytest.fixture(scope="module")
def vit():
    """ViT-Tiny with the real AugReg weights, as ``load("vit_tiny")`` builds it."""
    return featviz.models.load("vit_tiny", weights=VIT_FILE)


@pytest.fixture(scope="module")
def bird():
    return featviz.images.load(IMAGES / "bird.jpg", size=224)


def _tap(model, layer, image):
    with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
        return tap(image)


# -- top-k dataset patches -----------------------------------------------------------------
def test_a_token_layer_has_its_patch_as_field(vit):
    grid = tokens.token_grid(vit, "blocks.8.mlp.act")
    assert grid == tokens.TokenGrid((GRID, GRID), (PATCH, PATCH), 1, "tokens+cls")
    assert tokens.token_grid(vit, "patch_embed.proj") is None  # a convolution: a map
    field = tokens.token_field(vit, "blocks.8", margin=1)
    assert field.size == (3 * PATCH, 3 * PATCH) and field.jump == (PATCH, PATCH)
    assert field.box(2, 5) == (PATCH, 4 * PATCH, 4 * PATCH, 7 * PATCH)
    assert field.patch_box(2, 5) == (2 * PATCH, 5 * PATCH, 3 * PATCH, 6 * PATCH)
    assert field.focus(2, 5) == (PATCH, PATCH, 2 * PATCH, 2 * PATCH)


def test_top_k_shows_the_tokens_patch_with_the_photo_around_it(vit):
    photos = featviz.images.list_images(IMAGES)[:6]
    top = deconv.top_k(vit, photos, "blocks.8.mlp.act", [100], k=2, batch_size=6)
    assert isinstance(top.field, tokens.TokenField) and top.field.size == (48, 48)
    for entry in top.entries[100]:
        y, x = entry.position
        photo = featviz.images.load(entry.source, size=224)[0]
        assert entry.patch.shape == (3, 48, 48)  # a window of 3 x 3 patches, not the image
        t, left, b, r = entry.focus
        assert (b - t, r - left) == (PATCH, PATCH)
        own = photo[:, y * PATCH:(y + 1) * PATCH, x * PATCH:(x + 1) * PATCH]
        torch.testing.assert_close(entry.patch[:, t:b, left:r], own, atol=1 / 255, rtol=0)
        # the token ranked is the strongest of the photo, at that patch
        act = _tap(vit, "blocks.8.mlp.act", photo[None])["blocks.8.mlp.act"][0, 100]
        assert act.flatten().argmax() == y * GRID + x
        assert entry.value == pytest.approx(float(act.max()), rel=1e-4)
    picture = top.grid()
    assert picture.width > 0 and picture.height > 0


def test_the_outline_goes_round_the_patch_and_leaves_it_as_it_is():
    from featviz.methods._topk import outline

    tile = torch.full((3, 48, 48), 0.5)
    out = outline(tile, (16, 16, 32, 32), (48, 48))
    assert torch.equal(out[:, 16:32, 16:32], tile[:, 16:32, 16:32])
    assert float(out[0, 15, 20]) == 0.0 and float(out[0, 14, 20]) == 1.0  # black, then white
    assert torch.equal(outline(tile, None, (48, 48)), tile)


# -- the feature-map viewer ------------------------------------------------------------------
def test_the_viewer_lays_tokens_on_their_grid_with_the_class_token_apart(vit, bird, tmp_path):
    maps = featuremaps.capture(vit, bird, ["blocks.8", "blocks.8.mlp.act", "head"])
    acts = _tap(vit, "blocks.8", bird)
    assert maps.acts["blocks.8"].shape == (192, GRID, GRID)
    assert maps.acts["blocks.8.mlp.act"].shape == (768, GRID, GRID)
    torch.testing.assert_close(maps.acts["blocks.8"], acts["blocks.8"][0])
    torch.testing.assert_close(maps.cls["blocks.8"], acts[cls_key("blocks.8")][0])
    assert "head" not in maps.cls and maps.acts["head"].shape == (1000,)
    with_cls = maps.grid("blocks.8", max_channels=4, ncol=4)
    without = featuremaps.FeatureMaps(maps.acts, maps.image, maps.logits).grid(
        "blocks.8", max_channels=4, ncol=4)
    assert with_cls.width > without.width  # each map has its class cell beside it
    page = featuremaps.report(vit, bird, tmp_path / "maps.html", layers=["blocks.8"])
    assert "class token apart" in page.read_text()


def test_a_class_cell_shows_the_class_token_in_the_maps_colours():
    tiles = torch.zeros(2, 3, 96, 96)
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out = tokens.class_cells(tiles, colours)
    assert out.shape == (2, 3, 96, 96 + 2 + 24)
    assert torch.equal(out[:, :, 10, 96 + 2 + 12], colours)
    assert torch.equal(out[..., :96], tiles)


# -- attribution and the building blocks --------------------------------------------------
def test_attribution_spreads_over_the_patch_grid_and_the_class_token(vit, bird):
    cls = int(vit(bird).argmax())
    att = attribution.attribute(vit, bird, "blocks.8", cls, method="integrated", steps=4)
    assert att.values.shape == (1, 192, GRID, GRID) and att.cls_values.shape == (1, 1, 192)
    assert att.by_position().shape == (1, GRID, GRID)
    total = att.values.sum() + att.cls_values.sum()
    torch.testing.assert_close(att.total()[0], total)
    change = float(att.output[0] - att.baseline_output[0])
    assert abs(float(total) - change) < 0.25 * abs(change)  # completeness, 4 steps
    grad = attribution.attribute(vit, bird, "blocks.8", cls, method="gradient")
    torch.testing.assert_close(grad.activations, _tap(vit, "blocks.8", bird)["blocks.8"])
    shown = att.overlay(bird)
    assert shown.shape == bird.shape
    y, x = divmod(int(att.by_position()[0].flatten().argmax()), GRID)
    centre = (slice(None), slice(None), y * PATCH + 8, x * PATCH + 8)
    assert not torch.allclose(shown[centre], bird[centre])  # the strongest patch is lit


def test_class_position_maps_read_the_patch_grid(vit, bird):
    act, maps = attribution.class_position_maps(vit, "blocks.8", bird, [19, 291])
    assert act.shape == (1, 192, GRID, GRID) and maps.shape == (1, 2, GRID, GRID)


def test_the_building_blocks_on_tokens(vit, bird):
    layer = "blocks.8.mlp.act"
    pictures = {c: torch.zeros(3, 8, 8) for c in range(768)}  # no rendering in this test
    words = semantic_dictionary.semantic_dictionary(vit, bird, layer, n=2, renders=pictures)
    assert words.shape == (GRID, GRID)
    marked = words.marked(3, 5)[0]
    assert torch.allclose(marked[:, 3 * PATCH, 5 * PATCH + 4], torch.tensor([1.0, 0.1, 0.1]))
    found = groups.neuron_groups(vit, bird, "blocks.8", k=3, method="pca")
    assert found.maps.shape == (3, GRID, GRID) and found.overlay().shape == bird.shape
    table = building_blocks.group_class_attribution(vit, found, [19, 291])
    assert table.values.shape == (3, 2) and torch.isfinite(table.values).all()


# -- activation grids and atlases ------------------------------------------------------------
def test_cells_of_a_token_layer_drive_every_patch(vit):
    vectors = torch.randn(2, 192)
    grid_obj = activation_grid.cell_objective(vit, "blocks.8", vectors)
    assert grid_obj.name.startswith("direction(")  # the mean over the patch grid
    acts = {"blocks.8": torch.zeros(2, 192, GRID, GRID)}
    acts["blocks.8"][:, :, 0, 0] = vectors  # one patch of each image along its vector
    assert (grid_obj(acts) > 0).all()  # a corner patch counts, not only the centre
    renders = torch.rand(3, 3, 32, 32)  # cell-sized renders: the model sees them at 224 px
    agree = activation_grid.agreement(vit, "blocks.8", renders, vectors)
    assert agree.shape == (3, 2) and torch.isfinite(agree).all()


def test_an_atlas_of_a_blocks_tokens(vit, tmp_path):
    photos = featviz.images.list_images(IMAGES)[:4]
    store = atlas_store.collect(vit, photos, "blocks.8", tmp_path / "store", positions=16,
                                attribute=[19], batch_size=4, progress=False)
    assert store.map_shape == (GRID, GRID) and store.channels == 192 and len(store) == 64
    # a layout by the vectors' two principal components: UMAP or t-SNE would take most of
    # the test's time, and the layout is not what is tested here
    vectors = torch.as_tensor(store.vectors())
    _, _, v = torch.pca_lowrank(vectors, q=2)
    xy = (vectors - vectors.mean(0)) @ v
    xy = ((xy - xy.min(0).values) / (xy.max(0).values - xy.min(0).values)).numpy()
    where = atlas.Layout(xy, "pca", np.arange(len(xy)), 0.0)
    result = atlas.activation_atlas(vit, store, n=2, steps=1, cell=32, where=where,
                                    progress=False)
    assert 1 <= len(result.renders) <= 4 and result.picture().shape[1] == 3
    named = atlas.cell_classes(vit, "blocks.8", store.vectors()[:2], top=2)
    assert len(named) == 2 and all(len(row) == 2 for row in named)


# -- a sweep of a block's MLP units and its gallery ------------------------------------------
@pytest.mark.heavy
def test_a_sweep_of_mlp_units_renders_resumes_and_makes_a_gallery(vit, tmp_path):
    out = tmp_path / "mlp"
    assert _sweep.unit_layer(vit, "mlp:blocks.8") == "blocks.8.mlp.act"
    first = _sweep.sweep(vit, out, ["mlp:blocks.8"], [0, 1, 2], steps=1, batch=3,
                         log=lambda _: None)
    assert (first.rendered, first.skipped) == (3, 0)
    files = sorted((out / "mlp_blocks.8").glob("c*.png"))
    assert [f.name for f in files] == ["c0000.png", "c0001.png", "c0002.png"]
    stamps = [f.stat().st_mtime_ns for f in files]
    again = _sweep.sweep(vit, out, ["mlp:blocks.8"], [0, 1, 2], steps=1, batch=3,
                         log=lambda _: None)
    assert (again.rendered, again.skipped) == (0, 3)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing rendered again
    index = gallery.write(out)
    page = out / gallery.page_name("mlp:blocks.8")
    assert gallery.page_name("mlp:blocks.8") in index.read_text()
    text = page.read_text()
    assert all(f"mlp:blocks.8:{c}" in text for c in range(3)) and text.count("<figure") == 3


@pytest.mark.heavy
def test_the_command_line_sweeps_mlp_units(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATVIZ_MODELS", str(VIT_FILE.parent))
    out = tmp_path / "cli"
    args = ["sweep", "--model", "vit_tiny", "--layers", "mlp:blocks.8", "--channels", "0-2",
            "--steps", "1", "--batch-size", "3", "--out", str(out)]
    assert cli.main(args) == 0
    assert len(list((out / "mlp_blocks.8").glob("c*.png"))) == 3
    assert cli.main(["gallery", str(out)]) == 0
    assert (out / "index.html").is_file()


def test_a_sweep_refuses_a_kind_whose_number_is_no_channel(vit, tmp_path):
    with pytest.raises(featviz.errors.FeatvizError, match="reads no one channel"):
        _sweep.sweep(vit, tmp_path / "x", ["attn_head:blocks.8"], [0], steps=1,
                     log=lambda _: None)
    with pytest.raises(featviz.errors.ChannelError, match="768 channels"):
        _sweep.sweep(vit, tmp_path / "y", ["mlp:blocks.8"], [800], steps=1, log=lambda _: None)
