"""Frozen batch norms folded into their convolutions, and stems by phases, in the traced graph
(featviz.core.fold): the same activations and input gradients as the model itself up to float
rounding, and nothing folded where someone watches, trains, or reads the convolution."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import SHARED, hook_free
from torch import nn

import featviz
from featviz import truncate as tr
from featviz.core import fold, stem_conv
from featviz.hooks import LayerTap, frozen, hook_count

pytestmark = pytest.mark.usefixtures("one_thread")

CIFAR_WEIGHTS = SHARED / "models" / "resnet20_cifar10.pth"


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms with running statistics and affine parameters far from the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.25)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.3)
    return model.eval()


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return featviz.models.wrap(randomize_norms(torchvision.models.resnet18()), input_size=64)


def cifar_resnet() -> nn.Module:
    if CIFAR_WEIGHTS.is_file():
        return featviz.models.load("cifar_resnet20", weights=CIFAR_WEIGHTS)
    torch.manual_seed(0)
    return randomize_norms(featviz.models.load("cifar_resnet20", weights=None))


def weighted(acts: torch.Tensor) -> torch.Tensor:
    """A scalar that gives every activation its own gradient."""
    return (acts * torch.linspace(-1, 2, acts.numel()).view_as(acts)).sum()


def tapped(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's activation and the input gradient, by the hook tap on the model itself."""
    x = x.detach().requires_grad_(True)
    with LayerTap(model, [layer]) as tap:
        acts = tap(x)[layer]
    weighted(acts).backward()
    return acts.detach(), x.grad


