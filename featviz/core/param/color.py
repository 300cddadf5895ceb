"""Colour: decorrelated colour space and the squashing of raw values into valid RGB."""

from __future__ import annotations

import torch

# The square root of ImageNet's RGB colour covariance (from lucid's color_correlation_svd_sqrt,
# Olah et al., "Feature Visualization", Distill 2017): optimizing in its whitened basis makes
# the three channels uncorrelated for the optimizer, as they are not in natural images.
COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02],
     [0.27, 0.00, -0.05],
     [0.27, -0.09, 0.03]]
)
# lucid divides by the largest column norm (0.4620) so no channel is amplified.
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
# ImageNet's mean colour (lucid's color_mean); used only when clamping instead of sigmoid.
COLOR_MEAN = (0.48, 0.46, 0.41)

VALID = ("sigmoid", "clamp")


def decorrelated_to_rgb(t: torch.Tensor) -> torch.Tensor:
    """Map a [B,3,H,W] tensor from the decorrelated colour basis to RGB (a 3x3 mix per pixel)."""
    m = COLOR_CORRELATION.to(device=t.device, dtype=t.dtype)
    return torch.einsum("rc,bchw->brhw", m, t)


def rgb_to_decorrelated(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`decorrelated_to_rgb`."""
    m = torch.linalg.inv(COLOR_CORRELATION.double()).to(device=t.device, dtype=t.dtype)
    return torch.einsum("rc,bchw->brhw", m, t)


def to_valid_rgb(t: torch.Tensor, decorrelate: bool = True, valid: str = "sigmoid") -> torch.Tensor:
    """Turn raw parameter values into an RGB image in [0, 1] (lucid's ``to_valid_rgb``).

    ``valid="sigmoid"`` squashes smoothly (never saturates exactly, gradients everywhere);
    ``"clamp"`` adds the mean colour and clips, which gives hard edges at 0 and 1.
    """
    if decorrelate:
        t = decorrelated_to_rgb(t)
    if valid == "sigmoid":
        return torch.sigmoid(t)
    if valid == "clamp":
        mean = torch.tensor(COLOR_MEAN, device=t.device, dtype=t.dtype).view(1, 3, 1, 1)
        return (t + mean).clamp(0, 1)
    raise ValueError(f"valid must be one of {VALID}, got {valid!r}")


def from_valid_rgb(img: torch.Tensor, decorrelate: bool = True,
                   valid: str = "sigmoid") -> torch.Tensor:
    """Inverse of :func:`to_valid_rgb` (pixels at exactly 0 or 1 are pulled in slightly)."""
    if valid == "sigmoid":
        t = torch.logit(img.clamp(1e-4, 1 - 1e-4))
    elif valid == "clamp":
        t = img - torch.tensor(COLOR_MEAN, device=img.device, dtype=img.dtype).view(1, 3, 1, 1)
    else:
        raise ValueError(f"valid must be one of {VALID}, got {valid!r}")
    return rgb_to_decorrelated(t) if decorrelate else t
