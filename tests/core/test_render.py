"""The render loop raises its objective, repeats with a seed and leaves the model untouched."""

from __future__ import annotations

import os
import signal
import warnings

import pytest
import torch
from conftest import hook_free, make_tiny
from PIL import Image
from torch import nn

import featviz
from featviz import objectives as obj
from featviz import param
from featviz.errors import ChannelError, NonFiniteLossError
from featviz.objectives import Objective

FAST = dict(steps=24, size=32, progress=False, seed=1)


def test_objective_rises(tiny):
    res = featviz.render(tiny, obj.channel("conv3", 2), **{**FAST, "lr": 0.2}, record_every=1)
    assert res.history_steps[0] == 1
    assert res.history[-1, 0] > res.history[0, 0] + 0.05, res.history[:, 0]
    assert res.images.shape == (1, 3, 32, 32)
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert res.history_steps[-1] == 24 and res.steps_done == 24 and not res.interrupted


def test_seed_repeats_exactly(tiny):
    a = featviz.render(tiny, obj.channel("conv2", 1), **FAST)
    b = featviz.render(tiny, obj.channel("conv2", 1), **FAST)
    c = featviz.render(tiny, obj.channel("conv2", 1), **{**FAST, "seed": 2})
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert a.seed == 1
    d = featviz.render(tiny, obj.channel("conv2", 1), **{**FAST, "seed": None})
    again = featviz.render(tiny, obj.channel("conv2", 1), **{**FAST, "seed": d.seed})
    assert torch.equal(d.images, again.images)


def test_early_stop_changes_nothing(tiny):
    a = featviz.render(tiny, obj.channel("conv2", 1), **FAST)
    b = featviz.render(tiny, obj.channel("conv2", 1), **FAST, stop_early=False)
    assert torch.equal(a.images, b.images)


def test_batch_of_channels_each_rises(tiny):
    res = featviz.render(tiny, obj.channel("conv3", [0, 3, 5, 7]), **FAST)
    assert res.images.shape[0] == 4
    assert (res.history[-1] > res.history[0]).all()
    assert res.labels[1] == "channel(conv3, 3)"
    # one image per objective with batch=: the same as a vectorized list
    summed = obj.Objective.sum(obj.channel("conv3", c, batch=i) for i, c in enumerate([0, 3, 5, 7]))
    res2 = featviz.render(tiny, summed, **FAST)
    torch.testing.assert_close(res.images, res2.images)


def test_model_comes_back_unchanged():
    model = make_tiny()
    model.train()
    model.net.fc.weight.requires_grad_(False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    featviz.render(model, obj.channel("conv2", 0) + obj.logit(3), **FAST)
    assert model.training and all(m.training for m in model.modules())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())
    assert hook_free(model)


def test_no_hooks_left_after_error(tiny):
    with pytest.raises(ChannelError, match="valid: 0-15"):
        featviz.render(tiny, obj.channel("conv3", 99), **FAST)
    assert hook_free(tiny)


def test_nan_loss_names_the_step(tiny):
    calls = {"n": 0}

    def fn(acts):
        calls["n"] += 1
        v = acts["conv2"][:, 0].mean(dim=(1, 2))
        return v * float("nan") if calls["n"] >= 7 else v

    with pytest.raises(NonFiniteLossError, match="at step 7"):
        featviz.render(tiny, Objective(fn, ["conv2"], "bad"), **FAST)
    assert hook_free(tiny)


def _raising_at(call: int) -> Objective:
    """An objective that raises KeyboardInterrupt (as a Ctrl-C would) at its ``call``-th
    call."""
    calls = {"n": 0}

    def fn(acts):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return acts["conv2"][:, 0].mean(dim=(1, 2))

    return Objective(fn, ["conv2"], "interrupted")


def test_ctrl_c_keeps_what_was_made(tiny):
    res = featviz.render(tiny, _raising_at(10), **FAST, interrupt="return")
    assert res.interrupted and res.steps_done == 9
    assert res.images.shape == (1, 3, 32, 32)
    assert hook_free(tiny)


