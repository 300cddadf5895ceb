"""The one search behind a dictionary's features and a layer's neurons: stream an activation
store, turn every vector into unit values with an "encode" function (the SAE's code, or the
vector itself), and keep per unit its ``k`` strongest images (one position per image, the
image's strongest), how often it fires, and per class the sum of its per-image maxima.

Memory is one chunk of vectors and its unit values, plus ``k`` entries per unit and one row of
sums per class: the store is never held whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import FeatvizError
from ..atlas_store import ActivationStore


@dataclass(frozen=True)
class Example:
    """One of a unit's strongest images: ``image`` (index into the store's images),
    ``name`` (the store's name of it), ``label`` (its class name, '' when none), the
    position ``y``, ``x`` on the layer's map, the unit's ``value`` there and ``row``, the
    vector's index in the store (:meth:`ActivationStore.vectors` reads it back)."""

    image: int
    name: str
    label: str
    y: int
    x: int
    value: float
    row: int


@dataclass
class UnitScan:
    """What to search for: ``kind`` ("feature", "neuron"), ``encode`` (float32 vectors
    [m, C] -> values [m, len(units)]), the ``units`` those columns are, and ``floor``: only
    values above it count as examples (0 for a sparse code, None: every value)."""

    kind: str
    encode: Callable[[torch.Tensor], torch.Tensor]
    units: list[int]
    floor: float | None = None


@dataclass
class UnitExamples:
    """One kind's search result: per unit its top examples (strongest first), its firing
    rate (the share of the store's vectors where it is above 0), and per class the number
    of images and the sum of the unit's per-image maxima (rows of ``class_sums``, one column
    per unit of ``units``)."""

    kind: str
    layer: str
    size: int | list[int]
    units: list[int]
    top: dict[int, list[Example]]
    firing_rate: dict[int, float]
    class_names: list[str]
    class_images: np.ndarray
    class_sums: np.ndarray

    def _column(self, unit: int) -> int:
        try:
            return self.units.index(int(unit))
        except ValueError:
            shown = self.units if len(self.units) <= 8 else f"{len(self.units)} units"
            raise FeatvizError(f"{self.kind} {unit} was not searched (searched: "
                               f"{shown})") from None

    def examples(self, unit: int) -> list[Example]:
        """The unit's top examples, strongest first (empty: it never fired).

        Args:
            unit: the feature or channel.
        """
        self._column(unit)
        return self.top[int(unit)]

    def top_classes(self, unit: int, n: int = 5) -> list[tuple[str, float]]:
        """The classes whose images the unit fires on most: ``(name, mean per-image max)``,
        the mean over the class's images, highest first; empty where no image had a class.

        Args:
            unit: the feature or channel.
            n: how many classes.
        """
        j = self._column(unit)
        has = np.flatnonzero(self.class_images > 0)
        means = self.class_sums[has, j] / self.class_images[has]
        order = np.argsort(-means, kind="stable")[:n]
        return [(self.class_names[has[o]], float(means[o])) for o in order]

    def __repr__(self) -> str:
        fired = sum(1 for u in self.units if self.top[u])
        return (f"UnitExamples({len(self.units)} {self.kind}s of {self.layer}, {fired} with "
                f"examples)")


class _Running:
    """The ``k`` largest values per unit so far with (image, row, y, x) of each."""

    def __init__(self, units: int, k: int):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self.values = torch.full((units, 0), float("-inf"))
        self.meta = torch.zeros((units, 0, 4), dtype=torch.long)

    def update(self, values: torch.Tensor, meta: torch.Tensor) -> None:
        """``values`` [B, units], ``meta`` [B, units, 4] of B images."""
        vals = torch.cat([self.values, values.T], dim=1)
        meta = torch.cat([self.meta, meta.transpose(0, 1)], dim=1)
        keep = vals.topk(min(self.k, vals.shape[1]), dim=1).indices
        self.values = vals.gather(1, keep)
        self.meta = meta.gather(1, keep[..., None].expand(-1, -1, 4))


@dataclass
class _Chunk:
    """Whole images' rows of one shard: their vectors, where each row's image sits in the
    chunk's image list (``inverse``) and its place among that image's rows (``slot``)."""

    vectors: torch.Tensor
    rows: torch.Tensor  # [m, 4]: image, global row, y, x
    images: np.ndarray  # the chunk's distinct images, [B]
    labels: np.ndarray  # each of those images' class id, [B]
    inverse: torch.Tensor
    slot: torch.Tensor
    width: int  # the most rows of one image


def _chunk(shard: dict[str, np.ndarray], part: slice, first_row: int) -> _Chunk:
    image = shard["image"][part].astype(np.int64)
    images, start, inverse, counts = np.unique(image, return_index=True, return_inverse=True,
                                               return_counts=True)
    order = np.argsort(inverse, kind="stable")
    slot = np.empty(len(image), dtype=np.int64)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot[order] = np.arange(len(image)) - firsts[inverse[order]]
    rows = np.stack([image, first_row + np.arange(part.start, part.stop),
                     shard["y"][part].astype(np.int64), shard["x"][part].astype(np.int64)], 1)
    return _Chunk(torch.from_numpy(shard["vectors"][part].astype(np.float32)),
                  torch.from_numpy(rows), images, shard["label"][part][start].astype(np.int64),
                  torch.from_numpy(inverse.reshape(-1)), torch.from_numpy(slot),
                  int(counts.max()))


def _image_chunks(image: np.ndarray, chunk: int) -> Iterator[slice]:
    """Slices of about ``chunk`` rows that never cut one image's run of rows in two."""
    ends = [*(np.flatnonzero(np.diff(image)) + 1).tolist(), len(image)]
    begin = last = 0
    for end in ends:
        if end - begin > chunk and last > begin:
            yield slice(begin, last)
            begin = last
        last = end
    if begin < len(image):
        yield slice(begin, len(image))


def _per_image(values: torch.Tensor, c: _Chunk) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's maximum per unit [B, u] and the (image, row, y, x) of it [B, u, 4]."""
    b, u = len(c.images), values.shape[1]
    grid = values.new_full((b, c.width, u), float("-inf"))
    grid[c.inverse, c.slot] = values
    best, arg = grid.max(dim=1)
    where = torch.zeros((b, c.width), dtype=torch.long)
    where[c.inverse, c.slot] = torch.arange(len(values))
    return best, c.rows[where.gather(1, arg)]


@dataclass
class _State:
    """One kind's running results."""

    search: UnitScan
    running: _Running
    fired: np.ndarray
    class_sums: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def update(self, c: _Chunk) -> None:
        values = self.search.encode(c.vectors).float()
        self.fired += (values > 0).sum(dim=0).numpy()
        best, meta = _per_image(values, c)
        self.running.update(best, meta)
        known = c.labels >= 0
        if known.any():
            self.class_sums = _grown(self.class_sums, int(c.labels.max()) + 1, best.shape[1])
            np.add.at(self.class_sums, c.labels[known], best[torch.from_numpy(known)].numpy())


def _grown(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``a`` with at least ``rows`` rows of ``cols`` (new ones zero)."""
    if a.shape[0] >= rows and a.shape[1] == cols:
        return a
    out = np.zeros((max(rows, a.shape[0]), cols))
    out[:a.shape[0], :a.shape[1]] = a
    return out


def _classes(store: ActivationStore) -> tuple[list[str], np.ndarray]:
    """Class names by id and images per class id, from the store's manifest."""
    ids = np.asarray(store.manifest.get("label_ids", []), dtype=np.int64)
    if not len(ids) or ids.max() < 0:
        return [], np.zeros(0)
    names = [""] * (int(ids.max()) + 1)
    for i, label in zip(ids.tolist(), store.labels, strict=True):
        if i >= 0:
            names[i] = label
    return names, np.bincount(ids[ids >= 0], minlength=len(names)).astype(np.float64)


def scan(store: ActivationStore, searches: Sequence[UnitScan], k: int,
         chunk: int) -> list[UnitExamples]:
    """Search ``store`` once for every kind of ``searches``.

    Args:
        store: the activation vectors.
        searches: what to search for, one per kind.
        k: images kept per unit.
        chunk: vectors turned into unit values at once (rounded to whole images).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 vector, got {chunk}")
    states = [_State(s, _Running(len(s.units), k), np.zeros(len(s.units))) for s in searches]
    first_row = 0
    for shard in store.shards():
        for part in _image_chunks(shard["image"], chunk):
            c = _chunk(shard, part, first_row)
            for state in states:
                state.update(c)
        first_row += len(shard["image"])
    names, counts = _classes(store)
    return [_finish(store, state, first_row, names, counts) for state in states]


def _finish(store: ActivationStore, state: _State, total: int, names: list[str],
            counts: np.ndarray) -> UnitExamples:
    s = state.search
    top = {}
    for j, unit in enumerate(s.units):
        values, meta = state.running.values[j], state.running.meta[j]
        ok = torch.isfinite(values) if s.floor is None else values > s.floor
        top[unit] = [Example(int(m[0]), store.images[int(m[0])], store.labels[int(m[0])],
                             int(m[2]), int(m[3]), float(v), int(m[1]))
                     for v, m in zip(values[ok].tolist(), meta[ok].tolist(), strict=True)]
    sums = _grown(state.class_sums, len(names), len(s.units))[:len(names)]
    rate = state.fired / max(total, 1)
    return UnitExamples(s.kind, store.layer, store.size, list(s.units), top,
                        dict(zip(s.units, rate.tolist(), strict=True)), names, counts, sums)
