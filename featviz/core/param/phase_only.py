"""MACO (Fel et al., "Unlocking Feature Visualization for Deeper Networks with MAgnitude
Constrained Optimization", NeurIPS 2023): the Fourier magnitude is fixed to a natural-image
spectrum and only the phase is optimized, so every image the optimizer can reach has the
energy distribution of a photo."""

from __future__ import annotations

import math

import torch
from torch import nn

from .noise import Generators


def _uniform_phase(shape: tuple[int, ...], generator: Generators) -> torch.Tensor:
    """Phases uniform in [-pi, pi), per image from its own generator when given a list."""
    if generator is None or isinstance(generator, torch.Generator):
        u = torch.rand(shape, generator=generator)
    else:
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]} images")
        u = torch.stack([torch.rand(shape[1:], generator=g) for g in generator])
    return (2 * u - 1) * math.pi


class MacoRaw(nn.Module):
    """Raw image [B,3,H,W] = standardized ``irfft2(magnitude * exp(i * phase))``.

    ``magnitude`` [3, H, W//2+1] is a fixed buffer; ``phase`` is the parameter. The bins that
    a real image's spectrum must hold real or mirrored (column 0 and, for even widths, the last
    column: their upper half mirrors the lower half) get an odd-symmetrized phase, so the
    inverse FFT never silently drops part of a bin and ``|rfft2(image)|`` equals the magnitude
    exactly (up to one scale per image from the standardization; the zero frequency is 0).
    """

    def __init__(self, magnitude: torch.Tensor, size: tuple[int, int], batch: int,
                 generator: Generators = None):
        super().__init__()
        c, h, wh = magnitude.shape
        self.size = size
        self.register_buffer("magnitude", magnitude.clone(), persistent=True)
        self.phase = nn.Parameter(_uniform_phase((batch, c, h, wh), generator))

    def spectrum(self) -> torch.Tensor:
        """The complex spectrum [B,3,H,W//2+1] the image is made of (fixed magnitude)."""
        phase = _hermitian_phase(self.phase, self.size[1])
        mag = self.magnitude.clone()
        mag[:, 0, 0] = 0  # the mean colour is left to the sigmoid, as in the reference code
        return torch.polar(mag.expand_as(phase), phase)

    def forward(self) -> torch.Tensor:
        t = torch.fft.irfft2(self.spectrum(), s=self.size, norm="ortho")
        # one scale per image keeps the contrast of all images alike whatever the magnitude's
        # overall level; the ratios between frequencies and colours stay the spectrum's own
        std = t.flatten(1).std(dim=1).clamp_min(1e-8).view(-1, 1, 1, 1)
        return t / std

    @torch.no_grad()
    def set_raw(self, raw: torch.Tensor) -> None:
        """Take the phase of ``raw`` (the magnitude stays the prior's: MACO's way to start
        from an image)."""
        self.phase.copy_(torch.fft.rfft2(raw, norm="ortho").angle())


def _hermitian_phase(phase: torch.Tensor, width: int) -> torch.Tensor:
    """Make the phase of the self-conjugate columns odd along the height (phi(-k) = -phi(k)),
    which a real image's spectrum needs; other bins are free."""
    h = phase.shape[-2]
    mirror = (-torch.arange(h, device=phase.device)) % h
    cols = [0] + ([phase.shape[-1] - 1] if width % 2 == 0 else [])
    out = phase.clone()
    for col in cols:
        p = phase[..., :, col]
        out[..., :, col] = (p - p[..., mirror]) / 2
    return out