def test_thresholds_snapshots_and_files(tiny, tmp_path):
    res = featviz.render(tiny, obj.channel("conv3", 1), thresholds=[4, 12], **FAST)
    assert sorted(res.snapshots) == [4, 12]
    assert not torch.equal(res.snapshots[4], res.images)
    png = res.save(tmp_path / "a.png")
    assert Image.open(png).size == (32, 32)
    gif = res.save_gif(tmp_path / "a.gif")
    assert Image.open(gif).n_frames == 3


def test_string_objective_and_given_param(tiny):
    p = param.image(20, batch=2, fft=False, decorrelate=False)
    res = featviz.render(tiny, "channel:conv1:2", p, **{**FAST, "size": None})
    assert res.images.shape == (2, 3, 20, 20)


def test_custom_transform_list_is_used(tiny):
    seen = []

    def spy(x):
        seen.append(x.shape)
        return x

    featviz.render(tiny, obj.channel("conv1", 0), transforms=[spy], **FAST)
    assert len(seen) == FAST["steps"] and seen[0] == (1, 3, 32, 32)


def test_transforms_preset_changes_model_input(tiny):
    sizes = []
    h = tiny.net.conv1.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[-1]))
    try:
        featviz.render(tiny, obj.channel("conv1", 0), transforms="standard", **FAST)
    finally:
        h.remove()
    assert set(sizes) == {32 + 24 - 12}


class DeadNet(nn.Module):
    """conv -> ReLU with a large negative bias: the channel is dead for any [0, 1] image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(0.1)
            self.conv.bias.fill_(-5.0)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x))


def test_redirected_relu_revives_dead_units():
    model = DeadNet()
    with pytest.warns(UserWarning, match="stayed at about zero"):  # dead, and said so
        # lucid's course, where it was made: the fast one's average shows the climb later
        plain = featviz.render(model, obj.channel("relu", 0), redirect_relu=0, pace="careful",
                               **FAST)
        revived = featviz.render(model, obj.channel("relu", 0), redirect_relu=24,
                                 pace="careful", **FAST)
    start = param.image(32, seed=1)().detach()
    assert torch.equal(plain.images, start), "without redirection a dead unit gets no gradient"
    assert revived.images.mean() > plain.images.mean() + 0.05  # brighter: pushed towards life
    assert hook_free(model)


def bf16_seen(model: nn.Module) -> list[torch.dtype]:
    """Run one bf16 render of ``model`` and note the dtype of conv3's output at each step."""
    seen = []
    handle = model.net.conv3.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        featviz.render(model, obj.channel("conv3", 2), amp=True, **{**FAST, "steps": 2})
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="needs a CUDA GPU")),
])
def test_amp_runs_the_model_in_bf16(device):
    """amp=True really runs the model in bf16 (on the CPU too), and hands back float32 images
    on the CPU; how close it gets to fp32 is checked on a real network (test_real_mobilenet)."""
    model = make_tiny().to(device)
    assert set(bf16_seen(model)) == {torch.bfloat16}
    res = featviz.render(model, obj.channel("conv3", [2, 5]), amp=True, **FAST)
    assert res.images.device.type == "cpu" and res.images.dtype == torch.float32
    assert res.values.isfinite().all()
    assert hook_free(model)


def test_batching_changes_no_image(tiny):
    """Image i depends on seed + i alone: a batch equals the same images rendered one by one."""
    kw = {**FAST, "seed": 5}
    batched = featviz.render(tiny, obj.channel("conv3", [0, 3, 6]), **kw)
    for i, c in enumerate([0, 3, 6]):
        alone = featviz.render(tiny, obj.channel("conv3", c), **{**kw, "seed": 5 + i})
        torch.testing.assert_close(batched.images[i:i + 1], alone.images, atol=1e-4, rtol=0)
    assert batched.seeds == [5, 6, 7]


def test_seed_list_per_image(tiny):
    res = featviz.render(tiny, obj.channel("conv3", [1, 2]), **{**FAST, "seed": [9, 4]})
    alone = featviz.render(tiny, obj.channel("conv3", 2), **{**FAST, "seed": 4})
    torch.testing.assert_close(res.images[1:], alone.images, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="2 seeds for a batch of 3"):
        featviz.render(tiny, obj.channel("conv3", [1, 2, 3]), **{**FAST, "seed": [1, 2]})


