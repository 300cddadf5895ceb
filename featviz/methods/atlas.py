"""Activation atlases (Carter et al., "Activation Atlas", Distill 2019): a layer's activation
vectors over many images (collected by :mod:`featviz.methods.atlas_store`), laid out in 2-D,
averaged per cell of an n×n grid, and each cell's average feature-visualized, all cells in one
batched render; class atlases keep only the vectors that speak for a class.

    store = featviz.atlas_store.collect(model, "imagenet-sample/", "mixed4c", "store/")
    atlas = featviz.atlas.activation_atlas(model, store, n=20)
    atlas.save("atlas.png")
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import images as _images
from ..core import notebook as _nb
from ..core import objectives as _objectives
from ..core import param as _param
from ..core.hooks import frozen, on_output
from ..core.model_info import class_names, input_hw, model_device
from ..core.render import RenderResult, render
from ..errors import FeatvizError
from .activation_grid import CELL_TRANSFORMS, GRID_COSSIM_POW, agreement, check_cell
from .atlas_store import ActivationStore

LAYOUTS = ("auto", "umap", "tsne")


# -- layout ------------------------------------------------------------------------------------

@dataclass
class Layout:
    """2-D positions ``xy`` [N, 2] in [0, 1] of N vectors; ``fitted`` the indices the
    embedding was fitted on (the rest placed from them), ``method`` umap or tsne."""

    xy: np.ndarray
    method: str
    fitted: np.ndarray
    seconds: float

    def __repr__(self) -> str:
        return (f"Layout({self.method}: {len(self.xy)} points, fitted on {len(self.fitted)}, "
                f"{self.seconds:.0f} s)")


def _umap():
    try:
        import umap
    except ImportError:
        raise FeatvizError("layout='umap' needs umap-learn: pip install 'featviz[atlas]', or "
                           "use layout='tsne' (scikit-learn)") from None
    return umap


def _method(layout: str) -> str:
    if layout not in LAYOUTS:
        raise FeatvizError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    try:
        import umap  # noqa: F401
    except ImportError:
        return "tsne"
    return "umap"


def _embed(vectors: np.ndarray, method: str, seed: int, neighbors: int):
    """Fit a 2-D embedding of ``vectors`` (cosine metric); the fitted points and the fitted
    UMAP model (None for t-SNE, which has no transform)."""
    if method == "umap":
        reducer = _umap().UMAP(n_components=2, metric="cosine", n_neighbors=neighbors,
                               min_dist=0.01, random_state=seed, n_jobs=1)
        return reducer.fit_transform(vectors), reducer
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise FeatvizError("layout='tsne' needs scikit-learn: pip install 'featviz[atlas]'"
                           ) from None
    perplexity = float(min(30, max(2, (len(vectors) - 1) // 3)))
    tsne = TSNE(n_components=2, metric="cosine", init="pca", random_state=seed,
                perplexity=perplexity)
    return tsne.fit_transform(vectors), None


def _place(points: np.ndarray, fitted_xy: np.ndarray, fitted: np.ndarray, reducer,
           k: int = 10) -> np.ndarray:
    """Positions of points the embedding was not fitted on: UMAP's transform, or (t-SNE) the
    mean position of the ``k`` nearest fitted points by cosine."""
    if reducer is not None:
        return reducer.transform(points)
    from sklearn.neighbors import NearestNeighbors
    nn_ = NearestNeighbors(n_neighbors=min(k, len(fitted)), metric="cosine").fit(fitted)
    _, idx = nn_.kneighbors(points)
    return fitted_xy[idx].mean(axis=1)


def layout(vectors: ActivationStore | np.ndarray, method: str = "auto", *,
           fit_on: int = 20000, seed: int = 0, neighbors: int = 15,
           chunk: int = 20000) -> Layout:
    """Lay ``vectors`` (a store or an array [N, C]) out in 2-D by cosine similarity: UMAP
    (``umap-learn``, the article's choice; ``method="auto"`` takes it where installed) or
    t-SNE (scikit-learn). The embedding is fitted on a seeded sample of ``fit_on`` vectors
    (all of them when fewer) and the rest are placed from it (UMAP's transform; for t-SNE the
    mean of the 10 nearest fitted points), ``chunk`` at a time; the same seed gives the same
    layout. Positions are scaled to [0, 1]."""
    method = _method(method)
    start = time.perf_counter()
    store = vectors if isinstance(vectors, ActivationStore) else None
    total = len(vectors)
    if total < 4:
        raise FeatvizError(f"{total} vectors are too few to lay out; collect more images")
    rng = np.random.default_rng(seed)
    fitted = np.sort(rng.choice(total, size=min(fit_on, total), replace=False))
    get = store.vectors if store is not None else (lambda i: np.asarray(vectors)[i])
    sample = get(fitted).astype(np.float32)
    xy = np.empty((total, 2), dtype=np.float32)
    xy[fitted], reducer = _embed(sample, method, seed, neighbors)
    rest = np.setdiff1d(np.arange(total), fitted)
    for i in range(0, len(rest), chunk):
        part = rest[i:i + chunk]
        xy[part] = _place(get(part).astype(np.float32), xy[fitted], sample, reducer)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    xy = (xy - lo) / np.maximum(hi - lo, 1e-12)
    return Layout(xy, method, fitted, time.perf_counter() - start)


# -- grid ----------------------------------------------------------------------------------------

@dataclass
class AtlasGrid:
    """The layout binned into an ``n``×``n`` grid: for each kept cell (``cells`` [K, 2] as
    (row, column), row 0 at the top) the mean of its vectors ``means`` [K, C], their count,
    ``top_classes`` (per cell a list of (class name, share of its vectors)), ``examples``
    (per cell up to a few indices of its vectors, for source patches) and ``members`` (the
    store's indices the grid was built from)."""

    n: int
    cells: np.ndarray
    means: np.ndarray
    counts: np.ndarray
    top_classes: list[list[tuple[str, float]]]
    examples: list[list[int]]
    min_count: int
    dropped: int
    members: np.ndarray = field(repr=False)

    def cell_index(self) -> np.ndarray:
        """[n, n] → the row of each cell in ``means`` (-1 where the cell was dropped)."""
        table = np.full((self.n, self.n), -1, dtype=np.int64)
        table[self.cells[:, 0], self.cells[:, 1]] = np.arange(len(self.cells))
        return table


def _bins(xy: np.ndarray, n: int) -> np.ndarray:
    """Row-major cell number of each point: column from x, row from y (y grows downwards)."""
    col = np.clip((xy[:, 0] * n).astype(np.int64), 0, n - 1)
    row = np.clip((xy[:, 1] * n).astype(np.int64), 0, n - 1)
    return row * n + col


def _sums(store: ActivationStore, members: np.ndarray, cell_of: np.ndarray,
          n_cells: int) -> np.ndarray:
    """Per cell the float64 sum of its vectors, read shard by shard."""
    sums = np.zeros((n_cells, store.channels), dtype=np.float64)
    where = np.full(len(store), -1, dtype=np.int64)
    where[members] = cell_of
    start = 0
    for s in store.shards():
        v = s["vectors"]
        c = where[start:start + len(v)]
        hit = c >= 0
        np.add.at(sums, c[hit], v[hit].astype(np.float64))
        start += len(v)
    return sums


def _top_classes(labels: np.ndarray, names: dict[int, str], k: int) -> list[tuple[str, float]]:
    known = labels[labels >= 0]
    if len(known) == 0:
        return []
    ids, counts = np.unique(known, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:k]
    return [(names.get(int(ids[i]), str(ids[i])), float(counts[i] / len(labels)))
            for i in order]


def grid(store: ActivationStore, where: Layout, n: int = 20, *, min_count: int = 3,
         members: np.ndarray | None = None, top: int = 3, examples: int = 4,
         seed: int = 0) -> AtlasGrid:
    """Bin the layout ``where`` of ``store``'s vectors (or of the rows ``members`` of it, the
    layout then having one point per member) into an ``n``×``n`` grid and average the vectors
    of each cell (float64 sums of the float16 vectors, streamed by shard); cells with fewer
    than ``min_count`` vectors are dropped. Per kept cell: its count, the ``top`` classes of
    its vectors' images (share of the cell's vectors) and ``examples`` of its vectors drawn
    with ``seed``."""
    if n < 1:
        raise FeatvizError(f"the grid needs n >= 1 cells a side, got {n}")
    members = np.arange(len(store)) if members is None else np.asarray(members, np.int64)
    if len(where.xy) != len(members):
        raise FeatvizError(f"the layout has {len(where.xy)} points for {len(members)} vectors")
    cell_of = _bins(where.xy, n)
    counts = np.bincount(cell_of, minlength=n * n)
    kept = np.flatnonzero(counts >= max(1, min_count))
    if len(kept) == 0:
        raise FeatvizError(f"no cell of the {n}x{n} grid has {min_count} vectors ({len(members)}"
                           f" vectors in all): collect more vectors, or lower n or min_count")
    sums = _sums(store, members, cell_of, n * n)
    labels = store.column("label")[members]
    names = _class_names(store)
    rng = np.random.default_rng(seed)
    tops, picks = [], []
    for c in kept:
        inside = np.flatnonzero(cell_of == c)
        tops.append(_top_classes(labels[inside], names, top))
        chosen = rng.choice(inside, size=min(examples, len(inside)), replace=False)
        picks.append([int(members[i]) for i in chosen])
    return AtlasGrid(n, np.stack([kept // n, kept % n], 1), (sums[kept] / counts[kept, None])
                     .astype(np.float32), counts[kept], tops, picks, min_count,
                     int((counts > 0).sum() - len(kept)), members)


def _class_names(store: ActivationStore) -> dict[int, str]:
    """Class index → short name, from the labels the store kept for its images."""
    return {int(i): name.split(",")[0].strip()
            for i, name in zip(store.manifest["label_ids"], store.labels, strict=True) if i >= 0}


# -- class attribution of cells ---------------------------------------------------------------

def cell_classes(model: nn.Module, layer: str, means: np.ndarray, *, top: int = 3,
                 size: int | tuple[int, int] | None = None, batch_size: int = 32
                 ) -> list[list[tuple[str, float]]]:
    """Per cell the ``top`` classes its average vector speaks for: the rest of the network
    run on the layer's map filled with the vector at every position, each class logit minus
    its value for a map of zeros (a documented simplification of the article's gradient ×
    vector, which would need a backward pass per class; this one needs one forward pass per
    cell and gives every class at once) on a grey image of ``size`` (a side or (h, w))."""
    names = class_names(model)
    grey = torch.full((1, 3, *input_hw(model, size)), 0.5, device=model_device(model))
    vecs = torch.as_tensor(means, dtype=torch.float32)
    out = []
    with frozen(model), torch.no_grad():
        base = _tail(model, layer, grey, torch.zeros(1, vecs.shape[1]))
        for i in range(0, len(vecs), batch_size):
            part = vecs[i:i + batch_size]
            logits = _tail(model, layer, grey.expand(len(part), -1, -1, -1), part) - base
            val, idx = logits.topk(min(top, logits.shape[1]), dim=1)
            out += [[(names[j].split(",")[0] if names else str(j), float(v))
                     for v, j in zip(vr.tolist(), ir.tolist(), strict=True)]
                    for vr, ir in zip(val, idx, strict=True)]
    return out


def _tail(model: nn.Module, layer: str, images: torch.Tensor, vecs: torch.Tensor):
    """The logits with ``layer``'s map replaced by ``vecs`` [B, C] at every position."""
    def fill(_names, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise FeatvizError(f"layer {layer!r} has no map [B, C, H, W] to fill")
        return vecs.to(output)[:, :, None, None].expand_as(output).clone()

    with on_output(model, [layer], fill):
        return model(images).float().cpu()


# -- render and compose ------------------------------------------------------------------------

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
    ``cells[k, 0]``, column ``cells[k, 1]``: [1, 3, n·s, n·s]."""
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


def render_cells(model: nn.Module, layer: str, means: np.ndarray, *, cell: int = 32,
                 steps: int = 256, cossim_pow: float = GRID_COSSIM_POW, seed: int = 0,
                 progress: bool = True, **render_kw) -> RenderResult:
    """One batched render of ``cell``-pixel images, image k making the centre of ``layer``
    point along ``means[k]`` (``objectives.direction_neuron`` with lucid's cosine weighting,
    as the article's atlases and the activation grid do; the grid's small-cell transforms
    unless ``transforms`` is given). Refuses a cell too small to reach the layer."""
    check_cell(model, layer, cell)
    vecs = torch.as_tensor(np.asarray(means), dtype=torch.float32)
    objective = _objectives.direction_neuron(layer, vecs, cossim_pow=cossim_pow)
    par = _param.image(cell, batch=len(vecs), seed=seed, device=model_device(model))
    render_kw.setdefault("transforms", list(CELL_TRANSFORMS))
    return render(model, objective, par, steps=steps, seed=seed, progress=progress,
                  **render_kw)


def activation_atlas(model: nn.Module, store: ActivationStore, n: int = 20, *,
                     where: Layout | None = None, method: str = "auto", fit_on: int = 20000,
                     min_count: int = 3, cell: int = 32, steps: int = 256,
                     cossim_pow: float = GRID_COSSIM_POW, seed: int = 0,
                     classes: bool = True, progress: bool = True, **render_kw) -> Atlas:
    """The activation atlas of ``store``'s vectors: laid out (``where``, or a new
    :func:`layout` with ``method``, ``fit_on`` and ``seed``), binned into an ``n``×``n``
    :func:`grid` dropping cells under ``min_count`` vectors, every kept cell's average
    rendered in one batch (:func:`render_cells`, ``cell`` pixels, ``steps``) and, with
    ``classes``, the classes each average speaks for (:func:`cell_classes`). Timings of each
    step are in ``seconds``."""
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
    when that many are positive)."""
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
                seed: int = 0, progress: bool = True, **render_kw) -> Atlas:
    """The atlas of the vectors that speak most for one class, or a comparison of two: for
    each class the :func:`select`-ed vectors (positive attribution, the ``top`` fraction),
    laid out anew together (a small set: the layout is fitted on all of them), binned and
    rendered as :func:`activation_atlas` does. With two classes each cell's ``side`` is the
    class whose attribution its vectors carry more of (framed in orange or blue)."""
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
