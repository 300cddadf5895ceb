"""InceptionV1 (BVLC GoogLeNet) as ``featviz.models.load("inceptionv1")`` builds it (issue 19):
the paper's architecture in torchvision's parameter layout, lucid's layer names, Caffe's
preprocessing, class names; and the real weights where ``../shared/models`` holds them."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import IMAGES, INCEPTION_V1
from torch import nn

import featviz
from featviz import objectives as obj
from featviz.core import truncate
from featviz.core.hooks import LayerTap
from featviz.errors import UnknownNameError, WeightsError
from featviz.models import inception_v1

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def random_v1():
    torch.manual_seed(0)
    return featviz.models.load("inceptionv1", weights=None)


def test_the_parameters_are_torchvisions_and_the_architecture_the_papers(random_v1):
    theirs = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    ours = random_v1.net
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items() if "branch3.1" not in k} | \
        {k: v.shape for k, v in ours.state_dict().items() if "branch3.1" in k}
    assert ours.inception4a.branch3[1].conv.kernel_size == (5, 5)  # torchvision's is 3x3
    assert ours.maxpool4.kernel_size == 3  # torchvision's is 2
    assert isinstance(ours.maxpool1[1], nn.LocalResponseNorm)  # after the first pool
    assert isinstance(ours.maxpool2[0], nn.LocalResponseNorm)  # before the second
    assert random_v1.featviz_fixed_size is None and random_v1.input_size == 224


@pytest.mark.parametrize("channels", [64, 192])
def test_local_response_norm_is_pytorchs_arithmetic(channels):
    """The banded-convolution LRN (fast on the CPU) gives PyTorch's values and gradients, to
    float64 rounding, for the channel count it is built for and any other."""
    ours = inception_v1.LocalResponseNorm(channels, 5, alpha=1e-4, beta=0.75, k=1.0).double()
    theirs = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
    for c in (channels, 7):  # 7: another channel count takes PyTorch's own path
        torch.manual_seed(c)
        x = (100 * torch.randn(2, c, 9, 11, dtype=torch.float64)).requires_grad_(True)
        a, b = ours(x), theirs(x)
        assert not torch.allclose(a, x)  # the normalization does something at this scale
        assert torch.allclose(a, b, rtol=1e-12, atol=0)
        grad_a, = torch.autograd.grad(a.square().sum(), x)
        grad_b, = torch.autograd.grad(b.square().sum(), x)
        assert torch.allclose(grad_a, grad_b, rtol=1e-12, atol=1e-12)


def _plain_norm(unit: inception_v1.CaffeBias) -> nn.BatchNorm2d:
    """PyTorch's batch norm with ``unit``'s parameters and statistics."""
    plain = nn.BatchNorm2d(unit.num_features, eps=unit.eps)
    plain.load_state_dict(unit.state_dict())
    return plain.eval()


def _through(norm: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``norm``'s output, the gradient to ``x`` of a weighted sum, and the output's grad_fn."""
    x = x.detach().requires_grad_(True)
    out = norm(x)
    weights = torch.linspace(-1, 2, out.numel()).view_as(out)
    grad, = torch.autograd.grad((out * weights).sum(), x)
    return out.detach(), grad, type(out.grad_fn).__name__


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_caffe_bias_adds_the_bias_with_the_batch_norms_values_to_the_bit(random_v1, layout):
    """Each ``bn`` holds a Caffe bias (weight 1, mean 0, variance 1 - eps): it adds the bias,
    which gives the batch norm's values and gradient to the bit, without the batch norm's
    backward pass; a fresh model is such an identity too."""
    units = [m for m in random_v1.modules() if isinstance(m, inception_v1.CaffeBias)]
    assert len(units) == 57
    torch.manual_seed(1)
    for unit in (units[0], units[-1]):
        unit.eval().requires_grad_(False)
        with torch.no_grad():
            unit.bias.copy_(torch.randn(unit.num_features))
        assert torch.equal(unit.running_var, torch.full_like(unit.running_var, 1 - unit.eps))
        x = (30 * torch.randn(2, unit.num_features, 5, 7)).contiguous(memory_format=layout)
        ours, grad, fn = _through(unit, x)
        theirs, their_grad, their_fn = _through(_plain_norm(unit), x)
        assert fn == "AddBackward0" and their_fn.startswith("NativeBatchNormBackward")
        assert torch.equal(ours, theirs) and torch.equal(grad, their_grad)
        assert not torch.equal(ours, x)  # the bias is there