def graphed(run, layer: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    acts = run(x)[layer]
    weighted(acts).backward()
    return acts.detach(), x.grad


def assert_near(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal to float rounding: 1e-4 of the tensor's largest magnitude."""
    scale = float(want.detach().abs().max())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale)


def norm_calls(gm) -> list[str]:
    return [n.target for n in gm.graph.nodes if n.op == "call_module"
            and isinstance(gm.get_submodule(n.target), nn.BatchNorm2d)]


@pytest.fixture
def stem_calls(monkeypatch):
    """Counts the calls of stem_conv.stem_conv2d (which still runs)."""
    calls = []
    real = stem_conv.stem_conv2d

    def spy(x, weight, *args):
        calls.append(tuple(weight.shape))
        return real(x, weight, *args)

    monkeypatch.setattr(stem_conv, "stem_conv2d", spy)
    return calls


@pytest.fixture
def model(request):
    """The model a parametrized test names: a maker, or a fixture's name (the real weights)."""
    make = request.param
    if not isinstance(make, str):
        return make()
    made = request.getfixturevalue(make)
    torch.set_num_threads(1)  # the fixture's first use sets two; one_thread puts them back
    return made


@pytest.mark.parametrize(("model", "layer", "size", "stem"), [
    (resnet18, "layer4", 64, (64, 3, 7, 7)),
    ("mobilenet", "features.17", 64, (32, 3, 3, 3)),
    (cifar_resnet, "layer3", 32, None),  # a 3x3 stride-1 stem: no phases
], indirect=["model"])
def test_folded_graph_equals_the_model(stem_calls, model, layer, size, stem):
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with frozen(model):
        want, want_grad = tapped(model, layer, x)
        cut = tr.truncate(model, [layer], fold=True)
        assert stem_calls == []  # tracing runs nothing
        got, got_grad = graphed(cut, layer, x)
    assert norm_calls(cut.graph_module) == []  # every batch norm went into its convolution
    assert len(cut.folded) >= 10
    assert stem_calls == ([stem] if stem else [])
    assert_near(got, want)
    assert_near(got_grad, want_grad)
    assert hook_free(model)


class ConvNorm(nn.Module):
    """Stem (3x3, stride 2, no bias) -> batch norm -> ReLU -> conv (bias) -> batch norm -> ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 6, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(6)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


@pytest.fixture
def net():
    torch.manual_seed(0)
    model = randomize_norms(ConvNorm())
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_a_watched_norm_is_not_folded_and_its_hook_fires(net):
    x = torch.rand(2, 3, 32, 32)
    want, want_grad = tapped(net, "relu2", x)
    seen = []
    handle = net.bn2.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        cut = tr.truncate(net, ["relu2"], fold=True)
        assert cut.folded == ("conv1",) and norm_calls(cut.graph_module) == ["bn2"]
        got, got_grad = graphed(cut, "relu2", x)
    finally:
        handle.remove()
    assert seen == [torch.Size([2, 6, 16, 16])]
    assert_near(got, want)
    assert_near(got_grad, want_grad)


def test_a_hook_put_on_after_the_fold_fires(net):
    cut = tr.truncate(net, ["relu2"], fold=True)
    assert cut.folded == ("conv1", "conv2")
    x = torch.rand(1, 3, 32, 32)
    seen = []
    handle = net.conv2.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        got = cut(x)["relu2"]
    finally:
        handle.remove()
    assert seen == [torch.Size([1, 6, 16, 16])]
    assert_near(got, net(x))


def test_an_in_place_change_applies_to_the_next_call(net):
    cut = tr.truncate(net, ["relu2"], fold=True)
    x = torch.rand(2, 3, 32, 32)
    assert_near(cut(x)["relu2"], net(x))
    with torch.no_grad():
        net.conv2.weight[0].mul_(-3)
        net.bn1.running_var.add_(1)
        net.bn2.bias.zero_()
    assert_near(cut(x)["relu2"], net(x))
    net.bn2.eps = 0.5
    assert_near(cut(x)["relu2"], net(x))


def test_training_norms_and_trained_weights_are_not_folded(net):
    x = torch.rand(4, 3, 32, 32)
    net.bn2.train()
    net.conv1.weight.requires_grad_(True)
    twin = copy.deepcopy(net)
    cut = tr.truncate(net, ["relu2"], fold=True)
    assert cut.folded == () and norm_calls(cut.graph_module) == ["bn1", "bn2"]
    got, want = cut(x)["relu2"], twin(x)
    got.sum().backward()
    want.sum().backward()
    assert_near(got, want)
    assert_near(net.conv1.weight.grad, twin.conv1.weight.grad)
    assert torch.equal(net.bn2.running_mean, twin.bn2.running_mean)
    net.bn2.eval()
    net.conv1.weight.requires_grad_(False)
    assert tr.truncate(net, ["relu2"], fold=True).folded == ("conv1", "conv2")


def test_what_changes_after_the_fold_runs_the_modules(net):
    cut = tr.truncate(net, ["relu2"], fold=True)
    assert cut.folded == ("conv1", "conv2")
    x = torch.rand(4, 3, 32, 32)
    net.bn2.train()  # batch statistics, and the running ones move
    mean = net.bn2.running_mean.clone()
    got = cut(x)["relu2"]
    assert not torch.equal(net.bn2.running_mean, mean)
    net.bn2.running_mean.copy_(mean)
    assert_near(got, net(x))
    net.eval()
    net.conv1.weight.requires_grad_(True)  # someone trains the stem: it gets its gradient
    cut(x)["relu2"].sum().backward()
    assert net.conv1.weight.grad is not None and net.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("layers", "folded"), [
    (["bn2"], ("conv1", "conv2")),  # the batch norm read: the folded pair gives its value
    (["conv2"], ("conv1",)),  # the convolution read: it has two users and stays
    (["conv2", "bn2"], ("conv1",)),
])
def test_an_objective_reading_the_pair_gets_its_value(net, layers, folded):
    cut = tr.truncate(net, layers, fold=True)
    assert cut.folded == folded
    x = torch.rand(2, 3, 32, 32)
    got = cut(x)
    with torch.no_grad():
        conv2 = net.conv2(net.relu1(net.bn1(net.conv1(x))))
    for name, want in (("conv2", conv2), ("bn2", net.bn2(conv2))):
        if name in layers:
            assert_near(got[name], want)


@pytest.mark.parametrize("case", ["plain", "caffe_bias", "no_affine", "depthwise", "half"])
def test_fold_weights_compute_the_pair(case):
    torch.manual_seed(0)
    groups = 4 if case == "depthwise" else 1
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=groups, bias=case != "caffe_bias")
    bn = randomize_norms(nn.BatchNorm2d(8, affine=case != "no_affine", eps=1e-3))
    if case == "caffe_bias":  # InceptionV1's and MobileNetV2's: the identity plus a bias
        bn.weight.data.fill_(1)
        bn.running_mean.zero_()
        bn.running_var.fill_(1 - bn.eps)
    dtype = torch.bfloat16 if case == "half" else torch.float32
    conv, bn = conv.to(dtype), bn.to(dtype)
    weight, bias = fold.fold_weights(conv.weight, conv.bias, bn.weight, bn.bias,
                                     bn.running_mean, bn.running_var, bn.eps)
    assert weight.dtype == dtype and not weight.requires_grad
    x = torch.randn(2, 4, 8, 8, dtype=dtype)
    with torch.no_grad():
        want = bn(conv(x)).float()
        got = F.conv2d(x, weight, bias, 1, 1, 1, groups).float()
    tol = 3e-2 if case == "half" else 1e-5
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * float(want.abs().max()))


def test_other_padding_modes_and_subclasses_stay(net):
    net.conv2.padding_mode = "reflect"
    assert tr.truncate(net, ["relu2"], fold=True).folded == ("conv1",)

    class Standardized(nn.Conv2d):
        def forward(self, x):
            w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
            return F.conv2d(x, w, self.bias, self.stride, self.padding)

    net.conv1 = Standardized(3, 8, 3, 2, 1, bias=False).requires_grad_(False)
    assert tr.truncate(net, ["relu2"], fold=True).folded == ()


def test_might_fold_looks_cheaply():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1))
    assert not fold.might_fold(plain)
    assert fold.might_fold(nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1)))  # a stem
    paired = nn.Sequential(nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8))
    assert fold.might_fold(paired.eval()) and not fold.might_fold(paired.train())


def test_a_render_folds_and_leaves_the_model_as_it_was(monkeypatch):
    model = featviz.models.load("resnet18", weights=None)
    randomize_norms(model).train()
    model.net.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    made = []
    real = fold.fold
    monkeypatch.setattr(tr, "_CACHE", tr.weakref.WeakKeyDictionary())
    monkeypatch.setattr(fold, "fold", lambda gm: made.append(real(gm)) or made[-1])
    featviz.render(model, "layer4:3", steps=2, size=64, progress=False)
    assert made and "conv1" in made[0][0] and len(made[0]) == 20
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(t.is_contiguous() for t in after.values())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.training and all(m.training for m in model.modules())
    assert hook_free(model)


def test_a_users_hook_keeps_the_render_unfolded(monkeypatch, net):
    model = featviz.models.wrap(net, input_size=32)
    seen = []
    handle = net.bn1.register_forward_hook(lambda m, i, o: seen.append(1))
    made = []
    monkeypatch.setattr(tr, "_CACHE", tr.weakref.WeakKeyDictionary())
    monkeypatch.setattr(fold, "fold", lambda gm: made.append(gm) or ())
    try:
        featviz.render(model, "relu2:1", steps=3, size=32, progress=False)
    finally:
        handle.remove()
    assert not made and len(seen) >= 3
    assert hook_count(model) == 0


def test_a_folded_render_draws_the_unfolded_images(monkeypatch):
    """Redirected ReLU gradients included (the rule reaches the ReLU modules in the graph)."""
    torch.manual_seed(3)
    model = randomize_norms(featviz.models.load("cifar_resnet20", weights=None))
    kw = dict(steps=4, size=32, progress=False, seed=2, redirect_relu=2)
    made = []
    real = fold.fold
    monkeypatch.setattr(tr, "_CACHE", tr.weakref.WeakKeyDictionary())
    monkeypatch.setattr(fold, "fold", lambda gm: made.append(real(gm)) or made[-1])
    folded = featviz.render(model, "layer2:5", **kw)
    assert made and len(made[0]) == 13  # the stem's pair and layer1's and layer2's
    monkeypatch.setattr(fold, "might_fold", lambda m: False)
    plain = featviz.render(model, "layer2:5", **kw)
    assert len(made) == 1
    torch.testing.assert_close(folded.images, plain.images, rtol=0, atol=1e-4)
    torch.testing.assert_close(folded.history, plain.history, rtol=1e-4, atol=1e-5)
