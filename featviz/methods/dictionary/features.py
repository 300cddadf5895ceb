"""A dictionary's features shown the way featviz shows a neuron: as an objective to render
(:func:`dictionary_feature`, or a direction render of the decoder row,
:func:`feature_directions`), by their strongest dataset patches (:func:`feature_examples`,
:func:`example_patches`) and by the classes they fire on (:func:`top_classes`).

Neurons and features go through one code path: a unit is a column of an "encode" function of
the layer's vectors, the SAE's sparse code for a feature and the vector itself for a neuron, so
what the page puts side by side was found by the same search (one position per image, the
image's strongest; the same firing rate; the same class ranking).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...core import images as _images
from ...core.model_info import image_channels
from ...core.objectives import Objective, builder
from ...core.objectives.base import Acts
from ...core.objectives.builders import _channels_of, _positions_last, _show_channels
from ...core.sizes import SizeLike
from ...errors import ChannelError, FeatvizError
from .._topk import _tiles, crop_box
from ..atlas_store import ActivationStore
from ..receptive_field import ReceptiveField, theoretical
from ..tokens import MARGIN, TokenField, token_field
from ._units import UnitExamples, UnitScan, scan
from .sae import SparseAutoencoder


# -- the objective ---------------------------------------------------------------------
def _show_sae(sae: SparseAutoencoder) -> str:
    return f"sae{sae.n_features}"


def _check_features(sae: SparseAutoencoder, features: Sequence[int]) -> list[int]:
    """``features`` as ints, each checked against the dictionary's size."""
    out = [int(f) for f in features]
    n = sae.n_features
    for f in out:
        if not 0 <= f < n:
            raise ChannelError(f"feature {f} is out of range for a dictionary of {n} "
                               f"features (valid: 0-{n - 1})")
    return out


def _as_features(i: Any) -> int | list[int]:
    """A feature or a list of them, from ints, sequences, tensors or arrays."""
    if hasattr(i, "tolist"):  # a tensor or an array: a 0-d one is one feature
        i = i.tolist()
    if isinstance(i, Sequence) and not isinstance(i, str):
        return [int(f) for f in i]
    return int(i)


def _weights(sae: SparseAutoencoder, features: list[int], like: torch.Tensor):
    """The encoder's columns of ``features`` and the constants, on ``like``'s device/dtype
    and cut off from the dictionary's own gradients (a render changes the image only)."""
    def to(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=like.device, dtype=like.dtype)

    idx = torch.tensor(features, device=sae.W_enc.device)
    return to(sae.W_enc[:, idx]), to(sae.b_enc[idx]), to(sae.b_dec), to(sae.scale)


def _inputs(layer: str, sae: SparseAutoencoder, act: torch.Tensor) -> torch.Tensor:
    """The layer's vectors [B, P, C] as the encoder reads them, the width checked."""
    width = _channels_of(layer, act)
    if width != sae.d_in:
        raise ChannelError(f"layer {layer!r} has {width} channels but the dictionary reads "
                           f"vectors of {sae.d_in} (d_in={sae.d_in}): it was trained on "
                           "another layer")
    return _positions_last(act)


@builder(show={"sae": _show_sae, "i": lambda i: _show_channels(_as_features(i))})
def dictionary_feature(layer: str, sae: SparseAutoencoder, i: int | Sequence[int],
                       batch: int | None = None) -> Objective:
    """Feature ``i`` of the dictionary ``sae`` read at ``layer``: its pre-activation
    (:meth:`SparseAutoencoder.pre_activation`, which has a gradient where the TopK or ReLU
    would cut the feature off) averaged over the layer's positions (a map's pixels, a
    sequence's tokens), like :func:`~featviz.objectives.channel` for a neuron.

    Args:
        layer: the layer's name (the one the dictionary was trained on).
        sae: the dictionary.
        i: the feature, or a list of features, one per image of the batch (image ``j``
            maximizes feature ``i[j]``: many features rendered in one batch).
        batch: the one image of the batch it drives (all by default; not with a list).
    """
    i = _as_features(i)
    many = isinstance(i, list)
    features = _check_features(sae, i if many else [i])
    if many and batch is not None:
        raise ValueError("give either a list of features or batch=, not both")
    if not features:
        raise ValueError("dictionary_feature needs at least one feature")

    def fn(acts: Acts) -> torch.Tensor:
        x = _inputs(layer, sae, acts[layer])
        w, b, b_dec, scale = _weights(sae, features, x)
        z = x / scale - b_dec
        if not many:
            return (z @ w + b).mean(dim=(1, 2))
        return _one_per_image(z, w, b)

    if not many:
        return Objective(fn, [layer])
    return Objective(fn, [layer], "", len(features),
                     {j: dictionary_feature.display(layer, sae, f)
                      for j, f in enumerate(features)})


