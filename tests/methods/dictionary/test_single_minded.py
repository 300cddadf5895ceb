"""Single-mindedness: high for a unit whose top patches are copies of one patch, low for one
whose top patches are unrelated photos, by the judge (the model's last spatial layer) and by
the layer's own vectors; every patch embedded once; the summary and the picks for a sheet."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _planted_store import identity_sae, write_store
from conftest import make_tiny

import featviz
from featviz.errors import FeatvizError
from featviz.methods.dictionary import (
    feature_examples,
    judge_layer,
    layer_mindedness,
    mean_pairwise_cosine,
    pick_units,
    single_mindedness,
)
from featviz.methods.dictionary.features import unit_field
from featviz.methods.dictionary.minded import embeddings

SIDE, MAP, CHANNELS = 32, 16, 16  # tiny's conv2 at 32 px: a 16 x 16 map of 16 channels


@pytest.fixture
def scene(tmp_path):
    """Photos 0-3 are copies of one photo, 4-7 unrelated ones; a store of tiny's conv2 where
    channel 0 peaks at the same spot of photos 0-3 (one vector, repeated) and channel 1 at
    photos 4-7 (vectors that agree on channel 1 only); channel 2 stays below 1, so the
    dictionary's feature 2 (channel 2 less 1) never fires."""
    rng = np.random.default_rng(3)
    photos = tmp_path / "photos"
    photos.mkdir()
    copy = rng.uniform(0, 1, (3, SIDE, SIDE))
    for i in range(8):
        pixels = copy if i < 4 else rng.uniform(0, 1, (3, SIDE, SIDE))
        featviz.images.save(torch.from_numpy(pixels).float(), photos / f"p{i}.png")
    maps = rng.uniform(0, 0.5, (8, MAP, MAP, CHANNELS))
    same = rng.normal(0, 3, CHANNELS)
    same[:3] = [9, 0, -1]
    for i in range(4):
        maps[i, 5, 5] = same
        maps[4 + i, 9, 2] = rng.normal(0, 4, CHANNELS)
        maps[4 + i, 9, 2, :3] = [0, 9 - i, -1]
    store = write_store(tmp_path / "store", maps, names=[f"p{i}.png" for i in range(8)])
    found = feature_examples(store, identity_sae(CHANNELS, 3, threshold=1.0), k=4)
    return photos, store, found


def test_the_pairwise_cosine():
    v = torch.randn(5)
    assert mean_pairwise_cosine(torch.stack([v, v, 2 * v])) == pytest.approx(1)
    assert mean_pairwise_cosine(torch.eye(3)) == pytest.approx(0)
    assert mean_pairwise_cosine(torch.stack([v, -v])) == pytest.approx(-1)
    assert math.isnan(mean_pairwise_cosine(v[None]))


def test_the_judge_is_the_last_spatial_layer():
    assert judge_layer(make_tiny()) == "pool"  # after it only the classifier


def test_copies_score_high_and_unrelated_photos_low(scene):
    photos, _, found = scene
    assert sorted(e.image for e in found.features.examples(0)) == [0, 1, 2, 3]
    assert sorted(e.image for e in found.features.examples(1)) == [4, 5, 6, 7]
    scores = single_mindedness(make_tiny(), found, photos)
    assert scores.method == "pool"
    assert scores.features.score(0) == pytest.approx(1, abs=1e-6)
    assert scores.neurons.score(0) == pytest.approx(1, abs=1e-6)  # same patches
    assert scores.features.score(1) < 0.5
    assert math.isnan(scores.features.score(2))  # never fires: no examples, no score


def test_a_unit_with_fewer_examples_than_asked_gets_no_score(scene):
    """A rare unit (fewer top photos than k) is left out rather than scored on a pair or two;
    the floor is the search's k unless given, and a floor below a pair is an error."""
    photos, store, found = scene
    tiny = make_tiny()
    assert not math.isnan(single_mindedness(tiny, found, photos).features.score(0))  # 4 of 4
    strict = single_mindedness(tiny, found, photos, min_examples=5)
    assert np.isnan(strict.features.scores).all() and np.isnan(strict.neurons.scores).all()
    assert np.isnan(layer_mindedness(store, found, min_examples=5).features.scores).all()
    with pytest.raises(FeatvizError, match="min_examples must be at least 2"):
        single_mindedness(tiny, found, photos, min_examples=1)


