"""Projections follow the rules they claim; top-k and occlusion find what excites a channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import hook_free, make_tiny
from PIL import Image
from torch import nn

import featviz
from featviz import deconv
from featviz.errors import ChannelError, FeatvizError


class ConvReluConv(nn.Module):
    """conv -> ReLU (functional or module) -> [max-pool] -> conv, by hand-computable rules."""

    def __init__(self, functional: bool, pool: bool = False):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=True)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.conv2 = nn.Conv2d(4, 2, 3, padding=1, bias=False)
        self.functional = functional

    def forward(self, x):
        a = self.conv1(x)
        a = F.relu(a) if self.functional else self.relu(a)
        return self.conv2(self.pool(a))


def _hand(net: ConvReluConv, x: torch.Tensor, y: int, xx: int, mode: str) -> torch.Tensor:
    """Run the backward pass of the rule by hand: transposed convolutions and ReLU rules."""
    a1 = net.conv1(x)
    pooled, idx = F.max_pool2d(F.relu(a1), 2, return_indices=True) if isinstance(
        net.pool, nn.MaxPool2d) else (F.relu(a1), None)
    s = torch.zeros(1, 2, *pooled.shape[2:])
    s[0, 1, y, xx] = 1.0
    g = F.conv_transpose2d(s, net.conv2.weight, padding=1)
    if idx is not None:  # the switches: each pooled value came from one position
        g = F.max_unpool2d(g, idx, 2, output_size=a1.shape[2:])
    if mode == "deconvnet":
        g = g.clamp_min(0)
    elif mode == "guided":
        g = g.clamp_min(0) * (a1 > 0)
    return F.conv_transpose2d(g, net.conv1.weight, padding=1)


@pytest.mark.parametrize("functional", [False, True])
@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("mode", ["deconvnet", "guided"])
def test_rules_match_hand_computation(functional, pool, mode):
    net = ConvReluConv(functional, pool)
    model = featviz.models.wrap(net)
    x = torch.rand(1, 3, 12, 12)
    proj = deconv.project(model, x, "conv2", 1, position=(2, 3), mode=mode)
    with torch.no_grad():
        expected = _hand(net, x, 2, 3, mode)
    torch.testing.assert_close(proj.pixels, expected, atol=1e-5, rtol=1e-4)
    assert hook_free(model)


def test_functional_relu_gets_the_deconvnet_rule_not_the_gradient():
    model = featviz.models.wrap(ConvReluConv(functional=True))
    x = torch.rand(1, 3, 12, 12)
    dec = deconv.project(model, x, "conv2", 0, position=(5, 5), mode="deconvnet").pixels
    grad = deconv.project(model, x, "conv2", 0, position=(5, 5), mode="gradient").pixels
    assert (dec - grad).abs().max() > 1e-3


def test_gradient_mode_is_autograd():
    model = make_tiny()
    x = torch.rand(2, 3, 32, 32)
    proj = deconv.project(model, x, "conv3", 4, position=[(3, 4), (7, 1)], mode="gradient")
    for b, (y, xx) in enumerate([(3, 4), (7, 1)]):
        xb = x[b:b + 1].clone().requires_grad_(True)
        captured = {}
        h = model.net.conv3.register_forward_hook(
            lambda m, i, o, store=captured: store.update(a=o.clone()))
        model(xb)
        h.remove()
        (g,) = torch.autograd.grad(captured["a"][0, 4, y, xx], xb)
        torch.testing.assert_close(proj.pixels[b:b + 1], g)


def test_default_position_is_strongest_and_model_restored():
    model = make_tiny()
    model.train()
    x = torch.rand(1, 3, 32, 32)
    proj = deconv.project(model, x, "conv2", 3)
    with torch.no_grad():
        act = F.relu(model.net.conv2(model.net.relu(model.net.conv1(x))))[0, 3]
    assert proj.positions[0] == divmod(int(act.argmax()), act.shape[1])
    assert model.training and hook_free(model)
    img = proj.image()
    assert img.shape == (1, 3, 32, 32) and img.min() >= 0 and img.max() <= 1


def test_rules_removed_after_an_error():
    model = make_tiny()
    with pytest.raises(ChannelError, match="valid: 0-15"):
        deconv.project(model, torch.rand(1, 3, 32, 32), "conv3", 16)
    assert hook_free(model)
    x = torch.randn(5, requires_grad=True)
    F.relu(x).sum().backward()  # plain gradient again: the rule is gone
    torch.testing.assert_close(x.grad, (x > 0).float())


def test_bad_inputs():
    model = make_tiny()
    with pytest.raises(FeatvizError, match="no spatial maps"):
        deconv.project(model, torch.rand(1, 3, 32, 32), "fc", 0)
    with pytest.raises(ValueError, match="deconvnet, guided, gradient"):
        deconv.project(model, torch.rand(1, 3, 32, 32), "conv3", 0, mode="lrp")
    with pytest.raises(ChannelError, match="valid: y 0-15, x 0-15"):
        deconv.project(model, torch.rand(1, 3, 32, 32), "conv3", 0, position=(16, 0))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        deconv.project(model, torch.rand(1, 1, 32, 32), "conv3", 0)


def _brute_force(model, imgs, layer, channel):
    with torch.no_grad():
        captured = {}
        module = featviz.hooks.resolve_layer(model, layer)
        h = module.register_forward_hook(lambda m, i, o: captured.update(a=o.clone()))
        model(imgs)
        h.remove()
    return captured["a"][:, channel].flatten(1).max(dim=1).values


def test_top_k_matches_brute_force_and_streams():
    model = make_tiny()
    torch.manual_seed(0)
    imgs = [torch.rand(3, 32, 32) for _ in range(23)]
    top = deconv.top_k(model, (im for im in imgs), "conv3", [1, 5], k=4, batch_size=5)
    for c in (1, 5):
        best = _brute_force(model, torch.stack(imgs), "conv3", c).topk(4)
        got = torch.tensor([e.value for e in top.entries[c]])
        torch.testing.assert_close(got, best.values, atol=1e-5, rtol=0)
        assert [e.source for e in top.entries[c]] == [f"#{i}" for i in best.indices.tolist()]
        for e in top.entries[c]:
            assert e.patch.shape == e.projection.shape == (3, *top.field.size)
    assert hook_free(model)
    assert top.grid().size[0] > 0


def test_top_k_folder_with_odd_images(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 50)) * 255).astype(np.uint8), "L").save(tmp_path / "g.png")
    rgba = (rng.random((40, 40, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray((rng.random((36, 36)) * 65535).astype(np.uint16)).save(tmp_path / "w.png")
    Image.fromarray((rng.random((30, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / "c.jpg")
    top = deconv.top_k(make_tiny(), tmp_path, "conv2", [0], k=9, size=32)
    assert len(top.entries[0]) == 4  # fewer images than k: all of them
    assert sorted(e.source.rsplit("/", 1)[-1] for e in top.entries[0]) == [
        "a.png", "c.jpg", "g.png", "w.png"]
    out = top.save(tmp_path / "out" / "grid.png")
    assert Image.open(out).size[0] > 100


def test_image_source_errors(tmp_path):
    with pytest.raises(FeatvizError, match="no image files"):
        deconv.top_k(make_tiny(), tmp_path, "conv2", [0])
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(FeatvizError, match="bad.png"):
        deconv.top_k(make_tiny(), tmp_path, "conv2", [0])
    with pytest.raises(FeatvizError, match="not found"):
        deconv.top_k(make_tiny(), tmp_path / "missing", "conv2", [0])


def test_image_conversions(tmp_path):
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "w16.png")
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(tmp_path / "clear.png")
    Image.fromarray(np.full((4, 4), 128, np.uint8), "L").save(tmp_path / "grey.png")
    assert featviz.images.load(tmp_path / "w16.png").min() == 1.0  # full scale, not clipped
    assert featviz.images.load(tmp_path / "clear.png").min() == 1.0  # transparent: white
    grey = featviz.images.load(tmp_path / "grey.png")
    assert grey.shape == (1, 3, 4, 4) and torch.allclose(grey, torch.full_like(grey, 128 / 255))


def test_occlusion_drops_only_inside_the_field():
    model = make_tiny()
    img = torch.rand(1, 3, 32, 32)
    occ = deconv.occlusion(model, img, "conv1", 2, position=(16, 16), patch=4, stride=4)
    assert occ.drops.shape == (8, 8)
    # conv1 is 3x3: the unit at (16, 16) sees pixels 15..17, covered by squares 3 and 4
    far = occ.drops.clone()
    far[3:5, 3:5] = 0
    # outside: zero up to float rounding (the base value comes from a batch of one, the
    # occluded ones from larger batches, which may take other kernels)
    assert far.abs().max() < 1e-5 and occ.drops[3:5, 3:5].abs().max() > 1e-3
    assert occ.heatmap().shape == (32, 32)


def test_occlusion_of_a_class(tmp_path):
    occ = deconv.occlusion(make_tiny(), torch.rand(1, 3, 32, 32), target_class=3, patch=8,
                           stride=8)
    assert occ.drops.shape == (4, 4) and 0 < occ.base < 1
    assert occ.save(tmp_path / "o.png").exists()
    with pytest.raises(ValueError, match="either"):
        deconv.occlusion(make_tiny(), torch.rand(1, 3, 32, 32), "conv1", 0, target_class=3)
