"""The traced, truncated model computes what the hook tap captures, stops where it claims, and
render(compile=...) gives the eager images while leaving the model as it was."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import ReusedReluNet, hook_free, make_tiny
from torch import nn

import featviz
from featviz import objectives as obj
from featviz import truncate as tr
from featviz.hooks import OUTPUT, LayerTap

FAST = dict(steps=12, size=32, progress=False, seed=3, redirect_relu=4, record_every=4)


def tap_acts(model, layers, x):
    with LayerTap(model, layers) as tap:
        tap(x)  # the first call learns where to stop
        return tap(x)


@pytest.mark.parametrize("layers", [["conv3"], ["conv1", "conv3"], ["conv3", "act3"],
                                    ["conv2", OUTPUT], ["tail"]])
def test_truncated_equals_tap(tiny, layers):
    x = torch.rand(2, 3, 32, 32)
    want = tap_acts(tiny, layers, x)
    got = tr.truncate(tiny, layers)(x)
    assert list(got) == layers
    for name in layers:
        assert torch.equal(got[name], want[name]), name
    if OUTPUT in layers:
        assert torch.equal(got[OUTPUT], tiny(x))


def test_output_before_inplace_op_is_kept(tiny):
    # act3 is ReLU6(inplace=True): without a copy conv3's negative values would be gone
    x = torch.rand(2, 3, 32, 32)
    got = tr.truncate(tiny, ["conv3", "act3"])(x)
    net = tiny.net
    h = torch.relu(net.conv2(net.relu(net.conv1((x - tiny.mean) / tiny.std))))
    assert torch.allclose(got["conv3"], net.conv3(h), atol=1e-6)
    assert (got["conv3"] < 0).any() and (got["act3"] >= 0).all()


def test_nothing_past_the_deepest_layer_runs(tiny):
    t = tr.truncate(tiny, ["conv2"])
    called = {n.target for n in t.graph_module.graph.nodes if n.op == "call_module"}
    assert "net.conv2" in called
    assert not called & {"net.conv3", "net.act3", "net.pool", "net.fc"}
    tiny.net.tail.calls = 0
    t(torch.rand(1, 3, 32, 32))
    assert tiny.net.tail.calls == 0
    assert hook_free(tiny)


def test_reused_module_gives_its_last_call():
    model = ReusedReluNet()
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="ran 2 times"):
        want = tap_acts(model, ["relu"], x)
    got = tr.truncate(model, ["relu"])(x)
    assert torch.equal(got["relu"], want["relu"])
    assert torch.equal(got["relu"], torch.relu(torch.relu(model.conv1(x)) + 0.1))


def test_input_check_survives_tracing(tiny):
    t = tr.truncate(tiny, ["conv1"])
    with pytest.raises(ValueError, match=r"expects images of shape \[B, 3, H, W\]"):
        t(torch.rand(1, 1, 32, 32))


class Branchy(nn.Module):
    """Branches on a tensor's value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y if y.mean() > 0 else -y


def test_untraceable_model_is_named():
    with pytest.raises(tr.TruncationError, match="cannot trace Branchy"):
        tr.truncate(Branchy(), ["conv"])


def test_untraceable_model_renders_eagerly_with_a_warning(one_thread):
    torch.manual_seed(0)
    model = Branchy()
    eager = featviz.render(model, obj.channel("conv", 1), **FAST)
    with pytest.warns(UserWarning, match="torch.fx can trace"):
        fallback = featviz.render(model, obj.channel("conv", 1), compile=True, **FAST)
    assert torch.equal(eager.images, fallback.images)
    assert hook_free(model)


def test_bad_compile_mode_lists_the_modes(tiny):
    with pytest.raises(ValueError, match="reduce-overhead"):
        featviz.render(tiny, obj.channel("conv3", 0), compile="fastest", **FAST)


