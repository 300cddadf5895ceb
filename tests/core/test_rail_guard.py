"""RailGuard: colour values near 0 and 1 pushed back inside, relative to the objective's pull."""

from __future__ import annotations

import pytest
import torch
from conftest import check_setting_batch_invariant

import featviz
from featviz import objectives as obj
from featviz import param
from featviz.core.render.stages import RAIL_MARGIN, RailGuard
from featviz.errors import FeatvizError
from featviz.hooks import INPUT


def _gradient(guard: RailGuard, img: torch.Tensor, incoming: torch.Tensor) -> torch.Tensor:
    """The gradient the guard passes back to ``img`` when ``incoming`` arrives from above."""
    x = img.clone().requires_grad_(True)
    guard.images(x).backward(incoming)
    return x.grad


def _image() -> torch.Tensor:
    img = torch.full((2, 3, 4, 4), 0.5)
    img[0, 0, 0, 0] = 0.01  # near black: pushed up
    img[0, 1, 0, 1] = 0.995  # near white: pushed down
    img[1, 2, 3, 3] = 1 - RAIL_MARGIN / 2
    return img


def test_values_near_the_rails_are_pushed_inside_by_a_multiple_of_the_mean_pull():
    img = _image()
    incoming = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = _gradient(RailGuard(2.0), img, incoming)
    pull = incoming.abs().flatten(1).mean(dim=1)
    push = out - incoming
    # descent subtracts the gradient: a negative push raises a value, a positive one lowers it
    assert push[0, 0, 0, 0] == pytest.approx(-2 * float(pull[0]))
    assert push[0, 1, 0, 1] == pytest.approx(2 * float(pull[0]))
    assert push[1, 2, 3, 3] == pytest.approx(2 * float(pull[1]))  # each image its own pull
    assert int((push != 0).sum()) == 3  # every value inside the margin is left alone


def test_the_push_scales_with_the_objective():
    # the guard's gradient is homogeneous in the objective's: a logit at 20 and a channel at
    # 1000 get the same course from a scale-free optimizer such as Adam
    img, guard = _image(), RailGuard(1.5)
    incoming = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_gradient(guard, img, 1e3 * incoming),
                               1e3 * _gradient(guard, img, incoming))


def test_rgba_alpha_is_left_alone():
    img = torch.full((1, 4, 4, 4), 0.5)
    img[0, 3] = 0.0  # fully transparent: not a colour on a rail
    img[0, 0, 1, 1] = 0.0
    incoming = torch.ones(1, 4, 4, 4)
    push = _gradient(RailGuard(1.0, colours=-1), img, incoming) - incoming
    assert push[0, 3].abs().max() == 0
    assert push[0, 0, 1, 1] == pytest.approx(-1.0)  # the colours' own mean pull


def _rendered(tiny, objective, **kw):
    # the careful course: the fast one brings its own guard
    return featviz.render(tiny, objective, steps=64, size=32, seed=0, lr=0.1,
                          transforms="none", progress=False, pace="careful", **kw)


def test_the_guard_keeps_a_render_off_the_rails(tiny):
    # l1 pulls every value towards a rail equally hard, so the push must be several times the
    # mean pull to hold; a channel's pull is uneven and 1 holds (README, "rail_guard")
    pushed = _rendered(tiny, obj.l1()).images  # every value away from grey: black and white
    held = _rendered(tiny, obj.l1(), rail_guard=10).images
    assert featviz.metrics.saturated_share(pushed) > 0.4
    assert featviz.metrics.saturated_share(held) < 0.05
    assert obj.l1()({INPUT: held}) > 0.35  # still far from grey: only the rails are kept off


def test_render_guard_is_batch_invariant_and_zero_is_none(tiny):
    check_setting_batch_invariant(tiny, rail_guard=2)


def test_render_takes_the_guard_a_parameterization_declares(tiny):
    assert param.image(32, seed=5).rail_guard == 0.0  # featviz's images declare none
    # a parameterization that declares a course of its own takes the careful pace, so the
    # render given the same guard does too
    kw = dict(size=32, steps=24, lr=0.2, progress=False)
    declared = param.image(32, seed=5)
    declared.rail_guard = 2.0
    a = featviz.render(tiny, obj.channel("conv2", 1), declared, **kw)
    b = featviz.render(tiny, obj.channel("conv2", 1), param.image(32, seed=5), rail_guard=2,
                       pace="careful", **kw)
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize("bad", [-1.0, float("inf"), "2", True])
def test_bad_rail_guard_is_named(tiny, bad):
    with pytest.raises(FeatvizError, match=r"rail_guard must be a number >= 0.*got"):
        featviz.render(tiny, obj.channel("conv2", 1), size=32, steps=2, rail_guard=bad,
                       progress=False)
