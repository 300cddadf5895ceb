"""What a render made: :class:`RenderResult`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...errors import FeatvizError
from .. import images as _images


@dataclass
class RenderResult:
    """What a render made.

    ``images``: the final batch [B,C,H,W] in [0, 1] on the CPU (C: the parameterization's
    channels, 3 for RGB; [B,4,H,W] RGBA for one with alpha); ``snapshots``: step -> images at
    each threshold; ``history``: objective per image [T,B] at ``history_steps``; ``seconds``:
    wall time of the loop; ``seeds``: one per image, repeats the run; ``interrupted``: True when
    Ctrl-C stopped it early (``steps_done`` tells how far it got); ``history_times``: seconds
    since the start at each recorded step (the device is in sync there), for step timings;
    ``saliency``: for parameterizations that ask for it (MACO) or ``render(saliency=True)``, the
    accumulated |dL/dx| over the optimization per pixel [B,1,H,W], scaled to [0, 1] per image:
    where the image mattered to the objective.
    """

    images: torch.Tensor
    snapshots: dict[int, torch.Tensor]
    history: torch.Tensor
    history_steps: list[int]
    labels: list[str]
    seconds: float
    seeds: list[int]
    steps_done: int
    interrupted: bool = False
    history_times: list[float] = field(default_factory=list)
    saliency: torch.Tensor | None = None
    alpha: bool = False  # the images are RGBA (an alpha parameterization), not 4 bands
    display: str | None = None  # how the parameterization's images are best shown

    def shown(self) -> torch.Tensor:
        """The images as they are best shown: :attr:`images`, contrast-stretched when the
        parameterization asks for it (MACO: :func:`featviz.images.stretch`). What ``save``
        writes; :attr:`images` stay what the model saw."""
        if self.display == "stretch" and not self.alpha:
            return _images.stretch(self.images)
        return self.images

    @property
    def transparency(self) -> torch.Tensor | None:
        """The saliency map under its earlier name (MACO's paper shows it as transparency)."""
        return self.saliency

    def ms_per_step(self, after: int = 0) -> float:
        """Mean milliseconds per step between the first recorded step past ``after`` and the
        last one (skip warm-up steps with ``after``); NaN when too few steps were recorded."""
        marks = [(s, t) for s, t in zip(self.history_steps, self.history_times, strict=True)
                 if s > after]
        if len(marks) < 2:
            return float("nan")
        (s0, t0), (s1, t1) = marks[0], marks[-1]
        return 1000 * (t1 - t0) / (s1 - s0)

    @property
    def seed(self) -> int:
        """The first image's seed (image ``i`` used ``seed + i`` when one number was given)."""
        return self.seeds[0]

    @property
    def values(self) -> torch.Tensor:
        """The objective per image at the last recorded step, shape [B]."""
        return self.history[-1] if len(self.history) else torch.empty(0)

    def save(self, path: str | os.PathLike, labels: bool = False,
             ncol: int | None = None, bands: Sequence[int] | None = None) -> Path:
        """Write the final image, or a grid of the batch, to ``path`` (PNG by its suffix), as
        :meth:`shown` gives them; images of N bands as the false-colour composite of ``bands``
        (default the first three), grayscale ones as grayscale."""
        return _images.save(self.shown(), path, self.labels if labels else None, ncol, bands,
                            alpha=self.alpha)

    def save_each(self, folder: str | os.PathLike,
                  names: Sequence[str] | None = None) -> list[Path]:
        """Write one PNG per image of the batch into ``folder`` (named ``names[i]`` or by
        index) and return the paths."""
        folder = Path(folder)
        names = names or [f"{i:03d}" for i in range(len(self.images))]
        pairs = zip(self.shown(), names, strict=True)
        return [_images.save(img, folder / f"{name}.png", alpha=self.alpha)
                for img, name in pairs]

    def with_transparency(self) -> torch.Tensor:
        """The images with the :attr:`saliency` map as their alpha channel, [B,4,H,W] (the
        MACO paper's way of showing them); save with :func:`featviz.images.save` as RGBA PNG.
        Grayscale images are repeated to RGB, N bands shown by their first three."""
        if self.saliency is None:
            raise FeatvizError("this render kept no saliency map; use param.maco(...) or "
                               "render(..., saliency=True)")
        return torch.cat([_images.as_rgb(self.shown()), self.saliency], dim=1)

    def save_gif(self, path: str | os.PathLike, seconds_per_frame: float = 0.2) -> Path:
        """Write the snapshots and the final images as an animated GIF."""
        frames = [self.snapshots[s] for s in sorted(self.snapshots)]
        if not frames or not torch.equal(frames[-1], self.images):
            frames.append(self.images)
        return _images.save_gif(frames, path, seconds_per_frame)
