"""Receptive fields: which input pixels a unit of a layer can see.

:func:`theoretical` measures the theoretical receptive field (TRF) of any convolutional model,
branches and skip connections included, by its exact gradient support: a float64 copy of the
model is made linear and positive (every weight of a convolution or linear layer set to
1/fan-in, batch norm made an identity, ReLU-like functions made identities, max-pooling turned
into average pooling), so that no gradient can cancel or be cut off, and the input pixels with
a non-zero gradient for one unit are exactly those that unit depends on. The user's model is
never touched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import FeatvizError
from .hooks import LayerTap, resolve_layer


@dataclass(frozen=True)
class ReceptiveField:
    """The theoretical receptive field of the units of one layer.

    ``size``: (height, width) in input pixels; ``jump``: (dy, dx) input pixels between
    neighbouring units (the layer's total stride); ``offset``: (y, x) input position of the
    centre of unit (0, 0) (may be negative: partly in the padding); ``clipped``: True when the
    field is wider than the largest input tried, so ``size`` is a lower bound.
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    offset: tuple[float, float]
    layer: str = ""
    clipped: bool = False

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Input box (top, left, bottom, right), exclusive end, of unit ``(y, x)``; it may
        reach outside the image."""
        cy = self.offset[0] + y * self.jump[0]
        cx = self.offset[1] + x * self.jump[1]
        top = round(cy - (self.size[0] - 1) / 2)
        left = round(cx - (self.size[1] - 1) / 2)
        return top, left, top + self.size[0], left + self.size[1]


class _Linearized(TorchFunctionMode):
    """ReLU-like calls become identities and max-pooling becomes average pooling."""

    _IDENTITY = {F.relu, torch.relu, torch.Tensor.relu, F.relu_, torch.relu_,
                 torch.Tensor.relu_, F.relu6, F.hardtanh, F.hardtanh_, F.leaky_relu}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._IDENTITY:
            return args[0]
        if func in (F.max_pool2d, torch.max_pool2d):
            return _avg_like_max(*args, **kwargs)
        return func(*args, **kwargs)


def _avg_like_max(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                  return_indices=False):
    if dilation not in (1, (1, 1)):
        raise FeatvizError("theoretical receptive fields of dilated max-pooling are not supported")
    return F.avg_pool2d(x, kernel_size, stride or kernel_size, padding, ceil_mode,
                        count_include_pad=True)


def _linearize(net: nn.Module) -> nn.Module:
    """A float64 copy of ``net`` with positive averaging weights and identity batch norms."""
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


def _supports(twin: nn.Module, layer: str, size: int):
    """Run the linearized copy once on a ``size`` x ``size`` input; return the layer's map size
    and a function giving the input box (top, left, bottom, right) a unit depends on."""
    x = torch.ones(1, 3, size, size, dtype=torch.float64,
                   device=next(twin.parameters()).device, requires_grad=True)
    with _Linearized(), LayerTap(twin, [layer]) as tap:
        act = tap(x)[layer]
    if act.dim() != 4:
        raise FeatvizError(f"layer {layer!r} has no spatial maps (output {list(act.shape)}); "
                           "receptive fields need a convolutional layer")

    def box(y: int, x_: int) -> tuple[int, int, int, int]:
        (grad,) = torch.autograd.grad(act[0, :, y, x_].sum(), x, retain_graph=True)
        mask = grad[0].abs().sum(0) > 0
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        if not len(rows):
            raise FeatvizError(f"unit ({y}, {x_}) of layer {layer!r} depends on no input pixel")
        return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1

    return tuple(act.shape[2:]), box


def theoretical(model: nn.Module, layer: str, input_size: int | None = None,
                max_size: int = 2048) -> ReceptiveField:
    """Measure the theoretical receptive field of ``layer`` (size, jump, offset).

    Starts at ``input_size`` (default: the model's, else 224) and doubles the input while the
    centre unit's field touches the border, up to ``max_size``; beyond that ``clipped`` is set.
    """
    resolve_layer(model, layer)  # a clear error for a wrong name before any copying
    twin = _linearize(model)
    size = input_size or getattr(model, "input_size", 224)
    while True:
        (h, w), unit_box = _supports(twin, layer, size)
        y, x = h // 2, w // 2
        box = unit_box(y, x)
        touches = box[0] == 0 or box[1] == 0 or box[2] == size or box[3] == size
        if not touches or size * 2 > max_size:
            break
        size *= 2
    # neighbours' boxes are shifted by the jump (compare the far edges when clipped)
    jump = [1, 1]
    if h > 1:
        other = unit_box(y + 1 if y + 1 < h else y - 1, x)
        jump[0] = abs(other[0] - box[0]) if not touches else abs(other[2] - box[2])
    if w > 1:
        other = unit_box(y, x + 1 if x + 1 < w else x - 1)
        jump[1] = abs(other[1] - box[1]) if not touches else abs(other[3] - box[3])
    jump = [max(j, 1) for j in jump]
    centre = ((box[0] + box[2] - 1) / 2, (box[1] + box[3] - 1) / 2)
    offset = (centre[0] - y * jump[0], centre[1] - x * jump[1])
    return ReceptiveField((box[2] - box[0], box[3] - box[1]), (jump[0], jump[1]), offset, layer,
                          clipped=touches)
