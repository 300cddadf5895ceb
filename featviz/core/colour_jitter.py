"""A random colour transform: each image's channels shifted and their contrast scaled by a new
draw every step, so that a render cannot lean on one exact colour (Ghiasi et al. 2022's
``ColorJitter``, which they found helps vision transformers' pictures)."""

from __future__ import annotations

import torch

from .transform_base import Random, Transform, numbers


class color_jitter(Transform):  # noqa: N801  (lowercase, like the other transforms)
    """Per image and channel, ``(x - 0.5) * contrast ** u + 0.5 + shift * v`` with ``u`` and
    ``v`` drawn uniformly from [-1, 1]: brightness moved by up to ``shift`` (in [0, 1] pixel
    units) and contrast about mid-grey scaled by a factor between ``1 / contrast`` and
    ``contrast``. Geometric transforms before and after it still fuse among themselves.

    Args:
        shift: the largest shift of a channel, in [0, 1] pixel units (0: none).
        contrast: the largest contrast factor, >= 1 (1: none).
    """

    def __init__(self, shift: float = 0.1, contrast: float = 1.25):
        if shift < 0 or contrast < 1:
            raise ValueError(f"color_jitter needs shift >= 0 and contrast >= 1, got "
                             f"shift={shift}, contrast={contrast}")
        self.shift, self.contrast = float(shift), float(contrast)

    def __call__(self, x: torch.Tensor, generator: Random = None) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        u = numbers(2 * c, n, generator, x.device).T.reshape(n, 2, c, 1, 1).to(x.dtype)
        gain = self.contrast ** (2 * u[:, 0] - 1)
        return (x - 0.5) * gain + 0.5 + self.shift * (2 * u[:, 1] - 1)

    def __repr__(self) -> str:
        return f"color_jitter({self.shift}, {self.contrast})"
