"""Where an activation atlas's vectors go (the job behind :func:`featviz.atlas.layout` and
:func:`featviz.atlas.grid`): a 2-D layout of the vectors by cosine similarity (UMAP or t-SNE,
fitted on a seeded sample, the rest placed from it) and the n×n grid of cells binned from it,
each with its average vector, count, classes and example vectors. Import these names from
:mod:`featviz.methods.atlas`, which re-exports them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import FeatvizError
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
