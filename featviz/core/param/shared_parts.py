"""Aligned batches (Distill, "Differentiable Image Parameterizations", section 1): each image
is a private parameterization plus low-resolution tensors shared across the batch, some of
them interpolated along it, so images that optimize related objectives (an interpolation from
one channel to another) line up and change smoothly from frame to frame."""

from __future__ import annotations

import torch
from torch import nn

from .fourier import FourierRaw
from .lowres import LowRes
from .noise import Generators
from .pixel import PixelRaw

# (batch positions, downscale factor) of the shared tensors: the article's notebook shares
# one tensor at 1/2, 1/4, 1/8 and 1/16 of the size and interpolates two along the batch at
# 1/8 and 1/16, so the coarse layout can drift slowly from the first frame to the last.
SHARED = ((1, 2), (1, 4), (1, 8), (2, 8), (1, 16), (2, 16))


class AlignedRaw(nn.Module):
    """Raw image [B,3,H,W] = private (Fourier or pixel) part + the sum of shared parts."""

    def __init__(self, shape: tuple[int, int, int, int], fft: bool = True, sd: float = 0.01,
                 generator: Generators = None, shared=SHARED):
        super().__init__()
        b, c, h, w = shape
        self.size = (h, w)
        self.private = FourierRaw(shape, sd, generator=generator) if fft else PixelRaw(
            shape, sd, generator)
        first = generator[0] if isinstance(generator, (list, tuple)) else generator
        self.shared = nn.ModuleList(
            LowRes(b, c, (h, w), (min(n, b), max(1, h // f), max(1, w // f)), sd, first)
            for n, f in shared)

    def forward(self) -> torch.Tensor:
        return self.private() + sum(s() for s in self.shared)

    @torch.no_grad()
    def set_raw(self, raw: torch.Tensor) -> None:
        """Start every image from ``raw`` through its private part; shared parts start at 0."""
        self.private.set_raw(raw)
        for s in self.shared:
            s.value.zero_()


# lucid's activation-grid notebook (Building Blocks, Olah et al. 2018) mixes each cell's own
# image and the group images with these weights
OWN_WEIGHT, GROUP_WEIGHT = 0.7, 0.5


class GroupSharedRaw(nn.Module):
    """Raw images [N,C,H,W] = 0.7 · own Fourier image + 0.5 · Σ_j weights[i, j] · group image j.

    Images whose objectives are alike (similar activation vectors: similar rows of
    ``weights``, e.g. a factorization's normalized spatial maps) share most of their group
    images, so the optimization finds alike pictures for them; each image keeps a full set of
    parameters of its own and could still become anything.
    """

    def __init__(self, weights: torch.Tensor, shape: tuple[int, int, int, int],
                 sd: float = 0.01, generator: Generators = None):
        super().__init__()
        n, c, h, w = shape
        if weights.dim() != 2 or weights.shape[0] != n:
            raise ValueError(f"group weights must be [{n}, groups], one row per image, got "
                             f"{list(weights.shape)}")
        self.size = (h, w)
        self.own = FourierRaw(shape, sd, generator=generator)
        first = generator[0] if isinstance(generator, (list, tuple)) else generator
        self.groups = FourierRaw((weights.shape[1], c, h, w), sd, generator=first)
        self.register_buffer("weights", weights.float(), persistent=False)

    def forward(self) -> torch.Tensor:
        own = OWN_WEIGHT * self.own()
        if self.weights.shape[1] == 0:  # no groups: MKL's FFT fails on an empty batch
            return own
        shared = torch.einsum("ng,gchw->nchw", self.weights, self.groups())
        return own + GROUP_WEIGHT * shared

    @torch.no_grad()
    def set_raw(self, raw: torch.Tensor) -> None:
        """Start every image from ``raw`` through its own part; the group images start at 0."""
        self.own.set_raw(raw / OWN_WEIGHT)
        self.groups.spectrum.zero_()
