"""Models as users bring them (issue 18): ones that take only their own input size, and
half-precision ones."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import hook_free, make_tiny
from torch import nn

import featviz
from featviz import objectives as obj
from featviz import transforms as T
from featviz.errors import FeatvizError


class LinearHead(nn.Module):
    """A CIFAR-style net whose flatten + Linear head takes 32x32 inputs and no other."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 16 * 16, 10)
        with torch.no_grad():  # default init gives a tiny gain; make the image matter
            for conv in (self.conv1, self.conv2):
                conv.weight.mul_(3)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.flatten(1))


def test_fit_crops_a_larger_image_and_stretches_a_smaller_one():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    assert torch.allclose(T.fit(4)(x), x[..., 2:6, 2:6], atol=1e-4)  # the centre
    small = torch.rand(1, 3, 4, 4)
    up = T.fit(8)(small)
    want = torch.nn.functional.interpolate(small, size=8, mode="bilinear", align_corners=False)
    # bilinear inside; the outer half pixel blends with the pipeline's fill, not the edge
    assert up.shape == (1, 3, 8, 8) and torch.allclose(up[..., 1:-1, 1:-1],
                                                       want[..., 1:-1, 1:-1], atol=1e-5)


@pytest.mark.heavy
def test_a_linear_head_net_renders_with_the_default_transforms():
    """The standard transforms give 44 px for a 32 px image; the head takes only 32. A hidden
    layer renders as it is (the taps stop before the head); a logit gets the pipeline fitted
    back to 32 px (lucid's pad-then-crop)."""
    torch.manual_seed(0)
    model = featviz.models.wrap(LinearHead(), input_size=32)
    seen = []
    handle = model.net.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
    try:
        hidden = featviz.render(model, obj.channel("conv2", 3), steps=64, seed=0,
                                record_every=8, progress=False)
        logit = featviz.render(model, obj.logit(4), steps=64, seed=0, record_every=8,
                               progress=False)
    finally:
        handle.remove()
    assert hidden.images.shape == logit.images.shape == (1, 3, 32, 32)
    assert seen[-1] == 32 and 44 in seen  # the logit's steps saw 32 px, the hidden layer 44
    for res in (hidden, logit):  # the later steps are higher than the start
        assert res.history[4:, 0].mean() > res.history[0, 0]
    assert hook_free(model)


@pytest.mark.heavy
def test_a_vision_transformer_renders_a_logit_at_its_own_size():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                               num_heads=2, hidden_dim=32, mlp_dim=64,
                                               num_classes=10)
    torch.nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision starts it at zero
    model = featviz.models.wrap(vit, input_size=32)
    res = featviz.render(model, obj.logit(3), steps=48, seed=0, record_every=8, progress=False)
    assert res.images.shape == (1, 3, 32, 32)
    assert res.history[3:, 0].mean() > res.history[0, 0]


def test_a_declared_fixed_size_fits_the_pipeline_without_a_dry_run():
    model = featviz.models.wrap(LinearHead(), input_size=32, fixed_size=True)
    assert featviz.core.model_info.fixed_input_size(model) == (32, 32)
    res = featviz.render(model, obj.logit(1), size=48, steps=4, seed=0, progress=False)
    assert res.images.shape == (1, 3, 48, 48)  # rendered at 48, shown to the model at 32


def test_a_model_that_takes_no_size_we_can_offer_is_a_clear_error():
    model = featviz.models.wrap(LinearHead(), input_size=24)  # the head wants 32, says 24
    with pytest.raises(FeatvizError, match=r"rejected a 36x36 input .*mat1.*fixed_size=True"):
        featviz.render(model, obj.logit(1), steps=2, progress=False)
    assert hook_free(model)


@pytest.mark.heavy
def test_a_bfloat16_model_on_the_cpu():
    """The parameterization stays float32, the model's input is cast to bf16, objectives are
    float32, and the model stays bf16."""
    model = make_tiny().to(torch.bfloat16)
    res = featviz.render(model, obj.channel("conv3", [1, 2]), steps=24, size=32, seed=0,
                         progress=False)
    assert res.images.dtype == torch.float32 and res.history.dtype == torch.float32
    assert (res.history[-1] > res.history[0]).all()
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


# -- layouts: token sequences and channels-last maps ---------------------------------------
def small_vit() -> nn.Module:
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                               num_heads=2, hidden_dim=32, mlp_dim=64,
                                               num_classes=10)
    return featviz.models.wrap(vit, input_size=32)


VIT_LAYER = "encoder.layers.encoder_layer_1"


