"""A strided convolution on few channels (a network's first layer, on the image) whose input
gradient is cheap on the CPU.

The gradient of a stride-``s`` convolution to its input is a transposed convolution. With the
image's three channels as its output, PyTorch's CPU kernels run it at a fraction of their speed
(about 5x the forward's time for InceptionV1's 7x7 stride-2 stem, a tenth of a render step).
Each of the input's ``s x s`` pixel phases is a plain stride-1 convolution of the output
gradient with a sub-kernel (the sub-pixel convolution of Shi et al. 2016, run backwards), so
here they run as one convolution with ``in_channels * s^2`` outputs, then a pixel shuffle: the
same gradient up to float rounding, in about 40 % of the time. The forward pass is PyTorch's.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

#: the most ``in_channels * stride^2`` (the phase convolution's outputs) this is used for:
#: beyond, PyTorch's own backward is as fast
MAX_PHASE_CHANNELS = 16


def fits(in_channels: int, kernel_size, stride, padding, dilation, groups: int) -> bool:
    """Whether a convolution's shape is one :func:`stem_conv2d` serves (see :func:`applies`,
    which also asks about the call): one stride of 2 or more and one whole-number padding on
    both axes, a square kernel, no dilation or groups, ``in_channels * stride^2`` at most
    :data:`MAX_PHASE_CHANNELS`.

    Args:
        in_channels: The convolution's input channels.
        kernel_size: The kernel's size per axis.
        stride: The stride per axis.
        padding: The padding per axis (a string such as ``"same"`` does not fit).
        dilation: The dilation per axis.
        groups: The number of groups.
    """
    s, p, k = tuple(stride), padding, tuple(kernel_size)
    return (len(set(s)) == 1 and s[0] >= 2 and tuple(dilation) == (1, 1) and groups == 1
            and isinstance(p, tuple) and len(set(p)) == 1 and isinstance(p[0], int)
            and len(set(k)) == 1 and in_channels * s[0] ** 2 <= MAX_PHASE_CHANNELS)


def applies(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation,
            groups: int) -> bool:
    """Whether :func:`stem_conv2d` serves this convolution: a CPU one whose input takes a
    gradient and whose weight does not, of a shape that :func:`fits`.

    Args:
        x: The convolution's input.
        weight: The convolution's weight, [out, in, k, k].
        stride: The stride per axis.
        padding: The padding per axis.
        dilation: The dilation per axis.
        groups: The number of groups.
    """
    return (x.device.type == "cpu" and x.dim() == 4 and x.requires_grad
            and torch.is_grad_enabled() and not weight.requires_grad
            and fits(weight.shape[1], weight.shape[2:], stride, padding, dilation, groups))


def stem_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride,
                padding) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` (where :func:`applies`), its gradient to
    ``x`` computed by phases; no gradient reaches ``weight`` or ``bias``.

    Args:
        x: The input, [B, C, H, W].
        weight: The weight; takes no gradient.
        bias: The bias, or None; takes no gradient.
        stride: The stride per axis (the same on both).
        padding: The padding per axis.
    """
    if torch.is_grad_enabled() and (weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        raise ValueError("stem_conv2d gives no gradient to the weight or the bias: use "
                         "F.conv2d where they take one")
    return _StemConv.apply(x, weight, bias, int(tuple(stride)[0]), tuple(padding))


class _StemConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, padding: tuple[int, int]):
        ctx.save_for_backward(weight)
        ctx.stride, ctx.padding, ctx.size = stride, padding, tuple(x.shape[2:])
        ctx.dtype = x.dtype  # under autocast the gradient arrives in the output's dtype
        ctx.layout = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                      and not x.is_contiguous() else torch.contiguous_format)
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        s, (h, w) = ctx.stride, ctx.size
        (top, bottom), (left, right) = (_pads(weight.shape[2], s, p, n, g) for p, n, g in
                                        zip(ctx.padding, ctx.size, grad.shape[2:], strict=True))
        kernel = _phase_kernel(weight, s, ctx.padding).to(grad.dtype,
                                                          memory_format=ctx.layout)
        phases = F.conv2d(F.pad(grad, (left, right, top, bottom)), kernel)
        shuffled = F.pixel_shuffle(phases, s)[:, :, :h, :w]
        return (shuffled.to(ctx.dtype).contiguous(memory_format=ctx.layout),
                None, None, None, None)


def _offsets(k: int, s: int, pad: int) -> tuple[int, int]:
    """The first and last offset ``d`` (output row ``m + d`` for input row ``s m + a``) that
    any phase ``a`` reads: kernel row ``a + pad - s d`` must lie in ``[0, k)``."""
    return -((k - 1 - pad) // s), (s - 1 + pad) // s


def _pads(k: int, s: int, pad: int, size: int, out: int) -> tuple[int, int]:
    """Padding (before, after; negative: cropping) of the output gradient along one axis so
    that the phase convolution gives ``ceil(size / s)`` rows."""
    first, last = _offsets(k, s, pad)
    rows = -(-size // s)
    return -first, rows - out + first + (last - first)


@functools.lru_cache(maxsize=16)
def _taps(k: int, s: int, pad: int) -> torch.Tensor:
    """Kernel row for each (phase, offset), ``k`` (a zero row) where the phase reads none."""
    first, last = _offsets(k, s, pad)
    rows = torch.tensor([[a + pad - s * d for d in range(first, last + 1)] for a in range(s)])
    return rows.where((rows >= 0) & (rows < k), torch.full_like(rows, k))


def _phase_kernel(weight: torch.Tensor, s: int, padding: tuple[int, int]) -> torch.Tensor:
    """``[in * s * s, out, L, L]``: for input channel c and phase (a, b), the weights that
    take the output gradient to those input pixels (flipped by the indexing, not by a flip)."""
    k = weight.shape[2]
    rows, cols = _taps(k, s, padding[0]), _taps(k, s, padding[1])
    padded = F.pad(weight, (0, 1, 0, 1))  # index k reads zero
    taps = rows.shape[1]
    picked = padded[:, :, rows.view(s, 1, taps, 1), cols.view(1, s, 1, taps)]
    # [out, in, a, b, L, L] -> [in, a, b, out, L, L]
    return picked.permute(1, 2, 3, 0, 4, 5).reshape(-1, weight.shape[0], taps, taps)
