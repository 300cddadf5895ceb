"""Expanded weights: exact against hand-composed weights, and clear errors where there are none."""

from __future__ import annotations

import pytest
import torch
from conftest import hook_free
from torch import nn

from featviz import circuits
from featviz.circuits import CircuitError, expanded_weights


def _seeded(net: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # eval statistics that are not the identity
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5)
    return net.eval()


def _bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    return bn.weight / torch.sqrt(bn.running_var + bn.eps)


def test_adjacent_convolutions_give_the_second_ones_weight():
    net = _seeded(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()))
    ew = expanded_weights(net, "1", "3", size=16)
    assert ew.weights.shape == (5, 4, 3, 3)
    torch.testing.assert_close(ew.weights, net[2].weight.detach(), rtol=0, atol=1e-6)
    assert ew.position == (8, 8) and not ew.clipped


def test_a_bottleneck_is_the_composition_of_its_convolutions():
    net = _seeded(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                nn.Conv2d(6, 4, 1), nn.BatchNorm2d(4), nn.ReLU(),
                                nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()))
    ew = expanded_weights(net, "1", "6", size=12)
    reduce = net[2].weight[:, :, 0, 0] * _bn_scale(net[3])[:, None]
    want = torch.einsum("omij,mc->ocij", net[5].weight, reduce).detach()
    torch.testing.assert_close(ew.weights, want, rtol=1e-5, atol=1e-6)