@pytest.mark.heavy
def test_failed_compile_falls_back_to_the_traced_graph(tiny, monkeypatch, one_thread):
    def broken(*args, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(tr, "_CACHE", tr.weakref.WeakKeyDictionary())
    eager = featviz.render(tiny, obj.channel("conv3", [0, 1]), **FAST)
    with pytest.warns(UserWarning, match=r"no C\+\+ compiler"):
        fallback = featviz.render(tiny, obj.channel("conv3", [0, 1]), compile=True, **FAST)
    assert torch.equal(eager.images, fallback.images)
    assert hook_free(tiny)


@pytest.mark.heavy
def test_compiled_render_matches_eager_and_restores_model(one_thread):
    """A real torch.compile (inductor) of the truncated model: same images as the hook path up
    to float rounding, the model back in training mode with its gradients and weights."""
    model = make_tiny(seed=4)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    objective = obj.channel("conv3", [0, 1])
    eager = featviz.render(model, objective, **FAST)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compiled = featviz.render(model, objective, compile=True, **FAST)
        again = featviz.render(model, objective, compile=True, **FAST)
    fallbacks = [str(w.message) for w in seen if "rendering without it" in str(w.message)]
    assert not fallbacks  # it really compiled
    assert (compiled.images - eager.images).abs().max() < 1e-4
    assert torch.equal(compiled.images, again.images)
    assert torch.allclose(compiled.history, eager.history, atol=1e-4)
    assert (compiled.history[-1] > compiled.history[0]).all()  # the objective rose
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert hook_free(model)


def test_compiled_graphs_are_cached_and_follow_the_model(tiny, monkeypatch):
    monkeypatch.setattr(tr, "_CACHE", tr.weakref.WeakKeyDictionary())
    monkeypatch.setattr(torch, "compile", lambda gm, **kw: gm)  # tracing is what is cached
    first = tr.compiled(tiny, ["conv3"])
    assert tr.compiled(tiny, ["conv3"]) is first
    assert tr.compiled(tiny, ["conv3"], "reduce-overhead") is not first
    tiny.net.conv3 = nn.Conv2d(16, 16, 3, padding=1)  # a swapped module: a new trace
    fresh = tr.compiled(tiny, ["conv3"])
    assert fresh is not first
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(fresh(x)["conv3"], tap_acts(tiny, ["conv3"], x)["conv3"])
    for k in range(6):
        tr.compiled(tiny, [f"conv{1 + k % 3}"], tr.COMPILE_MODES[k % 2])
    assert len(tr._CACHE[tiny]) == tr._KEEP
    with pytest.raises(ValueError, match="compile mode must be one of"):
        tr.compiled(tiny, ["conv3"], "fast")


class NormedBlock(nn.Module):
    """Convolution, batch norm, ReLU; with ``branchy``, a branch on a tensor's value inside."""

    def __init__(self, branchy: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.branchy = branchy

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return y if not self.branchy or y.mean() > 0 else -y


class BlockNet(nn.Module):
    def __init__(self, branchy: bool = False):
        super().__init__()
        self.block = NormedBlock(branchy)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.block(x))


@pytest.mark.parametrize("branchy", [False, True])
def test_a_read_layer_is_traced_into_to_fold_or_kept_whole(branchy):
    """A layer the objective reads is traced into when folding (its convolutions go in the
    fold); one whose forward the tracer cannot follow stays one call, as without folding."""
    torch.manual_seed(0)
    model = BlockNet(branchy).eval().requires_grad_(False)
    with torch.no_grad():
        model.block.bn.running_var.uniform_(0.5, 2)
        model.block.bn.running_mean.uniform_(-1, 1)
    cut = tr.truncate(model, ["block"], fold=True)
    assert cut.folded == (() if branchy else ("block.conv",))
    called = {n.target for n in cut.graph_module.graph.nodes if n.op == "call_module"}
    assert called == ({"block"} if branchy else set())
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(cut(x)["block"], tap_acts(model, ["block"], x)["block"],
                               rtol=1e-5, atol=1e-5)
    assert tr.truncate(model, ["block"]).folded == ()  # without fold: kept whole, as before


def test_a_watched_layer_stays_one_call_and_its_hook_fires():
    model = BlockNet().eval().requires_grad_(False)
    seen = []
    handle = model.block.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        cut = tr.truncate(model, ["block"], fold=True)
        cut(torch.rand(1, 3, 8, 8))
    finally:
        handle.remove()
    assert cut.folded == ()
    assert [n.target for n in cut.graph_module.graph.nodes if n.op == "call_module"] == ["block"]
    assert seen == [torch.Size([1, 4, 8, 8])]


def test_folded_graphs_are_cached_apart(monkeypatch):
    monkeypatch.setattr(tr, "_CACHE", tr.weakref.WeakKeyDictionary())
    model = BlockNet().eval().requires_grad_(False)
    plain = tr.cached(model, ["head"], None)
    folded = tr.cached(model, ["head"], None, fold=True)
    assert plain.folded == () and folded.folded == ("block.conv",)
    assert tr.cached(model, ["head"], None, fold=True) is folded
    model.block.bn.train()  # what may be folded changed: a new trace
    assert tr.cached(model, ["head"], None, fold=True).folded == ()


class TrainingBranch(nn.Module):
    """Takes another path in training mode: the trace must be made in eval mode."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = self.conv1(x)
        if self.training:
            x = -x
        return self.conv2(x)


def test_a_model_in_training_mode_is_traced_as_rendered(monkeypatch, one_thread):
    monkeypatch.setattr(tr, "_CACHE", tr.weakref.WeakKeyDictionary())
    monkeypatch.setattr(torch, "compile", lambda gm, **kw: gm)
    torch.manual_seed(0)
    model = TrainingBranch().train()
    eager = featviz.render(model, obj.channel("conv2", 1), **FAST)
    traced = featviz.render(model, obj.channel("conv2", 1), compile=True, **FAST)
    assert torch.equal(eager.images, traced.images)
    assert model.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_render_on_cuda_matches_eager(mode):
    """On a GPU (Triton kernels; "reduce-overhead" replays CUDA graphs, whose outputs the next
    step overwrites) the compiled render reaches the eager images and objective."""
    model = make_tiny(seed=5).cuda()
    objective = obj.channel("conv3", [0, 1, 2])
    kw = {**FAST, "steps": 24}
    eager = featviz.render(model, objective, **kw)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compiled = featviz.render(model, objective, compile=mode, **kw)
    assert not [w for w in seen if "rendering without it" in str(w.message)]
    assert (compiled.images - eager.images).abs().max() < 1e-2
    assert torch.allclose(compiled.history, eager.history, rtol=1e-2, atol=1e-3)
    assert (compiled.history[-1] > compiled.history[0]).all()
    assert hook_free(model)
