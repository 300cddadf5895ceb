"""Path similarity, the sanity check of Geirhos et al. ("Don't trust your eyes: on the
(un)reliability of feature visualizations", 2023): is a unit's feature visualization processed
along the same path as the natural photos that drive the unit?

At every layer up to the unit's, each image becomes a profile (the mean of every channel over
positions) and two images are compared by Spearman's rank correlation of their profiles (the
paper's choice of measure). The visualization is compared with the unit's top-k photos; as
references, the top photos with each other (how alike the photos that drive the unit are), a
seeded random sample of photos and the photos of the top photos' most common class with the
top photos. A curve over depth per set; one summary number per unit.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.model_info import input_hw
from ...core.sizes import SizeLike
from ...errors import FeatvizError
from ..dataset import LabelledFolder, iter_labelled_batches, labelled
from .attribution import attribution_profiles
from .ranks import path_layers, spearman
from .scan import Photo, scan, tap_profiles

Unit = tuple[str, int]

#: What a profile can be: see :func:`path_similarity`.
MEASURES = ("activation", "attribution")


@dataclass
class PathSimilarity:
    """One unit's path check. ``layers``: where it was compared, in forward order, the unit's
    own last; per layer the mean Spearman correlation with the unit's top photos of: the
    ``visualization``, the ``top`` photos themselves (each with the others), the ``random``
    photos and the ``top_class`` photos (None where the source has no labels or the class no
    other photo), and ``visualization_random``, the visualization's with the random photos.
    ``activation``: the unit's mean activation on the visualization and on its top photos.
    The ``*_sources`` name the photos used; ``measure`` what a profile was (see
    :func:`path_similarity`).
    """

    layer: str
    channel: int
    layers: list[str]
    visualization: list[float]
    top: list[float]
    random: list[float]
    top_class: list[float] | None = None
    class_name: str | None = None
    visualization_random: list[float] = field(default_factory=list)
    activation: dict[str, float] = field(default_factory=dict)
    top_sources: list[str] = field(default_factory=list)
    random_sources: list[str] = field(default_factory=list)
    class_sources: list[str] = field(default_factory=list)
    measure: str = "attribution"

    @property
    def unit(self) -> str:
        """``layer:channel``."""
        return f"{self.layer}:{self.channel}"

    @property
    def similarity(self) -> float:
        """The summary: the visualization's mean correlation with the top photos over the
        layers before the unit's own (the path leading to the unit, not the unit's output)."""
        return _mean(self.visualization[:-1] or self.visualization)

    @property
    def natural(self) -> float:
        """The same mean for the top photos among themselves: what "processed like the photos
        that drive the unit" reaches."""
        return _mean(self.top[:-1] or self.top)

    @property
    def chance(self) -> float:
        """The same mean for random photos: what any photo reaches."""
        return _mean(self.random[:-1] or self.random)

    def summary(self) -> dict[str, float]:
        """The numbers a sweep records and a page shows beside the picture."""
        return {"similarity": self.similarity, "natural": self.natural, "chance": self.chance}

    def to_dict(self) -> dict[str, Any]:
        """Everything, as JSON-ready values (the summary included)."""
        return {**asdict(self), "summary": self.summary()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PathSimilarity:
        """Read back :meth:`to_dict`'s output.

        Args:
            d: A dictionary written by :meth:`to_dict`.
        """
        return cls(**{k: v for k, v in d.items() if k != "summary"})

    def __repr__(self) -> str:
        return (f"PathSimilarity({self.unit}: visualization {self.similarity:.3f}, top photos "
                f"{self.natural:.3f}, random photos {self.chance:.3f} over {len(self.layers)} "
                f"layers)")


def _mean(values: Sequence[float] | None) -> float:
    vals = [v for v in (values or []) if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def parse_unit(unit: str | Sequence) -> Unit:
    """``(layer, channel)`` from ``"layer:channel"`` or a pair.

    Args:
        unit: ``"mixed4a:476"`` or ``("mixed4a", 476)``.
    """
    if isinstance(unit, str):
        layer, _, channel = unit.rpartition(":")
        if not layer or not channel.strip().isdigit():
            raise FeatvizError(f"a unit is LAYER:CHANNEL (e.g. mixed4a:476), got {unit!r}")
        return layer, int(channel)
    layer, channel = unit
    return str(layer), int(channel)


def path_similarity(
    model: nn.Module,
    units: Sequence[str | Sequence],
    visualizations: torch.Tensor | Sequence[torch.Tensor],
    photos: Any,
    *,
    layers: Sequence[str] | None = None,
    k: int = 10,
    randoms: int | None = None,
    seed: int = 0,
    size: SizeLike | None = None,
    batch_size: int = 32,
    labels: str | None = None,
    measure: str = "attribution",
    progress: bool = False,
) -> list[PathSimilarity]:
    """The path check of every unit, from one streaming pass over ``photos`` (bounded memory:
    only the kept photos' profiles are held).

    Args:
        units: ``"layer:channel"`` strings or ``(layer, channel)`` pairs.
        model: The network.
        visualizations: Per unit its visualization(s): a [U, C, H, W] tensor, or a list of
            [C, H, W] / [V, C, H, W] tensors (several renders of a unit are all compared), in
            [0, 1]; resized to the photos' size.
        photos: A folder (its ``labels.tsv`` gives the classes), labelled folder, iterable or
            dataset of photos.
        layers: Where to compare; None for :func:`~featviz.methods.trust.ranks.path_layers` of
            each unit. Given layers after a unit's own are left out for it; its own is added.
        k: Top photos per unit (default 10).
        randoms: Photos in the random sample (default: ``k``).
        seed: The random sample's seed.
        size: The side the photos are read at (default: the model's input size).
        batch_size: Photos per forward pass.
        labels: A labels file for a ``photos`` folder without ``labels.tsv``.
        measure: What an image's profile at a layer is: ``"attribution"`` (the default:
            each channel's share of the unit's activation, activation x gradient, i.e. which
            path the activation takes; see :mod:`~featviz.methods.trust.attribution`) or
            ``"activation"`` (each channel's mean activation: Geirhos et al.'s comparison of
            activations, which a manipulated network can pass, see the docs).
        progress: Show a progress bar over the photos.
    """
    if measure not in MEASURES:
        raise FeatvizError(f"measure is one of {', '.join(MEASURES)}, got {measure!r}")
    pairs = [parse_unit(u) for u in units]
    vis = _visualizations(visualizations, len(pairs))
    hw = input_hw(model, size)
    per_unit = {u: _unit_layers(model, u[0], layers, hw[0]) for u in pairs}
    wanted = list(dict.fromkeys(n for ls in per_unit.values() for n in ls))
    source = labelled(photos, labels)
    # the tap names a layer by its path: an alias of the unit's layer is read there
    tapped = [(per_unit[u][-1], u[1]) for u in pairs]
    found = scan(model, source, tapped, wanted, k, randoms or k, seed, hw, batch_size, progress)
    if found.seen < 2:
        raise FeatvizError(f"path similarity needs at least 2 photos, the source gave "
                           f"{found.seen}")
    return [_compare(model, u, key, found.top[key], per_unit[u], _resized(v, hw), found, source,
                     measure, hw, batch_size)
            for u, key, v in zip(pairs, tapped, vis, strict=True)]


def _unit_layers(model: nn.Module, layer: str, layers: Sequence[str] | None,
                 side: int) -> list[str]:
    default = path_layers(model, layer, side)
    if layers is None:
        return default
    from ...models.spatial import spatial_layers
    order = [s.name for s in spatial_layers(model, side)]
    own = default[-1]
    known = [n for n in layers if n in order]
    unknown = [n for n in layers if n not in order]
    if unknown:
        raise FeatvizError(f"layer {unknown[0]!r} gives no spatial map or is no layer; the "
                           f"default layers for {layer!r} are {', '.join(default)}")
    return [n for n in known if order.index(n) < order.index(own)] + [own]


def _visualizations(v: torch.Tensor | Sequence[torch.Tensor], n: int) -> list[torch.Tensor]:
    items = list(v.unbind(0)) if torch.is_tensor(v) and v.dim() == 4 else list(v)
    if len(items) != n:
        raise FeatvizError(f"there are {n} units and {len(items)} visualizations; give one "
                           "image (or one [V, C, H, W] stack) per unit")
    out = []
    for t in items:
        t = torch.as_tensor(t).float()
        if t.dim() == 3:
            t = t[None]
        if t.dim() != 4:
            raise FeatvizError(f"a visualization is [C, H, W] or [V, C, H, W], got "
                               f"{list(t.shape)}")
        out.append(t)
    return out


def _resized(images: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == hw:
        return images
    return F.interpolate(images, size=hw, mode="bilinear", align_corners=False, antialias=True)


def _compare(model: nn.Module, unit: Unit, key: Unit, ranked: list, layers: list[str],
             vis: torch.Tensor, found, source, measure: str, hw: tuple[int, int],
             batch_size: int) -> PathSimilarity:
    top = [p for _, p in ranked]
    klass, cls_photos = _class_photos(model, top, source, layers, hw, batch_size)

    def profiles(photos: Sequence[Photo] | torch.Tensor) -> dict[str, torch.Tensor]:
        images = photos if torch.is_tensor(photos) else None
        if measure == "attribution":
            if images is None:
                images = torch.stack([p.image.float() for p in photos])
            return attribution_profiles(model, images, key, layers, batch_size)
        if images is not None:
            return tap_profiles(model, images, layers, batch_size)
        return {n: torch.stack([p.profiles[n] for p in photos]) for n in layers}

    v, t, r = profiles(vis), profiles(top), profiles(found.random)
    c = profiles(cls_photos) if cls_photos else None
    curves: dict[str, list[float]] = {k: [] for k in ("visualization", "top", "random",
                                                     "top_class", "visualization_random")}
    for name in layers:
        curves["visualization"].append(_mean_pairs(v[name], t[name]))
        curves["visualization_random"].append(_mean_pairs(v[name], r[name]))
        curves["top"].append(_mean_pairs(t[name], t[name], _same(top, top)))
        curves["random"].append(_mean_pairs(r[name], t[name], _same(found.random, top)))
        if c is not None:
            curves["top_class"].append(_mean_pairs(c[name], t[name], _same(cls_photos, top)))
    own = layers[-1]
    return PathSimilarity(
        unit[0], unit[1], layers, curves["visualization"], curves["top"], curves["random"],
        curves["top_class"] or None, klass, curves["visualization_random"],
        {"visualization": float(v[own][:, unit[1]].mean()),
         "top": float(t[own][:, unit[1]].mean())},
        [Path(p.name).name for p in top], [Path(p.name).name for p in found.random],
        [Path(p.name).name for p in cls_photos], measure)


def _stack(photos: Sequence[Photo], layer: str) -> torch.Tensor:
    return torch.stack([p.profiles[layer] for p in photos])


def _same(a: Sequence[Photo], b: Sequence[Photo]) -> torch.Tensor:
    """[Na, Nb]: True where the two are one photo (a pair that would correlate 1 with itself)."""
    return torch.tensor([[x.name == y.name for y in b] for x in a], dtype=torch.bool)


def _mean_pairs(a: torch.Tensor, b: torch.Tensor, skip: torch.Tensor | None = None) -> float:
    rho = spearman(a, b)
    keep = ~skip if skip is not None else torch.ones_like(rho, dtype=torch.bool)
    return float(rho[keep].mean()) if keep.any() else math.nan


def _class_photos(model: nn.Module, top: list[Photo], source, layers: list[str],
                  hw: tuple[int, int], batch_size: int) -> tuple[str | None, list[Photo]]:
    """The most common class among the top photos (ties: the better-ranked photo's) and the
    source's photos of that class, with their profiles; none without labels."""
    labelled_top = [p.label for p in top if p.label is not None]
    if not labelled_top or not isinstance(source, LabelledFolder):
        return None, []
    counts = Counter(lb.name for lb in labelled_top)
    best = max(labelled_top, key=lambda lb: counts[lb.name])  # max keeps the first of a tie
    files = source.subset(where=lambda lb: lb.name == best.name)
    photos: list[Photo] = []
    for names, labels_, x in iter_labelled_batches(files, hw, batch_size):
        prof = tap_profiles(model, x, layers, batch_size)
        photos += [Photo(n, lb, {ly: prof[ly][i] for ly in layers}, x[i].half())
                   for i, (n, lb) in enumerate(zip(names, labels_, strict=True))]
    return best.short, photos


def save_json(results: Sequence[PathSimilarity], path: str | Path) -> Path:
    """Write ``results`` as one JSON file (``{unit: result}``), whole or not at all.

    Args:
        results: Path checks.
        path: The file to write.
    """
    from ...core.files import write_text
    data = {r.unit: r.to_dict() for r in results}
    return write_text(Path(path), json.dumps(data, indent=1))


def load_json(path: str | Path) -> dict[str, PathSimilarity]:
    """Read a file :func:`save_json` wrote.

    Args:
        path: The file.
    """
    data = json.loads(Path(path).read_text())
    return {u: PathSimilarity.from_dict(d) for u, d in data.items()}
