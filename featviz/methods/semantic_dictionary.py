"""Semantic dictionaries (Olah et al., "The Building Blocks of Interpretability", Distill
2018): for each spatial position of a layer on one photo, the channels that fire most there
(or that matter most to a class there), each shown by its feature visualization. A channel's
picture is rendered once and reused wherever it appears, and can come from a folder of
earlier renders (a sweep's output) so a layer is rendered only once for many photos."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..core import files as _files
from ..core import images as _images
from ..core import notebook as _nb
from ..core import objectives as _objectives
from ..core.render import render
from ..core.sizes import side
from ..errors import FeatvizError, unknown
from .activation_grid import layer_vectors

RANKINGS = ("activation", "attribution")


@dataclass
class SemanticDictionary:
    """The top channels of ``layer`` at each position of one photo.

    ``channels`` [h, w, n] the channel indices, best first; ``values`` [h, w, n] what ranked
    them (the activation, or its attribution to ``target`` with ``by="attribution"``);
    ``renders`` channel -> its visualization [3, s, s]; ``image`` the photo [1, 3, H, W].
    """

    layer: str
    image: torch.Tensor
    channels: torch.Tensor
    values: torch.Tensor
    renders: dict[int, torch.Tensor]
    by: str = "activation"
    target: object = None

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the layer's map."""
        return tuple(self.channels.shape[:2])

    def entry(self, y: int, x: int) -> list[tuple[int, float, torch.Tensor]]:
        """(channel, value, picture) of the top channels at row ``y``, column ``x``."""
        h, w = self.shape
        if not (0 <= y < h and 0 <= x < w):
            raise FeatvizError(f"position y={y}, x={x} is outside the {h}x{w} map of "
                               f"{self.layer!r} (valid: y 0-{h - 1}, x 0-{w - 1})")
        return [(int(c), float(v), self.renders[int(c)])
                for c, v in zip(self.channels[y, x], self.values[y, x], strict=True)]

    def strongest(self, count: int = 4) -> list[tuple[int, int]]:
        """The ``count`` positions (y, x) whose best channel has the highest value, one per
        distinct best channel: good places to look first."""
        order = self.values[..., 0].flatten().argsort(descending=True)
        seen, picked = set(), []
        w = self.shape[1]
        for i in order.tolist():
            c = int(self.channels.flatten(0, 1)[i, 0])
            if c not in seen:
                seen.add(c)
                picked.append((i // w, i % w))
            if len(picked) == count:
                break
        return picked

    def figure(self, positions: Sequence[tuple[int, int]] | None = None,
               tile: int = 96) -> Image.Image:
        """One row per position: the photo with that position's patch outlined, then its top
        channels' pictures labelled with channel and value. Positions default to
        :meth:`strongest`."""
        positions = list(positions or self.strongest())
        tiles, labels = [], []
        for y, x in positions:
            tiles.append(_resized(self.marked(y, x), tile))
            labels.append(f"{self.layer} y={y} x={x}")
            for c, v, pic in self.entry(y, x):
                tiles.append(_resized(pic[None, :3], tile))
                labels.append(f"{c}: {v:.3g}")
        return _images.grid(torch.cat(tiles), labels, ncol=1 + self.channels.shape[2])

    def __repr__(self) -> str:
        h, w = self.shape
        return (f"SemanticDictionary({self.layer}: {h}x{w} positions, top "
                f"{self.channels.shape[2]} channels by {self.by}, {len(self.renders)} channel "
                "pictures)")

    def _repr_png_(self) -> bytes:
        """:meth:`figure` at the strongest positions."""
        return _nb.png(self.figure())

    def _repr_html_(self) -> str:
        """The figure, with a line on how to read it."""
        page = _nb.Budget()
        page.text(f"<p>Each row: a position of <code>{self.layer}</code> outlined on the "
                  f"photo, then its top channels by {self.by} (channel: value). "
                  "<code>.figure([(y, x), ...])</code> shows other positions.</p>")
        page.image(self.figure(), "semantic dictionary")
        return page.html(f"semantic dictionary: {self.layer}")

    def marked(self, y: int, x: int) -> torch.Tensor:
        """The photo [1, 3, H, W] with the patch of position (y, x) outlined in red."""
        img = self.image[:, :3].clone()
        h, w = self.shape
        top, bottom = y * img.shape[2] // h, (y + 1) * img.shape[2] // h
        left, right = x * img.shape[3] // w, (x + 1) * img.shape[3] // w
        red = torch.tensor([1.0, 0.1, 0.1])[:, None]
        t = max(1, img.shape[2] // 112)
        for rows, cols in (((top, top + t), (left, right)), ((bottom - t, bottom), (left, right)),
                           ((top, bottom), (left, left + t)), ((top, bottom), (right - t, right))):
            img[0, :, rows[0]:rows[1], cols[0]:cols[1]] = red[..., None]
        return img


# why the pictures of channels take one side only
_SQUARE_TILES = "each channel's picture fills a square tile"


def _resized(img: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(img.float(), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


def _ranking(model: nn.Module, image: torch.Tensor, layer: str, by: str,
             target) -> torch.Tensor:
    """What ranks the channels at each position, [h, w, C]."""
    if by not in RANKINGS:
        raise unknown("ranking", by, list(RANKINGS))
    if by == "activation":
        return layer_vectors(model, image, layer)
    from . import attribution as _attribution

    result = _attribution.attribute(model, image, layer, target, method="gradient")
    return result.values[0].float().cpu().permute(1, 2, 0)


def channel_renders(model: nn.Module, layer: str, channels: Sequence[int], *, size: int = 96,
                    steps: int = 256, seed: int = 0, folder: str | os.PathLike | None = None,
                    progress: bool = True, **render_kw: Any) -> dict[int, torch.Tensor]:
    """The feature visualization of each of ``channels`` of ``layer``, channel -> [3, s, s].

    With ``folder``, pictures already there (``LAYER/cNNNN.png``, the layout ``featviz sweep``
    writes) are read instead of rendered, and new ones are written there, so each channel is
    rendered once across photos and runs. The rest render in one batch. ``size`` is one side:
    the pictures fill square tiles (a rectangle is a :class:`~featviz.errors.SizeError`).

    Args:
        model: the network.
        layer: the layer.
        channels: the channels to render.
        size: the side of the pictures, in pixels (default 96).
        steps: optimization steps (default 256).
        seed: the random seed.
        folder: where pictures are read and written; None keeps none.
        progress: show a progress bar.
        **render_kw: other options for :func:`featviz.render`.
    """
    side(size, "channel_renders", _SQUARE_TILES)
    found: dict[int, torch.Tensor] = {}
    todo = []
    for c in dict.fromkeys(int(c) for c in channels):
        path = Path(folder) / _files.image_file(layer, c) if folder else None
        if path is not None and path.is_file():
            found[c] = _images.load(path)[0]
        else:
            todo.append(c)
    if todo:
        res = render(model, _objectives.channel(layer, todo), steps=steps, size=size, seed=seed,
                     progress=progress, **render_kw)
        for c, img in zip(todo, res.shown(), strict=True):
            found[c] = img
            if folder:
                _images.save(img[None], Path(folder) / _files.image_file(layer, c))
    return found


def semantic_dictionary(model: nn.Module, image: torch.Tensor, layer: str, *, n: int = 4,
                        by: str = "activation", target: Any = None,
                        renders: Mapping[int, torch.Tensor] | None = None,
                        folder: str | os.PathLike | None = None, size: int = 96,
                        steps: int = 256, seed: int = 0, progress: bool = True
                        ) -> SemanticDictionary:
    """For every position of ``layer`` on ``image`` ([1,3,H,W] or [3,H,W] in [0, 1]), its
    ``n`` top channels by activation (``by="activation"``) or by gradient × activation
    towards ``target`` (``by="attribution"``: a class index or objective, as
    :func:`featviz.attribution.attribute` takes), with each channel's feature visualization.
    Pictures come from ``renders`` (channel -> image) or ``folder`` where they exist there,
    and the missing ones are rendered once, in one batch (``size``, one side: the pictures
    fill square tiles; ``steps``, ``seed``).

    Args:
        model: the network.
        image: the photo, [1, 3, H, W] or [3, H, W] in [0, 1].
        layer: the layer.
        n: top channels per position (default 4).
        by: ``"activation"`` (default) or ``"attribution"``.
        target: the class index or objective for ``"attribution"``.
        renders: channel pictures at hand; None for none.
        folder: where channel pictures are read and written; None keeps none.
        size: the side of the pictures, in pixels (default 96).
        steps: optimization steps (default 256).
        seed: the random seed.
        progress: show a progress bar.
    """
    side(size, "semantic_dictionary", _SQUARE_TILES)
    if image.dim() == 3:
        image = image[None]
    scores = _ranking(model, image, layer, by, target)
    if not 1 <= n <= scores.shape[-1]:
        raise FeatvizError(f"n={n} top channels asked of layer {layer!r}, which has "
                           f"{scores.shape[-1]} (valid: 1-{scores.shape[-1]})")
    values, channels = scores.topk(n, dim=-1)
    pictures = dict(renders or {})
    missing = [c for c in channels.unique().tolist() if c not in pictures]
    if missing:
        pictures.update(channel_renders(model, layer, missing, size=size, steps=steps,
                                        seed=seed, folder=folder, progress=progress))
    return SemanticDictionary(layer, image[:1].cpu(), channels, values, pictures, by, target)