class _Block(nn.Module):
    """A small Inception block: a 1x1 branch, a 1x1-then-3x3 branch and a max-pool-then-1x1
    branch, concatenated, then a 1x1 convolution over the concatenation."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 2, 1)
        self.b1, self.b2 = nn.Conv2d(4, 3, 1), nn.Conv2d(3, 2, 3, padding=1)
        self.pool, self.c = nn.MaxPool2d(3, 1, padding=1), nn.Conv2d(4, 2, 1)
        self.mix = nn.Conv2d(6, 5, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        cat = torch.cat([torch.relu(self.a(x)), torch.relu(self.b2(torch.relu(self.b1(x)))),
                         torch.relu(self.c(self.pool(x)))], 1)
        return self.mix(cat)


def test_an_inception_block_sums_its_branch_paths():
    net = _seeded(_Block())
    ew = expanded_weights(net, "stem", "mix", size=15)
    w = lambda m: m.weight.detach()  # noqa: E731
    mix = w(net.mix)[:, :, 0, 0]
    want = torch.zeros(5, 4, 3, 3)
    want[:, :, 1, 1] += mix[:, :2] @ w(net.a)[:, :, 0, 0]
    want += torch.einsum("ob,bmij,mc->ocij", mix[:, 2:4], w(net.b2), w(net.b1)[:, :, 0, 0])
    # the max-pool is read as its average (Zoom In): 1/9 at each of the 3x3 offsets
    want += (mix[:, 4:] @ w(net.c)[:, :, 0, 0])[:, :, None, None] / 9
    torch.testing.assert_close(ew.weights, want, rtol=1e-5, atol=1e-6)


def test_a_skip_connection_adds_the_identity():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.conv = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, padding=1)
            self.out = nn.Identity()

        def forward(self, x):
            x = self.stem(x)
            return self.out(nn.functional.relu(self.conv(x)) + x)

    net = _seeded(Res())
    ew = expanded_weights(net, "stem", "out", size=9)
    want = net.conv.weight.detach().clone()
    want[:, :, 1, 1] += torch.eye(4)
    torch.testing.assert_close(ew.weights, want, rtol=0, atol=1e-6)


def test_strongest_connections_are_ranked_by_their_summed_weight():
    net = _seeded(nn.Sequential(nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 3, padding=1)))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[0, 4, 0, :] = 1.0   # source 4: +3 along the top row
        net[1].weight[0, 2, 1, 1] = 2.0   # source 2: +2 at the centre
        net[1].weight[0, 5, 2, 2] = -0.5  # source 5 inhibits
    ew = expanded_weights(net, "0", "1", size=8)
    up = ew.strongest(0, k=3)
    assert [c.channel for c in up] == [4, 2]  # only the positive ones, strongest first
    assert up[0].strength == pytest.approx(3.0) and up[0].weights[0].tolist() == [1, 1, 1]
    (down,) = ew.strongest(0, k=3, sign="negative")
    assert down.channel == 5 and down.strength == pytest.approx(-0.5)
    assert [c.channel for c in ew.outgoing(4)] == [0]
    with pytest.raises(CircuitError, match="valid: 0-1"):
        ew.unit(2)


def test_the_model_comes_back_as_it_was():
    net = _seeded(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    expanded_weights(net, "1", "2", size=12)
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert hook_free(net)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_impossible_pairs_say_why():
    net = _seeded(_Block())
    with pytest.raises(CircuitError, match="runs after target"):
        expanded_weights(net, "mix", "stem", size=9)
    with pytest.raises(CircuitError, match="different branches"):
        expanded_weights(net, "a", "b2", size=9)
    with pytest.raises(CircuitError, match="both 'mix'"):
        expanded_weights(net, "mix", "mix", size=9)
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with pytest.raises(CircuitError, match="not \\[B, C, H, W\\] maps"):
        expanded_weights(flat.eval(), "0", "2", size=8)


def test_attention_between_the_layers_is_no_linear_path():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.after = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            f = self.stem(x)
            t = f.flatten(2).transpose(1, 2)  # tokens [B, HW, C]
            mixed = torch.softmax(t @ t.transpose(1, 2), -1) @ t
            return self.after(mixed.transpose(1, 2).reshape(f.shape))

    net = _seeded(Attn())
    with pytest.raises(CircuitError, match="no linear path .*softmax"):
        expanded_weights(net, "stem", "after", size=6)
    assert hook_free(net)


def test_the_window_grows_until_the_field_fits():
    net = _seeded(nn.Sequential(*[nn.Conv2d(3 if i == 0 else 2, 2, 3, padding=1)
                                  for i in range(6)]))
    ew = expanded_weights(net, "0", "5", size=6)  # a 11x11 field on a 6x6 map at first
    assert ew.weights.shape[-2:] == (11, 11) and not ew.clipped


def test_inceptionv1_one_by_one_branch_is_its_folded_weight(inceptionv1):
    """On the real BVLC GoogLeNet: a unit of mixed3b's 1x1 branch reads mixed3a through that
    convolution alone (and its batch norm), at the window's centre."""
    ew = expanded_weights(inceptionv1, "mixed3a", "mixed3b")
    branch = dict(inceptionv1.named_modules())["net.inception3b.branch1"]
    scale = _bn_scale(branch.bn) if branch.bn.track_running_stats else 1.0
    want = (branch.conv.weight[:, :, 0, 0] * torch.as_tensor(scale)[:, None]).detach()
    kh, kw = ew.weights.shape[-2:]
    centre = ew.weights[:128, :, kh // 2, kw // 2]
    torch.testing.assert_close(centre, want, rtol=1e-4, atol=1e-6)
    off = ew.weights[:128].clone()
    off[:, :, kh // 2, kw // 2] = 0
    assert off.abs().max() == 0
    assert isinstance(circuits.Connection, type)


@pytest.mark.parametrize(("build", "source", "target"), [
    ("resnet18", "layer1", "layer2"),               # a skip with a strided 1x1 projection
    ("mobilenet_v2", "features.3", "features.5"),   # ReLU6, batch norms, depthwise convs
])
def test_torchvision_cnns_match_their_linear_part(build, source, target):
    """On torchvision CNNs (random weights): the expanded weights predict how the target unit
    of the linearized network moves when the source's activation in the window moves."""
    import torchvision

    from featviz.core.hooks import LayerTap
    from featviz.methods._linear import Linearized
    from featviz.methods.circuits.expanded import _forward

    torch.manual_seed(0)
    net = _seeded(getattr(torchvision.models, build)(weights=None))
    ew = expanded_weights(net, source, target, size=96)
    top, left, bottom, right = ew.window
    image = torch.zeros(1, 3, 96, 96)
    with torch.no_grad():
        with LayerTap(net, [source]) as tap:
            base = tap(image)[source]
        delta = torch.zeros_like(base)
        delta[:, :, top:bottom, left:right] = torch.randn(1, base.shape[1], bottom - top,
                                                          right - left)
        y, x = ew.position
        moved = [_forward(net, source, target, image, base + d, Linearized())[0, :, y, x]
                 for d in (delta, torch.zeros_like(delta))]
    predicted = torch.einsum("tsij,sij->t", ew.weights, delta[0, :, top:bottom, left:right])
    torch.testing.assert_close(moved[0] - moved[1], predicted, rtol=1e-3, atol=1e-4)
    assert hook_free(net)
