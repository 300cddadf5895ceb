"""InceptionV1 as BVLC trained it (Caffe's ``bvlc_googlenet``, lucid's ``InceptionV1_caffe``):
the network of lucid's and Distill's pictures, built from the facts of Szegedy et al. 2014.

The module paths and parameter names are torchvision's GoogLeNet's, so a state_dict in that
layout loads strictly; four things differ from torchvision's model, as in the paper and the
Caffe model: local response normalization after the first pool and before the second, a 3x3
``maxpool4``, and real 5x5 kernels in each inception block's third branch. Caffe's
convolutions have biases and no batch norm: each ``bn`` holds weight 1, the Caffe bias, mean 0
and variance ``1 - eps``, the identity plus the bias in eval mode. Every block keeps its
pre-ReLU sum addressable (``inception4a.pre_relu``, lucid's ``mixed4a_pre_relu``).
"""

from __future__ import annotations

import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core import stem_conv
from ..core.hooks import hook_count
from . import bvlc_googlenet
from .download import CACHE_ENV
from .imagenet import imagenet_classes
from .registry import register
from .spec import ModelSpec, WeightsSource

#: Caffe's mean pixel, RGB, on the 0-255 scale (BVLC's ``bvlc_googlenet`` preprocessing)
CAFFE_MEAN_RGB = (123.0, 117.0, 104.0)
#: the ``eps`` of each unit's ``bn`` (its variance holds ``1 - eps``, see the module docstring)
CAFFE_BIAS_EPS = 0.001

# (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of the nine blocks (paper, Table 1)
BLOCKS = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}

#: lucid's InceptionV1 layer names -> this model's module paths (post-ReLU, then pre-ReLU)
LUCID_NAMES = {
    "conv2d0": "conv1", "conv2d0_pre_relu": "conv1.bn",
    "maxpool0": "maxpool1.0", "localresponsenorm0": "maxpool1.1",
    "conv2d1": "conv2", "conv2d1_pre_relu": "conv2.bn",
    "conv2d2": "conv3", "conv2d2_pre_relu": "conv3.bn",
    "localresponsenorm1": "maxpool2.0", "maxpool1": "maxpool2.1",
    "maxpool4": "maxpool3", "maxpool10": "maxpool4",
    "avgpool0": "avgpool", "softmax2_pre_activation": "fc",
    **{f"mixed{b[9:]}": b for b in BLOCKS},
    **{f"mixed{b[9:]}_pre_relu": f"{b}.pre_relu" for b in BLOCKS},
}


