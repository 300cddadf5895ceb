"""Weight views: first-layer filters, circuit figures from one render batch, weight factors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import hook_free
from torch import nn

from featviz.circuits import (
    CircuitError,
    RenderCache,
    circuit,
    expanded_weights,
    factor_figure,
    first_layer,
    first_layer_filters,
    parse_unit,
    weight_factors,
    weight_map,
)
from featviz.errors import FeatvizError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1), nn.ReLU()).eval()


def test_first_layer_filters_show_each_filter_around_grey(tmp_path):
    net = _net()
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[2, 0] = 1.0  # filter 2: red only, at its strongest
    assert first_layer(net)[0] == "0"
    sheet = first_layer_filters(net, scale=4, ncol=6, path=tmp_path / "f.png")
    assert (tmp_path / "f.png").is_file()
    assert sheet.size == (6 * (12 + 2) + 2, 12 + 2 + 2)
    tile = torch.from_numpy(np.array(sheet.crop((2 + 2 * 14, 2, 2 + 2 * 14 + 12, 14))))
    assert (tile == torch.tensor([255, 128, 128])).all()  # full red over mid-grey
    with pytest.raises(CircuitError, match="not a Conv2d"):
        first_layer_filters(net, "1")


def test_weight_maps_are_red_for_positive_and_blue_for_negative():
    tile = weight_map(torch.tensor([[1.0, -1.0], [0.0, 0.5]]), 1.0, 2)
    assert tile[:, 0, 0].tolist() == [1, 0, 0] and tile[:, 0, 1].tolist() == [0, 0, 1]
    assert tile[:, 1, 0].tolist() == [1, 1, 1] and tile[:, 1, 1].tolist() == [1, 0.5, 0.5]


def test_a_circuit_figure_costs_one_render_batch_and_the_next_none(tmp_path):
    net = _net()
    cache = RenderCache(steps=2, size=16, folder=tmp_path / "renders")
    found = circuit(net, "2:3", "0", k=2, next_layer="4", cache=cache, tile=16,
                    path=tmp_path / "c.png")
    assert cache.rendered == 1 and (tmp_path / "c.png").is_file()
    assert len(found.excites) == 2 and len(found.inhibits) == 2 and len(found.feeds) >= 1
    ranked = expanded_weights(net, "0", "2", size=16).strongest(3, 2)
    assert [c.channel for c in found.excites] == [c.channel for c in ranked]
    assert found.picture.size[0] == 4 * (16 + 4) + 4  # 2k columns
    circuit(net, "2:3", "0", k=2, cache=cache, tile=16)
    assert cache.rendered == 1  # every unit was kept
    fresh = RenderCache(steps=2, size=16, folder=tmp_path / "renders")
    again = fresh.get(net, [("0", c.channel) for c in found.excites])
    kept = cache.get(net, [("0", c.channel) for c in found.excites])
    assert fresh.rendered == 0  # read back from the folder
    assert [a.shape for a in again] == [b.shape for b in kept]  # [3, H, W] either way
    assert all((a - b).abs().max() <= 1 / 255 for a, b in zip(again, kept, strict=True))
    assert hook_free(net)


def test_a_cached_render_does_not_depend_on_its_batch():
    net = _net()
    alone = RenderCache(steps=3, size=16).get(net, [("2", 5)])[0]
    among = RenderCache(steps=3, size=16).get(net, [("2", 1), ("0", 2), ("2", 5)])[2]
    torch.testing.assert_close(alone, among)


def test_units_are_parsed_or_refused():
    assert parse_unit("mixed4c:447") == ("mixed4c", 447)
    assert parse_unit(("features.3", 2)) == ("features.3", 2)
    with pytest.raises(FeatvizError, match="'layer:channel'"):
        parse_unit("mixed4c")


def test_weight_factors_recover_directions_that_build_the_weights():
    """Weights made of two non-negative source directions come back as those two."""
    torch.manual_seed(0)
    d = torch.zeros(2, 10)
    d[0, :5], d[1, 5:] = torch.rand(5) + 0.5, torch.rand(5) + 0.5
    maps = torch.rand(7, 2, 3, 3)  # non-negative maps: every weight excites
    w = torch.einsum("tkij,ks->tsij", maps, d)

    class Fake:
        weights, source, target = w, "a", "b"

    f = weight_factors(Fake(), 2)
    assert f.explained > 0.99 and f.directions.shape == (2, 10) and f.maps.shape == (7, 2, 3, 3)
    # each found direction lives on one of the two halves of the channels
    halves = torch.stack([f.directions[:, :5].sum(1), f.directions[:, 5:].sum(1)], 1)
    assert (halves.max(1).values / halves.sum(1) > 0.99).all()
    with pytest.raises(CircuitError, match="0-6"):
        weight_factors(Fake(), 2, units=[9])
    with pytest.raises(CircuitError, match="was not factored"):
        weight_factors(Fake(), 2, units=[1]).unit(2)


def test_negative_weights_show_as_negative_factor_maps(tmp_path):
    net = _net()
    ew = expanded_weights(net, "0", "2", size=16)
    f = weight_factors(ew, 3, units=[1])
    rebuilt = torch.einsum("kij,ks->sij", f.unit(1), f.directions)
    # the split fit is close enough that the signs of the big weights come back
    big = ew.unit(1).abs() > ew.unit(1).abs().max() / 2
    assert (rebuilt[big].sign() == ew.unit(1)[big].sign()).float().mean() > 0.8
    sheet = factor_figure(net, f, 1, cache=RenderCache(steps=2, size=16), tile=16,
                          path=tmp_path / "f.png")
    assert sheet.size[0] == 3 * (16 + 4) + 4 and (tmp_path / "f.png").is_file()