def test_caffe_bias_runs_the_batch_norm_when_it_is_not_the_identity(random_v1):
    """Other weights (changed in place), training mode, a weight that takes gradients or
    another dtype: the batch norm runs, with its own values."""
    unit = inception_v1.CaffeBias(6, eps=0.001).eval().requires_grad_(False)
    x = torch.randn(2, 6, 4, 4)
    assert _through(unit, x)[2] == "AddBackward0"
    with torch.no_grad():
        unit.weight.mul_(2)  # in place: the same tensor, a new version
    ours, grad, fn = _through(unit, x)
    assert fn.startswith("NativeBatchNormBackward")
    assert torch.allclose(ours, 2 * x, atol=1e-5) and torch.allclose(grad, _through(
        _plain_norm(unit), x)[1])
    with torch.no_grad():
        unit.weight.fill_(1)
    assert _through(unit, x)[2] == "AddBackward0"  # the identity again
    unit.weight.data[3] = 0  # an ablation through .data: no version counter sees it
    ours, _, fn = _through(unit, x)
    assert fn.startswith("NativeBatchNormBackward") and not ours[:, 3].any()
    unit.weight.data[3] = 1
    assert _through(unit, x)[2] == "AddBackward0"
    unit.weight.requires_grad_(True)
    out = unit(x)
    out.sum().backward()
    assert unit.weight.grad is not None  # the batch norm's gradient reaches its weight
    unit.weight.requires_grad_(False)
    assert _through(unit, x)[2] == "AddBackward0"
    # bf16 activations (autocast) with float32 parameters: the batch norm's mixed-type kernel
    assert _through(unit, x.bfloat16())[2].startswith("NativeBatchNormBackward")
    # judged in the dtype it runs in: float32's 1 - eps plus eps is not 1 in float64
    assert _through(unit.double(), x.double())[2].startswith("NativeBatchNormBackward")
    with pytest.raises(ValueError, match="expected 4D input"):
        unit.float()(x[0])  # as BatchNorm2d says it
    unit.train()
    out = unit(x)
    assert torch.allclose(out.mean((0, 2, 3)), unit.bias, atol=1e-5)  # batch statistics


