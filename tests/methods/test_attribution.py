"""Attribution to hidden layers (featviz.attribution): gradient x activation against hand and
split-model computations, integrated gradients' completeness (tiny models and the real
InceptionV1), the groupings, layer-to-layer attribution, restoration and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import IMAGES, hook_free, make_tiny
from torch import nn

import featviz
from featviz import objectives as obj
from featviz.attribution import Attribution, attribute, attribute_between, group_objective
from featviz.errors import ChannelError, FeatvizError, MismatchError, UnknownNameError
from featviz.hooks import LayerTap, frozen, on_output


def _images(n: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


class VectorNet(nn.Module):
    """conv -> pool -> fc1 -> ReLU -> fc2: ``fc1`` is a non-spatial [B, 6] layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(8, 6)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.pool(F.relu(self.conv(x))).flatten(1))))


class SmoothNet(nn.Module):
    """conv -> softplus -> conv -> tanh -> pool -> fc: smooth after ``conv1``, so the midpoint
    rule's error falls as 1/steps^2."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():  # gains that make the path bend and the logit move
            self.conv2.weight.mul_(3)
            self.fc.weight.mul_(20)

    def forward(self, x):
        x = torch.tanh(self.conv2(F.softplus(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _tail(model, a: torch.Tensor) -> torch.Tensor:
    """TinyNet's logits from its ``conv2`` output, written out by hand (the split model)."""
    net = model.net
    x = net.act3(net.conv3(F.relu(a)).clone())
    return net.fc(torch.flatten(net.pool(x), 1))


def _conv2(model, images):
    with frozen(model), LayerTap(model, ["conv2"]) as tap, torch.no_grad():
        return tap(images)["conv2"]


def test_gradient_x_activation_equals_the_split_model(tiny):
    images = _images()
    att = attribute(tiny, images, "conv2", 3, method="gradient")
    a = _conv2(tiny, images).requires_grad_(True)
    with frozen(tiny):
        logits = _tail(tiny, a)
        (grad,) = torch.autograd.grad(logits[:, 3].sum(), a)
    assert torch.allclose(att.activations, a.detach())
    assert torch.allclose(att.gradients, grad, atol=1e-6)
    assert torch.allclose(att.values, grad * a.detach(), atol=1e-6)
    assert torch.allclose(att.output, logits[:, 3].detach(), atol=1e-5)
    assert att.baseline_output is None and att.steps == 1 and att.method == "gradient"
    assert att.values.abs().sum() > 0


def test_gradient_x_activation_by_hand_on_a_vector_layer():
    torch.manual_seed(0)
    model = featviz.models.wrap(VectorNet(), input_size=16, name="vector")
    images = _images(3, 16)
    att = attribute(model, images, "fc1", 2, method="gradient")
    with frozen(model), LayerTap(model, ["fc1"]) as tap, torch.no_grad():
        h = tap(images)["fc1"]
    # logit 2 = w2[2] . relu(h) + b: its gradient is w2[2] where h > 0, else 0
    grad = model.net.fc2.weight[2].detach() * (h > 0)
    assert att.values.shape == (3, 6)
    assert torch.allclose(att.gradients, grad)
    assert torch.allclose(att.values, grad * h)
    assert torch.allclose(att.by_channel(), att.values)
    with pytest.raises(FeatvizError, match="no positions"):
        att.by_position()
    # relu(alpha h) = alpha relu(h): the path is linear, integrated gradients exact
    ig = attribute(model, images, "fc1", 2, steps=4)
    assert torch.allclose(ig.total(), ig.output - ig.baseline_output, atol=1e-5)


def test_integrated_gradients_completeness_on_a_tiny_model():
    torch.manual_seed(0)
    model = featviz.models.wrap(SmoothNet(), input_size=32, name="smooth")
    images = _images(2)
    coarse = attribute(model, images, "conv1", 1, steps=4)
    fine = attribute(model, images, "conv1", 1, steps=32)
    change = fine.output - fine.baseline_output
    assert (change.abs() > 1e-2).all()  # the layer matters to the logit
    assert (fine.completeness_gap() < 1e-3).all()
    assert (fine.completeness_gap() < coarse.completeness_gap()).all()
    with torch.no_grad():
        logits = model(images)[:, 1]
    assert torch.allclose(fine.output, logits, atol=1e-5)


