"""Activation atlases (Carter et al., "Activation Atlas", Distill 2019): a layer's activation
vectors over many images (collected by :mod:`featviz.methods.atlas_store`), laid out in 2-D,
averaged per cell of an n×n grid, and each cell's average feature-visualized, all cells in one
batched render; class atlases keep only the vectors that speak for a class.

    store = featviz.atlas_store.collect(model, "imagenet-sample/", "mixed4c", "store/")
    atlas = featviz.atlas.activation_atlas(model, store, n=20)
    atlas.save("atlas.png")

The parts live apart and are re-exported here: the layout and the grid of cells
(:mod:`featviz.methods._atlas_layout`: :func:`layout`, :func:`grid`) and the model run on the
cells (:mod:`featviz.methods._atlas_cells`: :func:`render_cells`, :func:`cell_classes`). This
module holds the result (:class:`Atlas`, and how it is drawn) and the recipes that chain the
steps (:func:`activation_atlas`, :func:`class_atlas`, :func:`select`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import images as _images
from ..core import notebook as _nb
from ..core.render import RenderResult
from ..errors import FeatvizError
from ._atlas_cells import cell_classes, render_cells
from ._atlas_layout import LAYOUTS as LAYOUTS
from ._atlas_layout import AtlasGrid, Layout, _bins, grid, layout
from ._atlas_layout import _method as _method
from .activation_grid import GRID_COSSIM_POW, agreement
from .atlas_store import ActivationStore

# -- the result and its picture --------------------------------------------------------------------

@dataclass
class Atlas:
    """An activation atlas: ``grid`` (cells, averages, counts, classes), ``renders`` [K, 3, s,
    s] (cell k's picture of ``grid.means[k]``), the ``render`` that made them, per cell the
    classes its average speaks for (``classes``, see :func:`cell_classes`; None when not
    computed) and, for a class atlas, the classes it was filtered by (``selected``) and, with
    two, per cell which one its vectors speak for more (``side`` [K], 0 or 1)."""

    layer: str
    grid: AtlasGrid
    renders: torch.Tensor
    render: RenderResult
    cossim_pow: float
    classes: list[list[tuple[str, float]]] | None = None
    selected: tuple[str, ...] = ()
    side: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def picture(self, density: str | None = "opacity", labels: bool = False,
                cell: int | None = None) -> torch.Tensor:
        """The atlas image [1, 3, n·s, n·s] on white: cell (row, column)'s render at that place
        of the grid, faded (``density="opacity"``) or shrunk (``"size"``) by the square root of
        its count over the largest count (None: all alike); ``labels`` writes each cell's top
        class on it; ``cell`` resizes every render to that many pixels first. For a
        two-class atlas each cell gets a frame in its class's colour."""
        renders = self.renders[:, :3].float()
        if cell is not None and cell != renders.shape[-1]:
            renders = F.interpolate(renders, size=(cell, cell), mode="bilinear",
                                    antialias=True, align_corners=False)
        weight = np.sqrt(self.grid.counts / self.grid.counts.max())
        tiles = [_tile(r, w, density, _frame(self.side, k)) for k, (r, w)
                 in enumerate(zip(renders, weight, strict=True))]
        pic = compose(self.grid.cells, torch.stack(tiles), self.grid.n)
        if labels:
            pic = _write_labels(pic, self.grid.cells, self.labels(), renders.shape[-1])
        return pic

    def labels(self) -> list[str]:
        """Per cell a short label: the most common class of the images its vectors come
        from (what the photos were; :attr:`classes` says what the average speaks for)."""
        return [c[0][0] if c else "" for c in self.grid.top_classes]

    def agreement(self, model: nn.Module) -> torch.Tensor:
        """Cosine [K, K] between each cell render's own activation (the layer at the render's
        centre, no transforms) and every cell's average vector: row i, column j says how much
        render i looks like cell j's average to the model; a good atlas has the largest
        values on the diagonal."""
        return agreement(model, self.layer, self.renders, self.grid.means)

    def save(self, path, **picture_kw) -> None:
        """Write :meth:`picture` (keywords go to it) as a PNG or any format images.save takes."""
        _images.save(self.picture(**picture_kw), path)

    def __repr__(self) -> str:
        what = f" of {' vs '.join(self.selected)}" if self.selected else ""
        return (f"Atlas({self.layer}{what}: {len(self.grid.cells)} cells of a {self.grid.n}x"
                f"{self.grid.n} grid, {int(self.grid.counts.sum())} vectors, renders of "
                f"{self.renders.shape[-1]} px)")

    def _repr_png_(self) -> bytes:
        return _nb.png(_images.to_pil(self.picture()[0]))

    def _repr_html_(self) -> str:
        page = _nb.Budget()
        g = self.grid
        what = f", class atlas of {' vs '.join(self.selected)}" if self.selected else ""
        page.text(f"<p>{len(g.cells)} cells of a {g.n}x{g.n} grid{what}: each the feature "
                  f"visualization of its cell's average {self.layer} vector (cosine power "
                  f"{self.cossim_pow:g}); fainter cells hold fewer of the "
                  f"{int(g.counts.sum())} vectors</p>")
        page.image(_images.to_pil(self.picture()[0]), f"atlas {self.layer}")
        return page.html(f"activation atlas: {self.layer}")


_SIDE_COLOURS = (torch.tensor([0.9, 0.45, 0.05]), torch.tensor([0.1, 0.35, 0.85]))


def _frame(side: np.ndarray | None, k: int) -> torch.Tensor | None:
    return None if side is None else _SIDE_COLOURS[int(side[k])]


def _tile(render: torch.Tensor, weight: float, density: str | None,
          frame: torch.Tensor | None) -> torch.Tensor:
    """One cell's tile: the render faded towards white or shrunk by ``weight`` in (0, 1]."""
    s = render.shape[-1]
    tile = render.clone()
    if frame is not None:
        b = max(1, s // 16)
        tile[:, :b], tile[:, -b:], tile[:, :, :b], tile[:, :, -b:] = (frame[:, None, None],) * 4
    if density == "opacity":
        alpha = 0.25 + 0.75 * weight  # the faintest cell still shows what it is
        return alpha * tile + (1 - alpha)
    if density == "size":
        side = max(2, round(s * (0.4 + 0.6 * weight)))
        small = F.interpolate(tile[None], size=(side, side), mode="bilinear", antialias=True,
                              align_corners=False)[0]
        out = torch.ones_like(tile)
        top = (s - side) // 2
        out[:, top:top + side, top:top + side] = small
        return out
    if density is not None:
        raise FeatvizError(f"density must be 'opacity', 'size' or None, got {density!r}")
    return tile


def compose(cells: np.ndarray, tiles: torch.Tensor, n: int) -> torch.Tensor:
    """Tiles [K, 3, s, s] placed on an ``n``×``n`` grid on white, tile k at row
    ``cells[k, 0]``, column ``cells[k, 1]``: [1, 3, n·s, n·s].

    Args:
        cells: the grid row and column of each tile, [K, 2].
        tiles: the tiles, [K, 3, s, s].
        n: the number of rows and columns of the grid.
    """
    s = tiles.shape[-1]
    pic = torch.ones(3, n * s, n * s)
    for (row, col), tile in zip(np.asarray(cells).tolist(), tiles, strict=True):
        pic[:, row * s:(row + 1) * s, col * s:(col + 1) * s] = tile
    return pic[None]


def _write_labels(pic: torch.Tensor, cells: np.ndarray, labels: list[str],
                  s: int) -> torch.Tensor:
    from PIL import ImageDraw
    im = _images.to_pil(pic[0])
    draw = ImageDraw.Draw(im)
    for (row, col), text in zip(np.asarray(cells).tolist(), labels, strict=True):
        if text:
            x, y = col * s + 2, (row + 1) * s - 11
            draw.rectangle([x - 1, y, x + 6 * min(len(text), s // 6) + 1, y + 10],
                           fill=(255, 255, 255))
            draw.text((x, y - 1), text[:max(1, s // 6)], fill=(0, 0, 0))
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float() / 255


# -- the recipes -----------------------------------------------------------------------------------

def activation_atlas(model: nn.Module, store: ActivationStore, n: int = 20, *,
                     where: Layout | None = None, method: str = "auto", fit_on: int = 20000,
                     min_count: int = 3, cell: int = 32, steps: int = 256,
                     cossim_pow: float = GRID_COSSIM_POW, seed: int = 0,
                     classes: bool = True, progress: bool = True, **render_kw: Any) -> Atlas:
    """The activation atlas of ``store``'s vectors: laid out (``where``, or a new
    :func:`layout` with ``method``, ``fit_on`` and ``seed``), binned into an ``n``×``n``
    :func:`grid` dropping cells under ``min_count`` vectors, every kept cell's average
    rendered in one batch (:func:`render_cells`, ``cell`` pixels, ``steps``) and, with
    ``classes``, the classes each average speaks for (:func:`cell_classes`). Timings of each
    step are in ``seconds``.

    Args:
        model: the network to visualize.
        store: the collected activation vectors.
        n: the number of rows and columns of the grid (default 20).
        where: a layout to reuse; None fits a new one.
        method: the layout method of a new layout (default ``"auto"``).
        fit_on: how many vectors a new layout is fitted on.
        min_count: cells with fewer vectors than this are dropped.
        cell: the side of each rendered cell, in pixels.
        steps: optimization steps of the render.
        cossim_pow: the power of the cosine weighting of the direction objective.
        seed: the random seed of the layout and the render.
        classes: also find the classes each cell's average speaks for.
        progress: show a progress bar.
        **render_kw: other options for :func:`featviz.render`.
    """
    seconds: dict[str, float] = {}
    if where is None:
        where = layout(store, method, fit_on=fit_on, seed=seed)
        seconds["layout"] = where.seconds
    return _finish(model, store, where, None, n, min_count, cell, steps, cossim_pow, seed,
                   classes, progress, seconds, render_kw)


def _finish(model, store, where, members, n, min_count, cell, steps, cossim_pow, seed,
            classes, progress, seconds, render_kw) -> Atlas:
    t = time.perf_counter()
    cells = grid(store, where, n, min_count=min_count, members=members, seed=seed)
    seconds["grid"] = time.perf_counter() - t
    result = render_cells(model, store.layer, cells.means, cell=cell, steps=steps,
                          cossim_pow=cossim_pow, seed=seed, progress=progress, **render_kw)
    seconds["render"] = result.seconds
    t = time.perf_counter()
    found = cell_classes(model, store.layer, cells.means) if classes else None
    seconds["classes"] = time.perf_counter() - t
    return Atlas(store.layer, cells, result.images.detach().cpu(), result, cossim_pow, found,
                 seconds=seconds)


def select(store: ActivationStore, cls: int | str, *, top: float = 0.02,
           at_least: int = 0) -> np.ndarray:
    """The store's indices of the vectors that speak most for class ``cls`` (one of the
    classes collected with ``attribute=``, by index or name): positive attribution, and
    among those the ``top`` fraction of all vectors with the largest (at least ``at_least``
    when that many are positive).

    Args:
        store: the activation vectors, collected with ``attribute=``.
        cls: the class, by index or name.
        top: the fraction of all vectors to keep (default 0.02).
        at_least: the smallest number to keep when that many are positive.
    """
    col = _attribution_column(store, cls)
    attr = store.column("attribution")[:, col]
    positive = np.flatnonzero(attr > 0)
    k = min(len(positive), max(at_least, round(top * len(attr))))
    if k == 0:
        raise FeatvizError(f"no vector of the store has a positive attribution to {cls!r}")
    return np.sort(positive[np.argsort(-attr[positive], kind="stable")[:k]])


def _attribution_column(store: ActivationStore, cls: int | str) -> int:
    ids = store.attribute
    if isinstance(cls, int) and cls in ids:
        return ids.index(cls)
    names = store.manifest.get("attribute_names") or []
    for i, name in enumerate(names):
        if isinstance(cls, str) and cls.strip().lower() in name.lower().split(", ") + [
                name.lower()]:
            return i
    raise FeatvizError(f"the store carries attributions to classes {ids} "
                       f"({', '.join(names)}) only, not {cls!r}; collect with "
                       f"attribute=[{cls!r}]")


def class_atlas(model: nn.Module, store: ActivationStore, classes: Sequence[int | str], n: int = 8,
                *, top: float = 0.02, method: str = "auto", min_count: int = 3,
                cell: int = 32, steps: int = 256, cossim_pow: float = GRID_COSSIM_POW,
                seed: int = 0, progress: bool = True, **render_kw: Any) -> Atlas:
    """The atlas of the vectors that speak most for one class, or a comparison of two: for
    each class the :func:`select`-ed vectors (positive attribution, the ``top`` fraction),
    laid out anew together (a small set: the layout is fitted on all of them), binned and
    rendered as :func:`activation_atlas` does. With two classes each cell's ``side`` is the
    class whose attribution its vectors carry more of (framed in orange or blue).

    Args:
        model: the network to visualize.
        store: the activation vectors, collected with ``attribute=``.
        classes: one class or two, by index or name.
        n: the number of rows and columns of the grid (default 8).
        top: the fraction of all vectors selected per class (default 0.02).
        method: the layout method (default ``"auto"``).
        min_count: cells with fewer vectors than this are dropped.
        cell: the side of each rendered cell, in pixels.
        steps: optimization steps of the render.
        cossim_pow: the power of the cosine weighting of the direction objective.
        seed: the random seed of the layout and the render.
        progress: show a progress bar.
        **render_kw: other options for :func:`featviz.render`.
    """
    classes = list(classes)
    if not 1 <= len(classes) <= 2:
        raise FeatvizError(f"a class atlas shows one class or compares two, got {classes!r}")
    picked = [select(store, c, top=top) for c in classes]
    members = np.unique(np.concatenate(picked))
    seconds: dict[str, float] = {}
    where = layout(store.vectors(members), method, fit_on=len(members), seed=seed)
    seconds["layout"] = where.seconds
    atlas = _finish(model, store, where, members, n, min_count, cell, steps, cossim_pow, seed,
                    True, progress, seconds, render_kw)
    atlas.selected = tuple(str(c) for c in classes)
    if len(classes) == 2:
        atlas.side = _sides(store, atlas.grid, where, members, classes)
    return atlas


def _sides(store, cells: AtlasGrid, where: Layout, members: np.ndarray,
           classes: list) -> np.ndarray:
    """Per cell 0 or 1: which class its vectors carry more attribution to, summed."""
    attr = store.column("attribution")[members]
    cols = [_attribution_column(store, c) for c in classes]
    cell_of = _bins(where.xy, cells.n)
    index = cells.cell_index().reshape(-1)[cell_of]
    diff = np.zeros(len(cells.cells))
    hit = index >= 0
    np.add.at(diff, index[hit], attr[hit, cols[0]] - attr[hit, cols[1]])
    return (diff < 0).astype(np.int64)