class ConvUnit(nn.Module):
    """Convolution, its bias held by ``bn`` (see the module docstring), then ReLU unless
    ``relu=False`` (a branch's last unit: its block applies the ReLU after the sum)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = CaffeBias(cout, eps=CAFFE_BIAS_EPS)
        self.relu = nn.ReLU() if relu else nn.Identity()

    #: whether the bias may go into the convolution's own call (see :meth:`forward`)
    fold_bias = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.conv, self.bn
        if (not self.fold_bias or not isinstance(bn, CaffeBias) or bn.training
                or bn.weight is None or bn.running_var is None or conv.padding_mode != "zeros"
                or _watched(conv) or _watched(bn)):
            return self.relu(bn(conv(x)))
        # one convolution with the bias: the batch norm's result (while it is the identity)
        # without a separate pass over the map, forward or backward
        return self.relu(_conv_bias_or_norm(
            x, conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups,
            bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps))


def _watched(module: nn.Module) -> bool:
    """Whether a hook waits on ``module``'s call (a tap, or a layer kept while tracing): then
    it must be called as itself."""
    return bool(hook_count(module) or torch.nn.modules.module._global_forward_hooks
                or torch.nn.modules.module._global_forward_pre_hooks)


class CaffeBias(nn.BatchNorm2d):
    """A batch norm that holds a Caffe convolution's bias (see the module docstring). While it
    is the identity plus the bias, which it checks again whenever its statistics, weight or
    ``eps`` change (in place too), it adds the bias on the CPU: the same values and gradient
    to the bit as the batch norm, whose backward pass alone costs up to a sixth of a render
    step there (``benchmarks/inception_step.py``). Anything else (training mode, other
    weights, a weight or bias that takes gradients, another dtype than its own, another
    device, under ``torch.compile``) runs the batch norm."""

    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        # Caffe's identity: weight 1, mean 0, variance 1 - eps (a fresh model is one too)
        self.running_var.fill_(1 - self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.weight is None or self.running_var is None:
            return super().forward(x)
        return _bias_or_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                             self.eps)


# whether a batch norm's weight, statistics and eps make it the identity plus its bias, by
# id(weight): copies of the tensors it was judged on, eps, the verdict (an entry goes with its
# weight). Comparing with the copies (about 2 us a unit on the CPU) also sees changes that bump
# no version counter, such as ``bn.weight.data[c] = 0`` to ablate a channel.
_IDENTITY: dict[int, tuple] = {}


def _is_identity(weight: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float
                 ) -> bool:
    now = (weight, mean, var)
    known = _IDENTITY.get(id(weight))
    if known is not None and known[1] == eps and all(  # a dtype's rounding decides it too
            t.dtype == seen.dtype and torch.equal(t, seen)
            for t, seen in zip(now, known[0], strict=True)):
        return known[2]
    if known is None:
        weakref.finalize(weight, _IDENTITY.pop, id(weight), None)
    with torch.no_grad():
        # the scale the CPU kernel computes: weight / sqrt(var + eps), in the weight's dtype
        scale = weight * (1 / torch.sqrt(var + torch.tensor(eps, dtype=var.dtype)))
        exact = bool((scale == 1).all()) and bool((mean == 0).all())
        _IDENTITY[id(weight)] = (tuple(t.detach().clone() for t in now), eps, exact)
    return exact


# under torch.compile the batch norm runs (the compiler fuses it; the checks would break its
# graph)
_compiling = getattr(torch.compiler, "is_compiling", lambda: False)


@torch.fx.wrap  # one call in traced graphs (featviz.truncate): its checks run then
def _bias_or_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                  mean: torch.Tensor, var: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dim() != 4:  # as BatchNorm2d says it
        raise ValueError(f"expected 4D input (got {x.dim()}D input)")
    if not _adds_bias(x, weight, bias, mean, var, eps):
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
    return x + bias.view(1, -1, 1, 1)


def _adds_bias(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
               var: torch.Tensor, eps: float) -> bool:
    """Whether the batch norm on ``x`` may be its bias alone."""
    trained = torch.is_grad_enabled() and (weight.requires_grad or bias.requires_grad)
    # on a GPU the check would wait for the device at every unit: the batch norm runs there
    return not (_compiling() or trained or x.dtype != bias.dtype or x.device.type != "cpu"
                or not _is_identity(weight, mean, var, eps))


@torch.fx.wrap  # one call in traced graphs: its checks run when the graph does
def _conv_bias_or_norm(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation,
                       groups: int, bn_weight: torch.Tensor, bias: torch.Tensor,
                       mean: torch.Tensor, var: torch.Tensor, eps: float) -> torch.Tensor:
    """The convolution then the batch norm: in one convolution with the bias where
    :func:`_bias_or_norm` would add it (the same values up to float rounding: oneDNN adds the
    bias after the sum, as the add does; PyTorch's fallback kernel starts from it), else the
    two as they are."""
    if x.dim() != 4:  # the convolution takes it; the batch norm says what is wrong
        return _bias_or_norm(_conv(x, weight, None, stride, padding, dilation, groups),
                             bn_weight, bias, mean, var, eps)
    if _adds_bias(x, bn_weight, bias, mean, var, eps):
        return _conv(x, weight, bias, stride, padding, dilation, groups)
    return F.batch_norm(_conv(x, weight, None, stride, padding, dilation, groups), mean, var,
                        bn_weight, bias, False, 0.0, eps)


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding,
          dilation, groups: int) -> torch.Tensor:
    """``F.conv2d``; the stem (7x7, stride 2, on the image's three channels) with its input
    gradient by phases on the CPU (:mod:`featviz.core.stem_conv`)."""
    if not _compiling() and stem_conv.applies(x, weight, stride, padding, dilation, groups):
        return stem_conv.stem_conv2d(x, weight, bias, stride, padding)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


class InceptionBlock(nn.Module):
    """Four branches (1x1; 1x1 then 3x3; 1x1 then 5x5; 3x3 max-pool then 1x1) stacked along
    the channels; ``pre_relu`` sees the stack before the block's ReLU."""

    def __init__(self, cin: int, c1: int, r3: int, c3: int, r5: int, c5: int, pool: int):
        super().__init__()
        self.branch1 = ConvUnit(cin, c1, 1, relu=False)
        self.branch2 = nn.Sequential(ConvUnit(cin, r3, 1), ConvUnit(r3, c3, 3, padding=1,
                                                                      relu=False))
        self.branch3 = nn.Sequential(ConvUnit(cin, r5, 1), ConvUnit(r5, c5, 5, padding=2,
                                                                      relu=False))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     ConvUnit(cin, pool, 1, relu=False))
        self.pre_relu = nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return self.relu(self.pre_relu(torch.cat(branches, 1)))


class LocalResponseNorm(nn.LocalResponseNorm):
    """PyTorch's local response normalization, the same arithmetic, with the sum over each
    channel's neighbours taken by a 1x1 convolution with a banded matrix. PyTorch's own uses
    ``avg_pool3d``, which on the CPU costs several times as much, forward and backward: about
    40 % of a render step up to ``mixed3b``. Any other input goes PyTorch's way."""

    def __init__(self, channels: int, size: int, alpha: float, beta: float, k: float):
        super().__init__(size, alpha=alpha, beta=beta, k=k)
        offset = torch.arange(channels)[None, :] - torch.arange(channels)[:, None]
        # channel c sums c - size//2 ... c + (size-1)//2, where PyTorch's padding puts its window
        band = (offset >= -(size // 2)) & (offset <= (size - 1) // 2)
        self.register_buffer("band", band.float()[:, :, None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _banded_lrn(x, self.band, self.size, self.alpha, self.beta, self.k)


@torch.fx.wrap  # one call in traced graphs (featviz.truncate): its shape check runs then
def _banded_lrn(x: torch.Tensor, band: torch.Tensor, size: int, alpha: float, beta: float,
                k: float) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] != band.shape[0]:
        return F.local_response_norm(x, size, alpha, beta, k)
    mean_square = F.conv2d(x * x, band.to(x.dtype)) / size
    return x / (mean_square * alpha + k).pow(beta)


def _lrn(channels: int) -> LocalResponseNorm:
    # Caffe's norm1/norm2 (size 5, alpha 1e-4, beta 0.75, k 1); PyTorch divides alpha by the
    # size as Caffe does
    return LocalResponseNorm(channels, 5, alpha=1e-4, beta=0.75, k=1.0)


class InceptionV1(nn.Module):
    """BVLC GoogLeNet: takes Caffe-normalized RGB (``255 * x - CAFFE_MEAN_RGB``), gives the
    1000 ImageNet logits. Wrap it with :func:`featviz.models.load` ("inceptionv1") to feed it
    images in [0, 1]."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = ConvUnit(3, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True), _lrn(64))
        self.conv2 = ConvUnit(64, 64, 1)
        self.conv3 = ConvUnit(64, 192, 3, padding=1)
        self.maxpool2 = nn.Sequential(_lrn(192), nn.MaxPool2d(3, 2, ceil_mode=True))
        for name in ("inception3a", "inception3b"):
            setattr(self, name, InceptionBlock(*BLOCKS[name]))
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            setattr(self, name, InceptionBlock(*BLOCKS[name]))
        self.maxpool4 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name in ("inception5a", "inception5b"):
            setattr(self, name, InceptionBlock(*BLOCKS[name]))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.4)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            x = getattr(self, name)(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


#: the file of BVLC GoogLeNet weights ``load("inceptionv1")`` looks for in featviz's cache
#: ($FEATVIZ_MODELS, else the user cache folder) and makes there when it is absent
INCEPTION_V1_FILE = "googlenet_bvlc_imagenet.pth"


def fetch_default_weights(target: Path) -> Path:
    """Make ``target``, the default weights' file: BVLC's caffemodel, downloaded, checked and
    converted (:func:`featviz.models.bvlc_googlenet.fetch`).

    Args:
        target: the file to make, in featviz's cache.
    """
    template = InceptionV1().state_dict()  # the keys, shapes and dtypes to fill
    return bvlc_googlenet.fetch(target, template, CAFFE_BIAS_EPS)


#: ``load("inceptionv1")``: Caffe's preprocessing (``255 * x - CAFFE_MEAN_RGB``) as a mean
#: and std on [0, 1] images; its weights from featviz's cache, downloaded from BVLC's Caffe
#: release and converted to torchvision's layout on first use
SPEC = register(ModelSpec(
    name="inceptionv1", build=lambda request: InceptionV1(), family="inceptionv1",
    description="BVLC GoogLeNet as in the paper (LRN, 5x5 branches): lucid's and Distill's "
                "InceptionV1, lucid's layer names",
    mean=tuple(v / 255 for v in CAFFE_MEAN_RGB), std=(1 / 255,) * 3,
    layer_aliases=LUCID_NAMES, classes=imagenet_classes,
    weights=WeightsSource("BVLC's caffemodel (downloaded, checked, converted into featviz's "
                          "cache)", kind="env", env=CACHE_ENV, file=INCEPTION_V1_FILE,
                          what="BVLC GoogLeNet weights in torchvision's layout",
                          fetch=fetch_default_weights)))
