"""What every random transform shares: independent random numbers per image
(:class:`ImageStreams`, one stream per image seed) and the :class:`Transform` interface. The
geometric transforms are in :mod:`featviz.core.transforms`, the colour ones in
:mod:`featviz.core.colour_jitter`."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ImageStreams:
    """Independent random numbers for each image of a batch, one CPU generator per image seed.

    Numbers are drawn in blocks and shipped to the device once per block, so a step costs no
    host round trip; image ``i`` sees the same numbers whatever else is in its batch, which is
    what makes a batched render equal the same images rendered one by one.
    """

    def __init__(self, seeds: Sequence[int], device: str | torch.device = "cpu", block: int = 256):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.device = torch.device(device)
        self.block = block
        self._buffer: torch.Tensor | None = None
        self._row = block

    def __len__(self) -> int:
        return len(self.generators)

    def uniform(self, n: int) -> torch.Tensor:
        """One number in [0, 1) per image, shape [n], on the device."""
        return self.rows(n, 1)[0]

    def rows(self, n: int, k: int) -> torch.Tensor:
        """The next ``k`` numbers in [0, 1) of each image's stream, shape [k, n], on the device.

        The streams do not depend on how they are read: ``k`` rows at once are the same
        numbers as ``k`` reads of one row (a read may span two blocks)."""
        if n != len(self.generators):
            raise ValueError(f"these streams serve a batch of {len(self.generators)} images, "
                             f"not {n}")
        if k > self.block:
            raise ValueError(f"at most {self.block} numbers per image at once, asked for {k}")
        if k == 0:
            return torch.empty(0, n, device=self.device)
        if self._row + k <= self.block:
            self._row += k
            return self._buffer[self._row - k:self._row]
        rest = self._buffer[self._row:] if self._buffer is not None else None
        rows = torch.stack([torch.rand(self.block, generator=g) for g in self.generators], 1)
        if self.device.type == "cuda":
            rows = rows.pin_memory()
        self._buffer = rows.to(self.device, non_blocking=True)
        self._row = k - (len(rest) if rest is not None else 0)
        head = self._buffer[:self._row]
        return head if rest is None or not len(rest) else torch.cat([rest, head])


Random = torch.Generator | ImageStreams | None


def numbers(k: int, n: int, generator: Random, device) -> torch.Tensor:
    """``k`` numbers in [0, 1) per image, shape [k, n]: from each image's stream, or from
    ``generator`` (torch's global one for None) on ``device``.

    Args:
        k: numbers per image.
        n: images.
        generator: the images' streams, a generator, or None.
        device: where a generator's numbers are made.
    """
    if isinstance(generator, ImageStreams):
        return generator.rows(n, k)
    return torch.rand(k, n, generator=generator, device=device)


class Transform:
    """A random transformation of an image batch ``[B,C,H,W] -> [B,C,H',W']``."""

    def __call__(self, x: torch.Tensor, generator: Random = None) -> torch.Tensor:
        raise NotImplementedError
