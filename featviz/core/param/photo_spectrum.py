"""A photo's own spectrum as the parameterization (feature accentuation, Hamblin et al. 2024,
"Feature Accentuation: Revealing 'What' Features Respond to in Natural Images"): the Fourier
magnitude is the seed photo's, fixed, times a learnable per-frequency gain in (0, 1); the phase
is optimized, starting at the photo's phase. Every image the optimizer can reach keeps the
photo's distribution of energy over frequencies and colours (or less of it), so it moves
things around in the photo rather than painting new texture over it.

Built in the decorrelated colour space, before the sigmoid (like every :class:`ImageParam`),
so step 0 reproduces the seed up to the safe logit's clamp (pixels kept in [1e-4, 1 - 1e-4]).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ...errors import FeatvizError
from .color import Decorrelate

if TYPE_CHECKING:  # ImageParam is imported where used: the package may import this module
    from . import ImageParam

#: The gain's logit at the start: sigmoid(5) = 0.9933, the reference code's start (faccent's
#: ``mag_alpha_init``). Near 1 so the photo's full spectrum is available, below it so that
#: the optimizer can still lower a frequency's energy (it can never raise one past the
#: photo's own, by 1/0.9933).
GAIN_INIT = 5.0


class SeededSpectrumRaw(nn.Module):
    """Raw image [B,C,H,W] = ``irfft2(magnitude * sigmoid(gain) * exp(i * phase))``.

    ``magnitude`` [B,C,H,W//2+1] is a fixed buffer, ``phase`` and ``gain`` (same shape) the
    parameters. :meth:`set_raw` takes both from a raw image; the magnitude is stored divided
    by sigmoid(``gain_init``), so that :meth:`forward` returns that raw image exactly at the
    start (not scaled by 0.9933, which would shift mid-grey pixels by up to 1.5e-3).
    """

    def __init__(self, shape: tuple[int, int, int, int], gain_init: float = GAIN_INIT):
        super().__init__()
        b, c, h, w = shape
        self.size = (h, w)
        self.gain_init = float(gain_init)
        spec = (b, c, h, w // 2 + 1)
        self.register_buffer("magnitude", torch.zeros(spec), persistent=True)
        self.phase = nn.Parameter(torch.zeros(spec))
        self.gain = nn.Parameter(torch.full(spec, self.gain_init))

    def forward(self) -> torch.Tensor:
        spectrum = torch.polar(self.magnitude * torch.sigmoid(self.gain), self.phase)
        return torch.fft.irfft2(spectrum, s=self.size, norm="ortho")

    @torch.no_grad()
    def set_raw(self, raw: torch.Tensor) -> None:
        """Make :meth:`forward` return ``raw`` [B,C,H,W]: its magnitude becomes the fixed one,
        its phase the start of the optimized one, and the gain starts again at its start.

        Args:
            raw: The raw image (decorrelated colour, before the sigmoid).
        """
        spectrum = torch.fft.rfft2(raw.to(self.phase), norm="ortho")
        if spectrum.shape != self.phase.shape:
            raise ValueError(f"raw image of shape {list(raw.shape)} for a parameterization of "
                             f"{list(self.phase.shape[:2]) + list(self.size)}")
        start = torch.sigmoid(torch.tensor(self.gain_init))
        self.magnitude.copy_(spectrum.abs() / start)
        self.phase.copy_(spectrum.angle())
        self.gain.fill_(self.gain_init)

    def extra_repr(self) -> str:
        return f"size={self.size}, gain_init={self.gain_init:g}"


def seeded_spectrum(image: torch.Tensor, gain_init: float = GAIN_INIT,
                    decorrelate: Decorrelate = None,
                    device: str | torch.device | None = None) -> ImageParam:
    """The image parameterization of feature accentuation, started at ``image``: the photo's
    own Fourier magnitude (fixed) times a learnable gain sigmoid(g) per frequency, colour and
    image, g starting at ``gain_init``; the phase optimized from the photo's; colour
    decorrelated (ImageNet's for RGB) and squashed by a sigmoid. ``forward()`` at the start
    gives ``image`` back to within 1e-4 (the safe logit keeps pixels off exactly 0 and 1).

    Args:
        image: The seed photo, [C,H,W] or [B,C,H,W] in [0, 1] (one image per batch element).
        gain_init: The gain's logit at the start (default 5: a gain of 0.9933).
        decorrelate: As in :func:`featviz.param.image` (None: ImageNet's for RGB).
        device: Where to put the parameterization; None: the image's device.
    """
    from . import ImageParam

    img = _checked(image)
    b, c, h, w = img.shape
    raw = SeededSpectrumRaw((b, c, h, w), gain_init)
    p = ImageParam(raw, b, (h, w), decorrelate, valid="sigmoid", channels=c)
    p = p.to(device if device is not None else img.device)
    return p.set_image(img)


def _checked(image: torch.Tensor) -> torch.Tensor:
    """``image`` as a float [B,C,H,W] batch, after checking its shape and values."""
    if not torch.is_tensor(image) or image.dim() not in (3, 4):
        shape = list(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise FeatvizError(f"the seed image must be a [C,H,W] or [B,C,H,W] tensor in [0, 1], "
                           f"got {shape}")
    img = (image[None] if image.dim() == 3 else image).detach().float()
    if min(img.shape[-2:]) < 2 or img.shape[0] < 1:
        raise FeatvizError(f"the seed image must be at least 2x2 pixels, got {list(img.shape)}")
    if not torch.isfinite(img).all() or img.min() < -1e-3 or img.max() > 1 + 1e-3:
        raise FeatvizError(f"the seed image's values must be finite and in [0, 1], got "
                           f"{float(img.nan_to_num().min()):.3g} to "
                           f"{float(img.nan_to_num().max()):.3g}")
    return img.clamp(0, 1)