def test_channels_last_same_images_and_model_restored():
    model = make_tiny()
    weights = {n: p for n, p in model.named_parameters()}
    data = {n: p.data for n, p in model.named_parameters()}
    a = featviz.render(model, obj.channel("conv3", 1), **FAST)
    b = featviz.render(model, obj.channel("conv3", 1), memory_format="channels_last", **FAST)
    torch.testing.assert_close(a.images, b.images, atol=1e-4, rtol=0)
    for n, p in model.named_parameters():
        assert p is weights[n] and p.data.data_ptr() == data[n].data_ptr()
        assert p.is_contiguous()
    with pytest.raises(ValueError, match="channels_last"):
        featviz.render(model, obj.channel("conv3", 1), memory_format="nhwc", **FAST)


def test_huge_step_counts_allocate_nothing_up_front(tiny):
    """The recording plan is sized by the recording interval, not by `steps`: a render of
    10**11 steps starts at once (and is stopped here by Ctrl-C at its third step)."""
    res = featviz.render(tiny, _raising_at(3), **{**FAST, "steps": 10**11}, interrupt="return")
    assert res.interrupted and res.steps_done == 2
    from featviz.core.render.recorder import Recorder

    rec = Recorder(10**11, 16, [8, 10**12], torch.device("cpu"), "x", 0.05, progress=False)
    assert rec.losses.numel() == 16 and rec.thresholds == [8]


def _interrupting(at: int, times: int = 1):
    """An objective that sends this process SIGINT (a real Ctrl-C) ``times`` times at its
    ``at``-th call."""
    calls = {"n": 0}

    def fn(acts):
        calls["n"] += 1
        for _ in range(times if calls["n"] == at else 0):
            os.kill(os.getpid(), signal.SIGINT)
        return acts["conv2"][:, 0].mean(dim=(1, 2))

    return Objective(fn, ["conv2"], "ctrl-c")


def test_first_ctrl_c_ends_the_render_after_its_step(tiny):
    res = featviz.render(tiny, _interrupting(3), **FAST, interrupt="return")
    assert res.interrupted and res.steps_done == 3  # the step in flight finished
    assert hook_free(tiny) and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_ctrl_c_interrupts_at_once(tiny):
    with pytest.raises(KeyboardInterrupt):
        featviz.render(tiny, _interrupting(3, times=2), **FAST, interrupt="return")
    assert hook_free(tiny) and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_stops_a_script_or_test_run(tiny):
    """Outside an interactive session, "auto" swallows nothing: Ctrl-C reaches pytest."""
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    with pytest.raises(KeyboardInterrupt):
        featviz.render(tiny, _interrupting(3), **FAST)
    assert hook_free(tiny) and tiny.training
    assert all(torch.equal(v, before[k]) for k, v in tiny.state_dict().items())
    with pytest.raises(ValueError, match="interrupt must be one of auto, return, raise"):
        featviz.render(tiny, "channel:conv2:0", **FAST, interrupt="ignore")


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_render_under_no_grad_and_inference_mode(tiny, mode):
    """Notebooks often run cells under no_grad or inference_mode: render turns gradients on
    inside and the objective still rises; the caller's mode is back afterwards."""
    with mode():
        res = featviz.render(tiny, obj.channel("conv3", 1), **FAST)
        assert not torch.is_grad_enabled()
    assert res.history[-1, 0] > res.history[0, 0]


def test_a_dead_unit_gets_a_warning(tiny):
    dead = Objective(lambda a: a["conv3"][:, 0].mean(dim=(1, 2)) * 0, ["conv3"], "dead:0")
    with pytest.warns(UserWarning, match=r"stayed at about zero .* dead:0.*redirect_relu") as w:
        featviz.render(tiny, dead, **FAST)
    assert w[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        featviz.render(tiny, obj.channel("conv3", 1), **FAST)  # a live unit: no word
