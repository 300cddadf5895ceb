"""Fourier magnitude spectra of natural images, for the magnitude-constrained (MACO)
parameterization: measured from a folder of photos, loaded from a file, or a power-law fit.

Spectra live in the space the MACO image is built in, before the sigmoid: decorrelated colour
(:data:`~featviz.param.color.COLOR_CORRELATION`), one magnitude per channel and real-FFT bin,
shape ``[3, H, W//2+1]`` (``torch.fft.rfft2`` with ``norm="ortho"``); images of other channel
counts have no decorrelation and one magnitude per channel, ``[C, H, W//2+1]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ...errors import FeatvizError
from ..files import read_tensor
from ..sizes import SizeLike, hw
from .color import rgb_to_decorrelated
from .fourier import rfft2_frequencies

# Fewer photos than this give a spectrum dominated by the content of single images (one
# strong edge or texture shows up as a ridge), not the smooth average a prior should be.
MIN_IMAGES = 5

# Power-law fit A_c(f) = AMPLITUDE[c] * f ** -EXPONENT[c] of the mean magnitude spectrum of
# the ten photos in the project's sample set (shared/images), per decorrelated colour channel.
# How: mean_spectrum(folder, 224), then least squares of log A on log f over the magnitudes
# averaged in 24 log-spaced frequency bands from 1/224 to 0.5 cycles per pixel
# (benchmarks/fit_spectrum.py prints these numbers). Natural images give exponents near 1
# (Field 1987); the colour-opponent channels carry less energy than brightness.
AMPLITUDE = (0.0684, 0.0417, 0.0602)
EXPONENT = (1.316, 1.492, 1.412)


def spectrum_shape(size: SizeLike, channels: int = 3) -> tuple[int, int, int]:
    """The shape a spectrum for an image of ``size`` must have: ``[C, H, W//2+1]``.

    Args:
        size: One side or (height, width) of the image.
        channels: Number of image channels (default 3).
    """
    h, w = hw(size)
    return (channels, h, w // 2 + 1)


def to_maco_space(images: torch.Tensor) -> torch.Tensor:
    """Images [N,C,H,W] in [0, 1] in the space MACO builds its images in: decorrelated colour
    (RGB; other channel counts as they are), zero mean per image and channel. The sigmoid is
    inverted by its linear part (slope 1/4 at grey), as the exact logit would turn every
    saturated pixel into a spike.

    Args:
        images: Images [N,C,H,W] in [0, 1].
    """
    t = 4.0 * (images - 0.5)
    t = rgb_to_decorrelated(t) if t.shape[1] == 3 else t
    return t - t.mean(dim=(-2, -1), keepdim=True)


def image_spectrum(images: torch.Tensor) -> torch.Tensor:
    """The mean Fourier magnitude [C, H, W//2+1] of a batch of images [N,C,H,W] in [0, 1].

    Args:
        images: Images [N,C,H,W] in [0, 1].
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [N,C,H,W], got {list(images.shape)}")
    spec = torch.fft.rfft2(to_maco_space(images.float()), norm="ortho").abs()
    return spec.mean(dim=0)


def mean_spectrum(folder: str | os.PathLike, size: SizeLike) -> torch.Tensor:
    """The mean magnitude spectrum of the photos in ``folder``, each centre-cropped and resized
    to ``size``: a natural-image prior for :func:`featviz.param.maco` (save it with
    ``torch.save`` and pass the file later). Needs at least :data:`MIN_IMAGES` readable images.

    Args:
        folder: A folder of photos (at least :data:`MIN_IMAGES`).
        size: One side or (height, width) the photos are brought to.
    """
    from .. import images as _images

    folder = Path(folder)
    if not folder.is_dir():
        raise FeatvizError(f"spectrum folder not found: {folder}")
    paths = _images.list_images(folder)
    if len(paths) < MIN_IMAGES:
        raise FeatvizError(f"{folder} holds {len(paths)} image file(s); estimating a spectrum "
                           f"needs at least {MIN_IMAGES} (the more the smoother; use hundreds "
                           f"for a good prior)")
    total = torch.zeros(spectrum_shape(size))
    for p in paths:  # one at a time: a large folder never has to fit in memory
        total += image_spectrum(_images.load(p, size=hw(size)))
    return total / len(paths)


def power_law_spectrum(size: SizeLike, amplitude: Sequence[float] = AMPLITUDE,
                       exponent: Sequence[float] = EXPONENT) -> torch.Tensor:
    """The default MACO magnitude: ``amplitude[c] / f ** exponent[c]`` per decorrelated colour
    channel (f in cycles per pixel, the zero frequency counted as the lowest one); one channel
    per amplitude.

    Args:
        size: One side or (height, width) of the image.
        amplitude: One amplitude per channel (default :data:`AMPLITUDE`).
        exponent: One exponent per channel (default :data:`EXPONENT`).
    """
    h, w = hw(size)
    f = rfft2_frequencies(h, w).clamp_min(1.0 / max(h, w))
    a = torch.tensor(amplitude, dtype=torch.float32).view(-1, 1, 1)
    e = torch.tensor(exponent, dtype=torch.float32).view(-1, 1, 1)
    return a * f[None] ** -e


def fit_power_law(spectrum: torch.Tensor,
                  bands: int = 24) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Fit ``amplitude[c] / f ** exponent[c]`` to a spectrum [C, H, W//2+1] by least squares in
    log-log over ``bands`` log-spaced frequency bands (so the many high-frequency bins do not
    outvote the few low ones); returns ``(amplitude, exponent)``, C numbers each.

    Args:
        spectrum: A magnitude spectrum [C, H, W//2+1].
        bands: Number of log-spaced frequency bands to average over (default 24).
    """
    channels, h, wh = spectrum.shape
    w = 2 * (wh - 1)
    f = rfft2_frequencies(h, w)
    lowest = torch.log10(torch.tensor(1.0 / max(h, w)))
    edges = torch.logspace(float(lowest), float(torch.log10(torch.tensor(0.5))), bands + 1)
    amplitude, exponent = [], []
    for c in range(channels):
        xs, ys = [], []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            inside = (f >= lo) & (f < hi)
            if inside.any():
                xs.append(f[inside].log().mean())
                ys.append(spectrum[c][inside].mean().log())
        x, y = torch.stack(xs).double(), torch.stack(ys).double()
        slope, intercept = torch.linalg.lstsq(torch.stack([x, torch.ones_like(x)], 1),
                                              y[:, None]).solution[:, 0].tolist()
        amplitude.append(float(torch.tensor(intercept).exp()))
        exponent.append(-slope)
    return tuple(amplitude), tuple(exponent)


def load_spectrum(path: str | os.PathLike) -> torch.Tensor:
    """Read a spectrum saved with ``torch.save`` (.pt, .pth) or ``numpy.save`` (.npy).

    Args:
        path: The file to read.
    """
    return read_tensor(path, "spectrum")


def check_spectrum(spectrum: torch.Tensor, size: SizeLike,
                   channels: int = 3) -> torch.Tensor:
    """Return ``spectrum`` as float32 if it fits an image of ``size`` and ``channels``, else
    raise an error that names the shape needed and how to make one.

    Args:
        spectrum: The magnitude spectrum to check.
        size: One side or (height, width) of the image.
        channels: Number of image channels (default 3).
    """
    want = spectrum_shape(size, channels)
    h, w = hw(size)
    if tuple(spectrum.shape) != want:
        raise FeatvizError(f"a spectrum for {h}x{w} images must have shape [{channels}, {h}, "
                           f"{w // 2 + 1}] ({channels} channels x rfft2 bins), got "
                           f"{list(spectrum.shape)}; "
                           f"make one with param.mean_spectrum(folder, ({h}, {w}))")
    spectrum = spectrum.float()
    if not torch.isfinite(spectrum).all() or (spectrum < 0).any():
        raise FeatvizError("a magnitude spectrum must be finite and non-negative")
    return spectrum
