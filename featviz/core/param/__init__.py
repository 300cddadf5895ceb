"""Image parameterizations: how the optimized image is described by learnable numbers.

Every factory returns a :class:`Parameterization`: a module whose ``forward()`` gives the
current images, [B,3,H,W] in [0, 1] ([B,4,H,W] with an alpha channel), whose ``parameters()``
the optimizer changes, and which declares its learning rate, preferred transforms, whether it
wants a saliency map, and the seeds its images come from (``seed=``: one number, image ``i``
uses ``seed + i``), so ``render(..., param=...)`` takes any of them.

- ``image(size, batch, fft=True, decorrelate=True, alpha=False)``: lucid's pixel or Fourier
  image with decorrelated colour, optionally with a transparency channel;
- ``maco(size, batch, spectrum=None)``: fixed natural-image Fourier magnitude, phase optimized;
- ``laplacian(size, batch, levels=4)``: a sum of upsampled resolution levels;
- ``cppn(size, batch)``: a coordinate network's weights;
- ``aligned(size, batch)``: private images plus shared low-resolution parts, for smooth
  interpolations across a batch.
"""

from __future__ import annotations

import os

import torch

from ...errors import FeatvizError, unknown
from ..seeds import Seed
from .base import Parameterization, seeded
from .color import COLOR_CORRELATION, decorrelated_to_rgb, from_valid_rgb, to_valid_rgb
from .coordinate_net import CPPN
from .fourier import FourierRaw, rfft2_frequencies
from .noise import Generators
from .phase_only import MacoRaw
from .pixel import PixelRaw
from .pyramid import LaplacianRaw
from .shared_parts import AlignedRaw
from .spectrum import (
    check_spectrum,
    fit_power_law,
    image_spectrum,
    load_spectrum,
    mean_spectrum,
    power_law_spectrum,
)

__all__ = ["Parameterization", "ImageParam", "MacoParam", "image", "maco", "laplacian",
           "cppn", "aligned", "make", "KINDS", "mean_spectrum",
           "power_law_spectrum", "load_spectrum", "image_spectrum", "fit_power_law", "CPPN",
           "COLOR_CORRELATION", "decorrelated_to_rgb", "to_valid_rgb", "from_valid_rgb",
           "rfft2_frequencies", "FourierRaw", "PixelRaw", "MacoRaw", "LaplacianRaw",
           "AlignedRaw"]


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 2 or w < 2:
        raise ValueError(f"image size must be at least 2x2 pixels, got {h}x{w}")
    return int(h), int(w)


class ImageParam(Parameterization):
    """An image batch described by a raw parameterization plus colour handling.

    ``forward()`` returns RGB images [B,3,H,W] in [0, 1], or RGBA [B,4,H,W] when ``alpha``
    (the fourth raw channel through a sigmoid); ``parameters()`` are what the optimizer
    changes. ``batch`` and ``size`` describe the output; ``seeds`` the per-image seeds the raw
    parameterization drew its start from.
    """

    def __init__(self, raw: torch.nn.Module, batch: int, size: tuple[int, int],
                 decorrelate: bool, valid: str = "sigmoid", alpha: bool = False,
                 seeds: list[int] | None = None):
        super().__init__(batch, size, seeds)
        self.raw = raw
        self.decorrelate = decorrelate
        self.valid = valid
        self.alpha = alpha

    def forward(self) -> torch.Tensor:
        t = self.raw()
        if not self.alpha:
            return to_valid_rgb(t, self.decorrelate, self.valid)
        rgb = to_valid_rgb(t[:, :3], self.decorrelate, self.valid)
        return torch.cat([rgb, torch.sigmoid(t[:, 3:])], dim=1)

    @torch.no_grad()
    def set_image(self, img: torch.Tensor) -> ImageParam:
        """Start from ``img`` ([3,H,W] or [B,3,H,W] in [0, 1], broadcast over the batch)."""
        if img.dim() == 3:
            img = img[None]
        if (img.shape[-2:] != torch.Size(self.size) or img.shape[1] != 3
                or img.shape[0] not in (1, self.batch)):
            raise ValueError(f"initial image must be [B,3,{self.size[0]},{self.size[1]}] with "
                             f"B = 1 or {self.batch}, got {list(img.shape)}")
        device = next(self.parameters()).device
        img = img.to(device=device, dtype=torch.float32).expand(self.batch, -1, -1, -1)
        raw = from_valid_rgb(img, self.decorrelate, self.valid)
        if self.alpha:  # a given image starts fully opaque (sigmoid(4) = 0.98)
            raw = torch.cat([raw, torch.full_like(raw[:, :1], 4.0)], dim=1)
        self.raw.set_raw(raw)
        return self

    def extra_repr(self) -> str:
        return (f"batch={self.batch}, size={self.size}, decorrelate={self.decorrelate}, "
                f"valid={self.valid!r}, alpha={self.alpha}, lr={self.lr:g}")


