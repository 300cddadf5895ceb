"""Parametric stimuli: where they land, what they look like, which way they point."""

from __future__ import annotations

import itertools

import pytest
import torch

from featviz.errors import FeatvizError, UnknownNameError
from featviz.methods.circuits import stimuli as st

# small grids: every family, all its kinds of stimuli, few of each
SMALL = {
    "gabors": lambda: st.gabors(orientations=8, wavelengths=(0.2,), phases=4),
    "lines": lambda: st.lines(orientations=8, widths=(0.06,), contrasts=(-1, 1)),
    "curves": lambda: st.curves(orientations=8, curvatures=(0, 3), contrasts=(-1,)),
    "high_low": lambda: st.high_low(orientations=8, frequencies=(8,)),
    "centre_surround": lambda: st.centre_surround(colours=("black", "white", "red"),
                                                  radii=(0.15,)),
}


def centroid(weight: torch.Tensor) -> tuple[float, float]:
    """Centre of mass (row, column) of a [H, W] map."""
    rows = torch.arange(weight.shape[0], dtype=torch.float64)[:, None]
    cols = torch.arange(weight.shape[1], dtype=torch.float64)[None, :]
    w = weight.double()
    return float((w * rows).sum() / w.sum()), float((w * cols).sum() / w.sum())


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("box", [(20, 20, 44, 44), (4, 30, 40, 60)], ids=["centred", "off"])
def test_stimuli_land_on_the_box_centre_and_stay_inside(name, box):
    images, grid = st.draw(SMALL[name](), (64, 72), box, background=0.5)
    assert images.shape == (len(grid), 3, 64, 72)
    assert images.min() >= 0 and images.max() <= 1
    diff = (images - 0.5).abs().sum(dim=(0, 1))
    top, left, bottom, right = box
    cy, cx = centroid(diff)
    assert abs(cy - (top + bottom - 1) / 2) < 1 and abs(cx - (left + right - 1) / 2) < 1
    outside = torch.ones_like(diff, dtype=torch.bool)
    outside[top:bottom, left:right] = False
    assert diff[outside].max() == 0
    # the window has fallen to (almost) nothing at the box's own border
    border = torch.cat([diff[top, left:right], diff[bottom - 1, left:right],
                        diff[top:bottom, left], diff[top:bottom, right - 1]])
    assert border.max() < 0.1 * diff.max()


def test_grid_is_every_combination_in_order():
    fam = st.curves(orientations=4, curvatures=(0, 2, 4), offsets=(-0.1, 0.1), contrasts=(1,))
    assert fam.shape == (4, 3, 2, 1) and len(fam) == 24
    expected = list(itertools.product((0.0, 90.0, 180.0, 270.0), (0.0, 2.0, 4.0), (-0.1, 0.1),
                                      (1.0,)))
    assert [tuple(p.values()) for p in fam.grid()] == expected
    images, grid = st.draw(fam, 48, (8, 8, 40, 40))
    assert len(images) == len(grid) == 24
    assert grid == fam.grid()


def test_edges_are_anti_aliased():
    images, _ = st.draw(st.lines(orientations=(30.0,), widths=(0.08,), contrasts=(1,)), 64,
                        (0, 0, 64, 64))
    values = images[0, 0, 24:40, 24:40].flatten()
    partial = ((values > 0.52) & (values < 0.98)).sum()
    assert partial >= 8  # a jagged line would be only grey and full white here


def test_gratings_and_high_low_keep_the_grey_mean():
    box = (0, 0, 64, 64)
    for fam in (st.gabors(orientations=4, wavelengths=(0.15,), phases=2),
                st.high_low(orientations=4, frequencies=(8,))):
        images, _ = st.draw(fam, 64, box, background=0.5)
        deviation = images - 0.5
        mean = deviation.mean(dim=(1, 2, 3)).abs().max()
        assert mean < 0.05 * deviation.abs().mean(), fam.name


