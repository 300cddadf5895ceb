"""Transparency (Distill, "Differentiable Image Parameterizations", section 4): an RGBA image
is blended over a new random background each step, so only the opaque parts can drive the
objective, and the objective is scaled by (1 - mean alpha) so that opacity has a price."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Background: random colours on a GRID x GRID lattice, bilinearly smoothed to the image size:
# smooth enough not to look like a feature, varied enough that no fixed colour can be relied on.
GRID = 4


def blend(rgba: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """``rgb * alpha + background * (1 - alpha)`` for ``rgba`` [B,4,H,W] and a background
    [B,3,H,W] (or broadcastable to it).

    Args:
        rgba: Images [B,4,H,W], the alpha channel last.
        background: Backgrounds [B,3,H,W], or anything that broadcasts to that.
    """
    rgb, alpha = rgba[:, :3], rgba[:, 3:4]
    return rgb * alpha + background * (1 - alpha)


def opacity_weight(rgba: torch.Tensor) -> torch.Tensor:
    """``1 - mean alpha`` per image, shape [B]: the factor the objective is multiplied by.

    Args:
        rgba: Images [B,4,H,W], the alpha channel last.
    """
    return 1 - rgba[:, 3].flatten(1).mean(dim=1)


def random_background(streams, size: tuple[int, int]) -> torch.Tensor:
    """A smooth random RGB background [B,3,H,W] per image, drawn from ``streams`` (a
    :class:`~featviz.transforms.ImageStreams`) so a seed repeats it.

    Args:
        streams: The per-image random streams to draw from, one per image.
        size: (height, width) of the background.
    """
    n = len(streams)
    lattice = streams.rows(n, 3 * GRID * GRID).T.reshape(n, 3, GRID, GRID)
    return F.interpolate(lattice, size=size, mode="bilinear", align_corners=True)