def test_baseline_output_is_the_target_with_the_layer_at_the_baseline(tiny):
    images = _images()
    baseline = torch.full((16, 1, 1), 0.3)
    att = attribute(tiny, images, "conv2", 4, steps=48, baseline=baseline)
    with frozen(tiny), torch.no_grad():
        expected = _tail(tiny, torch.full_like(att.activations, 0.3))[:, 4]
    assert torch.allclose(att.baseline_output, expected, atol=1e-5)
    assert torch.allclose(att.values, att.gradients * (att.activations - 0.3))
    assert (att.completeness_gap() < 0.05).all()


def test_path_chunks_and_images_do_not_change_the_result(tiny):
    images = _images(3)
    whole = attribute(tiny, images, "conv2", 0, steps=8, batch_size=64)
    chunked = attribute(tiny, images, "conv2", 0, steps=8, batch_size=3)
    alone = attribute(tiny, images[1:2], "conv2", 0, steps=8)
    assert torch.allclose(whole.values, chunked.values, atol=1e-6)
    assert torch.allclose(whole.values[1:2], alone.values, atol=1e-6)
    by_string = attribute(tiny, images, "conv2", "logit:0", steps=8)
    assert torch.allclose(whole.values, by_string.values)


def test_sums_and_groupings(tiny):
    images = _images()
    att = attribute(tiny, images, "conv2", 3, steps=8)
    b, c, h, w = att.values.shape
    assert att.by_position().shape == (b, h, w) and att.by_channel().shape == (b, c)
    assert torch.allclose(att.by_position().sum(dim=(1, 2)), att.total(), atol=1e-5)
    assert torch.allclose(att.by_channel().sum(dim=1), att.total(), atol=1e-5)
    # one group per channel whose map is that channel's activation: exactly by_channel
    eye = torch.eye(c)
    assert torch.allclose(att.to_directions(att.activations, eye), att.by_channel(), atol=1e-6)
    # maps of ones: the gradient summed over positions
    assert torch.allclose(att.to_directions(torch.ones(c, h, w), eye),
                          att.gradients.sum(dim=(2, 3)), atol=1e-6)
    # any maps and directions, against the formula written out
    gen = torch.Generator().manual_seed(0)
    maps, dirs = torch.rand(3, h, w, generator=gen), torch.rand(3, c, generator=gen)
    by_hand = (att.gradients[:, None] * dirs[None, :, :, None, None]
               * maps[None, :, None]).sum(dim=(2, 3, 4))
    assert torch.allclose(att.to_directions(maps, dirs), by_hand, atol=1e-5)
    top = att.top_channels(2)
    assert torch.equal(top.indices[:, 0], att.by_channel().argmax(dim=1))
    with pytest.raises(ChannelError, match="1 to 16"):
        att.top_channels(17)
    with pytest.raises(MismatchError, match=r"\[k, 16\]"):
        att.to_directions(maps, torch.rand(3, 5))


def test_target_may_be_a_later_layer_or_the_layer_itself(tiny):
    images = _images()
    later = attribute(tiny, images, "conv2", obj.channel("conv3", 5), steps=16)
    assert (later.output != later.baseline_output).all()
    same = attribute(tiny, images, "conv2", "channel:conv2:7", method="gradient")
    # the mean of channel 7: gradient 1/(H W) on that channel, 0 elsewhere
    h, w = same.values.shape[-2:]
    expected = torch.zeros_like(same.gradients)
    expected[:, 7] = 1 / (h * w)
    assert torch.allclose(same.gradients, expected)


def test_model_restored_and_hooks_gone_after_an_error_in_the_target():
    model = make_tiny()
    model.train()
    model.net.fc.weight.requires_grad_(True)
    model.net.conv1.weight.requires_grad_(False)
    calls = []

    def fails_later(acts):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("boom inside the target")
        return acts[featviz.hooks.OUTPUT][:, 0]

    target = obj.Objective(fails_later, [featviz.hooks.OUTPUT], "fails_later")
    with pytest.raises(RuntimeError, match="boom"):
        attribute(model, _images(), "conv2", target, steps=8, batch_size=2)
    assert len(calls) > 3  # it failed inside the path, not before
    assert hook_free(model)
    assert all(m.training for m in model.modules())
    assert model.net.fc.weight.requires_grad and not model.net.conv1.weight.requires_grad
    assert model.net.fc.weight.grad is None  # no gradient w.r.t. parameters


