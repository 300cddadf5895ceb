"""Pluggable steps of the render loop. A stage sees each step's images before the transforms,
may adjust the objective's values, and hears when the backward pass is done; render builds the
list of stages from what the parameterization declares (alpha, saliency).

    img = stage.images(img)        # before transforms and model
    values = stage.values(values)  # after the objective
    stage.after_backward()         # after loss.backward()
"""

from __future__ import annotations

import torch

from ..param import alpha as _alpha
from ..transforms import ImageStreams


class Stage:
    """A step of the loop that does nothing; subclasses override what they need."""

    def images(self, img: torch.Tensor) -> torch.Tensor:
        """The images the rest of the step sees (default: unchanged)."""
        return img

    def values(self, values: torch.Tensor) -> torch.Tensor:
        """The objective's values per image after this stage (default: unchanged)."""
        return values

    def after_backward(self) -> None:
        """Called once the loss's gradients exist."""


class AlphaBlend(Stage):
    """RGBA images blended over a new random smooth background each step, the objective scaled
    by (1 - mean alpha) so that opacity has a price (Distill, "Differentiable Image
    Parameterizations" section 4). Backgrounds come from per-image streams of their own."""

    def __init__(self, streams: ImageStreams, size: tuple[int, int]):
        self.streams = streams
        self.size = size
        self.weight: torch.Tensor | None = None

    def images(self, img: torch.Tensor) -> torch.Tensor:
        self.weight = _alpha.opacity_weight(img)
        return _alpha.blend(img, _alpha.random_background(self.streams, self.size))

    def values(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.weight


class SaliencyMap(Stage):
    """Accumulates |dL/dx| per pixel (mean over colour channels) of the images the transforms
    receive: where the image mattered to the objective over the whole optimization."""

    def __init__(self, n_images: int, size: tuple[int, int], device: torch.device):
        self.total = torch.zeros(n_images, 1, *size, device=device)
        self._img: torch.Tensor | None = None

    def images(self, img: torch.Tensor) -> torch.Tensor:
        img.retain_grad()
        self._img = img
        return img

    def after_backward(self) -> None:
        self.total += self._img.grad.detach().abs().mean(dim=1, keepdim=True)
        self._img = None

    def result(self) -> torch.Tensor:
        """The map scaled to [0, 1] per image, on the CPU."""
        peak = self.total.flatten(1).amax(dim=1).clamp_min(1e-20).view(-1, 1, 1, 1)
        return (self.total / peak).cpu()
