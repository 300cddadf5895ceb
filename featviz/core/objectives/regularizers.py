"""Regularizers: penalties on the image (before the transforms), to be subtracted from an
objective: ``channel("features.14", 12) - 0.05 * total_variation()``. Each reads the image as
:data:`~featviz.hooks.INPUT`; its display name comes from its definition, as a builder's does.
"""

from __future__ import annotations

import torch

from ...errors import FeatvizError
from ..hooks import INPUT
from .base import Acts, Objective, _mean_rest, builder


@builder(bare=("constant",))
def l1(constant: float = 0.5) -> Objective:
    """Mean absolute difference of the pixels from ``constant`` (lucid uses 0 and a sum, so its
    weights are larger by the pixel count).

    Args:
        constant: the colour value the pixels are pulled towards; grey by default.
    """
    return Objective(lambda acts: _mean_rest((acts[INPUT] - constant).abs()), [INPUT])


@builder(bare=("constant",))
def l2(constant: float = 0.5) -> Objective:
    """Root mean square difference of the pixels from ``constant``.

    Args:
        constant: the colour value the pixels are pulled towards; grey by default.
    """
    return Objective(lambda acts: (_mean_rest((acts[INPUT] - constant) ** 2) + 1e-12).sqrt(),
                     [INPUT])


RAIL_MARGIN = 0.05  # colours this close to 0 or 1 count as on the rails (clipping, RailGuard)


@builder(bare=("margin",))
def clipping(margin: float = RAIL_MARGIN) -> Objective:
    """Mean distance of the colour values from ``[margin, 1 - margin]``: zero for every value
    inside, growing linearly past it. Subtracted with a large weight (about 1e4 for a channel of
    InceptionV1) it keeps a render off the rails, where a sigmoid parameterization under Adam
    drifts into flat black, white or pure-colour areas, and leaves every other pixel alone.

    Args:
        margin: how close to 0 or 1 a value may come unpenalized, in [0, 0.5).
    """
    if not 0 <= margin < 0.5:
        raise ValueError(f"clipping margin must be in [0, 0.5), got {margin!r}")

    def fn(acts: Acts) -> torch.Tensor:
        img = acts[INPUT]
        return _mean_rest(torch.relu(margin - img) + torch.relu(img - (1 - margin)))

    return Objective(fn, [INPUT])


@builder()
def neighbour_difference() -> Objective:
    """Mean squared difference of each image from its neighbours in the batch (image ``i``
    against ``i - 1`` and ``i + 1``, half each): subtract it to make an interpolation
    sequence change smoothly from frame to frame (Distill's aligned-interpolation penalty)."""

    def fn(acts: Acts) -> torch.Tensor:
        img = acts[INPUT]
        if img.shape[0] < 2:
            raise FeatvizError("neighbour_difference needs a batch of at least 2 images")
        step = _mean_rest((img[1:] - img[:-1]) ** 2)  # [B-1]: between i and i+1
        zero = step.new_zeros(1)
        return 0.5 * (torch.cat([zero, step]) + torch.cat([step, zero]))

    return Objective(fn, [INPUT], "", 2)


def _variation(beta: float | None):
    def fn(acts: Acts) -> torch.Tensor:
        img = acts[INPUT]
        dx = img[..., :-1, 1:] - img[..., :-1, :-1]
        dy = img[..., 1:, :-1] - img[..., :-1, :-1]
        if beta is None:
            return _mean_rest(dx.abs() + dy.abs())
        return _mean_rest((dx ** 2 + dy ** 2 + 1e-8) ** (beta / 2))

    return fn


@builder()
def total_variation(beta: float | None = None) -> Objective:
    """Total variation of the image, per pixel: ``|dx| + |dy|`` (lucid's anisotropic form) or,
    with ``beta``, ``(dx² + dy²)^(beta/2)`` as in Mahendran & Vedaldi's TV^β.

    Args:
        beta: the exponent of TV^β; None for the anisotropic form.
    """
    if beta is not None:
        return _tv(beta)  # named tv(beta=...), as it always was
    return Objective(_variation(None), [INPUT])


@builder("tv")
def _tv(beta: float | None = None) -> Objective:
    return Objective(_variation(beta), [INPUT])


@builder(bare=("sigma",))
def blur(sigma: float | None = None) -> Objective:
    """Half the mean squared difference between the image and a blurred copy of it that is held
    constant (lucid's ``blur_input_each_step``): subtracting it blurs the image a little each
    step.

    Args:
        sigma: the copy is blurred with a Gaussian of ``sigma`` pixels; with lucid's 3x3
            binomial kernel by default.
    """
    import kornia  # only blur needs kornia

    def fn(acts: Acts) -> torch.Tensor:
        img = acts[INPUT]
        with torch.no_grad():
            if sigma is None:
                k = torch.tensor([1.0, 2.0, 1.0], device=img.device, dtype=img.dtype)
                kernel = (k[:, None] * k[None, :] / 16)[None]
                blurred = kornia.filters.filter2d(img, kernel, border_type="reflect")
            else:
                size = 2 * int(3 * sigma + 0.5) + 1
                blurred = kornia.filters.gaussian_blur2d(img, (size, size), (sigma, sigma),
                                                         border_type="reflect")
        return 0.5 * _mean_rest((img - blurred) ** 2)

    return Objective(fn, [INPUT])
