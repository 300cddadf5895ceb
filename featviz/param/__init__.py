"""Image parameterizations: how the optimized image is described by learnable numbers.

``image(size, batch, fft=True, decorrelate=True)`` returns an :class:`ImageParam`, a module
whose ``forward()`` gives the current images, [B,3,H,W] in [0, 1]. Every parameterization has
this interface, so ``render(..., param=...)`` takes any of them.
"""

from __future__ import annotations

import torch
from torch import nn

from .color import COLOR_CORRELATION, decorrelated_to_rgb, from_valid_rgb, to_valid_rgb
from .fourier import FourierRaw, rfft2_frequencies
from .noise import Generators
from .pixel import PixelRaw

__all__ = ["ImageParam", "image", "COLOR_CORRELATION", "decorrelated_to_rgb", "to_valid_rgb",
           "from_valid_rgb", "rfft2_frequencies", "FourierRaw", "PixelRaw"]


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 2 or w < 2:
        raise ValueError(f"image size must be at least 2x2 pixels, got {h}x{w}")
    return int(h), int(w)


class ImageParam(nn.Module):
    """An image batch described by a raw parameterization plus colour handling.

    ``forward()`` returns RGB images [B,3,H,W] in [0, 1]; ``parameters()`` are what the
    optimizer changes. ``batch`` and ``size`` describe the output.
    """

    def __init__(self, raw: nn.Module, batch: int, size: tuple[int, int], decorrelate: bool,
                 valid: str = "sigmoid"):
        super().__init__()
        self.raw = raw
        self.batch = batch
        self.size = size
        self.decorrelate = decorrelate
        self.valid = valid

    def forward(self) -> torch.Tensor:
        return to_valid_rgb(self.raw(), self.decorrelate, self.valid)

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
        self.raw.set_raw(from_valid_rgb(img, self.decorrelate, self.valid))
        return self

    def extra_repr(self) -> str:
        return (f"batch={self.batch}, size={self.size}, decorrelate={self.decorrelate}, "
                f"valid={self.valid!r}")


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
) -> ImageParam:
    """Build lucid's image parameterization: Fourier (``fft``) or pixel, colour-decorrelated
    or not, squashed into [0, 1] by a sigmoid. ``init`` starts from a given image instead of
    low-contrast noise; ``generator`` (one, or one per image) makes the noise repeatable."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    h, w = _hw(size)
    shape = (batch, 3, h, w)
    raw = FourierRaw(shape, sd, generator=generator) if fft else PixelRaw(shape, sd, generator)
    p = ImageParam(raw, batch, (h, w), decorrelate, valid)
    if device is not None:
        p = p.to(device)
    if init is not None:
        p.set_image(init)
    return p
