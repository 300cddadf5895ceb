"""The plain pixel parameterization: one free value per pixel and colour channel."""

from __future__ import annotations

import torch
from torch import nn

from .noise import Generators, normal


class PixelRaw(nn.Module):
    """Raw pixel values [B,3,H,W], initialized as N(0, sd²) (lucid's ``pixel_image``)."""

    def __init__(self, shape: tuple[int, int, int, int], sd: float = 0.01,
                 generator: Generators = None):
        super().__init__()
        self.raw = nn.Parameter(normal(shape, sd, generator))

    def forward(self) -> torch.Tensor:
        return self.raw

    @torch.no_grad()
    def set_raw(self, raw: torch.Tensor) -> None:
        """Make :meth:`forward` return ``raw`` (used to start from a given image)."""
        self.raw.copy_(raw)
