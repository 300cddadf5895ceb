"""Pluggable steps of the render loop. A stage sees each step's images before the transforms,
may adjust the objective's values, and hears when the backward pass is done; render builds the
list of stages from what the parameterization declares (rail guard, alpha, saliency).

    img = stage.images(img)        # before transforms and model
    values = stage.values(values)  # after the objective
    stage.after_backward()         # after loss.backward()
"""

from __future__ import annotations

import torch

from ...errors import non_negative
from ..objectives import RAIL_MARGIN
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


class _PushOffRails(torch.autograd.Function):
    """Identity forward; backward adds, to each colour value within ``margin`` of 0 or 1, a
    push back inside of ``weight`` times the mean |gradient| over its image."""

    @staticmethod
    def forward(ctx, img: torch.Tensor, weight: float, margin: float, colours: int | None
                ) -> torch.Tensor:
        ctx.save_for_backward(img)
        ctx.weight, ctx.margin, ctx.colours = weight, margin, colours
        return img.view_as(img)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (img,) = ctx.saved_tensors
        colour = img[:, :ctx.colours]
        # the loss falls as the objective rises: a negative gradient raises a value
        side = (colour > 1 - ctx.margin).to(grad.dtype) - (colour < ctx.margin).to(grad.dtype)
        pull = grad[:, :ctx.colours].detach().abs().flatten(1).mean(dim=1).view(-1, 1, 1, 1)
        grad = grad.clone()
        grad[:, :ctx.colours] += ctx.weight * pull * side
        return grad, None, None, None


class RailGuard(Stage):
    """Keeps colours off the rails (0 and 1), where a sigmoid image under large Adam steps
    stalls in flat black, white or pure-colour areas. Each colour value within
    :data:`RAIL_MARGIN` of a rail gets a gradient pushing it back inside, ``weight`` times the
    mean |gradient| the objective puts on its image's values that step. Being relative to the
    objective's own pull, the push needs no tuning to the objective's scale (a channel of
    InceptionV1 at 300-1300, one of MobileNetV2 at 20), unlike a clipping penalty of fixed
    weight; the objective's values, and so the history, are the objective's alone."""

    def __init__(self, weight: float, colours: int | None = None):
        # colours: the bands guarded, as a slice's end (None: all; -1: all but RGBA's alpha)
        self.weight = non_negative("rail_guard", weight, "the push off 0 and 1 as a multiple of "
                                   "the objective's mean pull on a colour value, e.g. 2; 0: "
                                   "none")
        self.colours = colours

    def images(self, img: torch.Tensor) -> torch.Tensor:
        if not img.requires_grad:
            return img
        return _PushOffRails.apply(img, self.weight, RAIL_MARGIN, self.colours)

