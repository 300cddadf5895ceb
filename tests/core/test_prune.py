"""Branches of a channel concatenation that feed no channel an objective reads are left out of a
render's forward and backward passes, and the images stay the same to the bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import hook_free
from torch import nn
from torch.overrides import TorchFunctionMode

import featviz
from featviz import objectives as obj
from featviz import truncate as tr
from featviz.core import prune
from featviz.errors import ChannelError

FAST = dict(steps=12, size=32, progress=False, seed=3, redirect_relu=4, record_every=1)


class Block(nn.Module):
    """An Inception-like block: three branches (4, 5 and 2 channels) stacked, then a ReLU."""

    def __init__(self, cin: int):
        super().__init__()
        self.a = nn.Conv2d(cin, 4, 1)
        self.b = nn.Sequential(nn.Conv2d(cin, 3, 1), nn.ReLU(), nn.Conv2d(3, 5, 3, padding=1))
        self.c = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, 2, 1))
        self.pre_relu = nn.Identity()
        self.relu = nn.ReLU()
        with torch.no_grad():  # every unit alive for the first images, so that every one climbs
            for conv in (self.a, self.b[2], self.c[1]):
                conv.bias.fill_(0.5)

    def forward(self, x):
        return self.relu(self.pre_relu(torch.cat([self.a(x), self.b(x), self.c(x)], 1)))


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.block = Block(6)
        self.head = nn.Conv2d(11, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.block(F.relu(self.stem(x)))
        x = F.relu(self.head(x))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return featviz.models.wrap(ConcatNet(), input_size=32, name="concat")


class ConvCalls(TorchFunctionMode):
    """Counts the convolutions run with ``weight``."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight, self.calls = weight, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.conv2d and args[1] is self.weight:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def unpruned(monkeypatch, model, objective, **kw):
    with monkeypatch.context() as m:
        m.setattr(prune, "might_prune", lambda model, channels: False)
        return featviz.render(model, objective, **kw)


def test_truncation_leaves_out_the_unread_branches(net):
    x = torch.rand(2, 3, 32, 32)
    full = tr.truncate(net, ["block"])(x)["block"]
    cut = tr.truncate(net, ["block"], {"block": frozenset({5})}, x[:1])
    assert cut.pruned == ("block",)
    called = {n.target for n in cut.graph_module.graph.nodes if n.op == "call_module"}
    assert {"net.block.b.0", "net.block.b.2"} <= called
    assert not called & {"net.block.a", "net.block.c.0", "net.block.c.1"}
    got = cut(x)["block"]
    assert torch.equal(got[:, 4:9], full[:, 4:9])  # branch b, exactly
    assert not got[:, :4].any() and not got[:, 9:].any()  # the others read 0
    assert (full[:, :4] != 0).any()


def branch_weight(net, branch: str) -> torch.Tensor:
    block = net.net.block
    return {"a": block.a.weight, "b": block.b[2].weight, "c": block.c[1].weight}[branch]


@pytest.mark.parametrize(("objective", "unread"), [
    (obj.channel("block", 5), "a"),
    (obj.channel("block", [0, 9]), "b"),  # two images, two branches
    (obj.neuron("block", 10), "a"),
    (obj.channel("block.pre_relu", 2), "b"),  # the concatenation right behind the layer
    (obj.channel("block", 1) + 0.5 * obj.channel("block", 4) - 0.01 * obj.l2(), "c"),
])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.heavy
def test_render_is_the_same_to_the_bit(net, monkeypatch, objective, unread, memory_format):
    kw = dict(FAST, memory_format=memory_format, batch=max(objective.batch_size, 1))
    with ConvCalls(branch_weight(net, unread)) as pruned_calls:
        got = featviz.render(net, objective, **kw)
    with ConvCalls(branch_weight(net, unread)) as full_calls:
        want = unpruned(monkeypatch, net, objective, **kw)
    assert torch.equal(got.images, want.images)
    assert torch.equal(got.history, want.history)
    # both renders run the whole model a few times before the first step (to learn sizes and
    # shapes; the pruned one once more, its shape probe); after that, the unread branch runs in
    # every step of one and in none of the other (both in a traced graph: the net's stride-2
    # stem is folded, featviz.core.fold)
    assert full_calls.calls - pruned_calls.calls == FAST["steps"] - 1
    assert hook_free(net)


