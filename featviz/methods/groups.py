"""Neuron groups (Olah et al., "The Building Blocks of Interpretability", Distill 2018): the
activations of one layer on a photo, factorized into a few groups of channels that fire
together, each shown as a spatial map over the photo and rendered as one feature.

:class:`ChannelReducer` wraps a scikit-learn decomposition (NMF by default) of activation
vectors: one position of a layer is one vector of C channels, a photo's map of h x w positions
is h * w of them, many photos' maps are all their positions (subsampled at random, seeded, when
there are too many). It gives the k components (:attr:`~ChannelReducer.directions`, [k,C]) and
the maps of how much of each there is at each position, in the shape of the input with its
channels replaced by k. :func:`neuron_groups` applies it to one photo and returns a
:class:`NeuronGroups`: the maps, the directions, the photo painted with the groups' colours,
and a render of each direction. Needs scikit-learn: ``pip install featviz[groups]``.
"""

from __future__ import annotations

import colorsys
import importlib
import inspect
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import images as _images
from ..core import notebook as _nb
from ..core import objectives as _objectives
from ..core.hooks import LayerTap, frozen
from ..core.model_info import fixed_input_size, image_channels, input_hw, model_device
from ..core.render import RenderResult, render
from ..core.sizes import SizeLike
from ..errors import ChannelError, FeatvizError, unknown
from .deconv import as_batch

__all__ = ["ChannelReducer", "NeuronGroups", "neuron_groups", "from_activations", "palette",
           "NONNEGATIVE_METHODS"]

#: Activations: one image's [C,H,W], a batch [N,C,H,W], or vectors [M,C].
Acts = torch.Tensor | np.ndarray

#: Short method names and the scikit-learn classes they stand for.
METHODS = {"nmf": "NMF", "pca": "PCA", "ica": "FastICA"}
#: Decompositions that take only non-negative input.
NONNEGATIVE_METHODS = ("NMF", "MiniBatchNMF", "LatentDirichletAllocation")

# matplotlib's tab10, its grey moved to the end (a grey group is hard to see on a photo)
_TAB10 = [(0.122, 0.467, 0.706), (1.000, 0.498, 0.055), (0.173, 0.627, 0.173),
          (0.839, 0.153, 0.157), (0.580, 0.404, 0.741), (0.549, 0.337, 0.294),
          (0.890, 0.467, 0.761), (0.737, 0.741, 0.133), (0.090, 0.745, 0.812),
          (0.498, 0.498, 0.498)]


def _decomposition() -> ModuleType:
    """``sklearn.decomposition``, imported on first use, with the extra to install if absent."""
    try:
        return importlib.import_module("sklearn.decomposition")
    except ImportError as err:
        raise FeatvizError("neuron groups and ChannelReducer need scikit-learn, which is not "
                           "installed: pip install featviz[groups] (or pip install "
                           "scikit-learn)") from err


def _estimator(method: str, k: int, seed: int, options: dict[str, Any]) -> Any:
    """A scikit-learn decomposition with ``k`` components: ``"nmf"`` (init ``"nndsvda"``),
    ``"pca"``, ``"ica"`` or any class name of ``sklearn.decomposition``; seeded when the class
    takes a ``random_state``; ``options`` go to the class as they are."""
    dec = _decomposition()
    name = METHODS.get(method.lower(), method) if isinstance(method, str) else method
    cls = getattr(dec, name, None) if isinstance(name, str) else None
    params = inspect.signature(cls).parameters if isinstance(cls, type) else {}
    if "n_components" not in params:
        choices = [n for n in dir(dec) if isinstance(getattr(dec, n), type)
                   and "n_components" in inspect.signature(getattr(dec, n)).parameters]
        raise unknown("decomposition method", str(method), [*METHODS, *choices],
                      hint="'nmf', 'pca', 'ica' or a class name of sklearn.decomposition")
    defaults: dict[str, Any] = {"init": "nndsvda", "max_iter": 1000} if name == "NMF" else {}
    if "random_state" in params:
        defaults["random_state"] = seed
    return cls(n_components=k, **{**defaults, **options})


