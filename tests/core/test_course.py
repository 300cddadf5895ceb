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


class _Tracing(torch.optim.Adam):
    """Adam that keeps a copy of the parameters after every step it takes."""

    def step(self, closure=None):
        out = super().step(closure)
        self.after.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
        return out


def _tracing(params):
    opt = _Tracing(params, lr=0.1)
    opt.after = []
    _tracing.last = opt
    return opt


def _average(iterates: list[list[torch.Tensor]], decay: float) -> list[torch.Tensor]:
    """The rule ``ema`` claims: the plain mean of the iterates while there are fewer than
    1 / (1 - decay), an exponential moving average from then on."""
    mean = [t.clone() for t in iterates[0]]
    for n, params in enumerate(iterates[1:], start=2):
        w = max(1 - decay, 1 / n)
        mean = [(1 - w) * m + w * p for m, p in zip(mean, params, strict=True)]
    return mean


def _images_at(param, values: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        for p, v in zip(param.parameters(), values, strict=True):
            p.copy_(v)
        return param()


@pytest.mark.parametrize("decay", [0.5, 0.9])
def test_ema_shows_the_average_of_the_iterates(tiny, decay):
    param = featviz.param.image(32, batch=2, seed=[3, 4])
    res = featviz.render(tiny, obj.channel("conv2", [1, 2]), param, steps=30, ema=decay,
                         thresholds=[6], optimizer=_tracing, progress=False)
    after = _tracing.last.after
    assert len(after) == 30
    last = _images_at(param, after[-1])
    assert not torch.allclose(res.images, last, atol=1e-3)  # not the last step's images
    assert torch.allclose(res.images, _images_at(param, _average(after, decay)), atol=1e-6)
    # snapshots are the average too, of the iterates up to their step
    assert torch.allclose(res.snapshots[6], _images_at(param, _average(after[:6], decay)),
                          atol=1e-6)


def test_without_ema_the_result_is_the_last_step(tiny):
    param = featviz.param.image(32, seed=3)
    res = featviz.render(tiny, obj.channel("conv2", 1), param, steps=12, ema=0,
                         optimizer=_tracing, progress=False)
    assert torch.equal(res.images, _images_at(param, _tracing.last.after[-1]))


def test_ema_repeats_exactly_and_an_early_stop_keeps_the_average(tiny):
    a = featviz.render(tiny, obj.channel("conv3", 2), steps=64, lr=0.2, ema=0.9,
                       stop_at=1e9, **FAST)
    b = featviz.render(tiny, obj.channel("conv3", 2), steps=64, lr=0.2, ema=0.9,
                       thresholds=[32], **FAST)
    assert torch.equal(a.images, b.images)
    # stopped at the first check (step 32), the result is the average snapshot there
    check = featviz.render(tiny, obj.channel("conv3", 2), steps=32, lr=0.2, ema=0.9,
                           stop_at=-1e9, **FAST)
    assert torch.equal(check.images, b.snapshots[32])


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "0.9", True])
def test_bad_ema_is_named(tiny, bad):
    with pytest.raises(FeatvizError, match=r"ema must be a number in \[0, 1\)"):
        featviz.render(tiny, obj.channel("conv2", 1), steps=2, ema=bad, **FAST)
