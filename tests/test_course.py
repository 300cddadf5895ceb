"""How a render's steps go: the learning-rate schedule and the early stop (``stop_at``)."""

from __future__ import annotations

import math

import pytest
import torch

import featviz
from featviz import objectives as obj
from featviz.core.render import convergence, schedule
from featviz.errors import FeatvizError

FAST = dict(size=32, progress=False, seed=1)


class _Recording(torch.optim.Adam):
    """Adam that notes the rate of every step it takes."""

    def step(self, closure=None):
        self.seen.append(self.param_groups[0]["lr"])
        return super().step(closure)


def _recording(params):
    opt = _Recording(params, lr=0.1)
    opt.seen = []
    _recording.last = opt
    return opt


def test_cosine_schedule_follows_its_formula(tiny):
    featviz.render(tiny, obj.channel("conv2", 1), steps=20, optimizer=_recording,
                   lr_schedule="cosine", **FAST)
    seen = _recording.last.seen
    assert len(seen) == 20
    assert seen[0] == pytest.approx(0.1)
    floor = schedule.COSINE_FLOOR
    for i, lr in enumerate(seen):
        want = 0.1 * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * i / 20)))
        assert lr == pytest.approx(want)
    assert all(a > b for a, b in zip(seen, seen[1:], strict=False))


def test_constant_schedule_and_a_function(tiny):
    featviz.render(tiny, obj.channel("conv2", 1), steps=8, optimizer=_recording,
                   lr_schedule="constant", **FAST)
    assert _recording.last.seen == [pytest.approx(0.1)] * 8
    featviz.render(tiny, obj.channel("conv2", 1), steps=8, optimizer=_recording,
                   lr_schedule=lambda t: 1 - t, **FAST)
    assert _recording.last.seen == pytest.approx([0.1 * (1 - i / 8) for i in range(8)])


def test_schedule_changes_the_image_and_repeats_exactly(tiny):
    a = featviz.render(tiny, obj.channel("conv2", 1), steps=24, lr_schedule="cosine", **FAST)
    b = featviz.render(tiny, obj.channel("conv2", 1), steps=24, lr_schedule="cosine", **FAST)
    c = featviz.render(tiny, obj.channel("conv2", 1), steps=24, lr_schedule="constant", **FAST)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_unknown_schedule_names_the_choices(tiny):
    with pytest.raises(FeatvizError, match="unknown lr schedule 'cosin'.*constant, cosine"):
        featviz.render(tiny, obj.channel("conv2", 1), steps=2, lr_schedule="cosin", **FAST)


def test_stop_at_a_value_ends_early_and_keeps_the_checks(tiny):
    full = featviz.render(tiny, obj.channel("conv3", 2), steps=256, lr=0.2,
                          stop_at=-1e9, **FAST)
    assert full.steps_done == convergence.CHECK_EVERY  # met at the first check
    assert full.held_out_steps == [convergence.CHECK_EVERY]
    assert full.held_out.shape == (1, 1)
    assert full.history_steps[-1] == convergence.CHECK_EVERY


def test_held_out_checks_feed_the_model_in_its_memory_layout(tiny):
    """With ``memory_format="channels_last"`` the held-out checks hand the model the same
    layout as the steps do."""
    layouts = []

    def note(module, args):
        layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))

    first = next(m for m in tiny.modules() if isinstance(m, torch.nn.Conv2d))
    handle = first.register_forward_pre_hook(note)
    try:
        res = featviz.render(tiny, obj.channel("conv3", 2), steps=convergence.CHECK_EVERY,
                             stop_at=1e9, memory_format="channels_last", **FAST)
    finally:
        handle.remove()
    assert res.held_out_steps == [convergence.CHECK_EVERY]
    # the last calls: the 32 steps, then the check's draws (setup's shape probes come first)
    steps_and_check = layouts[-(convergence.CHECK_EVERY + convergence.DRAWS):]
    assert len(steps_and_check) == convergence.CHECK_EVERY + convergence.DRAWS
    assert all(steps_and_check)


def test_stop_at_a_value_waits_until_every_image_reaches_it(tiny):
    probe = featviz.render(tiny, obj.channel("conv3", [2, 5]), steps=128, lr=0.2,
                           stop_at=1e9, **FAST)
    assert probe.steps_done == 128  # never reached: all steps
    held = probe.held_out
    assert held.shape == (4, 2)
    target = float(held[1].min())  # both images had it by the second check
    res = featviz.render(tiny, obj.channel("conv3", [2, 5]), steps=128, lr=0.2,
                         stop_at=target, **FAST)
    first = next(i for i in range(len(held)) if bool((held[i] >= target).all()))
    assert res.steps_done == probe.held_out_steps[first]
    # the run up to there is the same run: stopping changes no image it made
    same = featviz.render(tiny, obj.channel("conv3", [2, 5]), steps=128, lr=0.2,
                          thresholds=[res.steps_done], **FAST)
    assert torch.equal(res.images, same.snapshots[res.steps_done])


def test_until_converged_stops_on_a_plateau_and_not_while_rising(tiny):
    # a rate so small that nothing moves: flat from the start, stopped after PATIENCE + 1 checks
    flat = featviz.render(tiny, obj.channel("conv3", 2), steps=512, lr=1e-9,
                          stop_at="converged", **FAST)
    assert flat.steps_done == (convergence.PATIENCE + 1) * convergence.CHECK_EVERY
    # a steady climb is not cut short
    rising = featviz.render(tiny, obj.channel("conv3", 2), steps=256, lr=0.05,
                            stop_at="converged", **FAST)
    held = rising.held_out[:, 0]
    assert len(held) == 256 // convergence.CHECK_EVERY
    assert (held[convergence.PATIENCE:] > 1.05 * held[:-convergence.PATIENCE]).all(), held
    assert rising.steps_done == 256


@pytest.mark.parametrize("bad", ["soon", "nan", float("inf"), True])
def test_bad_stop_at_is_named(tiny, bad):
    with pytest.raises(FeatvizError, match="stop_at must be"):
        featviz.render(tiny, obj.channel("conv2", 1), steps=2, stop_at=bad, **FAST)