def test_lines_point_the_way_they_say():
    images, grid = st.draw(st.lines(orientations=(0.0, 90.0), widths=(0.05,), contrasts=(1,)),
                           64, (0, 0, 64, 64))
    horizontal, vertical = (images[i, 0] - 0.5 for i in range(2))
    assert horizontal.sum(dim=1).argmax() in (31, 32)  # one bright row in the middle
    assert vertical.sum(dim=0).argmax() in (31, 32)
    assert horizontal.sum(dim=0).std() < horizontal.sum(dim=1).std()


def test_curves_bulge_towards_their_direction():
    fam = st.curves(orientations=(90.0, 270.0), curvatures=(4.0,), contrasts=(1,))
    images, _ = st.draw(fam, 64, (0, 0, 64, 64))
    cap, cup = ((images[i, 0] - 0.5).clamp_min(0) for i in range(2))
    centre = 31.5
    # a cap (∩) has its apex at the centre and its arms below it; a cup the other way round
    assert centroid(cap)[0] > centre + 2 and centroid(cup)[0] < centre - 2
    assert abs(centroid(cap)[1] - centre) < 1


def test_high_low_puts_the_fine_texture_on_its_side():
    images, _ = st.draw(st.high_low(orientations=(90.0, 0.0), frequencies=(12,)), 64,
                        (0, 0, 64, 64))

    def fine(img: torch.Tensor) -> torch.Tensor:  # |horizontal + vertical differences|
        return (img[1:, 1:] - img[:-1, 1:]).abs() + (img[1:, 1:] - img[1:, :-1]).abs()

    up = fine(images[0, 0])
    assert up[8:28, 16:48].mean() > 3 * up[36:56, 16:48].mean()
    right = fine(images[1, 0])
    assert right[16:48, 36:56].mean() > 3 * right[16:48, 8:28].mean()


def test_centre_surround_colours_and_background():
    fam = st.centre_surround(colours=("red", (0.0, 0.0, 1.0)), radii=(0.2,))
    assert fam.orientation is None and fam.period is None
    images, grid = st.draw(fam, 64, (0, 0, 64, 64), background=0.3)
    red_in_blue = next(i for i, p in enumerate(grid)
                       if p["centre"] == "red" and p["surround"] == (0.0, 0.0, 1.0))
    img = images[red_in_blue]
    assert img[:, 31, 31].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-4)
    ring = img[:, 31, 31 + 18]  # between the disc and the window's taper
    assert ring[2] > 0.9 and ring[0] < 0.1
    assert img[:, 0, 0].tolist() == pytest.approx([0.3] * 3)


def test_families_by_name_and_unknown_names():
    assert st.get_family("curves").name == "curves"
    assert st.get_family(st.lines()).name == "lines"
    with pytest.raises(UnknownNameError, match="curves"):
        st.get_family("curvs")
    with pytest.raises(UnknownNameError, match="red"):
        st.centre_surround(colours=("redd",))


@pytest.mark.parametrize("make, match", [
    (lambda: st.gabors(orientations=0), "orientations"),
    (lambda: st.gabors(wavelengths=()), "wavelengths"),
    (lambda: st.lines(widths=(-0.1,)), "widths"),
    (lambda: st.curves(curvatures=("x",)), "curvatures"),
    (lambda: st.gabors(phases=0), "phases"),
    (lambda: st.centre_surround(colours=((1, 0),)), "colour"),
])
def test_bad_grids_are_refused(make, match):
    with pytest.raises(FeatvizError, match=match):
        make()


@pytest.mark.parametrize("box, match", [
    ((10, 10, 10, 20), "empty"), ((70, 0, 90, 20), "outside"), ((1, 2, 3), "top, left")])
def test_bad_boxes_are_refused(box, match):
    with pytest.raises(FeatvizError, match=match):
        st.draw("lines", 64, box)


def test_bad_background_is_refused():
    with pytest.raises(FeatvizError, match="background"):
        st.draw("lines", 32, (0, 0, 32, 32), background=1.5)