class MacoParam(ImageParam):
    """MACO's image: a fixed Fourier magnitude, only the phase optimized (see :func:`maco`).

    Its learning rate is 0.2: on MobileNetV2 ``features.14:12`` at 96 px, 256 steps, the
    objective reached 10.5 at 0.05, 12.4 at 0.2 and 6.2 at 1.0. It asks render for the
    saliency map, the paper's way of showing where the visualization matters."""

    lr = 0.2
    saliency = True


def image(
    size: int | tuple[int, int],
    batch: int = 1,
    fft: bool = True,
    decorrelate: bool = True,
    sd: float = 0.01,
    init: torch.Tensor | None = None,
    valid: str = "sigmoid",
    generator: Generators = None,
    device: str | torch.device | None = None,
    alpha: bool = False,
    seed: Seed = None,
) -> ImageParam:
    """Build lucid's image parameterization: Fourier (``fft``) or pixel, colour-decorrelated
    or not, squashed into [0, 1] by a sigmoid. ``init`` starts from a given image instead of
    low-contrast noise; ``seed`` (image ``i`` draws from ``seed + i``, or from ``seed[i]`` given
    a list) makes it repeatable, as does ``generator`` (one, or one per image) for callers with
    generators of their own. ``alpha=True`` adds a transparency channel (RGBA output): render
    then blends the image over a new random background each step and scales the objective by
    (1 - mean alpha), as in Distill's "Differentiable Image Parameterizations" section 4."""
    h, w = _check(size, batch)
    seeds, generator = seeded(seed, generator, batch)
    shape = (batch, 4 if alpha else 3, h, w)
    raw = FourierRaw(shape, sd, generator=generator) if fft else PixelRaw(shape, sd, generator)
    return _finish(ImageParam(raw, batch, (h, w), decorrelate, valid, alpha, seeds), device,
                   init, seed)


def _check(size: int | tuple[int, int], batch: int) -> tuple[int, int]:
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    return _hw(size)


def _finish(p: Parameterization, device, init: torch.Tensor | None = None,
            seed: Seed = None) -> Parameterization:
    """``p`` on ``device``, started from ``init``; its seeds marked as drawn unless ``seed``
    was given."""
    p.seed_given = p.seed_given and seed is not None
    if device is not None:
        p = p.to(device)
    if init is not None:
        p.set_image(init)
    return p


def maco(
    size: int | tuple[int, int],
    batch: int = 1,
    spectrum: torch.Tensor | str | os.PathLike | None = None,
    init: torch.Tensor | None = None,
    generator: Generators = None,
    device: str | torch.device | None = None,
    lr: float | None = None,
    seed: Seed = None,
) -> MacoParam:
    """MACO (Fel et al., NeurIPS 2023): the Fourier magnitude is fixed to a natural-image
    spectrum, only the phase is optimized. ``spectrum``: a tensor [3, H, W//2+1] in
    decorrelated colour (e.g. ``mean_spectrum(folder, size)``), a file holding one, or None for
    the power law fitted on the sample photos. Render returns the saliency map (the
    accumulated |dL/dx|, ``result.saliency``) for MACO images, the paper's way to show where
    the visualization matters. The phase starts uniform, so images start as coloured noise.
    ``lr`` overrides the learning rate meant for it (:attr:`MacoParam.lr`, 0.2)."""
    h, w = _check(size, batch)
    if spectrum is None:
        magnitude = power_law_spectrum((h, w))
    else:
        magnitude = load_spectrum(spectrum) if not torch.is_tensor(spectrum) else spectrum
        magnitude = check_spectrum(magnitude.detach().cpu(), (h, w))
    seeds, generator = seeded(seed, generator, batch)
    raw = MacoRaw(magnitude, (h, w), batch, generator)
    p = MacoParam(raw, batch, (h, w), decorrelate=True, seeds=seeds)
    if lr is not None:
        p.lr = float(lr)
    return _finish(p, device, init, seed)


