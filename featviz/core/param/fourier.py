"""The Fourier parameterization: the image is the inverse FFT of a learned, scaled spectrum."""

from __future__ import annotations

import torch
from torch import nn

from .noise import Generators, normal


def rfft2_frequencies(h: int, w: int) -> torch.Tensor:
    """Spatial frequency magnitude (cycles per pixel) of each bin of a real 2-D FFT [h, w//2+1].

    Args:
        h: Image height in pixels.
        w: Image width in pixels.
    """
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return (fx ** 2 + fy ** 2).sqrt()


class FourierRaw(nn.Module):
    """Raw image [B,3,H,W] from a spectrum scaled by 1/frequency (lucid's ``fft_image``).

    The scale makes each frequency band contribute equally to the gradient's effect, which
    whitens the optimization against natural images' 1/f spectrum. With ``norm="ortho"`` torch
    needs the scale without lucid's √(w·h) factor (TF's inverse FFT divides by w·h).
    """

    def __init__(self, shape: tuple[int, int, int, int], sd: float = 0.01, decay_power: float = 1.0,
                 generator: Generators = None):
        super().__init__()
        b, c, h, w = shape
        self.size = (h, w)
        freqs = rfft2_frequencies(h, w)
        scale = 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", scale, persistent=False)
        self.spectrum = nn.Parameter(normal((b, c, h, w // 2 + 1, 2), sd, generator))

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        # lucid divides by 4 to keep the initial image's contrast low
        return torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4.0

    @torch.no_grad()
    def set_raw(self, raw: torch.Tensor) -> None:
        """Make :meth:`forward` return ``raw`` (used to start from a given image)."""
        spectrum = torch.fft.rfft2(raw * 4.0, norm="ortho") / self.scale
        self.spectrum.copy_(torch.view_as_real(spectrum))