def _is_one(acts: object) -> bool:
    return torch.is_tensor(acts) or isinstance(acts, np.ndarray)


def _matrix(acts: Acts) -> np.ndarray:
    """Activations as vectors [M,C] (float32, on the CPU): positions of one image's [C,H,W],
    of a batch [N,C,H,W] (image by image, row by row), or the vectors [M,C] as they are."""
    t = torch.as_tensor(acts).detach().float().cpu()
    if t.dim() == 3:
        t = t.permute(1, 2, 0)
    elif t.dim() == 4:
        t = t.permute(0, 2, 3, 1)
    elif t.dim() != 2:
        raise FeatvizError(f"activations must be one image's [C,H,W], a batch [N,C,H,W] or "
                           f"vectors [M,C]; got shape {list(t.shape)}")
    return np.ascontiguousarray(t.reshape(-1, t.shape[-1]).numpy())


def _shaped(rows: np.ndarray, like: tuple[int, ...]) -> torch.Tensor:
    """Rows [M,k] (one per vector of :func:`_matrix`) back in the shape ``like`` of the
    activations they came from, the channels replaced by k."""
    t = torch.as_tensor(np.asarray(rows, dtype=np.float32))
    k = t.shape[-1]
    if len(like) == 3:
        return t.reshape(like[1], like[2], k).permute(2, 0, 1).contiguous()
    if len(like) == 4:
        return t.reshape(like[0], like[2], like[3], k).permute(0, 3, 1, 2).contiguous()
    return t


