"""What every parameterization is: an ``nn.Module`` whose ``forward()`` gives a batch of images
and whose parameters the optimizer changes, declaring what render needs to know of it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..seeds import Seed, generators, image_seeds
from .noise import Generators


class Parameterization(nn.Module):
    """Base class of every image parameterization.

    ``forward()`` returns the current images [B, C, H, W] in [0, 1], where C is
    :attr:`channels` (plus one for :attr:`alpha`). Subclasses declare, as class attributes or
    in their constructor: :attr:`lr` (Adam's learning rate meant for them),
    :attr:`lr_schedule` (its course over the steps, a name :mod:`featviz.core.render.schedule`
    knows), :attr:`ema` (the decay of the average of the parameters render shows, 0 for the
    last step's), :attr:`adam_floor` (Adam's denominator floor, a multiple of each image's
    mean; 0 for plain Adam), :attr:`rail_guard` (the push off 0 and 1, a multiple of the
    objective's mean pull on a value; 0 for none), :attr:`transforms` (the preset
    ``render(transforms="auto")`` picks), :attr:`saliency` (whether render should accumulate
    the saliency map |dL/dx|), :attr:`channels`, :attr:`alpha` and :attr:`display` (how its
    images are best shown: None as they are, ``"stretch"`` with their contrast stretched, see
    :func:`featviz.images.stretch`) and :attr:`fast_course` (whether ``render(pace="auto")``
    may take the fast course for it, see :data:`featviz.core.render.options.FAST`). The
    per-image seeds it was built from are :attr:`seeds`
    (None when it was given generators instead); :attr:`seed_given` tells whether they were
    chosen by the caller or drawn at random.
    """

    lr: float = 0.05
    lr_schedule: str = "constant"
    ema: float = 0.0
    adam_floor: float = 0.0
    rail_guard: float = 0.0
    transforms: str = "standard"
    saliency: bool = False
    channels: int = 3
    alpha: bool = False
    display: str | None = None
    fast_course: bool = False

    def __init__(self, batch: int, size: tuple[int, int], seeds: Sequence[int] | None = None):
        super().__init__()
        self.batch = batch
        self.size = size
        self.seeds = list(seeds) if seeds is not None else None
        self.seed_given = seeds is not None  # factories say when they drew them

    @property
    def out_channels(self) -> int:
        """Channels of ``forward()``'s images: the colour channels plus one for alpha."""
        return self.channels + int(self.alpha)

    def forward(self) -> torch.Tensor:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


def seeded(seed: Seed, generator: Generators, batch: int
           ) -> tuple[list[int] | None, Generators]:
    """The seeds and noise generators of a new parameterization of ``batch`` images: from
    ``seed`` (one number, one per image, or None for a fresh one), or, for callers that bring
    their own, the ``generator`` given (its seeds are then unknown: None).

    Args:
        seed: One number, one per image, or None for a fresh one.
        generator: Generators the caller brings (one, or one per image); None to make them.
        batch: Number of images.
    """
    if generator is not None:
        if seed is not None:
            raise ValueError("give a parameterization a seed or generators, not both")
        return None, generator
    seeds = image_seeds(seed, batch)
    return seeds, generators(seeds)
