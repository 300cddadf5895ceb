"""Seeds: one number per image, from which every random draw of that image comes.

A seed enters once — given to a parameterization factory, or to ``render`` when render makes
the parameterization — and each use reads its own stream of it: the starting noise (a
``torch.Generator`` per image), the random transforms (:class:`~featviz.transforms.ImageStreams`)
and, for RGBA images, the random backgrounds. Image ``i`` depends on its seed alone, never on
the other images in its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Seed = int | Sequence[int] | None

# Each use of an image's seed reads its own stream. The noise and the transforms draw from
# different generator objects seeded alike; the backgrounds use seed + 7919 (a prime far past
# any batch offset seed + i), so an image's backgrounds never replay any image's transforms;
# the held-out checks of ``stop_at`` use seed + 104729 (another prime) the same way.
STREAM_OFFSETS = {"noise": 0, "transforms": 0, "background": 7919, "held-out": 104729}
#: view v > 0 of an image (render's ``views``) draws its transforms from the image's seed plus
#: v times this prime, far from the seeds of the other images of a batch (seed + i)
VIEW_OFFSET = 15485863


def view_seeds(seeds: Sequence[int], views: int) -> list[int]:
    """The transform streams of ``views`` views of each image, view by view (the first view's
    are the images' own ``"transforms"`` streams, so one view is a render without views).

    Args:
        seeds: Each image's seed (:func:`image_seeds`).
        views: How many transformed copies of each image a step sees.
    """
    first = stream_seeds(seeds, "transforms")
    return [s + v * VIEW_OFFSET for v in range(views) for s in first]


def new_seed() -> int:
    """A fresh seed from torch's global generator (so ``torch.manual_seed`` repeats it)."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


def image_seeds(seed: Seed, n: int) -> list[int]:
    """One seed per image of a batch of ``n``: ``seed + i`` for one number, the list itself
    for a list (which must have ``n`` entries), or ``new_seed() + i`` for None.

    Args:
        seed: One number, a list of ``n`` numbers, or None (a fresh random seed).
        n: The batch's number of images.
    """
    if seed is None:
        seed = new_seed()
    if isinstance(seed, Sequence):
        if len(seed) != n:
            raise ValueError(f"{len(seed)} seeds for a batch of {n} images")
        return [int(s) for s in seed]
    return [int(seed) + i for i in range(n)]


def stream_seeds(seeds: Sequence[int], purpose: str) -> list[int]:
    """The seeds of the stream ``purpose`` (a key of :data:`STREAM_OFFSETS`) of each image.

    Args:
        seeds: Each image's seed (:func:`image_seeds`).
        purpose: The stream's name, a key of :data:`STREAM_OFFSETS`.
    """
    offset = STREAM_OFFSETS[purpose]
    return [int(s) + offset for s in seeds]


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image for its starting noise.

    Args:
        seeds: Each image's seed (:func:`image_seeds`).
    """
    return [torch.Generator().manual_seed(s) for s in stream_seeds(seeds, "noise")]
