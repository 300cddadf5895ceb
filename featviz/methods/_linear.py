"""A network's linear part: ReLU-like functions made identities, max-pooling made average
pooling, and a record of the non-linear functions that remain.

Two methods read a model through it: theoretical receptive fields (the exact gradient support
of a unit, in a positive float64 twin of the model, :func:`positive_twin`) and the expanded
weights of circuits (the linear map between two layers, Olah et al., "Zoom In", Distill 2020,
where the nonlinearities between the layers are dropped and max-pooling is taken by its
average; captum's unreleased optim branch averages the pools the same way).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.backward_rules import RELU_LIKE
from ..errors import FeatvizError

# functions no linear reading of a network can take as they are: what stands between two
# layers when they have no linear path (attention's softmax, a transformer's norms, gates)
NONLINEAR = {
    "softmax", "log_softmax", "layer_norm", "group_norm", "instance_norm", "gelu", "silu",
    "sigmoid", "hardsigmoid", "hardswish", "tanh", "mish", "elu", "selu", "celu", "softplus",
    "scaled_dot_product_attention", "bmm", "baddbmm", "matmul", "einsum",
}


class Linearized(TorchFunctionMode):
    """ReLU-like calls (and cross-channel response normalization, a gain that depends on the
    input) become identities and max-pooling becomes average pooling; every other function
    runs as it is, and the names of the non-linear ones among them are kept in ``seen``."""

    _IDENTITY = frozenset(RELU_LIKE) | {F.leaky_relu, F.local_response_norm}
    _MAX_TO_AVG = {F.max_pool2d: "fixed", torch.max_pool2d: "fixed",
                   F.adaptive_max_pool2d: "adaptive"}

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._IDENTITY:
            return args[0]
        pool = self._MAX_TO_AVG.get(func)
        if pool == "fixed":
            return avg_like_max(*args, **kwargs)
        if pool == "adaptive":
            return F.adaptive_avg_pool2d(args[0], args[1] if len(args) > 1
                                         else kwargs["output_size"])
        name = getattr(func, "__name__", "").strip("_")  # relu_ and __matmul__ too
        if name in NONLINEAR:
            self.seen.add(name)
        return func(*args, **kwargs)


def avg_like_max(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1,
                 ceil_mode=False, return_indices=False) -> torch.Tensor:
    """The average pooling over the windows ``F.max_pool2d`` with these arguments takes.

    Args:
        x: The input, [B, C, H, W].
        kernel_size: The window.
        stride: The step between windows (the window by default).
        padding: The padding on each side.
        dilation: Must be 1: a dilated window has no average-pooling twin.
        ceil_mode: Whether the last partial window counts.
        return_indices: Ignored (an average has no argmax).
    """
    if dilation not in (1, (1, 1)):
        raise FeatvizError("the linear part of a dilated max-pooling is not supported")
    return F.avg_pool2d(x, kernel_size, stride or kernel_size, padding, ceil_mode,
                        count_include_pad=True)


def positive_twin(net: nn.Module) -> nn.Module:
    """A float64 copy of ``net`` with positive averaging weights (1/fan-in), zero biases and
    identity batch norms: under :class:`Linearized`, no gradient through it can cancel.

    Args:
        net: The network; it is copied, never changed.
    """
    twin = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.fill_(1.0 / fan_in)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.weight is not None:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                if m.running_mean is not None:
                    m.running_mean.zero_()
                    m.running_var.fill_(1.0 - m.eps)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin
