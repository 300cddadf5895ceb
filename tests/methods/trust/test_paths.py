"""Path similarity: Spearman as scipy defines it, the layers compared, and the check itself on
a tiny model (the top photos resemble each other more than random ones; a copy of a top
photo as the "visualization" is processed like the top photos, noise is not)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import hook_free, make_tiny

from featviz.errors import FeatvizError
from featviz.methods import trust
from featviz.methods.trust.ranks import average_ranks


def test_average_ranks_give_ties_their_mean_rank():
    r = average_ranks(torch.tensor([[0.0, 0.0, 3.0, 1.0, 0.0]]))
    assert r.tolist() == [[1.0, 1.0, 4.0, 3.0, 1.0]]


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (5, 30), generator=g).float()  # many ties, as after a ReLU
    b = torch.randn(3, 30, generator=g)
    rho = trust.spearman(a, b)
    for i in range(5):
        for j in range(3):
            expected = stats.spearmanr(a[i].numpy(), b[j].numpy()).statistic
            assert rho[i, j].item() == pytest.approx(expected, abs=1e-5)


def test_spearman_of_a_constant_profile_is_zero_and_shapes_are_checked():
    rho = trust.spearman(torch.zeros(1, 8), torch.randn(2, 8))
    assert rho.abs().max() == 0
    with pytest.raises(FeatvizError, match=r"\[N, D\] profiles"):
        trust.spearman(torch.zeros(2, 8), torch.zeros(2, 7))


def test_path_layers_end_with_the_units_layer_in_forward_order(tiny):
    assert trust.path_layers(tiny, "conv3") == ["conv1", "conv2", "conv3"]
    assert trust.path_layers(tiny, "conv2") == ["conv1", "conv2"]
    with pytest.raises(FeatvizError, match="no spatial map"):
        trust.path_layers(tiny, "fc")


def _photos(n: int, seed: int = 0) -> list[torch.Tensor]:
    """Smooth random pictures: upsampled noise, so that they have structure at every layer."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=g)
    return list(torch.nn.functional.interpolate(small, size=32, mode="bilinear").unbind(0))


def test_a_top_photo_as_visualization_is_processed_like_the_top_photos():
    model = make_tiny()
    photos = _photos(40)
    first = trust.path_similarity(model, ["conv3:1"], torch.rand(1, 3, 32, 32), photos, k=5,
                                  size=32)[0]
    chosen = photos[int(first.top_sources[0].lstrip("#"))]  # an iterable's items are #i
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a, b = trust.path_similarity(model, ["conv3:1", "conv3:1"], [chosen[None], noise],
                                 photos, k=5, size=32)
    assert a.layers == ["conv1", "conv2", "conv3"]
    assert a.similarity > b.similarity
    assert len(a.top_sources) == 5 and len(a.random_sources) == 5
    assert a.natural >= a.chance - 0.05  # the top photos resemble each other at least as much
    assert hook_free(model)


def test_results_round_trip_through_json(tmp_path):
    model = make_tiny()
    res = trust.path_similarity(model, [("conv2", 0)], [torch.rand(2, 3, 32, 32)], _photos(12),
                                k=3, randoms=4, size=32)
    path = trust.save_json(res, tmp_path / "paths.json")
    back = trust.load_json(path)["conv2:0"]
    assert back == res[0]
    assert json.loads(path.read_text())["conv2:0"]["summary"]["similarity"] == res[0].similarity


def test_bad_units_and_counts_are_named():
    model = make_tiny()
    with pytest.raises(FeatvizError, match="LAYER:CHANNEL"):
        trust.path_similarity(model, ["conv3"], torch.rand(1, 3, 32, 32), _photos(4), size=32)
    with pytest.raises(FeatvizError, match="2 units and 1 visualizations"):
        trust.path_similarity(model, ["conv3:0", "conv3:1"], torch.rand(1, 3, 32, 32),
                              _photos(4), size=32)
    with pytest.raises(FeatvizError, match="channel 99 is out of range"):
        trust.path_similarity(model, ["conv3:99"], torch.rand(1, 3, 32, 32), _photos(4),
                              size=32)


def test_a_unit_of_the_first_layer_has_one_point_and_both_measures_run():
    model = make_tiny()
    for measure in trust.MEASURES:
        res = trust.path_similarity(model, ["conv1:0"], torch.rand(1, 3, 32, 32), _photos(6),
                                    k=2, randoms=2, size=32, measure=measure)[0]
        assert res.layers == ["conv1"] and len(res.visualization) == 1
        assert res.measure == measure
    with pytest.raises(FeatvizError, match="measure is one of"):
        trust.path_similarity(model, ["conv1:0"], torch.rand(1, 3, 32, 32), _photos(6),
                              measure="cosine")


def test_attribution_profiles_share_out_a_linear_units_activation():
    """Activation x gradient is exact across a linear stretch: for a convolution reading a
    ReLU's output, the channel shares at the ReLU add up to the unit's mean less its bias."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 5, 3, padding=1))
    x = torch.rand(3, 3, 16, 16)
    prof = trust.attribution_profiles(model, x, ("2", 2), ["1", "2"])
    assert prof["1"].shape == (3, 4) and prof["2"].shape == (3, 5)
    with torch.no_grad():
        unit = model(x)[:, 2].flatten(1).mean(1)
    assert torch.allclose(prof["1"].sum(1), unit - model[2].bias[2], atol=1e-5)
    assert torch.allclose(prof["2"][:, 2], unit, atol=1e-6)  # the unit's own: its activation
    assert hook_free(model)
