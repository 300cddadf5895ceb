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


def test_a_bfloat16_model_on_the_cpu():
    """The parameterization stays float32, the model's input is cast to bf16, objectives are
    float32, and the model stays bf16."""
    model = make_tiny().to(torch.bfloat16)
    res = featviz.render(model, obj.channel("conv3", [1, 2]), steps=24, size=32, seed=0,
                         progress=False)
    assert res.images.dtype == torch.float32 and res.history.dtype == torch.float32
    assert (res.history[-1] > res.history[0]).all()
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
