"""FlooredAdam: Adam whose denominator is floored relative to each image's gradient scale."""

from __future__ import annotations

import pytest
import torch

import featviz
from featviz import objectives as obj
from featviz import param
from featviz.core.render.optimizer import FlooredAdam
from featviz.errors import FeatvizError


def _run(opt_factory, grads: list[torch.Tensor], start: torch.Tensor) -> torch.Tensor:
    p = torch.nn.Parameter(start.clone())
    opt = opt_factory([p])
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


def _grads(shape, n=12, seed=0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(n)]


def test_floor_zero_is_adam():
    grads, start = _grads((2, 3, 5)), torch.randn(2, 3, 5)
    mine = _run(lambda ps: FlooredAdam(ps, lr=0.1, betas=(0.9, 0.99), floor=0), grads, start)
    adam = _run(lambda ps: torch.optim.Adam(ps, lr=0.1, betas=(0.9, 0.99)), grads, start)
    assert torch.allclose(mine, adam, atol=1e-6)


def test_weak_coefficients_step_in_proportion_to_their_gradient():
    # one image: a strong coefficient and a weak one with a gradient 100x smaller but the
    # same sign every step; Adam moves both equally, the floor the weak one ~100x less
    shape = (1, 2)
    grads = [torch.tensor([[1.0, 0.01]])] * 10
    start = torch.zeros(shape)
    adam = _run(lambda ps: torch.optim.Adam(ps, lr=0.1, betas=(0.9, 0.99)), grads, start)
    floored = _run(lambda ps: FlooredAdam(ps, lr=0.1, floor=1.0), grads, start)
    adam, floored = adam[0].tolist(), floored[0].tolist()
    assert adam[1] == pytest.approx(adam[0], rel=1e-3)
    assert floored[0] == pytest.approx(adam[0], rel=1e-3)  # the strong one: as Adam
    mean_root = (1.0 + 0.01) / 2
    assert floored[1] == pytest.approx(adam[1] * 0.01 / mean_root, rel=1e-3)


def test_scaling_the_objective_changes_nothing():
    grads, start = _grads((2, 4, 4)), torch.randn(2, 4, 4)
    a = _run(lambda ps: FlooredAdam(ps, lr=0.05, floor=0.5), grads, start)
    b = _run(lambda ps: FlooredAdam(ps, lr=0.05, floor=0.5), [g * 1e4 for g in grads], start)
    assert torch.allclose(a, b, atol=1e-6)


def test_each_image_has_its_own_floor():
    # image 1's gradients scaled by 1000 leave image 0's steps unchanged, and image 1's too
    grads, start = _grads((2, 4, 4)), torch.randn(2, 4, 4)
    scaled = [g * torch.tensor([1.0, 1000.0]).reshape(2, 1, 1) for g in grads]
    a = _run(lambda ps: FlooredAdam(ps, lr=0.05, floor=0.5), grads, start)
    b = _run(lambda ps: FlooredAdam(ps, lr=0.05, floor=0.5), scaled, start)
    assert torch.allclose(a, b, atol=1e-5)
    alone = _run(lambda ps: FlooredAdam(ps, lr=0.05, floor=0.5), [g[:1] for g in grads],
                 start[:1])
    assert torch.allclose(alone, a[:1], atol=1e-6)


@pytest.mark.parametrize("bad", [dict(lr=0), dict(floor=-1), dict(betas=(0.9, 1.0))])
def test_bad_settings_are_named(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        FlooredAdam([torch.nn.Parameter(torch.zeros(2))], **bad)


def test_render_with_a_floor_rises_and_is_batch_invariant(tiny):
    one = featviz.render(tiny, obj.channel("conv2", 1), size=32, steps=24, seed=5,
                         adam_floor=0.5, thresholds=[1], progress=False)
    assert one.history[-1] > one.history[0]
    both = featviz.render(tiny, obj.channel("conv2", 1), size=32, steps=24, seed=[5, 6],
                          adam_floor=0.5, progress=False)
    assert torch.allclose(both.images[:1], one.images, atol=1e-5)
    plain = featviz.render(tiny, obj.channel("conv2", 1), size=32, steps=24, seed=5,
                           adam_floor=0, progress=False)
    assert not torch.allclose(plain.images, one.images, atol=1e-3)


def test_render_takes_the_floor_a_parameterization_declares(tiny):
    # a parameterization declares its floor as it declares its rate; render's own adam_floor
    # overrides it, and featviz's images declare none (plain Adam)
    assert param.image(32, seed=5).adam_floor == 0.0
    # a parameterization that declares a course of its own takes the careful pace; the others
    # here are given it
    kw = dict(size=32, steps=24, progress=False)
    declared = param.image(32, seed=5)
    declared.adam_floor = 2.0
    a = featviz.render(tiny, obj.channel("conv2", 1), declared, **kw)
    b = featviz.render(tiny, obj.channel("conv2", 1), param.image(32, seed=5), adam_floor=2,
                       pace="careful", **kw)
    overridden = param.image(32, seed=5)
    overridden.adam_floor = 2.0
    c = featviz.render(tiny, obj.channel("conv2", 1), overridden, adam_floor=0, **kw)
    plain = featviz.render(tiny, obj.channel("conv2", 1), param.image(32, seed=5),
                           pace="careful", **kw)
    assert torch.equal(a.images, b.images)
    assert torch.equal(c.images, plain.images)
    assert not torch.allclose(a.images, plain.images, atol=1e-3)
    assert a.history[-1] > a.history[0]


def test_a_module_that_declares_nothing_gets_plain_adam(tiny):
    # a parameterization of the user's own, not a featviz one: Adam at 0.05, no floor, the
    # last step's image
    class Mine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.x = torch.nn.Parameter(torch.full((1, 3, 32, 32), 0.5))

        def forward(self):
            return self.x.clamp(0, 1)

    torch.manual_seed(0)
    a, b = Mine(), Mine()
    kw = dict(steps=8, seed=1, transforms="none", progress=False)
    featviz.render(tiny, obj.channel("conv2", 1), a, **kw)
    featviz.render(tiny, obj.channel("conv2", 1), b, lr=0.05, ema=0, adam_floor=0, **kw)
    assert torch.equal(a.x, b.x)


def test_adam_floor_is_flooredadam_at_the_render_rate(tiny):
    # render(adam_floor=K) is FlooredAdam(lr, betas (0.9, 0.99), floor K): the benchmarks'
    # recipe written either way gives the same image
    kw = dict(size=32, steps=16, seed=3, lr=0.1, ema=0.9, progress=False)
    a = featviz.render(tiny, obj.channel("conv2", 1), adam_floor=2, **kw)
    b = featviz.render(tiny, obj.channel("conv2", 1), **kw, optimizer=lambda ps: FlooredAdam(
        ps, lr=0.1, betas=(0.9, 0.99), floor=2))
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), "1"])
def test_bad_adam_floor_is_named(tiny, bad):
    with pytest.raises(FeatvizError, match="adam_floor"):
        featviz.render(tiny, obj.channel("conv2", 1), size=32, steps=2, adam_floor=bad,
                       progress=False)
