"""A dictionary's features shown as neurons are: the feature objective (its value, one feature
per image, rendering it raises it, clear errors), the decoder directions, the top-k search over
a store (planted images found in order, one position per image, neurons by the same path),
top classes, and the patches cut under each hit (a conv field, a token's window)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _planted_store import identity_sae, write_store
from conftest import make_tiny
from torch import nn

import featviz
from featviz import objectives as obj
from featviz.errors import ChannelError, FeatvizError
from featviz.methods import atlas_store
from featviz.methods._topk import crop_box
from featviz.methods.dictionary import (
    SparseAutoencoder,
    dictionary_feature,
    example_patches,
    feature_directions,
    feature_examples,
    top_classes,
    unit_field,
)
from featviz.methods.tokens import TokenField

FAST = dict(steps=24, size=32, progress=False, seed=1)


def _random_sae(d_in: int, n: int, seed: int = 0, **kw) -> SparseAutoencoder:
    torch.manual_seed(seed)
    sae = SparseAutoencoder(d_in, n, **{"k": None, **kw})
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    return sae


@pytest.fixture
def acts():
    torch.manual_seed(0)
    return {"conv": torch.randn(4, 6, 5, 7), "tokens": torch.randn(4, 9, 6)}


# -- the objective -----------------------------------------------------------------------
def test_a_one_hot_encoder_row_is_the_channel_up_to_the_bias(acts):
    sae = SparseAutoencoder(6, 3, k=None)
    with torch.no_grad():
        sae.W_enc[4, 1] = 1.0
        sae.b_enc[1] = 0.25
        sae.b_dec[4] = 0.5
    value = dictionary_feature("conv", sae, 1)(acts)
    torch.testing.assert_close(value, obj.channel("conv", 4)(acts) - 0.5 + 0.25)
    torch.testing.assert_close(dictionary_feature("tokens", sae, 1)(acts),
                               obj.channel("tokens", 4)(acts) - 0.25)
    with torch.no_grad():
        sae.W_enc[:, 2] = torch.randn(6)
        sae.b_dec.zero_()
    # without biases a feature is the direction of its encoder column
    torch.testing.assert_close(dictionary_feature("conv", sae, 2)(acts),
                               obj.direction("conv", sae.W_enc[:, 2].detach())(acts))


@pytest.mark.parametrize("layer", ["conv", "tokens"])
def test_the_value_is_the_mean_pre_activation_over_positions(acts, layer):
    sae = _random_sae(6, 5, scale=2.0)
    act = acts[layer]
    seq = act.flatten(2).transpose(1, 2) if act.dim() == 4 else act
    expected = sae.pre_activation(seq).mean(dim=1)[:, 3].detach()
    torch.testing.assert_close(dictionary_feature(layer, sae, 3)(acts), expected)


def test_one_feature_per_image(acts):
    sae = _random_sae(6, 5)
    both = dictionary_feature("conv", sae, [3, 0, 4])
    assert both.batch_size == 3
    assert both.label(1) == "dictionary_feature(conv, sae5, 0)"
    values = both(acts)
    for j, f in enumerate([3, 0, 4]):
        torch.testing.assert_close(values[j], dictionary_feature("conv", sae, f)(acts)[j])
    assert values[3] == 0  # an image past the list is driven by nothing
    as_tensor = dictionary_feature("conv", sae, torch.tensor([3, 0, 4]))
    torch.testing.assert_close(as_tensor(acts), values)
    assert as_tensor.name == "dictionary_feature(conv, sae5, [3, 0, 4])"
    one = dictionary_feature("conv", sae, 2, batch=1)(acts)
    assert one[0] == 0 and one[1] != 0


def test_bad_features_and_widths_are_clear_errors(acts):
    sae = _random_sae(6, 5)
    with pytest.raises(ChannelError, match=r"feature 5 is out of range .* 5 features "
                                           r"\(valid: 0-4\)"):
        dictionary_feature("conv", sae, 5)
    with pytest.raises(ChannelError, match=r"valid: 0-4"):
        dictionary_feature("conv", sae, [0, -1])
    narrow = _random_sae(4, 5)
    with pytest.raises(ChannelError, match=r"'conv' has 6 channels .* vectors of 4"):
        dictionary_feature("conv", narrow, 0)(acts)
    with pytest.raises(ValueError, match="or batch=, not both"):
        dictionary_feature("conv", sae, [0, 1], batch=1)
    with pytest.raises(FeatvizError, match="3 features need a batch of at least 3"):
        dictionary_feature("conv", sae, [0, 1, 2])({"conv": acts["conv"][:2]})


def test_rendering_features_raises_them_and_they_sum_with_other_objectives(tiny, one_thread):
    sae = _random_sae(16, 8)
    with torch.no_grad():
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    features = dictionary_feature("conv3", sae, [2, 5])
    res = featviz.render(tiny, features, **{**FAST, "lr": 0.2, "record_every": 4})
    assert res.labels == ["dictionary_feature(conv3, sae8, 2)",
                          "dictionary_feature(conv3, sae8, 5)"]
    assert (res.history[-1] > res.history[0]).all()
    grey = torch.full_like(res.images, 0.5)
    value = featviz.metrics.objective_value(tiny, features, res.images)
    assert (value > featviz.metrics.objective_value(tiny, features, grey) + 0.05).all()
    mixed = dictionary_feature("conv3", sae, 1) + 0.5 * obj.channel("conv2", 0)
    parts = [featviz.metrics.objective_value(tiny, o, grey) for o in
             (dictionary_feature("conv3", sae, 1), obj.channel("conv2", 0))]
    torch.testing.assert_close(featviz.metrics.objective_value(tiny, mixed, grey),
                               parts[0] + 0.5 * parts[1])


def test_feature_directions_are_the_unit_decoder_rows():
    sae = _random_sae(6, 5)
    rows = feature_directions(sae, [4, 1])
    torch.testing.assert_close(rows, sae.W_dec.detach()[[4, 1]] /
                               sae.W_dec.detach()[[4, 1]].norm(dim=1, keepdim=True))
    assert feature_directions(sae, 2).shape == (1, 6)
    assert obj.direction("conv", rows).batch_size == 2  # renders one direction per image
    with pytest.raises(ChannelError, match="valid: 0-4"):
        feature_directions(sae, [7])


# -- the dataset search --------------------------------------------------------------------
def _planted(tmp_path, per_shard=2):
    """6 images of 3x3 positions and 4 channels, noise below 0.5; channel 0 planted at
    image 4 (twice: 9 and 8), image 1 (7) and image 2 (5)."""
    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 0.5, (6, 3, 3, 4))
    maps[4, 2, 1, 0], maps[4, 0, 0, 0], maps[1, 0, 2, 0], maps[2, 1, 1, 0] = 9, 8, 7, 5
    maps[3, 1, 0, 2] = 6
    maps = maps.astype(np.float16).astype(np.float64)  # as the store keeps them
    labels = ["cat", "dog", "cat", "dog", "bird", ""]
    return maps, write_store(tmp_path / "store", maps, labels=labels, per_shard=per_shard)


def test_the_planted_images_are_found_in_order_one_position_per_image(tmp_path):
    maps, store = _planted(tmp_path)
    sae = identity_sae(4, 3, threshold=0.5)
    found = feature_examples(store, sae, k=3)
    top = found.features.examples(0)
    assert [(e.image, e.y, e.x, e.value) for e in top] == [(4, 2, 1, 8.5), (1, 0, 2, 6.5),
                                                          (2, 1, 1, 4.5)]
    assert [e.name for e in top] == ["img4.png", "img1.png", "img2.png"]
    assert [e.label for e in top] == ["bird", "dog", "cat"]
    vectors = store.vectors(np.array([e.row for e in top]))
    np.testing.assert_allclose(vectors[:, 0], [9, 7, 5])  # the row is the vector's
    assert found.features.examples(1) == []  # never above its threshold: no examples
    assert [e.image for e in found.features.examples(2)] == [3]
    assert found.features.firing_rate[0] == pytest.approx(4 / 54)
    assert found.features.firing_rate[1] == 0


def test_neurons_are_found_by_the_same_search(tmp_path):
    maps, store = _planted(tmp_path)
    found = feature_examples(store, identity_sae(4, 3, threshold=0.5), k=3)
    neurons = found.neurons.examples(0)
    assert [(e.image, e.y, e.x, e.value) for e in neurons] == [(4, 2, 1, 9), (1, 0, 2, 7),
                                                              (2, 1, 1, 5)]
    assert found.neurons.units == [0, 1, 2, 3] and found.features.units == [0, 1, 2]
    # a neuron's every value counts: its top-3 are the three strongest images of channel 1
    strongest = np.argsort(-maps[..., 1].reshape(6, -1).max(1))[:3]
    assert [e.image for e in found.neurons.examples(1)] == strongest.tolist()
    assert found.neurons.firing_rate[1] == pytest.approx((maps[..., 1] > 0).mean())


def test_chunks_and_shards_do_not_change_the_result(tmp_path):
    _, one = _planted(tmp_path / "a", per_shard=6)
    _, many = _planted(tmp_path / "b", per_shard=1)
    sae = _random_sae(4, 7, k=2)
    a = feature_examples(one, sae, k=4, chunk=10_000)
    b = feature_examples(many, sae, k=4, chunk=5)
    for kind in ("features", "neurons"):
        x, y = getattr(a, kind), getattr(b, kind)
        for u in x.units:
            hits = [(e.image, e.y, e.x, e.row) for e in x.examples(u)]
            assert hits == [(e.image, e.y, e.x, e.row) for e in y.examples(u)]
            np.testing.assert_allclose([e.value for e in x.examples(u)],
                                       [e.value for e in y.examples(u)], rtol=1e-5)
            assert len({e.image for e in x.examples(u)}) == len(hits)
        assert x.firing_rate == pytest.approx(y.firing_rate)


def test_top_classes_rank_by_the_mean_per_image_maximum(tmp_path):
    maps, store = _planted(tmp_path)
    sae = identity_sae(4, 3, threshold=0.5)
    found = feature_examples(store, sae, k=3)
    best = np.maximum(maps[..., 0].reshape(6, -1).max(1) - 0.5, 0)  # the ReLU code
    expected = [("bird", best[4]), ("dog", (best[1] + best[3]) / 2),
                ("cat", (best[0] + best[2]) / 2)]
    for source in (found, found.features, store):
        got = top_classes(source, sae, 0, n=3)
        assert [c for c, _ in got] == [c for c, _ in expected]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in expected], rtol=1e-3)
    raw = maps[..., 0].reshape(6, -1).max(1)
    neuron = top_classes(store, None, 0, n=2)
    assert neuron[0] == ("bird", pytest.approx(raw[4], rel=1e-3))
    assert top_classes(found, None, 0, n=2) == neuron


def test_a_store_of_another_layer_is_refused(tmp_path):
    _, store = _planted(tmp_path)
    with pytest.raises(ChannelError, match=r"vectors of 4 channels .* reads 6"):
        feature_examples(store, _random_sae(6, 3))
    with pytest.raises(FeatvizError, match="feature 9 was not searched"):
        feature_examples(store, identity_sae(4, 3), features=[0, 1]).features.examples(9)


# -- patches -------------------------------------------------------------------------------
def _photos(folder, n=4, side=32):
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        featviz.images.save(torch.from_numpy(rng.uniform(0, 1, (3, side, side))).float(),
                            folder / f"p{i}.png")
    return folder


def test_patches_are_the_receptive_field_boxes_of_the_hits(tmp_path):
    tiny = make_tiny()
    photos = _photos(tmp_path / "photos")
    store = atlas_store.collect(tiny, photos, "conv2", tmp_path / "store", size=32,
                                progress=False)
    sae = _random_sae(16, 4, k=2)
    found = feature_examples(store, sae, k=2)
    field = unit_field(tiny, "conv2", store.size)
    side = field.size[0]  # tiles of the field's own size: the crop itself
    moved = tmp_path / "moved"
    photos.rename(moved)  # the store's names are the old paths: found by file name
    patches = example_patches(tiny, found.features, moved, tile=side)
    unit = next(u for u in found.features.units if found.features.examples(u))
    for tile, e in zip(patches[unit], found.features.examples(unit), strict=True):
        img = featviz.images.load(moved / e.name.split("/")[-1], size=32)[0]
        torch.testing.assert_close(tile, crop_box(img, field.box(e.y, e.x)))
    with pytest.raises(FeatvizError, match=r"image '.*p\d.png' of the store is not found"):
        example_patches(tiny, found.features, tmp_path / "nowhere", tile=side)


class _TokenNet(nn.Module):
    """8-px patches of a 32-px image as 16 tokens after a class token, then a mixing layer."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 8, stride=8)
        self.mix = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        seq = self.mix(torch.cat([tokens.mean(1, keepdim=True), tokens], 1))
        return self.head(seq[:, 0])


def test_a_token_layer_shows_its_patch_outlined_in_a_window(tmp_path):
    torch.manual_seed(0)
    model = featviz.models.wrap(_TokenNet(), input_size=32, layouts={"mix": "tokens+cls"})
    photos = _photos(tmp_path / "photos", n=3)
    store = atlas_store.collect(model, photos, "mix", tmp_path / "store", progress=False)
    assert store.map_shape == (4, 4)
    found = feature_examples(store, _random_sae(6, 3, k=None), k=2)
    field = unit_field(model, "mix", store.size)
    assert isinstance(field, TokenField) and field.size == (24, 24)
    patches = example_patches(model, found.neurons, photos, tile=24)
    e, tile = found.neurons.examples(0)[0], patches[0][0]
    img = featviz.images.load(photos / e.name.split("/")[-1], size=32)[0]
    window = crop_box(img, field.box(e.y, e.x))
    torch.testing.assert_close(tile[:, 8:16, 8:16], window[:, 8:16, 8:16])  # the patch
    assert (tile[:, 7, 7:17] == 0).all() and (tile[:, 7:17, 16] == 0).all()  # black ring
    assert (tile[:, 6, 6:18] == 1).all()  # then a white one, outside it