def test_a_vit_block_is_a_patch_grid_with_its_class_token_apart():
    from featviz.hooks import LayerTap

    model = small_vit()
    raw = {}
    handle = featviz.hooks.resolve_layer(model, VIT_LAYER).register_forward_hook(
        lambda m, i, o: raw.__setitem__("out", o))  # the last call: the tap's real pass
    x = torch.rand(2, 3, 32, 32)
    with featviz.hooks.frozen(model), LayerTap(model, [VIT_LAYER]) as tap, torch.no_grad():
        acts = tap(x)
    handle.remove()
    grid, cls = acts[VIT_LAYER], acts[featviz.core.layouts.cls_key(VIT_LAYER)]
    assert grid.shape == (2, 32, 4, 4) and cls.shape == (2, 32)
    tokens = raw["out"]  # [B, 1 + 16, C]: token 1 + 4*y + x is grid cell (x, y)
    assert torch.equal(cls, tokens[:, 0])
    assert torch.equal(grid[:, :, 2, 3], tokens[:, 1 + 4 * 2 + 3])


@pytest.mark.parametrize("objective", [
    obj.channel(VIT_LAYER, 5),
    obj.neuron(VIT_LAYER, 5, x=1, y=2),
    obj.class_token(VIT_LAYER, 5),
], ids=["channel", "neuron", "class_token"])
@pytest.mark.heavy
def test_vit_objectives_rise(objective):
    res = featviz.render(small_vit(), objective, steps=48, seed=0, record_every=8,
                         progress=False)
    assert res.history[3:, 0].mean() > res.history[0, 0] + 0.05


class ChannelsLast(nn.Module):
    """A conv stem, then a block that works in [B, H, W, C] as Swin and ConvNeXt blocks do."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.mix = nn.Linear(16, 12)

    def forward(self, x):
        return self.mix(torch.relu(self.stem(x)).permute(0, 2, 3, 1)).mean((1, 2))


@pytest.mark.heavy
def test_a_channels_last_layer_renders_the_channel_asked_for():
    """featviz once read [B, H, W, C] as [B, C, H, W] and maximized a row of the grid: now a
    channel is the mean over the grid of the last axis, and rendering it raises it."""
    torch.manual_seed(0)
    model = featviz.models.wrap(ChannelsLast(), input_size=32)
    out = []
    handle = model.net.mix.register_forward_hook(lambda m, i, o: out.append(o))
    x = torch.rand(2, 3, 32, 32)
    value = featviz.metrics.objective_value(model, obj.channel("mix", 7), x)
    handle.remove()
    raw = out[-1]  # [B, 16, 16, 12]
    assert raw.shape == (2, 16, 16, 12)
    assert torch.allclose(value, raw[..., 7].mean(dim=(1, 2)), atol=1e-6)
    assert not torch.allclose(value, raw[:, 7].mean(dim=(1, 2)), atol=1e-3)  # not row 7
    res = featviz.render(model, obj.channel("mix", 7), steps=64, seed=0, record_every=8,
                         lr=0.2, progress=False)
    assert res.history[-1, 0] > 1.2 * res.history[0, 0] > 0


def test_layouts_that_do_not_fit_are_errors_that_say_how_to_declare():
    model = featviz.models.wrap(ChannelsLast(), input_size=32, layouts={"mix": "tokens+cls"})
    with pytest.raises(FeatvizError, match=r"'mix' is declared 'tokens\+cls' but gives a 4-D"):
        featviz.render(model, obj.channel("mix", 1), steps=1, progress=False)

    class Odd(nn.Module):  # 7 tokens: no grid, not a grid plus a class token
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 8)

        def forward(self, x):
            return self.embed(x.mean((2, 3))[:, None].expand(-1, 7, -1))

    with pytest.raises(FeatvizError, match=r"cannot tell .* 'embed'.*layouts=\{'embed': LAYOUT"):
        featviz.render(featviz.models.wrap(Odd(), input_size=16), obj.channel("embed", 1),
                       steps=1, progress=False)
    declared = featviz.models.wrap(Odd(), input_size=16, layouts={"embed": "tokens"})
    with pytest.raises(FeatvizError, match="7 patch tokens, which fill no grid"):
        featviz.render(declared, obj.channel("embed", 1), steps=1, progress=False)


@pytest.mark.heavy
def test_torchvision_families_declare_their_layouts():
    from featviz.core.hooks import LayerTap

    swin = featviz.models.load("swin_t", weights=None)
    assert swin.featviz_layouts["features.*"] == "nhwc" and swin.featviz_fixed_size is None
    assert featviz.models.load("vit_b_32", weights=None).featviz_fixed_size == 224
    with LayerTap(swin, ["features.5.1"]) as tap, torch.no_grad():
        assert tap(torch.rand(1, 3, 64, 64))["features.5.1"].shape == (1, 384, 4, 4)
