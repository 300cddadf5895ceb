"""Tuning curves of hand-built units whose orientation is known by construction."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import hook_free
from PIL import Image
from torch import nn

from featviz.core.hooks import LayerTap
from featviz.errors import ChannelError, FeatvizError, UnknownNameError
from featviz.methods.circuits import stimuli as st
from featviz.methods.circuits.tuning import (
    circular_stats,
    parse_unit,
    stimulus_box,
    tuning,
)
from featviz.methods.receptive_field import theoretical

SIZE = 41  # the hand-built nets' input; their centre unit sees a 15 x 15 box
ANGLES = (0, 45, 90, 135)


def grid_coords(size: int = 15) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, right) of each kernel tap from the kernel's centre, y pointing up."""
    c = (size - 1) / 2
    rows = torch.arange(size, dtype=torch.float32)[:, None].expand(size, size)
    cols = torch.arange(size, dtype=torch.float32)[None, :].expand(size, size)
    return c - rows, cols - c


def edge_kernel(angle: int, sigma: float = 3.5) -> torch.Tensor:
    """A step edge along ``angle`` degrees (counter-clockwise from the x axis), written out
    by hand for the four angles so that the test does not borrow the stimuli's geometry."""
    up, right = grid_coords()
    side = {0: up, 45: up - right, 90: right, 135: up + right}[angle]
    return torch.sign(side) * torch.exp(-(up ** 2 + right ** 2) / (2 * sigma ** 2))


def cap_kernel(radius: float = 5.0) -> torch.Tensor:
    """A light arc bulging upwards (∩) with its apex at the kernel's centre, zero-mean."""
    up, right = grid_coords()
    dist = ((up + radius) ** 2 + right ** 2).sqrt()  # from the circle's centre, below
    arc = torch.exp(-((dist - radius) ** 2) / 2) * (up > -radius / 2)
    return arc - arc.mean()


class Oriented(nn.Module):
    """Channels 0-3: edges at 0/45/90/135 degrees; 4: dead; 5: constant; 6: an isotropic
    centre-surround (difference of Gaussians); 7: a cap-shaped curve (∩). Thresholded by a
    negative bias and a ReLU, as trained units are, then pooled into two logits."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 15, padding=7)
        up, right = grid_coords()
        d2 = up ** 2 + right ** 2
        dog = torch.exp(-d2 / 4) / 4 - torch.exp(-d2 / 16) / 16
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            for i, angle in enumerate(ANGLES):
                self.conv.weight[i] = edge_kernel(angle) / 3
                self.conv.bias[i] = -8.0
            self.conv.bias[5] = 1.0
            self.conv.weight[6] = dog / dog.abs().sum() * 30
            self.conv.weight[7] = cap_kernel() / 3
            self.conv.bias[7] = -1.0
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


class Tokens(nn.Module):
    """A patch embedding whose ``blocks`` give [B, 1 + 16, 8] tokens, as a ViT's do."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, 8))
        self.blocks = nn.Identity()

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return self.blocks(torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1))


def circular_gap(a: float, b: float, period: float) -> float:
    d = (a - b) % period
    return min(d, period - d)


GABORS = st.gabors(orientations=8, wavelengths=(0.4, 0.7), phases=4)


@pytest.mark.parametrize("channel, angle", list(enumerate(ANGLES)))
def test_edge_units_peak_at_their_orientation(channel, angle, one_thread):
    curve = tuning(Oriented(), ("relu", channel), GABORS, size=SIZE)
    step = 180 / 8
    assert circular_gap(curve.preferred["orientation"], angle, 180) <= step
    assert curve.unimodal
    assert 0 < curve.circular_variance < 0.5
    assert curve.selectivity == pytest.approx(1 - curve.circular_variance)
    assert curve.responses.shape == GABORS.shape


def test_a_cap_detector_points_up(one_thread):
    fam = st.curves(orientations=8, curvatures=(0, 1.5, 3), contrasts=(1,))
    curve = tuning(Oriented(), "relu:7", fam, size=SIZE)
    assert circular_gap(curve.preferred["orientation"], 90, 360) <= 45
    assert curve.unimodal  # its cup (270) is another stimulus, not a second peak
    oc = curve.orientation_curve
    assert oc[2] > 2 * max(float(oc[6]), 1e-6)  # 90 beats 270 by far


def test_responses_are_the_centre_unit_on_the_drawn_stimuli(one_thread):
    model = Oriented()
    fam = st.lines(orientations=4, widths=(0.1,), contrasts=(-1, 1))
    curve = tuning(model, ("conv", 2), fam, size=SIZE)
    box, (y, x) = stimulus_box(model, "conv", SIZE)
    images, _ = st.draw(fam, SIZE, box)
    with LayerTap(model, ["conv"]) as tap, torch.no_grad():
        expected = tap(images)["conv"][:, 2, y, x]
    torch.testing.assert_close(curve.responses.flatten(), expected)
    with LayerTap(model, ["conv"]) as tap, torch.no_grad():
        grey = tap(torch.full((1, 3, SIZE, SIZE), 0.5))["conv"][0, 2, y, x]
    assert curve.baseline == pytest.approx(float(grey), abs=1e-5)