def test_errors_name_the_bad_input(tiny):
    images = _images(1)
    with pytest.raises(UnknownNameError, match="'conv2'"):
        attribute(tiny, images, "conv22", 0)
    with pytest.raises(ValueError, match="steps"):
        attribute(tiny, images, "conv2", 0, steps=0)
    with pytest.raises(ValueError, match="gradient, integrated"):
        attribute(tiny, images, "conv2", 0, method="smoothgrad")
    with pytest.raises(FeatvizError, match="does not depend on layer 'conv3'.*conv1"):
        attribute(tiny, images, "conv3", obj.channel("conv1", 0))
    with pytest.raises(ChannelError, match="class 10 is out of range"):
        attribute(tiny, images, "conv2", 10)
    with pytest.raises(MismatchError, match=r"baseline of shape \[5\]"):
        attribute(tiny, images, "conv2", 0, baseline=torch.zeros(5))
    with pytest.raises(ValueError, match="baseline applies"):
        attribute(tiny, images, "conv2", 0, method="gradient", baseline=0.0)
    with pytest.raises(FeatvizError, match="batch="):
        attribute(tiny, images, "conv2", obj.logit(0, batch=0))
    with pytest.raises(FeatvizError, match="completeness"):
        attribute(tiny, images, "conv2", 0, method="gradient").completeness_gap()
    assert hook_free(tiny)


def _group_values(model, images, layer, directions, maps=None, zero=None):
    """Each target group's value [B, k], with layer ``zero`` zeroed where given."""
    hooks = on_output(model, [zero], lambda names, out: torch.zeros_like(out)) if zero else None
    with frozen(model), torch.no_grad(), LayerTap(model, [layer]) as tap:
        if hooks is not None:
            with hooks:
                acts = tap(images)
        else:
            acts = tap(images)
    return torch.stack([group_objective(layer, d, None if maps is None else maps[j])(acts)
                        for j, d in enumerate(directions)], dim=1)


def test_attribute_between_layers(tiny):
    images = _images(2)
    gen = torch.Generator().manual_seed(3)
    target_dirs = torch.rand(2, 16, generator=gen)
    target_maps = torch.rand(2, 16, 16, generator=gen)
    by_pos = attribute_between(tiny, images, "conv2", "conv3", target_dirs,
                               target_maps=target_maps, steps=4)
    assert by_pos.shape == (2, 2, 16, 16)
    # conv3 (before its ReLU6) of relu(alpha a) is linear in alpha: completeness is exact
    change = (_group_values(tiny, images, "conv3", target_dirs, target_maps)
              - _group_values(tiny, images, "conv3", target_dirs, target_maps, zero="conv2"))
    assert change.abs().min() > 1e-3
    assert torch.allclose(by_pos.sum(dim=(2, 3)), change, rtol=1e-4, atol=1e-4)
    # source groups: one per channel, the maps being the channels' activations (exact factors)
    acts = _conv2(tiny, images)
    by_group = attribute_between(tiny, images, "conv2", "conv3", target_dirs, acts,
                                 torch.eye(16), target_maps=target_maps, steps=4)
    assert by_group.shape == (2, 2, 16)
    assert torch.allclose(by_group.sum(dim=2), change, rtol=1e-4, atol=1e-4)
    # no target maps: each group summed over all positions
    whole = attribute_between(tiny, images, "conv2", "conv3", target_dirs, method="gradient")
    single = attribute(tiny, images, "conv2", group_objective("conv3", target_dirs[1]),
                       method="gradient")
    assert torch.allclose(whole[:, 1], single.by_position(), atol=1e-6)
    assert hook_free(tiny)


def test_attribute_between_errors(tiny):
    images = _images(1)
    with pytest.raises(ValueError, match="source_directions"):
        attribute_between(tiny, images, "conv2", "conv3", torch.rand(2, 16),
                          source_maps=torch.rand(2, 16, 16))
    with pytest.raises(MismatchError, match="16 channels"):
        attribute_between(tiny, images, "conv2", "conv3", torch.rand(2, 7), method="gradient")


def test_attribution_dataclass_is_exported():
    assert featviz.attribution.Attribution is Attribution
    assert featviz.attribution is featviz.methods.attribution


def test_integrated_gradients_completeness_on_inceptionv1(inceptionv1):
    path = IMAGES / "pets.jpg"
    if not path.is_file():
        pytest.skip(f"photo not found at {path}")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        image = featviz.images.load(path, 224)
        with torch.no_grad():
            top = int(inceptionv1(image).argmax())
        att = attribute(inceptionv1, image, "mixed4d", top, steps=32)
    finally:
        torch.set_num_threads(before)
    assert att.values.shape == (1, 528, 14, 14)
    assert float(att.output - att.baseline_output) > 1
    assert float(att.completeness_gap()[0]) < 0.01
    assert hook_free(inceptionv1)