def test_a_cache_embeds_each_patch_once_over_calls(scene):
    photos, _, found = scene
    tiny, cache = make_tiny(), {}
    first = single_mindedness(tiny, found, photos, judge="pool", cache=cache)
    unique = {(e.image, e.y, e.x) for kind in (found.features, found.neurons)
              for u in kind.units for e in kind.examples(u)}
    assert set(cache) == unique
    calls = tiny.net.tail.calls
    again = single_mindedness(tiny, found, photos, judge="pool", cache=cache)
    assert tiny.net.tail.calls == calls  # nothing run again
    np.testing.assert_array_equal(again.neurons.scores, first.neurons.scores)


def test_the_layers_own_vectors_give_the_cheap_score(scene):
    _, store, found = scene
    scores = layer_mindedness(store, found)
    assert scores.method == "layer"
    assert scores.features.score(0) == pytest.approx(1, abs=1e-6)
    assert scores.features.score(1) < 0.5
    # without centring every vector shares the store's positive mean: the random ones
    # come out more alike
    raw = layer_mindedness(store, found, center=False)
    assert np.nanmean(raw.neurons.scores) > np.nanmean(scores.neurons.scores) + 0.1


def test_each_patch_is_embedded_once_in_batches(scene):
    photos, store, found = scene
    tiny = make_tiny()
    field = unit_field(tiny, "conv2", store.size)
    points = found.features.examples(0) + found.features.examples(1)

    def run(batch_size: int) -> tuple[torch.Tensor, int]:
        before = tiny.net.tail.calls
        emb = embeddings(tiny, points, photos, store.size, field, "pool", batch_size=batch_size)
        return emb, tiny.net.tail.calls - before

    small, calls_small = run(3)
    big, calls_big = run(100)
    torch.testing.assert_close(small, big, atol=1e-5, rtol=1e-5)
    assert calls_small - calls_big == math.ceil(len(points) / 3) - 1
    assert small.shape == (8, CHANNELS)
    torch.testing.assert_close(small[1], small[0])  # copies: one embedding
    assert not torch.allclose(small[4], small[5])


def test_summary_and_picks(scene):
    photos, store, found = scene
    scores = layer_mindedness(store, found)
    s = scores.neurons.scores
    q1, median, q3 = np.percentile(s[np.isfinite(s)], [25, 50, 75])
    summary = scores.summary()
    assert summary["neurons"]["median"] == pytest.approx(median)
    assert (summary["neurons"]["q1"], summary["neurons"]["q3"]) == pytest.approx((q1, q3))
    assert summary["neurons"]["n"] == CHANNELS and summary["features"]["n"] == 2
    picks = pick_units(scores, n=2)
    assert picks["features"] == {"most": [0, 1], "least": [1, 0]}
    best = np.argsort(-s)[:2].tolist()
    assert picks["neurons"]["most"] == best
    assert picks["neurons"]["least"][0] == int(np.argmin(s))


def test_the_judge_sees_no_grey_fill_at_the_border(tmp_path):
    """A box that reaches past the photo is moved inside for the judge (the page's patches
    keep their grey fill): two border patches of unrelated photos are not made alike by
    shared fill."""
    from featviz.methods.dictionary.features import iter_crops
    from featviz.methods.receptive_field import ReceptiveField

    rng = np.random.default_rng(0)
    for i in range(2):
        featviz.images.save(torch.from_numpy(rng.uniform(0, 1, (3, SIDE, SIDE))).float(),
                            tmp_path / f"q{i}.png")

    class Point:
        def __init__(self, image):
            self.image, self.name, self.y, self.x = image, f"q{image}.png", 0, 0

    field = ReceptiveField(size=(20, 20), jump=(2, 2), offset=(0.0, 0.0))
    points = [Point(0), Point(1)]
    filled = dict(iter_crops(points, tmp_path, SIDE, field))
    moved = dict(iter_crops(points, tmp_path, SIDE, field, inside=True))
    assert (filled[0] == 0.5).all(dim=0).float().mean() > 0.4  # the box hangs off the corner
    assert moved[0].shape == filled[0].shape
    assert not (moved[0] == 0.5).all(dim=0).any()  # every pixel is the photo's own
    photo = featviz.images.load(tmp_path / "q0.png", size=SIDE)[0]
    assert torch.equal(moved[0], photo[:, :20, :20])
