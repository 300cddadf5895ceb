"""Scanning a layer for a family of units: hand-built oriented units, and a smoke test on the
real InceptionV1."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import hook_free
from PIL import Image
from test_tuning import ANGLES, SIZE, Oriented, circular_gap

from featviz.errors import ChannelError, FeatvizError
from featviz.methods.circuits import stimuli as st
from featviz.methods.circuits.families import scan
from featviz.methods.circuits.tuning import tuning

GABORS = st.gabors(orientations=8, wavelengths=(0.4, 0.7), phases=4)


def test_scan_finds_the_oriented_units_and_nothing_else(one_thread):
    found = scan(Oriented(), "relu", GABORS, size=SIZE)
    assert found.channels == 8
    # 0-3 are the edges, and 7, a cap (∩), is a horizontal stroke to gratings; 4 (dead),
    # 5 (constant) and 6 (isotropic) are not oriented
    assert sorted(found.found) == [0, 1, 2, 3, 7]
    prefs = [found.preferred[c] for c in found.found]
    assert prefs == sorted(prefs)
    for channel, angle in [*enumerate(ANGLES), (7, 0)]:
        assert circular_gap(found.preferred[channel], angle, 180) <= 180 / 8
        assert found.circular_variance[channel] <= found.max_circular_variance
    assert found.histogram(4).tolist() == [2, 1, 1, 1]
    assert found.coverage(4) == 1.0 and found.coverage(8) == 0.5
    assert found.gains[4] == 0 and found.gains[5] == 0
    text = found.summary()
    assert "5 of 8 channels" in text and "50%" in text
    assert "found: " + ", ".join(f"{c} ({found.preferred[c]:g}°)" for c in found.found) in text


def test_scan_curves_agree_with_tuning(one_thread):
    model = Oriented()
    fam = st.lines(orientations=4, widths=(0.1, 0.2), contrasts=(-1, 1))
    found = scan(model, "relu", fam, size=SIZE)
    for channel in (1, 6):
        one = tuning(model, ("relu", channel), fam, size=SIZE)
        torch.testing.assert_close(found.curve(channel).responses, one.responses)
        assert found.curve(channel).circular_variance == pytest.approx(one.circular_variance)
    with pytest.raises(ChannelError, match="8 channels"):
        found.curve(8)


def test_one_pass_measures_every_channel():
    model = Oriented()
    batches: list[int] = []
    model.conv.register_forward_hook(lambda _m, inputs, _out: batches.append(len(inputs[0])))
    scan(model, "relu", GABORS, size=SIZE, batch_size=16)  # 64 stimuli
    # the stimuli go through in 4 batches of 16, once for all 8 channels; the other passes
    # are single images (the grey one, and those that learn the layer's shape and field)
    assert batches.count(16) == 4
    assert all(n == 1 for n in batches if n != 16)
    assert len(batches) < 4 + model.conv.out_channels


def test_thresholds_decide_membership():
    model = Oriented()
    assert scan(model, "relu", GABORS, size=SIZE, max_circular_variance=0.0).found == []
    everything = scan(model, "relu", GABORS, size=SIZE, max_circular_variance=1.0,
                      min_response=0.0)
    assert set(everything.found) >= {0, 1, 2, 3, 7} and not {4, 5} & set(everything.found)
    with pytest.raises(FeatvizError, match="min_response"):
        scan(model, "relu", GABORS, size=SIZE, min_response=-1)
    with pytest.raises(FeatvizError, match="no orientation"):
        scan(model, "relu", "centre_surround", size=SIZE)
    assert hook_free(model)


def test_a_layer_of_dead_units_has_no_family(tmp_path):
    model = Oriented()
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.fill_(-1.0)
    found = scan(model, "relu", GABORS, size=SIZE)
    assert found.found == [] and found.coverage(8) == 0.0
    assert "0 of 8 channels" in found.summary()
    with pytest.raises(FeatvizError, match="nothing to draw"):
        found.sheet(tmp_path / "sheet.png", steps=2)


def test_sheet_shows_each_unit(tmp_path, one_thread):
    pytest.importorskip("matplotlib")
    model = Oriented()
    found = scan(model, "relu", GABORS, size=SIZE)
    photos = tmp_path / "photos"
    photos.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        pixels = (torch.rand(SIZE, SIZE, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(photos / f"p{i}.png")
    plain = found.sheet(tmp_path / "plain.png", steps=2, render_size=SIZE, max_units=2)
    full = found.sheet(tmp_path / "full.png", images=photos, k=2, steps=2, render_size=SIZE)
    with Image.open(plain) as a, Image.open(full) as b:
        assert a.format == b.format == "PNG"
        assert b.width > a.width  # the patches' columns
        assert b.height > a.height  # four rows against two
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.png", "photos", "plain.png"]


def test_real_inceptionv1_smoke(inceptionv1, one_thread):
    """BVLC GoogLeNet's mixed3b with a tiny curve grid (one pass of 4 stimuli, a few seconds
    on a CPU): shapes and finite values only."""
    fam = st.curves(orientations=4, curvatures=(2.5,), contrasts=(-1,))
    found = scan(inceptionv1, "mixed3b", fam, batch_size=4)
    assert found.channels == 480 and found.responses.shape == (480, 4, 1, 1, 1)
    assert found.orientation_curves.shape == (480, 4)
    assert torch.isfinite(found.responses).all() and torch.isfinite(found.baseline).all()
    assert torch.isfinite(found.circular_variances).all()
    top, left, bottom, right = found.box
    assert 0 <= top < bottom <= 224 and 0 <= left < right <= 224
    curve = found.curve(379)
    assert curve.layer == "mixed3b" and math.isfinite(curve.circular_variance)
