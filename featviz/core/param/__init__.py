"""Image parameterizations: how the optimized image is described by learnable numbers.

Every factory returns a :class:`Parameterization`: a module whose ``forward()`` gives the
current images, [B,C,H,W] in [0, 1] (``channels=C``: 3 for RGB, the default, 1 for grayscale,
N for multispectral bands; RGBA [B,4,H,W] with an alpha channel), whose ``parameters()``
the optimizer changes, and which declares its learning rate, preferred transforms, whether it
wants a saliency map, and the seeds its images come from (``seed=``: one number, image ``i``
uses ``seed + i``), so ``render(..., param=...)`` takes any of them. Every ``size`` is one
side (a square) or ``(height, width)``: ``image((48, 80))`` makes [B,3,48,80].

- ``image(size, batch, fft=True, decorrelate=None, alpha=False, channels=3)``: lucid's pixel
  or Fourier image with decorrelated colour (ImageNet's for RGB, a matrix from
  :func:`band_correlation` for other channel counts), optionally with a transparency channel;
- ``maco(size, batch, spectrum=None)``: fixed natural-image Fourier magnitude, phase optimized;
- ``laplacian(size, batch, levels=4)``: a sum of upsampled resolution levels;
- ``cppn(size, batch)``: a coordinate network's weights;
- ``aligned(size, batch)``: private images plus shared low-resolution parts, for smooth
  interpolations across a batch;
- ``group_shared(size, weights)``: own images plus group images mixed by ``weights``, so
  that alike objectives (an activation grid's neighbouring cells) get alike pictures.
"""

from __future__ import annotations

import os

import torch

from ...errors import FeatvizError, SizeError, unknown
from ..seeds import Seed
from ..sizes import SizeLike, hw
from .bands import band_correlation, band_covariance, covariance_sqrt
from .base import Parameterization, seeded
from .color import (
    COLOR_CORRELATION,
    Decorrelate,
    correlation,
    decorrelated_to_rgb,
    from_valid,
    from_valid_rgb,
    to_valid,
    to_valid_rgb,
)
from .coordinate_net import CPPN
from .fourier import FourierRaw, rfft2_frequencies
from .noise import Generators
from .phase_only import MacoRaw
from .pixel import PixelRaw
from .pyramid import LaplacianRaw
from .shared_parts import AlignedRaw, GroupSharedRaw
from .spectrum import (
    AMPLITUDE,
    EXPONENT,
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
           "band_correlation", "band_covariance", "covariance_sqrt", "correlation",
           "to_valid", "from_valid", "rfft2_frequencies", "FourierRaw", "PixelRaw", "MacoRaw",
           "LaplacianRaw",
           "AlignedRaw", "GroupSharedRaw", "group_shared"]


def _hw(size: SizeLike) -> tuple[int, int]:
    """(height, width) of ``size`` (one side or a pair), at least 2x2."""
    h, w = hw(size)
    if h < 2 or w < 2:
        raise SizeError(f"image size must be at least 2x2 pixels, got {h}x{w}")
    return h, w


