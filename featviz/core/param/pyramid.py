"""The Laplacian-pyramid parameterization (lucid's ``laplacian_pyramid_image``): the image is
the sum of ``levels`` tensors at resolutions 1, 1/2, 1/4, ..., each upsampled to full size.
A step on a coarse level moves a whole region at once, so coarse structure appears early."""

from __future__ import annotations

import torch
from torch import nn

from .lowres import LowRes
from .noise import Generators


class LaplacianRaw(nn.Module):
    """Raw image [B,3,H,W] as a sum of upsampled levels; level 0 is full resolution, so with
    one level this is exactly the pixel parameterization."""

    def __init__(self, shape: tuple[int, int, int, int], levels: int = 4, sd: float = 0.01,
                 generator: Generators = None):
        super().__init__()
        b, c, h, w = shape
        if levels < 1:
            raise ValueError(f"levels must be at least 1, got {levels}")
        if min(h, w) >> (levels - 1) < 1:
            raise ValueError(f"{levels} levels halve a {h}x{w} image below one pixel; "
                             f"use at most {min(h, w).bit_length()}")
        self.size = (h, w)
        self.levels = nn.ModuleList(
            LowRes(b, c, (h, w), (b, max(1, h >> k), max(1, w >> k)), sd, generator)
            for k in range(levels))

    def forward(self) -> torch.Tensor:
        return sum(level() for level in self.levels)

    @torch.no_grad()
    def set_raw(self, raw: torch.Tensor) -> None:
        """Put ``raw`` into the full-resolution level and zero the others."""
        self.levels[0].value.copy_(raw)
        for level in self.levels[1:]:
            level.value.zero_()