class ChannelReducer:
    """Factorize activation vectors into ``k`` components with a scikit-learn decomposition.

    ``method``: ``"nmf"`` (the default; ``init="nndsvda"``, non-negative input only),
    ``"pca"``, ``"ica"`` (FastICA) or the name of any class of ``sklearn.decomposition`` that
    takes ``n_components``; ``seed`` is its ``random_state`` and the seed of the subsample;
    ``options`` go to the class (``max_iter=...``). :meth:`fit` takes one image's activation
    [C,H,W], a batch [N,C,H,W], vectors [M,C] or an iterable of these (fit on many images: at
    most ``max_vectors`` of all their positions, drawn uniformly at random and repeatably, are
    kept, so no more than that plus one batch is ever held). :meth:`transform` gives the maps
    in the input's shape with the channels replaced by k; :attr:`directions` the components
    [k,C]. ``layer`` only names the layer in error messages.
    """

    def __init__(self, k: int, method: str = "nmf", seed: int = 0,
                 max_vectors: int | None = None, layer: str | None = None, **options: Any):
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise FeatvizError(f"k (the number of groups) must be a whole number of at least 1, "
                               f"got {k!r}")
        if max_vectors is not None and max_vectors < 1:
            raise FeatvizError(f"max_vectors must be at least 1, got {max_vectors!r}")
        self.k, self.method, self.seed = int(k), method, seed
        self.max_vectors, self.layer = max_vectors, layer
        self.estimator = _estimator(method, self.k, seed, options)
        self.nonnegative = type(self.estimator).__name__ in NONNEGATIVE_METHODS
        self.channels: int | None = None
        self.n_vectors = 0  # vectors the last fit used (after the subsample)
        self.n_seen = 0  # vectors the last fit was given

    def __repr__(self) -> str:
        return (f"ChannelReducer(k={self.k}, method={self.method!r}, seed={self.seed}, "
                f"fitted={self.channels is not None})")

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, acts: Acts | Iterable[Acts]) -> ChannelReducer:
        """Fit the components on ``acts`` (see the class); returns the reducer."""
        self._fit(self._vectors(acts))
        return self

    def _fit(self, vectors: np.ndarray, transform: bool = False) -> np.ndarray | None:
        """Fit the estimator (and return the fit's own maps when ``transform``); a failed fit
        leaves the reducer unfitted."""
        try:
            if transform:
                return self.estimator.fit_transform(vectors)
            self.estimator.fit(vectors)
            return None
        except BaseException:
            self.channels = None
            raise

    def fit_transform(self, acts: Acts | Iterable[Acts]) -> torch.Tensor | list[torch.Tensor]:
        """Fit on ``acts`` and return their maps (a list of maps, one per item, for an
        iterable). When every vector was fitted on, the maps are the fit's own (for NMF the
        joint solution, a little closer than :meth:`transform` gives afterwards)."""
        if not _is_one(acts):
            parts = list(acts)
            self.fit(parts)
            return [self.transform(p) for p in parts]
        vectors = self._vectors(acts)
        if self.n_vectors < self.n_seen:
            self._fit(vectors)
            return self.transform(acts)
        return _shaped(self._fit(vectors, transform=True), tuple(acts.shape))

    def transform(self, acts: Acts | Iterable[Acts]) -> torch.Tensor | list[torch.Tensor]:
        """The maps of ``acts``: [k,H,W] for [C,H,W], [N,k,H,W] for [N,C,H,W], [M,k] for
        [M,C] (a list of these for an iterable)."""
        if not _is_one(acts):
            return [self.transform(p) for p in acts]
        self._check_fitted()
        return _shaped(self.estimator.transform(self._checked(_matrix(acts))), tuple(acts.shape))

    @property
    def directions(self) -> torch.Tensor:
        """The components [k,C] (float32): the direction in activation space of each group."""
        self._check_fitted()
        return torch.as_tensor(np.asarray(self.estimator.components_, dtype=np.float32))

    def reconstruct(self, maps: torch.Tensor) -> torch.Tensor:
        """The activations the maps stand for, in the maps' shape with k replaced by C:
        ``maps · directions`` (plus the mean for PCA; scikit-learn's ``inverse_transform``)."""
        self._check_fitted()
        m = torch.as_tensor(maps)
        rows = _matrix(m)
        if hasattr(self.estimator, "inverse_transform"):
            back = self.estimator.inverse_transform(rows)
        else:
            back = rows @ self.estimator.components_
        return _shaped(back, tuple(m.shape))

    def reconstruction_error(self, acts: Acts, maps: torch.Tensor | None = None) -> float:
        """The relative error ``‖A − Â‖ / ‖A‖`` (Frobenius norms) of rebuilding the
        activations ``A`` from their maps (:meth:`transform` of them unless given): 0 is exact,
        1 is no better than zeros."""
        a = _matrix(acts)
        maps = self.transform(acts) if maps is None else maps
        rebuilt = _matrix(self.reconstruct(maps))
        norm = float(np.linalg.norm(a))
        return float(np.linalg.norm(a - rebuilt)) / norm if norm > 0 else 0.0

    # -- helpers ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.channels is None:
            raise FeatvizError("the ChannelReducer is not fitted yet: call fit(acts) or "
                               "fit_transform(acts) first")

    def _where(self) -> str:
        return f"layer {self.layer!r}" if self.layer else "the activations"

    def _checked(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` after the checks every input gets: its channel count matches, and NMF
        gets no negative value."""
        if self.channels is not None and vectors.shape[1] != self.channels:
            raise ChannelError(f"{self._where()} has {vectors.shape[1]} channels, but the "
                               f"reducer was fitted on {self.channels}")
        if self.nonnegative and vectors.size and vectors.min() < 0:
            raise FeatvizError(
                f"{type(self.estimator).__name__} needs non-negative activations, but "
                f"{self._where()} has values down to {float(vectors.min()):.4g}; pick a layer "
                "after a ReLU (or another non-negative layer) or use method='pca'")
        return vectors

    def _vectors(self, acts: Acts | Iterable[Acts]) -> np.ndarray:
        """The vectors [M,C] to fit on, every one or ``max_vectors`` of them, checked."""
        self.channels = None
        parts = [acts] if _is_one(acts) else acts
        if self.max_vectors is None:
            chunks = [self._first_checked(_matrix(p)) for p in parts]
            if not chunks:
                raise FeatvizError("fit got no activations (an empty iterable)")
            vectors = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
            self.n_seen = len(vectors)
        else:
            vectors = self._subsample(parts)
        self.n_vectors = len(vectors)
        limit = min(vectors.shape[1], len(vectors))
        if self.k > limit:
            self.channels = None
            raise FeatvizError(
                f"k={self.k} groups is out of range for {self._where()}: {len(vectors)} "
                f"positions of {vectors.shape[1]} channels allow k from 1 to {limit}")
        return vectors

    def _first_checked(self, vectors: np.ndarray) -> np.ndarray:
        vectors = self._checked(vectors)
        self.channels = vectors.shape[1]
        return vectors

    def _subsample(self, parts: Iterable[Acts]) -> np.ndarray:
        """``max_vectors`` of the parts' vectors drawn uniformly without replacement, in their
        order: each vector gets a random key (one seeded stream over all of them, so splitting
        the same vectors into other batches draws the same ones) and the smallest keys stay."""
        rng = np.random.default_rng(self.seed)
        kept = np.zeros((0, 0), dtype=np.float32)
        keys = np.zeros(0)
        index = np.zeros(0, dtype=np.int64)
        self.n_seen = 0
        for part in parts:
            vectors = self._first_checked(_matrix(part))
            kept = np.concatenate([kept.reshape(-1, vectors.shape[1]), vectors])
            keys = np.concatenate([keys, rng.random(len(vectors))])
            index = np.concatenate([index, self.n_seen + np.arange(len(vectors))])
            self.n_seen += len(vectors)
            if len(keys) > self.max_vectors:
                best = np.argpartition(keys, self.max_vectors - 1)[:self.max_vectors]
                kept, keys, index = kept[best], keys[best], index[best]
        if self.n_seen == 0:
            raise FeatvizError("fit got no activations (an empty iterable)")
        order = np.argsort(index)
        return np.ascontiguousarray(kept[order])


def palette(k: int) -> torch.Tensor:
    """``k`` distinct RGB colours [k,3] in [0, 1]: matplotlib's tab10 (grey last), then hues
    spread by the golden ratio.

    Args:
        k: the number of colours.
    """
    extra = [colorsys.hsv_to_rgb((0.07 + 0.618034 * i) % 1.0, 0.75, 0.9)
             for i in range(max(0, k - len(_TAB10)))]
    return torch.tensor((_TAB10 + extra)[:k], dtype=torch.float32)


@dataclass
class NeuronGroups:
    """One photo's activations at ``layer`` factorized into k groups of channels.

    ``image``: the photo [1,C,H,W] in [0, 1] (C the model's, 3 for RGB); ``activations``:
    [C,h,w] at ``layer``; ``maps``: [k,h,w], how much of each group is at each position
    (non-negative for NMF); ``directions``: [k,C], unit vectors (the maps carry the scale, so
    ``maps · directions`` rebuilds the activations, plus their mean for PCA); ``error``: the
    relative reconstruction error ``‖A − Â‖ / ‖A‖``. Groups come largest first (by the total
    of each map's absolute values); a signed method's groups are turned so their maps add up
    to a positive total.
    """

    layer: str
    image: torch.Tensor
    activations: torch.Tensor
    maps: torch.Tensor
    directions: torch.Tensor
    error: float
    method: str = "nmf"

    @property
    def k(self) -> int:
        """The number of groups."""
        return int(self.maps.shape[0])

    @property
    def colours(self) -> torch.Tensor:
        """One distinct RGB colour per group [k,3] in [0, 1] (:func:`palette`)."""
        return palette(self.k)

    def heatmaps(self) -> torch.Tensor:
        """The maps' positive parts upsampled (bilinear) to the photo's size and scaled to
        [0, 1] per group: [k,H,W]."""
        up = F.interpolate(self.maps.clamp_min(0)[None].float(), size=self.image.shape[-2:],
                           mode="bilinear", align_corners=False)[0].clamp_min(0)
        return up / up.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)

    def _photo(self) -> torch.Tensor:
        return _images.as_rgb(self.image[0].float()).clamp(0, 1)

    def overlay(self, alpha: float = 0.7) -> torch.Tensor:
        """The photo with each group's map painted over it in its colour, [1,3,H,W] in [0, 1]:
        at each pixel the groups' colours are mixed by their squared map values (the
        strongest group dominates) and laid over the photo with opacity ``alpha`` times the
        strongest map value there, so the photo shows where no group is."""
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        heat = self.heatmaps()
        weight = heat ** 2
        hue = torch.einsum("khw,kc->chw", weight, self.colours)
        hue = hue / weight.sum(0).clamp_min(1e-12)
        cover = alpha * heat.amax(0)
        return (self._photo() * (1 - cover) + hue * cover).clamp(0, 1)[None]

    def map_images(self, dim: float = 0.15) -> torch.Tensor:
        """One image per group [k,3,H,W] in [0, 1]: the photo kept where the group is and
        dimmed to ``dim`` of its brightness where it is absent."""
        heat = self.heatmaps()[:, None]
        return (self._photo()[None] * (dim + (1 - dim) * heat)).clamp(0, 1)

    def _tiles(self) -> tuple[torch.Tensor, list[str]]:
        tiles = torch.cat([self._photo()[None], self.overlay(), self.map_images()])
        labels = ["photo", f"{self.k} groups at {self.layer}",
                  *[f"group {j}" for j in range(self.k)]]
        return tiles, labels

    def save(self, path: str | os.PathLike) -> Path:
        """Write the photo, the overlay and each group's map image as one labelled grid."""
        tiles, labels = self._tiles()
        return _images.save(tiles, path, labels=labels, ncol=min(len(tiles), 4))

    def __repr__(self) -> str:
        return (f"NeuronGroups({self.layer}: {self.k} groups by {self.method} of "
                f"{_nb.shape(self.activations)} activations, relative error {self.error:.3f})")

    def _repr_png_(self) -> bytes:
        """What :meth:`save` writes: the photo, the overlay and each group's map."""
        tiles, labels = self._tiles()
        return _nb.png(_images.grid(tiles, labels, ncol=min(len(tiles), 4)))

    def _repr_html_(self) -> str:
        """The factorization's error above the photo, the overlay and the maps."""
        page = _nb.Budget()
        page.text(f"<p>{self.k} groups ({self.method}) of the activations "
                  f"{_nb.shape(self.activations)}; relative reconstruction error "
                  f"{self.error:.3f}. <code>.render(model)</code> draws each group.</p>")
        tiles, labels = self._tiles()
        page.image(_images.grid(tiles, labels, ncol=min(len(tiles), 4)), "neuron groups")
        return page.html(f"neuron groups: {self.layer}")

    def render(self, model: nn.Module, size: SizeLike = 128, steps: int = 256, seed: int = 0,
               cossim_pow: float = 0.0, **render_kw: Any) -> RenderResult:
        """Render every group's direction, image ``j`` for group ``j``, in one batched
        :func:`featviz.render` call (``objectives.direction`` with one vector per image;
        ``cossim_pow`` > 0 weights it by the cosine, lucid's variant); ``size`` is one side or
        (height, width); ``render_kw`` go to ``featviz.render`` (``progress=False``,
        ``param=...``, ...)."""
        objective = _objectives.direction(self.layer, self.directions, cossim_pow=cossim_pow)
        result = render(model, objective, size=size, steps=steps, seed=seed, **render_kw)
        result.labels = [f"group {j}" for j in range(self.k)]
        return result


def _photo_for(model: nn.Module, image: torch.Tensor | str | os.PathLike) -> torch.Tensor:
    """One photo [1,C,H,W] for ``model``: a tensor as it is (not copied in place), or an image
    file scaled so its shorter side is the model's input size (cropped to it for a model that
    takes one size only)."""
    channels = image_channels(model)
    if isinstance(image, (str, os.PathLike)):
        fixed = fixed_input_size(model)
        if fixed:
            return _images.load(image, size=fixed, channels=channels)
        img = _images.load(image, channels=channels)
        scale = min(input_hw(model)) / min(img.shape[-2:])
        size = [max(1, round(s * scale)) for s in img.shape[-2:]]
        return F.interpolate(img, size=size, mode="bilinear", align_corners=False,
                             antialias=True).clamp(0, 1)
    img = as_batch(image, channels)
    if img.shape[0] != 1:
        raise FeatvizError(f"neuron_groups takes one photo, got a batch of {img.shape[0]}; "
                           "fit a ChannelReducer to factorize many")
    return img


def _unit_directions(maps: torch.Tensor, directions: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Directions scaled to unit length and the maps by their lengths (the product stays),
    each pair turned so that its map's total is not negative."""
    norms = directions.norm(dim=1).clamp_min(1e-12)
    sign = torch.where(maps.flatten(1).sum(1) < 0, -1.0, 1.0)
    return (maps * (norms * sign).view(-1, 1, 1),
            directions / (norms * sign).view(-1, 1))


def neuron_groups(model: nn.Module, image: torch.Tensor | str | os.PathLike, layer: str,
                  k: int = 6, method: str = "nmf", seed: int = 0,
                  **options: Any) -> NeuronGroups:
    """Factorize ``model``'s activations at ``layer`` on one photo into ``k`` groups of
    channels that fire together (Building Blocks of Interpretability): ``image`` is a tensor
    [3,H,W] or [1,3,H,W] in [0, 1] or an image file (read with its shorter side at the
    model's input size); ``method``/``seed``/``options`` choose the decomposition
    (:class:`ChannelReducer`; NMF by default, which needs a layer after a ReLU). The model
    comes back as it was, with no hook left.

    Args:
        model: the network.
        image: a tensor [3, H, W] or [1, 3, H, W] in [0, 1], or an image file.
        layer: the layer to factorize.
        k: the number of groups (default 6).
        method: the decomposition (default ``"nmf"``).
        seed: the random seed of the decomposition.
        **options: other options of :class:`ChannelReducer`.
    """
    photo = _photo_for(model, image)
    with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
        act = tap(photo.float().to(model_device(model)))[layer]
    if act.dim() != 4:
        raise FeatvizError(f"layer {layer!r} has no spatial maps (output {list(act.shape)}); "
                           "pick a convolutional layer")
    return from_activations(act[0].detach().float().cpu(), photo, layer, k, method, seed,
                            **options)


def from_activations(acts: torch.Tensor, image: torch.Tensor, layer: str, k: int = 6,
                     method: str = "nmf", seed: int = 0, **options: Any) -> NeuronGroups:
    """:func:`neuron_groups` for activations already at hand: ``acts`` [C, H, W] of ``layer``
    on ``image`` [1, 3, H, W] (kept for the overlays), factorized into ``k`` groups.

    Args:
        acts: the activations of ``layer``, [C, H, W].
        image: the photo, [1, 3, H, W].
        layer: the layer's name.
        k: the number of groups (default 6).
        method: the decomposition (default ``"nmf"``).
        seed: the random seed of the decomposition.
        **options: other options of :class:`ChannelReducer`.
    """
    reducer = ChannelReducer(k, method, seed, layer=layer, **options)
    maps = reducer.fit_transform(acts)
    error = reducer.reconstruction_error(acts, maps)
    maps, directions = _unit_directions(maps, reducer.directions)
    order = maps.abs().flatten(1).sum(1).argsort(descending=True)
    return NeuronGroups(layer, image.detach().cpu().clone(), acts, maps[order].contiguous(),
                        directions[order].contiguous(), error, method)