class ImageParam(Parameterization):
    """An image batch described by a raw parameterization plus colour handling.

    ``forward()`` returns images [B,C,H,W] in [0, 1] with C = ``channels`` (RGB by default), or
    RGBA [B,4,H,W] when ``alpha`` (the fourth raw channel through a sigmoid); ``parameters()``
    are what the optimizer changes. ``decorrelate`` is a [C, C] matrix, True, False or None
    (see :func:`image`); the matrix in use is :attr:`correlation` (None: none). ``batch`` and
    ``size`` describe the output; ``seeds`` the per-image seeds the raw parameterization drew
    its start from.
    """

    def __init__(self, raw: torch.nn.Module, batch: int, size: tuple[int, int],
                 decorrelate: Decorrelate, valid: str = "sigmoid", alpha: bool = False,
                 seeds: list[int] | None = None, channels: int = 3):
        super().__init__(batch, size, seeds)
        self.raw = raw
        self.channels = channels
        matrix = correlation(decorrelate, channels)
        self.decorrelate = matrix is not None
        # a buffer, so that it follows the parameterization to its device
        self.register_buffer("correlation", matrix, persistent=False)
        self.valid = valid
        self.alpha = alpha

    def forward(self) -> torch.Tensor:
        t = self.raw()
        if not self.alpha:
            return to_valid(t, self.correlation, self.valid)
        rgb = to_valid(t[:, :3], self.correlation, self.valid)
        return torch.cat([rgb, torch.sigmoid(t[:, 3:])], dim=1)

    @torch.no_grad()
    def set_image(self, img: torch.Tensor) -> ImageParam:
        """Start from ``img`` ([C,H,W] or [B,C,H,W] in [0, 1], broadcast over the batch)."""
        if img.dim() == 3:
            img = img[None]
        if (img.shape[-2:] != torch.Size(self.size) or img.shape[1] != self.channels
                or img.shape[0] not in (1, self.batch)):
            raise ValueError(f"initial image must be [B,{self.channels},{self.size[0]},"
                             f"{self.size[1]}] with B = 1 or {self.batch}, got "
                             f"{list(img.shape)}")
        device = next(self.parameters()).device
        img = img.to(device=device, dtype=torch.float32).expand(self.batch, -1, -1, -1)
        raw = from_valid(img, self.correlation, self.valid)
        if self.alpha:  # a given image starts fully opaque (sigmoid(4) = 0.98)
            raw = torch.cat([raw, torch.full_like(raw[:, :1], 4.0)], dim=1)
        self.raw.set_raw(raw)
        return self

    @property
    def fast_course(self) -> bool:
        """Whether ``render(pace="auto")`` may take the fast course for it: the Fourier image
        with sigmoid colours and no transparency, the one the fast course was measured on."""
        return isinstance(self.raw, FourierRaw) and self.valid == "sigmoid" and not self.alpha

    def extra_repr(self) -> str:
        return (f"batch={self.batch}, size={self.size}, channels={self.channels}, "
                f"decorrelate={self.decorrelate}, valid={self.valid!r}, alpha={self.alpha}, "
                f"lr={self.lr:g}")


class MacoParam(ImageParam):
    """MACO's image: a fixed Fourier magnitude, only the phase optimized (see :func:`maco`).

    Its learning rate is 0.2: on MobileNetV2 ``features.14:12`` at 96 px, 256 steps, the
    objective reached 10.5 at 0.05, 12.4 at 0.2 and 6.2 at 1.0. It asks render for the
    saliency map, the paper's way of showing where the visualization matters. Its images are
    shown contrast-stretched (``display = "stretch"``): the paper's figures are, by its
    reference code's plotting (clip at the 1st and 99th percentile, then scale to [0, 1];
    :func:`featviz.images.stretch` clips at 0.5 %); the
    raw images, a sigmoid of a unit-variance signal, stay low in contrast by construction."""

    lr = 0.2
    saliency = True
    display = "stretch"


def image(
    size: SizeLike,
    batch: int = 1,
    fft: bool = True,
    decorrelate: Decorrelate = None,
    sd: float = 0.01,
    init: torch.Tensor | None = None,
    valid: str = "sigmoid",
    generator: Generators = None,
    device: str | torch.device | None = None,
    alpha: bool = False,
    seed: Seed = None,
    channels: int = 3,
) -> ImageParam:
    """Build lucid's image parameterization: Fourier (``fft``) or pixel, colour-decorrelated
    or not, squashed into [0, 1] by a sigmoid. ``init`` starts from a given image instead of
    low-contrast noise; ``seed`` (image ``i`` draws from ``seed + i``, or from ``seed[i]`` given
    a list) makes it repeatable, as does ``generator`` (one, or one per image) for callers with
    generators of their own. ``alpha=True`` adds a transparency channel (RGBA output): render
    then blends the image over a new random background each step and scales the objective by
    (1 - mean alpha), as in Distill's "Differentiable Image Parameterizations" section 4 (RGB
    only). ``channels``: 3 for RGB, 1 for grayscale, N for multispectral bands.
    ``decorrelate``: None (the default) is ImageNet's colour correlation for RGB and none for
    other channel counts; True asks for ImageNet's (RGB only), False for none, and a [C, C]
    matrix for the user's own (``band_correlation(images)`` measures one).

    Args:
        size: One side (a square) or (height, width), in pixels.
        batch: Number of images (default 1).
        fft: Fourier parameterization (default); False for plain pixels.
        decorrelate: None (ImageNet's colour correlation for RGB), True, False or a [C, C] matrix.
        sd: Standard deviation of the initial noise (default 0.01).
        init: An image [C,H,W] or [B,C,H,W] in [0, 1] to start from; None starts from noise.
        valid: How raw values become [0, 1]: ``"sigmoid"`` (default) or ``"clamp"``.
        generator: A generator, or one per image, for callers with their own; not with ``seed``.
        device: Where to put the parameterization; None leaves it on the CPU.
        alpha: Add a transparency channel (RGBA output, RGB only); default False.
        seed: One number (image ``i`` uses ``seed + i``), one per image, or None for a fresh one.
        channels: 3 for RGB (default), 1 for grayscale, N for multispectral bands.
    """
    h, w = _check(size, batch, channels, alpha)
    seeds, generator = seeded(seed, generator, batch)
    shape = (batch, channels + int(alpha), h, w)
    raw = FourierRaw(shape, sd, generator=generator) if fft else PixelRaw(shape, sd, generator)
    return _finish(ImageParam(raw, batch, (h, w), decorrelate, valid, alpha, seeds, channels),
                   device, init, seed)