@pytest.mark.parametrize("objective", [
    obj.channel("block", 5) + obj.channel("head", 0),  # a deeper layer reads all of block
    obj.layer("block"),  # every channel read
    obj.channel("block", 5) + obj.direction("block", torch.ones(11)),
])
def test_a_block_read_whole_runs_whole(net, objective):
    with ConvCalls(net.net.block.a.weight) as calls:
        featviz.render(net, objective, **FAST)
    assert calls.calls >= FAST["steps"]


def test_a_hook_of_the_users_keeps_the_tap(net):
    seen = []
    handle = net.net.block.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with ConvCalls(net.net.block.a.weight) as calls:
            featviz.render(net, obj.channel("block", 5), **FAST)
    finally:
        handle.remove()
    assert calls.calls >= FAST["steps"]
    assert len(seen) > FAST["steps"]  # the user's hook saw every step


def test_model_comes_back_as_it_was(net):
    net.train()
    net.net.head.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    featviz.render(net, obj.channel("block", 5), **FAST)

    def fails(acts):
        raise RuntimeError("objective failed")

    with pytest.raises(RuntimeError, match="objective failed"):
        featviz.render(net, obj.Objective(fails, ["block"], "fails",
                                          channels={"block": [5]}), **FAST)
    assert net.training and net.net.block.training
    assert not net.net.head.weight.requires_grad and net.net.stem.weight.requires_grad
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert hook_free(net)


def test_a_channel_out_of_range_is_named(net):
    with pytest.raises(ChannelError, match=r"channel 11 .*'block'.*valid: 0-10"):
        featviz.render(net, obj.channel("block", 11), **FAST)


def test_objectives_say_which_channels_they_read():
    a, b = obj.channel("m", 3), obj.neuron("m", 7, batch=1)
    assert a.channels == {"m": {3}} and b.channels == {"m": {7}}
    assert (a + b).channels == {"m": {3, 7}}
    assert (2 * a - 1).channels == {"m": {3}} and (-a).channels == {"m": {3}}
    assert a.on(2).channels == {"m": {3}}
    assert obj.channel("m", [1, 4, 1]).channels == {"m": {1, 4}}
    assert (a + obj.layer("m")).channels == {}  # read whole
    assert (a + obj.channel("n", 0)).channels == {"m": {3}, "n": {0}}
    assert (a - obj.l2()).channels == {"m": {3}}
    assert obj.Objective(lambda acts: acts["m"].mean((1, 2, 3)), ["m"], "own").channels == {}


@pytest.mark.heavy
def test_inception_v1_blocks_are_pruned_to_the_bit(monkeypatch):
    model = featviz.models.load("inceptionv1", weights=None)
    x = torch.rand(1, 3, 96, 96)
    cut = tr.truncate(model.eval(), ["mixed3b"], {"mixed3b": frozenset({147})}, x)
    assert cut.pruned == ("mixed3b",)
    kw = dict(FAST, size=96, steps=3, redirect_relu=1)
    objective = obj.channel("mixed3b", 147)
    got = featviz.render(model, objective, **kw)
    assert torch.equal(got.images, unpruned(monkeypatch, model, objective, **kw).images)


@pytest.mark.parametrize(("name", "layer", "channel", "size"), [
    ("googlenet", "inception4c", 300, 64),
    ("inception_v3", "Mixed_5b", 100, 80),
    ("densenet121", "features.denseblock2", 20, 64),
])
@pytest.mark.heavy
def test_torchvisions_concatenating_blocks_are_pruned(name, layer, channel, size):
    model = featviz.models.load(name, weights=None).eval()
    x = torch.rand(2, 3, size, size)
    cut = tr.truncate(model, [layer], {layer: frozenset({channel})}, x[:1])
    assert cut.pruned == (layer,)
    with torch.no_grad():
        whole = tr.truncate(model, [layer])(x)[layer]
        got = cut(x)[layer]
    assert torch.equal(got[:, channel], whole[:, channel])
    assert (got == 0).float().mean() > (whole == 0).float().mean()  # other branches left out