def _one_per_image(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Image ``j`` of ``z`` [B, P, C] scored on column ``j`` of ``w`` [C, F]; images past
    ``F`` get 0."""
    n, size = w.shape[1], z.shape[0]
    if size < n:
        raise FeatvizError(f"{n} features need a batch of at least {n} images, got {size}")
    values = torch.einsum("bpc,cb->bp", z[:n], w).mean(dim=1) + b
    if size > n:
        values = torch.cat([values, values.new_zeros(size - n)])
    return values


def feature_directions(sae: SparseAutoencoder,
                       features: int | Sequence[int] | None = None) -> torch.Tensor:
    """The decoder rows of ``features`` as unit vectors [F, d_in] (one row for one feature):
    what ``featviz.objectives.direction(layer, vectors)`` renders, image ``j`` the direction
    of feature ``features[j]`` (the "direction render" of a feature, beside the render of
    :func:`dictionary_feature`, which follows the encoder instead).

    Args:
        sae: the dictionary.
        features: a feature, a list of them, or None for all.
    """
    if features is None:
        return sae.directions()
    features = _as_features(features)
    chosen = _check_features(sae, features if isinstance(features, list) else [features])
    return sae.directions()[chosen]


# -- the dataset search ----------------------------------------------------------------
@dataclass
class DictionaryExamples:
    """What :func:`feature_examples` found: the same search for the dictionary's
    ``features`` and the layer's own channels (``neurons``), over ``vectors`` vectors."""

    features: UnitExamples
    neurons: UnitExamples
    vectors: int

    def __repr__(self) -> str:
        return (f"DictionaryExamples({len(self.features.units)} features, "
                f"{len(self.neurons.units)} neurons of {self.features.layer} over "
                f"{self.vectors} vectors)")


def feature_units(sae: SparseAutoencoder, features: Sequence[int]) -> UnitScan:
    """The search's description of ``features``: the sparse code's columns (only positive
    values count as firing, so a dead feature has no examples).

    Args:
        sae: the dictionary.
        features: the features to search for.
    """
    idx = torch.tensor(_check_features(sae, features))
    device = sae.W_enc.device

    @torch.no_grad()
    def encode(vectors: torch.Tensor) -> torch.Tensor:
        return sae.encode(vectors.to(device))[:, idx.to(device)].float().cpu()

    return UnitScan("feature", encode, list(idx.tolist()), floor=0.0)


def neuron_units(channels: Sequence[int], width: int) -> UnitScan:
    """The search's description of the layer's own ``channels`` (a neuron's value is the
    channel itself; every value counts, negative ones of a layer before its ReLU included).

    Args:
        channels: the channels to search for.
        width: the layer's number of channels, to check them.
    """
    chosen = [int(c) for c in channels]
    bad = [c for c in chosen if not 0 <= c < width]
    if bad:
        raise ChannelError(f"channel {bad[0]} is out of range for a layer of {width} "
                           f"channels (valid: 0-{width - 1})")
    idx = torch.tensor(chosen, dtype=torch.long)
    return UnitScan("neuron", lambda vectors: vectors[:, idx], chosen, floor=None)


def _check_store(store: ActivationStore, sae: SparseAutoencoder) -> None:
    if store.channels != sae.d_in:
        raise ChannelError(f"the store holds vectors of {store.channels} channels (layer "
                           f"{store.layer!r}) but the dictionary reads {sae.d_in} "
                           f"(d_in={sae.d_in})")


def feature_examples(store: ActivationStore, sae: SparseAutoencoder,
                     features: Sequence[int] | None = None, k: int = 9, chunk: int = 4096,
                     channels: Sequence[int] | None = None) -> DictionaryExamples:
    """Every feature's (and every neuron's) ``k`` strongest images in ``store``, at most one
    position per image (the image's strongest), with firing rates and class statistics.

    The store is read shard by shard and ``chunk`` vectors (whole images) at a time are
    encoded (:meth:`SparseAutoencoder.encode`, float32); only a running top-k per unit and
    per-class sums are kept, so memory is one chunk's codes plus ``k`` entries per unit.

    Args:
        store: the layer's activation vectors (:func:`featviz.atlas_store.collect`).
        sae: the dictionary trained on that layer.
        features: the features to search for; None for all.
        k: images kept per unit.
        chunk: vectors encoded at once (rounded to whole images).
        channels: the layer's channels searched as neurons; None for all.
    """
    _check_store(store, sae)
    features = range(sae.n_features) if features is None else features
    channels = range(store.channels) if channels is None else channels
    found = scan(store, [feature_units(sae, features), neuron_units(channels, store.channels)],
                 k, chunk)
    return DictionaryExamples(found[0], found[1], len(store))


def top_classes(source: DictionaryExamples | UnitExamples | ActivationStore,
                sae: SparseAutoencoder | None, unit: int, n: int = 5) -> list[tuple[str, float]]:
    """A unit's top classes: the classes of the store's images ranked by the unit's per-image
    maximum averaged over the images of the class, as ``(class name, mean maximum)``.

    Args:
        source: what :func:`feature_examples` found, one kind of it, or a store (searched
            here for ``unit`` alone).
        sae: the dictionary, for a feature; None for a neuron (``unit`` is a channel).
        unit: the feature or channel.
        n: how many classes.
    """
    if isinstance(source, ActivationStore):
        if sae is not None:
            _check_store(source, sae)
        units = (feature_units(sae, [unit]) if sae is not None
                 else neuron_units([unit], source.channels))
        source = scan(source, [units], 1, 4096)[0]
    elif isinstance(source, DictionaryExamples):
        source = source.features if sae is not None else source.neurons
    return source.top_classes(unit, n)


# -- patches ---------------------------------------------------------------------------
def unit_field(model: nn.Module, layer: str, size: SizeLike,
               margin: float = MARGIN) -> ReceptiveField:
    """The box a unit of ``layer`` is shown with: its theoretical receptive field on a
    convolutional layer, its token's patch with ``margin`` patches of photo around it on a
    token layer (:func:`featviz.methods.tokens.token_field`).

    Args:
        model: the network.
        layer: the layer.
        size: the photos' size, one side or (height, width) (the store's ``size``).
        margin: on a token layer, patches of photo on each side of the token's own.
    """
    size = size if isinstance(size, int) else tuple(size)
    return token_field(model, layer, size, margin) or theoretical(model, layer,
                                                                   input_size=size)


def image_path(name: str, folder: str | os.PathLike | None) -> Path:
    """Where the store's image ``name`` lies: under ``folder`` by its name or its file name,
    else at ``name`` itself; an error naming both when it is nowhere.

    Args:
        name: the image's name as the store keeps it (a path when collected from files).
        folder: the folder the photos are in now; None to use the names as they are.
    """
    tries = [Path(folder) / name, Path(folder) / Path(name).name] if folder else []
    for path in [*tries, Path(name)]:
        if path.is_file():
            return path
    where = f" in {folder}" if folder else ""
    raise FeatvizError(f"image {name!r} of the store is not found{where}; give the folder the "
                       "photos were collected from")


def iter_crops(points: Sequence, folder: str | os.PathLike | None, size: SizeLike,
               field: ReceptiveField, channels: int = 3,
               inside: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
    """``(i, crop)`` for every point ``i`` (anything with ``image``, ``name``, ``y``, ``x``,
    as :class:`Example`): the box of ``field`` at the point cut from its photo (grey outside
    the photo, or with ``inside`` the box moved into the photo). Each photo is read once,
    brought to ``size`` as the store was collected.

    Args:
        points: the positions to cut.
        folder: the folder the photos are in (see :func:`image_path`).
        size: the photos' size when the store was collected.
        field: the box of a position (:func:`unit_field`).
        channels: the model's input channels.
        inside: move each box into the photo (cut to the photo where larger), so that no
            crop holds grey fill: two crops at a border are then alike only in content.
    """
    size = size if isinstance(size, int) else tuple(size)
    order = sorted(range(len(points)), key=lambda i: points[i].image)
    for _, group in itertools.groupby(order, key=lambda i: points[i].image):
        group = list(group)
        path = image_path(points[group[0]].name, folder)
        img = _images.load(path, size=size, channels=channels)[0]
        for i in group:
            box = field.box(points[i].y, points[i].x)
            yield i, crop_box(img, _moved_inside(box, img.shape[-2:]) if inside else box)


def _moved_inside(box: tuple[int, int, int, int], hw) -> tuple[int, int, int, int]:
    """``box`` (top, left, bottom, right) shifted to lie in an image of ``hw``, and cut to
    it on a side where it is larger."""
    top, left, bottom, right = box
    h, w = min(bottom - top, hw[0]), min(right - left, hw[1])
    top = min(max(top, 0), hw[0] - h)
    left = min(max(left, 0), hw[1] - w)
    return top, left, top + h, left + w


def example_patches(model: nn.Module, examples: UnitExamples,
                    images_folder: str | os.PathLike | None = None,
                    units: Sequence[int] | None = None, tile: int = 64,
                    margin: float = MARGIN,
                    field: ReceptiveField | None = None) -> dict[int, torch.Tensor]:
    """The patches under each unit's top examples, as tiles [k, C, tile, tile] per unit
    (none for a unit without examples): the receptive-field box of the position, or on a
    token layer the token's patch with ``margin`` patches around it, the patch outlined.

    Args:
        model: the network the store was collected with.
        examples: one kind (features or neurons) of :func:`feature_examples`' result.
        images_folder: the folder of the store's photos (see :func:`image_path`).
        units: the units to cut; None for all of ``examples``.
        tile: the side every patch is scaled to.
        margin: on a token layer, patches of photo around the token's patch.
        field: the box of a position; None for :func:`unit_field`'s.
    """
    field = field or unit_field(model, examples.layer, examples.size, margin)
    units = list(examples.units if units is None else units)
    points = [(u, slot, e) for u in units for slot, e in enumerate(examples.examples(u))]
    channels = image_channels(model)
    out = {u: torch.ones(len(examples.examples(u)), channels, tile, tile) for u in units}
    crops = iter_crops([e for _, _, e in points], images_folder, examples.size, field,
                       channels)
    for i, crop in crops:
        unit, slot, e = points[i]
        focus = field.focus(e.y, e.x) if isinstance(field, TokenField) else None
        out[unit][slot] = _tiles([crop], tile, [focus])[0]
    return out


__all__ = ["DictionaryExamples", "dictionary_feature", "example_patches", "feature_directions",
           "feature_examples", "feature_units", "image_path", "iter_crops", "neuron_units",
           "top_classes", "unit_field"]