def _logits_and_grad(model: nn.Module, x: torch.Tensor, fold: bool
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits on ``x`` and the gradient of a weighted sum of them to ``x``, with
    every unit folding its bias into its convolution or not."""
    units = [m for m in model.modules() if isinstance(m, inception_v1.ConvUnit)]
    for unit in units:
        unit.fold_bias = fold
    try:
        x = x.detach().requires_grad_(True)
        out = model(x)
        grad, = torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[1])).sum(), x)
    finally:
        for unit in units:
            del unit.fold_bias  # back to the class's
    return out.detach(), grad


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_units_fold_the_bias_into_the_convolution(layout):
    """A unit nobody watches runs one convolution with the bias (the stem's input gradient by
    phases): the logits and the gradient to the image are those of the convolution then the
    bias add (up to float rounding: some of PyTorch's convolution kernels start their sum from
    the bias), and the unit's autograd graph has no add."""
    torch.manual_seed(3)
    model = featviz.models.load("inceptionv1", weights=None).eval().requires_grad_(False)
    with torch.no_grad():
        for unit in model.modules():
            if isinstance(unit, inception_v1.CaffeBias):
                unit.bias.copy_(torch.randn(unit.num_features))
    model = model.to(memory_format=layout)
    x = torch.rand(1, 3, 96, 96).contiguous(memory_format=layout)
    folded, unfolded = _logits_and_grad(model, x, True), _logits_and_grad(model, x, False)
    for a, b in zip(folded, unfolded, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
    stem = model.net.conv1(x.requires_grad_(True))  # its input gradient by phases
    assert type(stem.grad_fn.next_functions[0][0]).__name__ == "_StemConvBackward"
    unit = model.net.conv2(stem)
    assert type(unit.grad_fn.next_functions[0][0]).__name__ == "ConvolutionBackward0"


def test_a_watched_unit_runs_module_by_module(random_v1):
    """A hook on a unit's batch norm (a tap on ``conv2d0_pre_relu``) or convolution sees it
    called; the traced graph keeps such a layer too, and its mark is gone afterwards; an
    ablation through ``.data`` reaches the folded convolution."""
    x = torch.rand(1, 3, 64, 64)
    with LayerTap(random_v1, ["conv2d0_pre_relu", "conv2d0"]) as tap:
        acts = tap(x)
    assert (acts["conv2d0_pre_relu"] < 0).any()  # before the ReLU
    assert torch.equal(acts["conv2d0"], acts["conv2d0_pre_relu"].relu())
    seen = []
    handle = random_v1.net.conv2.conv.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        random_v1(x)
    finally:
        handle.remove()
    assert len(seen) == 1
    made = truncate.truncate(random_v1, ["conv2d0_pre_relu"])
    assert torch.equal(made(x)["conv2d0_pre_relu"], acts["conv2d0_pre_relu"])
    bn = random_v1.net.conv1.bn
    assert not bn._forward_hooks and not random_v1.net.conv1.conv._forward_hooks
    bn.weight.data[5] = 0  # an ablation: the batch norm runs, channel 5 is its bias alone
    try:
        out = random_v1.net.conv1(255 * x)
    finally:
        bn.weight.data[5] = 1
    assert torch.equal(out[:, 5], bn.bias[5].relu().expand_as(out[:, 5]))
    assert not torch.equal(random_v1.net.conv1(255 * x)[:, 5], out[:, 5])


def test_caffe_preprocessing_is_built_in(random_v1):
    """The wrapper feeds the network ``255 * x - (123, 117, 104)``, as Caffe did."""
    probe = torch.rand(2, 3, 16, 16)
    mean = torch.tensor(inception_v1.CAFFE_MEAN_RGB).view(1, 3, 1, 1)
    assert torch.allclose((probe - random_v1.mean) / random_v1.std, 255 * probe - mean,
                          atol=1e-3)


def test_lucid_names_resolve_with_pre_relu_sums(random_v1):
    names = ["conv2d0", "conv2d0_pre_relu", "localresponsenorm0", "mixed3a", "mixed4a",
             "mixed4a_pre_relu", "mixed5b", "maxpool10", "softmax2_pre_activation"]
    with LayerTap(random_v1, names) as tap, torch.no_grad():
        acts = tap(torch.rand(1, 3, 224, 224))
    assert acts["mixed4a"].shape == (1, 512, 14, 14)
    assert acts["mixed3a"].shape == (1, 256, 28, 28)
    assert acts["mixed5b"].shape == (1, 1024, 7, 7)
    assert acts["softmax2_pre_activation"].shape == (1, 1000)
    # the block's output is the ReLU of its pre-ReLU sum, which has negative values
    assert torch.equal(acts["mixed4a"], acts["mixed4a_pre_relu"].clamp(min=0))
    assert (acts["mixed4a_pre_relu"] < 0).any()
    assert torch.equal(acts["conv2d0"], acts["conv2d0_pre_relu"].clamp(min=0))
    res = featviz.render(random_v1, obj.channel("mixed4a_pre_relu", 7), steps=8, size=64,
                         seed=0, record_every=4, progress=False)
    assert res.history[-1, 0] > res.history[0, 0]


def test_class_names_come_with_the_model(random_v1):
    names = featviz.core.model_info.class_names(random_v1)
    assert len(names) == 1000 and names[934] == "hotdog"
    assert featviz.models.class_index(random_v1, "HotDog") == 934
    with pytest.raises(UnknownNameError, match="closest: 'hotdog'"):
        featviz.models.class_index(random_v1, "hotdgo")
    res = featviz.render(random_v1, obj.logit(934), steps=1, size=32, progress=False)
    assert res.labels == ["logit(934) hotdog"]


def test_the_weights_are_asked_for_by_path(monkeypatch, tmp_path):
    from featviz.models import bvlc_googlenet, download

    # no download from here: a closed local port and a cache folder of the test's own
    monkeypatch.setattr(bvlc_googlenet, "CAFFEMODEL_URL",
                        "http://127.0.0.1:9/bvlc_googlenet.caffemodel")
    monkeypatch.delenv("FEATVIZ_INCEPTIONV1_URL", raising=False)
    monkeypatch.setattr(download.platformdirs, "user_cache_dir",
                        lambda name: str(tmp_path / "user" / name))
    monkeypatch.delenv("FEATVIZ_MODELS", raising=False)
    with pytest.raises(WeightsError, match="FEATVIZ_MODELS is unset.*googlenet_bvlc_imagenet"):
        featviz.models.load("inceptionv1")
    monkeypatch.setenv("FEATVIZ_MODELS", str(tmp_path))
    with pytest.raises(WeightsError, match="googlenet_bvlc_imagenet.pth does not exist"):
        featviz.models.load("inceptionv1")
    with pytest.raises(WeightsError, match="not 'IMAGENET1K_V1'"):
        featviz.models.load("inceptionv1", weights="IMAGENET1K_V1")
    torch.save(torchvision.models.googlenet(weights=None, aux_logits=False,
                                            init_weights=False).state_dict(), tmp_path / "tv.pth")
    with pytest.raises(WeightsError, match="of another shape: inception3a.branch3.1.conv.weight"):
        featviz.models.load("inceptionv1", weights=tmp_path / "tv.pth")  # 3x3, not the paper's


# -- the real weights ---------------------------------------------------------------------
def test_real_weights_load_strictly_and_from_featviz_models(inceptionv1, monkeypatch):
    ours = inceptionv1.net.state_dict()
    theirs = torch.load(INCEPTION_V1, weights_only=True)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    monkeypatch.setenv("FEATVIZ_MODELS", str(INCEPTION_V1.parent))
    again = featviz.models.load("inceptionv1")
    assert torch.equal(again.net.fc.weight, inceptionv1.net.fc.weight)


@pytest.mark.parametrize("photo, wanted", [("hot_dog", "hotdog"), ("bird", "chickadee"),
                                           ("parrot", "macaw")])
def test_a_known_photo_gets_its_class(inceptionv1, photo, wanted):
    img = featviz.images.load(IMAGES / f"{photo}.jpg", size=224, fit="resize")
    (index, name, p), *_ = featviz.featuremaps.top_classes(inceptionv1, img, 5)
    assert name == wanted and p > 0.85


def test_the_command_line_takes_inceptionv1(inceptionv1, capsys, tmp_path):
    assert featviz.cli.main(["maps", str(IMAGES / "hot_dog.jpg"), "--model", "inceptionv1",
                             "--weights", str(INCEPTION_V1), "--device", "cpu", "--layers",
                             "mixed4a", "--out", str(tmp_path / "m.html")]) == 0
    top = capsys.readouterr().out.splitlines()[0]
    assert top.endswith("934  hotdog")  # the top class, named without --labels
