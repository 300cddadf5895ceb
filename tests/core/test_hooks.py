"""LayerTap captures exactly the asked layers, stops early exactly, and always cleans up."""

from __future__ import annotations

import pytest
import torch
from conftest import ReusedReluNet, hook_free, make_tiny

import featviz
from featviz.errors import FeatvizError, UnknownNameError
from featviz.hooks import OUTPUT, LayerTap, frozen, hook_count, on_output, resolve_layer


def test_tap_stops_after_deepest_layer(tiny):
    net = tiny.net
    x = torch.rand(2, 3, 32, 32)
    with LayerTap(tiny, ["conv2"]) as tap:
        tap(x)  # first pass is full: learns how often each layer fires
        calls = net.tail.calls
        acts = tap(x)
        assert net.tail.calls == calls, "the forward ran past the deepest needed layer"
    assert set(acts) == {"conv2"}
    assert acts["conv2"].shape == (2, 16, 16, 16)
    assert hook_free(tiny)


def test_early_stop_is_exact(tiny):
    """Activations and input gradients equal those of a full forward pass."""
    x = torch.rand(3, 3, 32, 32)
    full_x = x.clone().requires_grad_(True)
    captured = {}
    # clone: the in-place ReLU6 after conv3 overwrites its output in a full pass
    h = tiny.net.conv3.register_forward_hook(lambda m, i, o: captured.update(a=o.clone()))
    tiny(full_x)
    h.remove()
    captured["a"][:, 5].mean().backward()

    with LayerTap(tiny, ["conv3"]) as tap:
        tap(x)
        early_x = x.clone().requires_grad_(True)
        act = tap(early_x)["conv3"]
    act[:, 5].mean().backward()
    torch.testing.assert_close(act, captured["a"], rtol=0, atol=0)
    torch.testing.assert_close(early_x.grad, full_x.grad, rtol=0, atol=0)


def test_hooks_removed_on_exception(tiny):
    with pytest.raises(RuntimeError, match="boom"), LayerTap(tiny, ["conv1", "conv3"]) as tap:
        tap(torch.rand(1, 3, 32, 32))
        assert not hook_free(tiny)
        raise RuntimeError("boom")
    assert hook_free(tiny)


def test_capture_survives_inplace_relu(tiny):
    """conv3 is followed by ReLU6(inplace=True); the captured value must be conv3's own."""
    x = torch.rand(2, 3, 32, 32)
    with LayerTap(tiny, ["conv3", OUTPUT]) as tap:
        full = tap(x)["conv3"]
    with LayerTap(tiny, ["conv3"]) as tap:
        tap(x)
        early = tap(x)["conv3"]
    assert (full < 0).any()
    torch.testing.assert_close(full, early, rtol=0, atol=0)


def test_output_needs_full_pass(tiny):
    with LayerTap(tiny, ["conv1", OUTPUT]) as tap:
        tap(torch.rand(1, 3, 32, 32))
        acts = tap(torch.rand(1, 3, 32, 32))
    assert acts[OUTPUT].shape == (1, 10)
    assert tiny.net.tail.calls == 2


def test_unknown_layer_lists_closest(tiny):
    with pytest.raises(UnknownNameError) as err:
        LayerTap(tiny, ["conv_2"])
    assert "'conv_2'" in str(err.value) and "'conv2'" in str(err.value)


def test_reused_module_warns():
    model = ReusedReluNet()
    with pytest.warns(UserWarning, match="ran 2 times"), LayerTap(model, ["relu"]) as tap:
        tap(torch.rand(1, 3, 8, 8))
    assert hook_free(model)


def test_layer_not_run_is_an_error(tiny):
    tiny.net.unused = torch.nn.Conv2d(1, 1, 1)
    with pytest.raises(FeatvizError, match="did not run"), LayerTap(tiny, ["unused"]) as tap:
        tap(torch.rand(1, 3, 32, 32))
    assert hook_free(tiny)


def test_frozen_restores_mode_and_grads():
    model = make_tiny()
    model.train()
    model.net.conv2.eval()
    model.net.fc.weight.requires_grad_(False)
    before = {n: p.clone() for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(ValueError), frozen(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        raise ValueError
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_aliases_and_wrapped_paths():
    model = featviz.models.wrap(ReusedReluNet(), aliases={"first": "conv1"})
    assert resolve_layer(model, "first") is model.net.conv1
    assert resolve_layer(model, "conv2") is model.net.conv2
    assert resolve_layer(model, "net.conv2") is model.net.conv2


def test_on_output_groups_an_alias_with_its_path_and_removes_its_hooks():
    model = featviz.models.wrap(ReusedReluNet(), aliases={"first": "conv1"})
    seen = []
    with on_output(model, ["first", "conv1", "relu"], lambda names, out: seen.append(
            (names, tuple(out.shape)))):
        model(torch.rand(1, 3, 8, 8))
    # one hook for conv1 under both its names; relu runs twice in one pass
    assert seen == [(["first", "conv1"], (1, 4, 8, 8)), (["relu"], (1, 4, 8, 8)),
                    (["relu"], (1, 4, 8, 8))]
    assert hook_free(model)


def test_on_output_removes_its_hooks_when_the_callback_raises(tiny):
    def stop(names, out):
        raise RuntimeError(f"stop at {names[0]}")

    with pytest.raises(RuntimeError, match="stop at conv2"), on_output(tiny, ["conv2"], stop):
        tiny(torch.rand(1, 3, 32, 32))
    assert hook_free(tiny)
    with pytest.raises(UnknownNameError), on_output(tiny, ["conv1", "conv_9"], stop):
        pass
    assert hook_free(tiny)


def test_tap_of_an_alias_and_its_path_hooks_once():
    model = featviz.models.wrap(ReusedReluNet(), aliases={"first": "conv1"})
    with LayerTap(model, ["first", "conv1"]) as tap:
        assert hook_count(model) == 1
        acts = tap(torch.rand(2, 3, 8, 8))
    assert acts["first"] is acts["conv1"] and acts["first"].shape == (2, 4, 8, 8)
    assert hook_free(model)


def test_two_threads_on_one_model_leave_it_exactly_as_it_was():
    """Renders of one model from two threads run one after the other (the model's lock):
    both succeed, no private exception escapes, and the model's modes, flags and parameters
    are exactly as before."""
    import threading

    model = make_tiny()
    model.train()
    model.net.conv1.weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    results, errors = [], []

    def work(channel):
        try:
            results.append(featviz.render(model, f"channel:conv3:{channel}", steps=12,
                                          size=24, seed=channel, progress=False))
        except BaseException as err:  # noqa: BLE001 - any escape is the failure looked for
            errors.append(err)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    assert hook_free(model)
    alone = featviz.render(model, "channel:conv3:2", steps=12, size=24, seed=2, progress=False)
    assert torch.equal(alone.images, next(r for r in results if r.seeds[0] == 2).images)


def test_torchscript_layers_are_refused_with_the_reason():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    for model in (torch.jit.script(net), featviz.models.wrap(torch.jit.script(net))):
        with pytest.raises(FeatvizError, match="hooks do not fire inside TorchScript"):
            featviz.render(model, "channel:2:0", steps=1, size=16, progress=False)
        assert hook_free(model)