def _check(size: SizeLike, batch: int, channels: int = 3,
           alpha: bool = False) -> tuple[int, int]:
    """The (height, width) of ``size``, after checking the batch and the channel count."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a whole number of at least 1, got {channels!r}")
    if alpha and channels != 3:
        raise FeatvizError(f"alpha=True blends the image over RGB backgrounds: it needs "
                           f"channels=3, not {channels}")
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
    size: SizeLike,
    batch: int = 1,
    spectrum: torch.Tensor | str | os.PathLike | None = None,
    init: torch.Tensor | None = None,
    generator: Generators = None,
    device: str | torch.device | None = None,
    lr: float | None = None,
    seed: Seed = None,
    channels: int = 3,
) -> MacoParam:
    """MACO (Fel et al., NeurIPS 2023): the Fourier magnitude is fixed to a natural-image
    spectrum, only the phase is optimized. ``spectrum``: a tensor [3, H, W//2+1] in
    decorrelated colour (e.g. ``mean_spectrum(folder, size)``), a file holding one, or None for
    the power law fitted on the sample photos. Render returns the saliency map (the
    accumulated |dL/dx|, ``result.saliency``) for MACO images, the paper's way to show where
    the visualization matters. The phase starts uniform, so images start as coloured noise.
    ``lr`` overrides the learning rate meant for it (:attr:`MacoParam.lr`, 0.2). With
    ``channels`` other than 3 there is no colour decorrelation; the spectrum is then [C, H,
    W//2+1], by default the power law of the photos' brightness for every channel.

    Args:
        size: One side (a square) or (height, width), in pixels.
        batch: Number of images (default 1).
        spectrum: Magnitude tensor [C, H, W//2+1], a file holding one, or None for the power law.
        init: An image [C,H,W] or [B,C,H,W] in [0, 1] to start from; None starts from noise.
        generator: A generator, or one per image, for callers with their own; not with ``seed``.
        device: Where to put the parameterization; None leaves it on the CPU.
        lr: Learning rate to use instead of :attr:`MacoParam.lr` (0.2); None keeps it.
        seed: One number (image ``i`` uses ``seed + i``), one per image, or None for a fresh one.
        channels: 3 for RGB (default); other counts get no colour decorrelation.
    """
    h, w = _check(size, batch, channels)
    magnitude = _magnitude(spectrum, (h, w), channels)
    seeds, generator = seeded(seed, generator, batch)
    raw = MacoRaw(magnitude, (h, w), batch, generator)
    p = MacoParam(raw, batch, (h, w), decorrelate=None, seeds=seeds, channels=channels)
    if lr is not None:
        p.lr = float(lr)
    return _finish(p, device, init, seed)


def _magnitude(spectrum, size: tuple[int, int], channels: int) -> torch.Tensor:
    """MACO's fixed magnitude: the given ``spectrum`` (tensor or file), checked, or the
    default power law (for other than RGB, the brightness channel's law for every channel:
    without decorrelation each channel carries brightness)."""
    if spectrum is None:
        if channels == 3:
            return power_law_spectrum(size)
        return power_law_spectrum(size, (AMPLITUDE[0],) * channels, (EXPONENT[0],) * channels)
    magnitude = load_spectrum(spectrum) if not torch.is_tensor(spectrum) else spectrum
    return check_spectrum(magnitude.detach().cpu(), size, channels)


def laplacian(
    size: SizeLike,
    batch: int = 1,
    levels: int = 4,
    decorrelate: Decorrelate = None,
    sd: float = 0.01,
    init: torch.Tensor | None = None,
    generator: Generators = None,
    device: str | torch.device | None = None,
    seed: Seed = None,
    channels: int = 3,
) -> ImageParam:
    """lucid's Laplacian-pyramid image: the sum of ``levels`` pixel tensors at full, half,
    quarter, ... resolution, each upsampled bilinearly (one level is the pixel image).
    ``channels`` and ``decorrelate`` as in :func:`image`.

    Args:
        size: One side (a square) or (height, width), in pixels.
        batch: Number of images (default 1).
        levels: Number of pyramid levels (default 4); 1 is the pixel image.
        decorrelate: As in :func:`image` (None: ImageNet's for RGB, none otherwise).
        sd: Standard deviation of the initial noise (default 0.01).
        init: An image [C,H,W] or [B,C,H,W] in [0, 1] to start from; None starts from noise.
        generator: A generator, or one per image, for callers with their own; not with ``seed``.
        device: Where to put the parameterization; None leaves it on the CPU.
        seed: One number (image ``i`` uses ``seed + i``), one per image, or None for a fresh one.
        channels: As in :func:`image` (default 3, RGB).
    """
    h, w = _check(size, batch, channels)
    seeds, generator = seeded(seed, generator, batch)
    raw = LaplacianRaw((batch, channels, h, w), levels, sd, generator)
    return _finish(ImageParam(raw, batch, (h, w), decorrelate, seeds=seeds, channels=channels),
                   device, init, seed)


def cppn(
    size: SizeLike,
    batch: int = 1,
    hidden: int = 24,
    layers: int = 8,
    generator: Generators = None,
    device: str | torch.device | None = None,
    seed: Seed = None,
    channels: int = 3,
) -> CPPN:
    """A CPPN image (Distill "Differentiable Image Parameterizations" section 3): ``layers``
    1x1 convolutions of ``hidden`` channels with the article's atan activation map (x, y) to
    RGB; one network per image. Meant for Adam with lr 0.005 (``.lr``) and no decorrelation;
    ``.at(size)`` samples the same images at any resolution; ``channels`` as in :func:`image`.

    Args:
        size: One side (a square) or (height, width), in pixels.
        batch: Number of images (default 1).
        hidden: Channels of each hidden 1x1 convolution (default 24).
        layers: Number of hidden layers (default 8).
        generator: A generator, or one per image, for callers with their own; not with ``seed``.
        device: Where to put the parameterization; None leaves it on the CPU.
        seed: One number (image ``i`` uses ``seed + i``), one per image, or None for a fresh one.
        channels: As in :func:`image` (default 3, RGB).
    """
    h, w = _check(size, batch, channels)
    seeds, generator = seeded(seed, generator, batch)
    return _finish(CPPN((h, w), batch, hidden, layers, generator, seeds, channels), device,
                   seed=seed)


def aligned(
    size: SizeLike,
    batch: int,
    fft: bool = True,
    decorrelate: Decorrelate = None,
    sd: float = 0.01,
    generator: Generators = None,
    device: str | torch.device | None = None,
    seed: Seed = None,
    channels: int = 3,
) -> ImageParam:
    """Images that share low-resolution parts across the batch (Distill "Differentiable Image
    Parameterizations" section 1): each is a private Fourier (or pixel) image plus shared
    tensors at 1/2 to 1/16 of the size, two of them interpolated along the batch. Use with
    ``objectives.interpolate(a, b, batch)`` so frames move smoothly from ``a`` to ``b``; add
    ``- w * objectives.neighbour_difference()`` to pull neighbours closer still. ``channels``
    and ``decorrelate`` as in :func:`image`.

    Args:
        size: One side (a square) or (height, width), in pixels.
        batch: Number of images (the frames the shared parts run through).
        fft: Fourier private images (default); False for pixels.
        decorrelate: As in :func:`image` (None: ImageNet's for RGB, none otherwise).
        sd: Standard deviation of the initial noise (default 0.01).
        generator: A generator, or one per image, for callers with their own; not with ``seed``.
        device: Where to put the parameterization; None leaves it on the CPU.
        seed: One number (image ``i`` uses ``seed + i``), one per image, or None for a fresh one.
        channels: As in :func:`image` (default 3, RGB).
    """
    h, w = _check(size, batch, channels)
    seeds, generator = seeded(seed, generator, batch)
    raw = AlignedRaw((batch, channels, h, w), fft, sd, generator)
    return _finish(ImageParam(raw, batch, (h, w), decorrelate, seeds=seeds, channels=channels),
                   device, seed=seed)


def group_shared(
    size: SizeLike,
    weights: torch.Tensor,
    sd: float = 0.01,
    generator: Generators = None,
    device: str | torch.device | None = None,
    seed: Seed = None,
) -> ImageParam:
    """One image per row of ``weights`` [N, groups]: a Fourier image of its own plus group
    images shared by all, mixed by the row (lucid's activation-grid parameterization, from
    "The Building Blocks of Interpretability"). Rows that are alike (say, a factorization's
    spatial maps at neighbouring positions, each group scaled to a maximum of 1) get alike
    starting points and gradients, which keeps a grid of renders coherent. RGB, colour
    decorrelated, ``seed`` as in :func:`image`.

    Args:
        size: One side (a square) or (height, width), in pixels.
        weights: Mixing weights [N, groups]; one image per row.
        sd: Standard deviation of the initial noise (default 0.01).
        generator: A generator, or one per image, for callers with their own; not with ``seed``.
        device: Where to put the parameterization; None leaves it on the CPU.
        seed: One number (image ``i`` uses ``seed + i``), one per image, or None for a fresh one.
    """
    weights = torch.as_tensor(weights, dtype=torch.float32)
    batch = weights.shape[0] if weights.dim() == 2 else 0
    h, w = _check(size, max(batch, 1))
    seeds, generator = seeded(seed, generator, max(batch, 1))
    raw = GroupSharedRaw(weights, (batch, 3, h, w), sd, generator)
    return _finish(ImageParam(raw, batch, (h, w), None, seeds=seeds), device, seed=seed)


# the parameterizations the command line and sweeps name, with what each image is
KINDS = {
    "fourier": "lucid's Fourier image with decorrelated colour (the default)",
    "pixel": "plain pixels",
    "maco": "a fixed natural-image spectrum, only the phase optimized (MACO)",
    "laplacian": "a Laplacian pyramid of pixel tensors",
    "cppn": "a coordinate network's weights (CPPN)",
}


def make(kind: str, size: SizeLike, batch: int = 1, *,
         decorrelate: Decorrelate = None, alpha: bool = False,
         spectrum: torch.Tensor | str | os.PathLike | None = None,
         init: torch.Tensor | None = None, seed: Seed = None, generator: Generators = None,
         device: str | torch.device | None = None, channels: int = 3) -> Parameterization:
    """The parameterization named ``kind`` (a key of :data:`KINDS`), as the command line names
    it: ``fourier`` and ``pixel`` are :func:`image` (``alpha`` adds transparency),
    ``maco`` takes a ``spectrum`` (tensor, file, or a folder of photos to measure),
    ``laplacian``, ``cppn``; each makes images of ``channels`` channels. Options a kind cannot
    use are an error, not silently dropped.

    Args:
        kind: A key of :data:`KINDS`: fourier, pixel, maco, laplacian or cppn.
        size: One side (a square) or (height, width), in pixels.
        batch: Number of images (default 1).
        decorrelate: As in :func:`image`; not used by maco and cppn.
        alpha: Add transparency (fourier and pixel only); default False.
        spectrum: For maco: a tensor, a file, or a folder of photos; None for the power law.
        init: An image to start from (not for cppn); None starts from noise.
        seed: One number (image ``i`` uses ``seed + i``), one per image, or None for a fresh one.
        generator: A generator, or one per image, for callers with their own; not with ``seed``.
        device: Where to put the parameterization; None leaves it on the CPU.
        channels: Channels of the images (default 3, RGB).
    """
    _check_options(kind, alpha, spectrum, init)
    common = {"seed": seed, "generator": generator, "device": device, "channels": channels}
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