def test_the_box_is_the_centre_units_receptive_field():
    model = Oriented()
    box, (y, x) = stimulus_box(model, "conv", SIZE)
    assert (y, x) == (SIZE // 2, SIZE // 2)
    assert box == theoretical(model, "conv", input_size=SIZE).box(y, x)
    small, _ = stimulus_box(model, "conv", SIZE, extent=0.6)
    assert abs((small[2] - small[0]) - 0.6 * (box[2] - box[0])) <= 1
    assert abs((small[0] + small[2]) - (box[0] + box[2])) <= 1
    big, _ = stimulus_box(model, "conv", 20, extent=3.0)  # clipped to the image
    assert big == (0, 0, 20, 20)


def test_the_model_is_left_as_it_was():
    model = Oriented().train()
    tuning(model, "relu:0", st.lines(orientations=2, widths=(0.1,)), size=SIZE)
    assert model.training and hook_free(model)
    assert all(p.requires_grad for p in model.parameters())


def test_circular_statistics():
    angles = [360 * i / 360 for i in range(360)]
    theta = torch.tensor([math.radians(a) for a in angles])
    half_cosine = theta.cos().clamp_min(0)
    cv, uni = circular_stats(half_cosine, angles, 360)
    assert float(cv) == pytest.approx(1 - math.pi / 4, abs=1e-3) and bool(uni)
    spike = torch.zeros(16)
    spike[5] = 3.0
    cv, uni = circular_stats(spike, [22.5 * i for i in range(16)], 360)
    assert float(cv) == pytest.approx(0, abs=1e-6) and bool(uni)
    cv, uni = circular_stats(torch.ones(16), [22.5 * i for i in range(16)], 360)
    assert float(cv) == pytest.approx(1, abs=1e-6) and not bool(uni)
    two = (2 * theta).cos().clamp_min(0)  # two peaks over 360: not unimodal
    assert not bool(circular_stats(two, angles, 360)[1])
    # over a period of 180 the same curve is one peak, with the half cosine's variance
    half = [a / 2 for a in angles]
    cv, uni = circular_stats(half_cosine, half, 180)
    assert float(cv) == pytest.approx(1 - math.pi / 4, abs=1e-3) and bool(uni)
    # the grey response is taken off before rectifying
    cv, _ = circular_stats(half_cosine + 5, angles, 360, baseline=5.0)
    assert float(cv) == pytest.approx(1 - math.pi / 4, abs=1e-3)


def test_plots_are_written_and_returned(tmp_path):
    pytest.importorskip("matplotlib")
    model = Oriented()
    curve = tuning(model, "relu:1", st.gabors(orientations=4, wavelengths=(0.5,), phases=2),
                   size=SIZE)
    fig = curve.plot(tmp_path / "polar.png")
    with Image.open(tmp_path / "polar.png") as im:
        assert im.format == "PNG" and im.width > 100
    assert fig.axes and fig.axes[0].name == "polar"
    flat = tuning(model, "relu:6", st.centre_surround(colours=("black", "white"),
                                                      radii=(0.2,)), size=SIZE)
    assert flat.orientation_curve is None and math.isnan(flat.circular_variance)
    ax = flat.plot(tmp_path / "flat.png").axes[0]
    assert ax.name == "rectilinear"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_units_are_read_both_ways():
    assert parse_unit("mixed3b:379") == ("mixed3b", 379)
    assert parse_unit(("a.b:c", 2)) == ("a.b:c", 2)
    for bad in ("mixed3b", "mixed3b:x", ":3", ("conv",), ("conv", "3"), ("conv", True)):
        with pytest.raises(FeatvizError, match="layer"):
            parse_unit(bad)


def test_clear_errors():
    model = Oriented()
    with pytest.raises(ChannelError, match="8 channels"):
        tuning(model, ("relu", 8), "lines", size=SIZE)
    with pytest.raises(UnknownNameError, match="'curves'"):
        tuning(model, "relu:0", "curvs", size=SIZE)
    with pytest.raises(UnknownNameError, match="'relu'"):
        tuning(model, "rleu:0", "lines", size=SIZE)
    with pytest.raises(FeatvizError, match="no spatial maps"):
        tuning(model, "fc:0", "lines", size=SIZE)
    with pytest.raises(FeatvizError, match="token layer"):
        tuning(Tokens(), "blocks:0", "lines", size=16)
    with pytest.raises(FeatvizError, match="extent"):
        tuning(model, "relu:0", "lines", size=SIZE, extent=0)
    with pytest.raises(FeatvizError, match="batch_size"):
        tuning(model, "relu:0", "lines", size=SIZE, batch_size=0)
    assert hook_free(model)


def test_a_family_of_ones_own():
    """A Family made by hand (one parameter, its own painter) goes through like the others."""

    def bar(p, u, v, px):  # a bar across the x axis, turned by the orientation
        t = math.radians(p["orientation"])
        return ((-u * math.sin(t) + v * math.cos(t)).abs() < 0.05).float()

    fam = st.Family("bars", {"orientation": (0.0, 45.0, 90.0, 135.0)}, bar)
    curve = tuning(Oriented(), "conv:0", fam, size=SIZE)
    assert curve.responses.shape == (4,)
    torch.testing.assert_close(curve.orientation_curve, curve.responses)
    assert curve.preferred["orientation"] in fam.params["orientation"]
