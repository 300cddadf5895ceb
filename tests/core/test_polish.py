"""render(polish=N): the last N steps see the images as shown, without transforms."""

from __future__ import annotations

import pytest
import torch
from conftest import check_setting_batch_invariant

import featviz
from featviz import objectives as obj
from featviz.errors import FeatvizError


class _Counted:
    """A visible transform (a brightening) that counts the steps it is used in."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x: torch.Tensor, streams) -> torch.Tensor:
        self.calls += 1
        return x + 1.0


def _inputs(tiny) -> list[torch.Tensor]:
    """A list the model's inputs are appended to, one per forward."""
    seen: list[torch.Tensor] = []
    tiny.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen


def test_the_last_steps_skip_the_transforms(tiny):
    counted, seen = _Counted(), _inputs(tiny)
    featviz.render(tiny, obj.channel("conv2", 1), size=32, steps=10, seed=0, polish=3,
                   transforms=counted, progress=False)
    assert counted.calls == 7  # used in steps 1-7 only
    steps = seen[-10:]  # the render's own forwards (any dry run comes first)
    assert all(x.min() >= 1.0 for x in steps[:7])  # brightened: transformed
    assert all(x.min() > 0.0 and x.max() < 1.0 for x in steps[7:])  # the sigmoid image itself


@pytest.mark.heavy
def test_polish_raises_the_objective_on_the_image_as_shown(tiny):
    # a neuron at one position: under jitter the render serves its neighbours too; the last
    # steps without transforms serve the position itself
    neuron = obj.neuron("conv2", 1, x=8, y=8)
    kw = dict(size=32, steps=64, seed=0, lr=0.1, transforms="standard", progress=False)
    plain = featviz.render(tiny, neuron, **kw).images
    polished = featviz.render(tiny, neuron, polish=16, **kw).images
    values = [float(featviz.metrics.objective_value(tiny, neuron, img)[0])
              for img in (plain, polished)]
    assert values[1] > values[0] * 1.05


@pytest.mark.heavy
def test_polish_keeps_renders_batch_invariant_and_zero_is_none(tiny):
    check_setting_batch_invariant(tiny, polish=8)


@pytest.mark.parametrize("bad", [-1, 25, 2.5, True])
def test_bad_polish_is_named_with_the_valid_range(tiny, bad):
    with pytest.raises(FeatvizError, match=r"polish must be a whole number of steps from 0 to "
                                           r"steps \(24\).*got"):
        featviz.render(tiny, obj.channel("conv2", 1), size=32, steps=24, polish=bad,
                       progress=False)
