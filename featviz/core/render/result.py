"""What a render made: :class:`RenderResult`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...errors import FeatvizError
from .. import images as _images
from .. import notebook as _nb

_SHOWN = 64  # images of a batch a notebook cell shows


@dataclass(repr=False)
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
    where the image mattered to the objective; ``held_out``: with ``stop_at``, the held-out
    objective per image [K, B] measured at ``held_out_steps``.
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
    held_out: torch.Tensor | None = None
    held_out_steps: list[int] = field(default_factory=list)

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

    def __repr__(self) -> str:
        # the dataclass's own repr prints every pixel of every tensor
        state = ", interrupted" if self.interrupted else ""
        return (f"RenderResult({len(self.images)} image(s) {_nb.shape(self.images[0])}, "
                f"{self.steps_done} steps in {self.seconds:.1f} s{state}, "
                f"labels={self.labels[:4]!r}{'...' if len(self.labels) > 4 else ''}, "
                f"values={_nb.numbers(self.values.tolist())})")

    def _repr_png_(self) -> bytes:
        """The final image, or a labelled grid of the batch, as PNG bytes (Jupyter)."""
        return _nb.png(self._picture())

    def _repr_html_(self) -> str:
        """The final images with their labels, a table of objective values and seeds, and
        the snapshots at their thresholds as one row per image (Jupyter)."""
        page = _nb.Budget()
        state = " (interrupted)" if self.interrupted else ""
        page.text(f"<p>{len(self.images)} image(s), {self.steps_done} steps in "
                  f"{self.seconds:.1f} s{state}</p>")
        page.image(self._picture(), "render")
        values = self.values.tolist()
        page.text(_nb.table(["#", "objective", "value", "seed"],
                            [(i, self.labels[i] if i < len(self.labels) else "",
                              f"{values[i]:.4g}" if i < len(values) else "", s)
                             for i, s in enumerate(self.seeds[:_SHOWN])]))
        if self.snapshots:
            page.text("<p>snapshots</p>")
            page.image(self._snapshot_rows(), "snapshots")
        return page.html("featviz render")

    def _shown_rgb(self) -> torch.Tensor:
        """At most :data:`_SHOWN` images as :meth:`shown` gives them, N bands as their first
        three (four bands that are not RGBA included)."""
        shown = self.shown()[:_SHOWN]
        return shown if self.alpha or shown.shape[1] in (1, 3) else _images.composite(
            shown, [min(i, shown.shape[1] - 1) for i in range(3)])

    def _picture(self):
        # one objective for the whole batch labels every image alike: the table says it once
        labels = self.labels[:_SHOWN] if len(set(self.labels)) > 1 else None
        return _nb.picture(self._shown_rgb(), labels)

    def _snapshot_rows(self):
        """One row per image (at most 8): its snapshot at each threshold, then the end."""
        steps = sorted(self.snapshots)
        n = min(8, len(self.images))
        frames = [self.snapshots[s][:n] for s in steps] + [self.images[:n]]
        names = [f"step {s}" for s in steps] + [f"end ({self.steps_done})"]
        tiles = torch.stack(frames, 1).flatten(0, 1)  # image-major: a row per image
        if tiles.shape[1] not in (1, 3, 4) or (tiles.shape[1] == 4 and not self.alpha):
            tiles = _images.composite(tiles, [min(i, tiles.shape[1] - 1) for i in range(3)])
        return _images.grid(tiles, names * n, ncol=len(names))

    def save_gif(self, path: str | os.PathLike, seconds_per_frame: float = 0.2) -> Path:
        """Write the snapshots and the final images as an animated GIF."""
        frames = [self.snapshots[s] for s in sorted(self.snapshots)]
        if not frames or not torch.equal(frames[-1], self.images):
            frames.append(self.images)
        return _images.save_gif(frames, path, seconds_per_frame)
