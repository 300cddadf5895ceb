"""Low-resolution tensors upsampled to the image size: the building block of the Laplacian
pyramid and of aligned (shared) parameterizations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .noise import Generators, normal


class LowRes(nn.Module):
    """A parameter [b, C, h, w] stretched to [B, C, H, W] by bilinear interpolation.

    ``b`` equals the batch ``B`` (one low-resolution image each), is 1 (one shared by all
    images), or is another small number: then the batch axis is interpolated too, so neighbours
    in the batch share most of their value (lucid's ``lowres_tensor``).
    """

    def __init__(self, batch: int, channels: int, size: tuple[int, int],
                 low: tuple[int, int, int], sd: float = 0.01, generator: Generators = None):
        super().__init__()
        self.batch, self.size = batch, size
        b, h, w = low
        if not (b >= 1 and 1 <= h <= size[0] and 1 <= w <= size[1]):
            raise ValueError(f"a low-resolution shape {low} must fit in {batch} x {size}")
        # per-image generators only make sense when each image owns its low-res tensor
        gen = generator if b == batch or generator is None or isinstance(
            generator, torch.Generator) else generator[0]
        self.value = nn.Parameter(normal((b, channels, h, w), sd, gen))

    def forward(self) -> torch.Tensor:
        v = self.value
        if tuple(v.shape[-2:]) != self.size:
            v = F.interpolate(v, size=self.size, mode="bilinear", align_corners=False)
        b = v.shape[0]
        if b == self.batch:
            return v
        if b == 1:
            return v.expand(self.batch, -1, -1, -1)
        # linear interpolation along the batch: image i sits at position i*(b-1)/(B-1)
        pos = torch.linspace(0, b - 1, self.batch, device=v.device)
        lo = pos.floor().long().clamp(max=b - 2)
        t = (pos - lo).view(-1, 1, 1, 1).to(v.dtype)
        return v[lo] * (1 - t) + v[lo + 1] * t