def laplacian(
    size: int | tuple[int, int],
    batch: int = 1,
    levels: int = 4,
    decorrelate: bool = True,
    sd: float = 0.01,
    init: torch.Tensor | None = None,
    generator: Generators = None,
    device: str | torch.device | None = None,
    seed: Seed = None,
) -> ImageParam:
    """lucid's Laplacian-pyramid image: the sum of ``levels`` pixel tensors at full, half,
    quarter, ... resolution, each upsampled bilinearly (one level is the pixel image)."""
    h, w = _check(size, batch)
    seeds, generator = seeded(seed, generator, batch)
    raw = LaplacianRaw((batch, 3, h, w), levels, sd, generator)
    return _finish(ImageParam(raw, batch, (h, w), decorrelate, seeds=seeds), device, init,
                   seed)


def cppn(
    size: int | tuple[int, int],
    batch: int = 1,
    hidden: int = 24,
    layers: int = 8,
    generator: Generators = None,
    device: str | torch.device | None = None,
    seed: Seed = None,
) -> CPPN:
    """A CPPN image (Distill "Differentiable Image Parameterizations" section 3): ``layers``
    1x1 convolutions of ``hidden`` channels with the article's atan activation map (x, y) to
    RGB; one network per image. Meant for Adam with lr 0.005 (``.lr``) and no decorrelation;
    ``.at(size)`` samples the same images at any resolution."""
    h, w = _check(size, batch)
    seeds, generator = seeded(seed, generator, batch)
    return _finish(CPPN((h, w), batch, hidden, layers, generator, seeds), device, seed=seed)


def aligned(
    size: int | tuple[int, int],
    batch: int,
    fft: bool = True,
    decorrelate: bool = True,
    sd: float = 0.01,
    generator: Generators = None,
    device: str | torch.device | None = None,
    seed: Seed = None,
) -> ImageParam:
    """Images that share low-resolution parts across the batch (Distill "Differentiable Image
    Parameterizations" section 1): each is a private Fourier (or pixel) image plus shared
    tensors at 1/2 to 1/16 of the size, two of them interpolated along the batch. Use with
    ``objectives.interpolate(a, b, batch)`` so frames move smoothly from ``a`` to ``b``; add
    ``- w * objectives.neighbour_difference()`` to pull neighbours closer still."""
    h, w = _check(size, batch)
    seeds, generator = seeded(seed, generator, batch)
    raw = AlignedRaw((batch, 3, h, w), fft, sd, generator)
    return _finish(ImageParam(raw, batch, (h, w), decorrelate, seeds=seeds), device, seed=seed)


# the parameterizations the command line and sweeps name, with what each image is
KINDS = {
    "fourier": "lucid's Fourier image with decorrelated colour (the default)",
    "pixel": "plain pixels",
    "maco": "a fixed natural-image spectrum, only the phase optimized (MACO)",
    "laplacian": "a Laplacian pyramid of pixel tensors",
    "cppn": "a coordinate network's weights (CPPN)",
}


def make(kind: str, size: int | tuple[int, int], batch: int = 1, *, decorrelate: bool = True,
         alpha: bool = False, spectrum=None, init: torch.Tensor | None = None,
         seed: Seed = None, generator: Generators = None,
         device: str | torch.device | None = None) -> Parameterization:
    """The parameterization named ``kind`` (a key of :data:`KINDS`), as the command line names
    it: ``fourier`` and ``pixel`` are :func:`image` (``alpha`` adds transparency),
    ``maco`` takes a ``spectrum`` (tensor, file, or a folder of photos to measure),
    ``laplacian``, ``cppn``. Options a kind cannot use are an error, not silently dropped."""
    _check_options(kind, alpha, spectrum, init)
    common = {"seed": seed, "generator": generator, "device": device}
    if kind == "maco":
        if isinstance(spectrum, (str, os.PathLike)) and os.path.isdir(spectrum):
            spectrum = mean_spectrum(spectrum, size)
        return maco(size, batch, spectrum=spectrum, init=init, **common)
    if kind == "laplacian":
        return laplacian(size, batch, decorrelate=decorrelate, init=init, **common)
    if kind == "cppn":
        return cppn(size, batch, **common)
    return image(size, batch, fft=kind == "fourier", decorrelate=decorrelate, init=init,
                 alpha=alpha, **common)


def _check_options(kind: str, alpha: bool, spectrum, init: torch.Tensor | None) -> None:
    """An error for an unknown kind or an option the kind cannot use."""
    if kind not in KINDS:
        raise unknown("parameterization", kind, KINDS, hint="one of " + ", ".join(KINDS))
    if alpha and kind not in ("fourier", "pixel"):
        raise FeatvizError(f"alpha works with the fourier and pixel images, not {kind}")
    if spectrum is not None and kind != "maco":
        raise FeatvizError(f"a spectrum is the magnitude of maco, not of {kind}")
    if init is not None and kind == "cppn":
        raise FeatvizError("a CPPN cannot start from an image (its image comes from network "
                           "weights)")
