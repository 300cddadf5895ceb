"""Neuron groups (Building Blocks of Interpretability): the ChannelReducer's factorization of
activations, the groups of one photo, their overlay and their render."""

from __future__ import annotations

import sys
import time

import pytest
import torch
from conftest import IMAGES, hook_free

from featviz.errors import ChannelError, FeatvizError, UnknownNameError
from featviz.groups import (
    ChannelReducer,
    NeuronGroups,
    neuron_groups,
    palette,
)

pytest.importorskip("sklearn.decomposition", reason="scikit-learn is not installed "
                    "(pip install -e '.[groups]')")

PETS = IMAGES / "pets.jpg"


def _acts(*shape: int, seed: int = 0) -> torch.Tensor:
    """Non-negative, low-rank-ish activations (as after a ReLU)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).relu()


# -- the real model ----------------------------------------------------------------------------

def test_nmf_groups_rebuild_mixed4d_of_pets(inceptionv1):
    """On one photo mixed4d (528 channels, 14x16 positions) has a long spectrum: even the best
    rank-6 approximation of its activations (truncated SVD, Eckart-Young) leaves a relative
    error of 0.62, so NMF cannot do better than that; it comes within a few percent of it
    (measured 0.811 / 0.640 / 0.535 at k = 2 / 6 / 12 against SVD's 0.810 / 0.624 / 0.504).
    So the bounds: above the SVD floor, under 1.1x it, under 0.7 at k=6, falling with k."""
    errors = {}
    for k in (2, 6, 12):
        start = time.perf_counter()
        g = neuron_groups(inceptionv1, PETS, "mixed4d", k=k)
        seconds = time.perf_counter() - start
        c, h, w = g.activations.shape
        assert (c, g.image.shape[:2]) == (528, (1, 3)) and g.image.shape[-2:] == (224, 267)
        assert g.maps.shape == (k, h, w) and g.directions.shape == (k, 528)
        assert (g.maps >= 0).all() and (g.directions >= 0).all()
        rebuilt = torch.einsum("khw,kc->chw", g.maps, g.directions)
        assert (g.activations - rebuilt).norm() / g.activations.norm() == pytest.approx(
            g.error, rel=1e-4)
        mass = g.maps.flatten(1).sum(1)
        assert (mass[:-1] >= mass[1:]).all()  # largest first
        singular = torch.linalg.svdvals(g.activations.flatten(1))
        floor = float((singular[k:] ** 2).sum().sqrt() / singular.norm())
        assert floor - 1e-4 <= g.error <= 1.1 * floor
        errors[k] = g.error
        print(f"k={k}: error {g.error:.4f} (SVD floor {floor:.4f}), {seconds:.2f} s")
    assert errors[2] > errors[6] > errors[12] and errors[6] < 0.7
    assert hook_free(inceptionv1)


# -- the reducer -------------------------------------------------------------------------------

def test_fit_on_many_equals_fit_on_their_concatenation():
    batch = _acts(5, 16, 6, 6)
    whole = ChannelReducer(4).fit(batch)
    parts = ChannelReducer(4).fit([batch[:1], batch[1:3], batch[3:]])
    each = ChannelReducer(4).fit(iter(list(batch)))  # a generator of [C,H,W] maps
    assert torch.allclose(parts.directions, whole.directions, atol=1e-6)
    assert torch.allclose(each.directions, whole.directions, atol=1e-6)
    assert whole.n_vectors == parts.n_vectors == 5 * 36


def test_max_vectors_subsample_is_seeded_and_repeatable():
    batch = _acts(6, 16, 8, 8)
    runs = [ChannelReducer(3, max_vectors=100, seed=1).fit([batch[:2], batch[2:]])
            for _ in range(2)]
    whole = ChannelReducer(3, max_vectors=100, seed=1).fit(batch)
    other = ChannelReducer(3, max_vectors=100, seed=2).fit(batch)
    assert runs[0].n_vectors == 100 and runs[0].n_seen == 6 * 64
    assert torch.equal(runs[0].directions, runs[1].directions)
    # the same vectors drawn however they are split into batches
    assert torch.allclose(runs[0].directions, whole.directions, atol=1e-6)
    assert not torch.allclose(other.directions, whole.directions, atol=1e-3)
    # a subsample at least as large as the data keeps all of it
    everything = ChannelReducer(3, max_vectors=10_000, seed=1).fit(batch)
    all_of_it = ChannelReducer(3, seed=1).fit(batch)
    assert everything.n_vectors == 6 * 64
    assert torch.allclose(everything.directions, all_of_it.directions)


def test_transform_keeps_the_inputs_shape_with_k_channels():
    batch = _acts(3, 16, 5, 7)
    reducer = ChannelReducer(4).fit(batch)
    maps = reducer.transform(batch)
    assert maps.shape == (3, 4, 5, 7) and maps.dtype == torch.float32
    assert torch.allclose(reducer.transform(batch[1]), maps[1], atol=1e-5)
    vectors = batch.permute(0, 2, 3, 1).reshape(-1, 16)
    rows = reducer.transform(vectors)
    assert rows.shape == (3 * 35, 4)
    assert torch.allclose(rows.reshape(3, 5, 7, 4).permute(0, 3, 1, 2), maps, atol=1e-5)
    assert reducer.directions.shape == (4, 16)
    assert [m.shape for m in reducer.transform([batch[0], batch])] == [(4, 5, 7), (3, 4, 5, 7)]
    listed = ChannelReducer(4).fit_transform([batch[:1], batch[1:]])
    assert [m.shape for m in listed] == [(1, 4, 5, 7), (2, 4, 5, 7)]
    assert reducer.reconstruct(maps).shape == batch.shape
    assert 0 < reducer.reconstruction_error(batch) < 1


def test_pca_and_other_sklearn_methods():
    acts = torch.randn(16, 6, 6, generator=torch.Generator().manual_seed(0))  # signed
    pca = ChannelReducer(5, method="pca")
    maps = pca.fit_transform(acts)
    assert maps.shape == (5, 6, 6) and (maps < 0).any()
    assert torch.allclose(pca.directions.norm(dim=1), torch.ones(5), atol=1e-5)
    full = ChannelReducer(16, method="pca").fit(acts)
    assert full.reconstruction_error(acts) < 1e-5  # all components: exact
    svd = ChannelReducer(3, method="TruncatedSVD").fit(acts)
    assert svd.transform(acts).shape == (3, 6, 6)


# -- errors ------------------------------------------------------------------------------------

def test_nmf_of_negative_activations_names_the_minimum_and_suggests_pca(tiny, one_thread):
    acts = _acts(8, 4, 4)
    acts[2, 1, 1] = -0.75
    with pytest.raises(FeatvizError, match=r"down to -0\.75.*ReLU.*method='pca'"):
        ChannelReducer(2).fit(acts)
    with pytest.raises(FeatvizError, match=r"layer 'conv3' has values down to -[0-9].*'pca'"):
        neuron_groups(tiny, torch.rand(1, 3, 32, 32), "conv3", k=2)
    assert hook_free(tiny)
    fitted = ChannelReducer(2).fit(acts.clamp_min(0))
    with pytest.raises(FeatvizError, match="-0.75"):
        fitted.transform(acts)


def test_k_out_of_range_names_the_valid_range():
    with pytest.raises(FeatvizError, match="k from 1 to 16"):
        ChannelReducer(17).fit(_acts(16, 8, 8))  # 64 positions, 16 channels
    with pytest.raises(FeatvizError, match=r"5 positions of 16 channels allow k from 1 to 5"):
        ChannelReducer(6).fit(_acts(5, 16))
    with pytest.raises(FeatvizError, match="k from 1 to 10"):
        ChannelReducer(12, max_vectors=10).fit(_acts(16, 8, 8))
    for k in (0, -1, 2.5):
        with pytest.raises(FeatvizError, match="at least 1"):
            ChannelReducer(k)
    with pytest.raises(ChannelError, match="fitted on 16"):
        ChannelReducer(2).fit(_acts(16, 4, 4)).transform(_acts(8, 4, 4))
    with pytest.raises(FeatvizError, match="not fitted"):
        ChannelReducer(2).directions  # noqa: B018
    refit = ChannelReducer(6).fit(_acts(16, 4, 4))
    with pytest.raises(FeatvizError, match="k from 1 to 5"):
        refit.fit(_acts(5, 16))
    with pytest.raises(FeatvizError, match="not fitted"):  # a failed fit leaves none behind
        refit.transform(_acts(16, 4, 4))


def test_unknown_method_and_missing_sklearn(monkeypatch):
    with pytest.raises(UnknownNameError, match="'FastICA'"):
        ChannelReducer(2, method="FastICB")
    monkeypatch.setitem(sys.modules, "sklearn.decomposition", None)  # import fails
    with pytest.raises(FeatvizError, match=r"scikit-learn.*pip install featviz\[groups\]"):
        ChannelReducer(2)


# -- one photo's groups ------------------------------------------------------------------------

def test_neuron_groups_of_a_tiny_model(tiny, one_thread):
    photo = torch.rand(1, 3, 32, 32)
    before = photo.clone()
    tiny.train()
    g = neuron_groups(tiny, photo, "act3", k=3)
    assert torch.equal(photo, before) and hook_free(tiny) and tiny.training  # as it was
    assert all(p.requires_grad for p in tiny.parameters())
    assert g.activations.shape == (16, 16, 16) and g.maps.shape == (3, 16, 16)
    assert torch.allclose(g.directions.norm(dim=1), torch.ones(3), atol=1e-5)
    assert 0 <= g.error < 1 and g.k == 3 and g.colours.shape == (3, 3)
    pca = neuron_groups(tiny, photo[0], "conv3", k=3, method="pca")
    assert (pca.maps.flatten(1).sum(1) >= 0).all()  # each group turned to a positive total


def test_overlay_paints_each_group_in_its_colour():
    # three groups, each alone in its own quadrant of an 8x8 map over a grey 32x32 photo
    maps = torch.zeros(3, 8, 8)
    maps[0, :4, :4], maps[1, :4, 4:], maps[2, 4:, :4] = 1.0, 2.0, 0.5
    photo = torch.full((1, 3, 32, 32), 0.5)
    g = NeuronGroups("x", photo.clone(), torch.zeros(5, 8, 8), maps, torch.rand(3, 5), 0.1)
    out = g.overlay(alpha=0.7)
    assert out.shape == (1, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(g.image, photo)
    colours = palette(3)
    for j, (y, x) in enumerate([(8, 8), (8, 24), (24, 8)]):
        pixel = out[0, :, y, x]
        assert torch.allclose(pixel, 0.3 * 0.5 + 0.7 * colours[j], atol=1e-5)
        assert int(torch.cdist(pixel[None], colours).argmin()) == j
    assert torch.equal(out[0, :, 28, 28], photo[0, :, 28, 28])  # no group: the photo
    dimmed = g.map_images()
    assert dimmed.shape == (3, 3, 32, 32)
    assert dimmed[0, :, 8, 8].allclose(photo[0, :, 8, 8]) and dimmed[0, 0, 24, 24] < 0.1
    assert len({tuple(c) for c in palette(25).tolist()}) == 25
    with pytest.raises(ValueError, match="alpha"):
        g.overlay(alpha=1.5)


def test_save_writes_one_grid(tiny, one_thread, tmp_path):
    g = neuron_groups(tiny, torch.rand(3, 32, 32), "act3", k=2)
    path = g.save(tmp_path / "groups.png")
    assert path.is_file() and path.stat().st_size > 0


# -- the render --------------------------------------------------------------------------------

def test_group_render_raises_each_groups_direction(tiny, one_thread):
    g = neuron_groups(tiny, torch.rand(1, 3, 32, 32), "act3", k=2)
    res = g.render(tiny, size=32, steps=12, seed=0, progress=False, record_every=1)
    assert res.images.shape == (2, 3, 32, 32) and res.labels == ["group 0", "group 1"]
    assert (res.history[-1] > res.history[0]).all()
    assert hook_free(tiny)
