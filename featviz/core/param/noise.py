"""Initial noise, drawn per image when each image has its own generator."""

from __future__ import annotations

from collections.abc import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


def normal(shape: tuple[int, ...], sd: float, generator: Generators = None) -> torch.Tensor:
    """N(0, sd²) noise of ``shape`` (batch first). With one generator per image, image ``i``
    is drawn from ``generator[i]`` alone, so it does not depend on the rest of the batch.

    Args:
        shape: Shape of the noise, batch first.
        sd: Standard deviation.
        generator: None (torch's global one), one generator, or one per image.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator) * sd
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]} images")
    return torch.stack([torch.randn(shape[1:], generator=g) for g in generator]) * sd
