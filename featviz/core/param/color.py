"""Colour: decorrelated colour space and the squashing of raw values into valid images.

ImageNet's colour correlation is an RGB fact; images of other channel counts (grayscale,
multispectral bands) are decorrelated with a matrix measured from the user's own data
(:func:`featviz.param.band_correlation`), or not at all."""

from __future__ import annotations

import torch

from ...errors import FeatvizError

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
# the mean of a band without a known one (clamping only): grey
BAND_MEAN = 0.5

VALID = ("sigmoid", "clamp")

Decorrelate = bool | torch.Tensor | None


def correlation(decorrelate: Decorrelate, channels: int) -> torch.Tensor | None:
    """The [C, C] matrix that mixes decorrelated channels into image channels, or None for
    none. ``decorrelate``: a matrix (used as given), True (ImageNet's colour correlation, RGB
    only), False, or None (ImageNet's for RGB, none for other channel counts).

    Args:
        decorrelate: A [C, C] matrix, True, False or None (see above).
        channels: Number of image channels, C.
    """
    if torch.is_tensor(decorrelate):
        m = decorrelate.detach().float().cpu()
        if m.shape != (channels, channels) or not torch.isfinite(m).all():
            raise FeatvizError(f"a decorrelation matrix for {channels}-channel images must be a "
                               f"finite [{channels}, {channels}] tensor, got {list(m.shape)} "
                               "(measure one with param.band_correlation(images))")
        return m
    if decorrelate is None:
        decorrelate = channels == 3
    if not decorrelate:
        return None
    if channels != 3:
        raise FeatvizError(f"decorrelate=True is ImageNet's RGB colour correlation; for "
                           f"{channels}-channel images pass decorrelate=False or a "
                           f"[{channels}, {channels}] matrix measured from your data "
                           "(param.band_correlation(images))")
    return COLOR_CORRELATION


def mix(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mix the channels of [B,C,H,W] by the [C,C] matrix ``m`` (one mix per pixel).

    Args:
        t: Tensor [B,C,H,W].
        m: Mixing matrix [C, C].
    """
    return torch.einsum("rc,bchw->brhw", m.to(device=t.device, dtype=t.dtype), t)


def unmix(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`mix`.

    Args:
        t: Tensor [B,C,H,W].
        m: The mixing matrix [C, C] to undo (invertible).
    """
    inv = torch.linalg.inv(m.double()).to(device=t.device, dtype=t.dtype)
    return torch.einsum("rc,bchw->brhw", inv, t)


def decorrelated_to_rgb(t: torch.Tensor) -> torch.Tensor:
    """Map a [B,3,H,W] tensor from the decorrelated colour basis to RGB (a 3x3 mix per pixel).

    Args:
        t: Tensor [B,3,H,W] in the decorrelated basis.
    """
    return mix(t, COLOR_CORRELATION)


def rgb_to_decorrelated(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`decorrelated_to_rgb`.

    Args:
        t: Tensor [B,3,H,W] in RGB.
    """
    return unmix(t, COLOR_CORRELATION)


def _mean(channels: int, like: torch.Tensor) -> torch.Tensor:
    values = COLOR_MEAN if channels == 3 else (BAND_MEAN,) * channels
    return torch.tensor(values, device=like.device, dtype=like.dtype).view(1, channels, 1, 1)


def to_valid(t: torch.Tensor, m: torch.Tensor | None, valid: str = "sigmoid") -> torch.Tensor:
    """Raw values [B,C,H,W] into an image in [0, 1]: mixed by the correlation matrix ``m``
    (None: as they are), then squashed (see :func:`to_valid_rgb`).

    Args:
        t: Raw values [B,C,H,W].
        m: Correlation matrix [C, C], or None for no mixing.
        valid: ``"sigmoid"`` (default) or ``"clamp"``.
    """
    if m is not None:
        t = mix(t, m)
    if valid == "sigmoid":
        return torch.sigmoid(t)
    if valid == "clamp":
        return (t + _mean(t.shape[1], t)).clamp(0, 1)
    raise ValueError(f"valid must be one of {VALID}, got {valid!r}")


def from_valid(img: torch.Tensor, m: torch.Tensor | None, valid: str = "sigmoid"
               ) -> torch.Tensor:
    """Inverse of :func:`to_valid` (pixels at exactly 0 or 1 are pulled in slightly).

    Args:
        img: Images [B,C,H,W] in [0, 1].
        m: Correlation matrix [C, C], or None for no mixing.
        valid: ``"sigmoid"`` (default) or ``"clamp"``, as used forward.
    """
    if valid == "sigmoid":
        t = torch.logit(img.clamp(1e-4, 1 - 1e-4))
    elif valid == "clamp":
        t = img - _mean(img.shape[1], img)
    else:
        raise ValueError(f"valid must be one of {VALID}, got {valid!r}")
    return unmix(t, m) if m is not None else t


def to_valid_rgb(t: torch.Tensor, decorrelate: Decorrelate = True,
                 valid: str = "sigmoid") -> torch.Tensor:
    """Turn raw parameter values into an image in [0, 1] (lucid's ``to_valid_rgb``), any
    channel count (``decorrelate`` as in :func:`correlation`).

    ``valid="sigmoid"`` squashes smoothly (never saturates exactly, gradients everywhere);
    ``"clamp"`` adds the mean colour and clips, which gives hard edges at 0 and 1.

    Args:
        t: Raw values [B,C,H,W].
        decorrelate: As in :func:`correlation`; default True (ImageNet's, RGB only).
        valid: ``"sigmoid"`` (default) or ``"clamp"``.
    """
    return to_valid(t, correlation(decorrelate, t.shape[1]), valid)


def from_valid_rgb(img: torch.Tensor, decorrelate: Decorrelate = True,
                   valid: str = "sigmoid") -> torch.Tensor:
    """Inverse of :func:`to_valid_rgb` (pixels at exactly 0 or 1 are pulled in slightly).

    Args:
        img: Images [B,C,H,W] in [0, 1].
        decorrelate: As in :func:`correlation`; default True (ImageNet's, RGB only).
        valid: ``"sigmoid"`` (default) or ``"clamp"``, as used forward.
    """
    return from_valid(img, correlation(decorrelate, img.shape[1]), valid)
