"""Single-mindedness: how much a unit's top examples are about one thing, scored the same way
for every neuron and every feature of a layer, so that "features are more monosemantic than
neurons" becomes a number per unit and two distributions to compare.

The score of a unit is the mean pairwise cosine similarity of its top-k patches' embeddings
(over the ``k (k - 1) / 2`` pairs; undefined, NaN, with fewer than two examples). Copies of
one patch score 1; patches about unrelated things score near 0 (below, a little, since the
embeddings are centred).

Two embeddings are offered:

* :func:`single_mindedness`, the judge: each patch (the crop the page shows, the unit's
  receptive field or a token's window, moved into the photo where it reaches past the border:
  grey fill shared by border patches would make them look alike) resized to a small side
  (96 px) and run through the
  model up to a *judge layer*, by default the model's last spatial layer before the
  classifier (:func:`judge_layer`), globally average-pooled. The judge is independent of the
  layer studied: a feature is not judged by the very directions that define it. Embeddings are
  centred on the mean of all the patches embedded (every neuron's and feature's top patches),
  since post-ReLU embeddings all point into one orthant and share a large common part, which
  would make every unit look single-minded. Each (image, y, x) is embedded once, in batches.
* :func:`layer_mindedness`, the cheap one: the stored vectors of the studied layer at the top
  positions, centred on the store's mean vector. No model run; but it is biased towards the
  unit's own direction (every top vector of a feature is large along its encoder row), so it
  reads higher than the judge, and for features more than for neurons whose top values come
  from one channel. Use it as a quick check, the judge for claims.

Why not the entropy of the top images' classes, the usual measure? Because the sample photo
folder featviz ships with holds exactly one photo per ImageNet class: every unit's top images
are of k different classes, and the class entropy is the same (log k) for every unit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core import layouts as _layouts
from ...core.hooks import LayerTap, frozen, named_layers, on_output, only_tensor
from ...core.model_info import fixed_input_size, image_channels, input_hw, model_device
from ...errors import FeatvizError
from ..atlas_store import ActivationStore
from ..receptive_field import ReceptiveField
from ..tokens import MARGIN
from ._units import Example, UnitExamples
from .features import DictionaryExamples, iter_crops, unit_field


@dataclass
class Minded:
    """One kind's scores: ``scores[j]`` is unit ``units[j]``'s (NaN: fewer than 2 examples)."""

    kind: str
    units: list[int]
    scores: np.ndarray

    def score(self, unit: int) -> float:
        """The unit's score.

        Args:
            unit: the feature or channel.
        """
        return float(self.scores[self.units.index(int(unit))])

    def summary(self) -> dict[str, float]:
        """``n`` (units with a score), ``median``, quartiles ``q1``, ``q3`` and ``mean``."""
        s = self.scores[np.isfinite(self.scores)]
        if not len(s):
            return {"n": 0, "median": float("nan"), "q1": float("nan"), "q3": float("nan"),
                    "mean": float("nan")}
        q1, median, q3 = np.percentile(s, [25, 50, 75])
        return {"n": len(s), "median": float(median), "q1": float(q1), "q3": float(q3),
                "mean": float(s.mean())}

    def pick(self, n: int = 6) -> dict[str, list[int]]:
        """The ``n`` most and the ``n`` least single-minded units (most first, least first).

        Args:
            n: units of each end.
        """
        ok = np.flatnonzero(np.isfinite(self.scores))
        order = ok[np.argsort(-self.scores[ok], kind="stable")]
        return {"most": [self.units[j] for j in order[:n]],
                "least": [self.units[j] for j in order[::-1][:n]]}


@dataclass
class MindedScores:
    """The scores of a layer's ``features`` and ``neurons``, by ``method`` (the judge layer,
    or ``"layer"`` for :func:`layer_mindedness`)."""

    method: str
    features: Minded
    neurons: Minded

    def summary(self) -> dict[str, dict[str, float]]:
        """:meth:`Minded.summary` of each kind, by ``"features"`` and ``"neurons"``."""
        return {"features": self.features.summary(), "neurons": self.neurons.summary()}


def mean_pairwise_cosine(vectors: torch.Tensor) -> float:
    """The mean cosine similarity over the distinct pairs of rows of ``vectors`` [k, D];
    NaN for fewer than 2 rows (a zero row counts as similar to nothing).

    Args:
        vectors: one embedding per row.
    """
    if vectors.shape[0] < 2:
        return float("nan")
    unit = F.normalize(vectors.double(), dim=1)
    sim = unit @ unit.T
    k = vectors.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (k * (k - 1)))


def pick_units(scores: MindedScores, n: int = 6) -> dict[str, dict[str, list[int]]]:
    """The most and least single-minded units of each kind, for a sheet:
    ``{"features": {"most": [...], "least": [...]}, "neurons": {...}}``.

    Args:
        scores: what :func:`single_mindedness` or :func:`layer_mindedness` gave.
        n: units of each end of each kind.
    """
    return {"features": scores.features.pick(n), "neurons": scores.neurons.pick(n)}


def _spatial(model: nn.Module, name: str, act: torch.Tensor, image: tuple[int, int]) -> bool:
    """Whether ``act`` is a map (or a token grid) once laid out as taps lay it out."""
    try:
        laid = _layouts.normalize({name: act}, _layouts.declared(model), image)
    except FeatvizError:
        return False
    return laid[name].dim() == 4


def judge_layer(model: nn.Module) -> str:
    """The model's last spatial layer (a map or a token grid, in the order the forward pass
    runs them): the judge :func:`single_mindedness` embeds patches with by default, pooled
    over its positions (for a classifier, what its head reads).

    Args:
        model: the network.
    """
    seen: list[tuple[str, torch.Tensor]] = []

    def keep(names: list[str], output: object) -> None:
        out = only_tensor(output)
        if isinstance(out, torch.Tensor):
            seen.append((names[0], out))

    image = input_hw(model)
    x = torch.zeros(1, image_channels(model), *image, device=model_device(model))
    with frozen(model), on_output(model, list(named_layers(model)), keep), torch.no_grad():
        model(x)
    for name, act in reversed(seen):
        if _spatial(model, name, act, image):
            return name
    raise FeatvizError("the model has no spatial layer to judge patches with; give judge=")


def _embed(tap: LayerTap, judge: str, batch: list[torch.Tensor], device) -> torch.Tensor:
    act = tap(torch.stack(batch).to(device))[judge].float()
    return (act.flatten(2).mean(dim=2) if act.dim() > 2 else act).cpu()


def embeddings(model: nn.Module, points: Sequence[Example],
               images_folder: str | os.PathLike | None, size: int | Sequence[int],
               field: ReceptiveField, judge: str, side: int = 96,
               batch_size: int = 32) -> torch.Tensor:
    """The judge's embedding [len(points), D] of the patch at every point: the ``field`` box
    cut from its photo, resized to ``side`` (the model's own size where it takes only one),
    run through the model to ``judge`` and averaged over positions. Photos are read once.

    Args:
        model: the network.
        points: the positions (:class:`Example`), each embedded once: give them without
            repeats.
        images_folder: the folder of the store's photos.
        size: the photos' size when the store was collected.
        field: the box of a position (:func:`~.features.unit_field`).
        judge: the layer whose pooled output is the embedding.
        side: the side the crops are resized to.
        batch_size: crops per forward pass.
    """
    shape = fixed_input_size(model) or (side, side)
    device, out = model_device(model), [None] * len(points)
    pending: list[tuple[int, torch.Tensor]] = []

    def flush(tap: LayerTap) -> None:
        embedded = _embed(tap, judge, [c for _, c in pending], device)
        for (i, _), e in zip(pending, embedded, strict=True):
            out[i] = e
        pending.clear()

    crops = iter_crops(points, images_folder, size, field, image_channels(model), inside=True)
    with frozen(model), LayerTap(model, [judge]) as tap, torch.no_grad():
        for i, crop in crops:
            pending.append((i, F.interpolate(crop[None], shape, mode="bilinear",
                                             antialias=True, align_corners=False)[0]))
            if len(pending) == batch_size:
                flush(tap)
        if pending:
            flush(tap)
    return torch.stack(out) if out else torch.zeros(0, 0)


def _needed(examples: DictionaryExamples, min_examples: int | None) -> int:
    """The examples a unit needs to be scored: ``min_examples``, or the search's k (the most
    any unit has), at least 2."""
    if min_examples is not None:
        if min_examples < 2:
            raise FeatvizError(f"min_examples must be at least 2 (a pair to compare), got "
                               f"{min_examples}")
        return min_examples
    k = max((len(t) for kind in (examples.features, examples.neurons)
             for t in kind.top.values()), default=2)
    return max(k, 2)


def _scores(kind: UnitExamples, vectors: dict[tuple[int, int, int], torch.Tensor],
            need: int = 2) -> Minded:
    """Each unit's mean pairwise cosine of the vectors of its examples."""
    scores = [mean_pairwise_cosine(torch.stack([vectors[(e.image, e.y, e.x)]
                                                for e in kind.top[u]]))
              if len(kind.top[u]) >= need else float("nan") for u in kind.units]
    return Minded(kind.kind, list(kind.units), np.asarray(scores, dtype=np.float64))


def _points(examples: DictionaryExamples) -> dict[tuple[int, int, int], Example]:
    """Every top example of both kinds, once per (image, y, x)."""
    points: dict[tuple[int, int, int], Example] = {}
    for kind in (examples.features, examples.neurons):
        for u in kind.units:
            for e in kind.top[u]:
                points.setdefault((e.image, e.y, e.x), e)
    return points


def single_mindedness(model: nn.Module, examples: DictionaryExamples,
                      images_folder: str | os.PathLike | None = None, judge: str | None = None,
                      side: int = 96, center: bool = True, batch_size: int = 32,
                      margin: float = MARGIN, field: ReceptiveField | None = None,
                      cache: dict[tuple[int, int, int], torch.Tensor] | None = None,
                      min_examples: int | None = None) -> MindedScores:
    """Every feature's and neuron's single-mindedness by the judge (see the module): the mean
    pairwise cosine of its top patches' embeddings at ``judge``.

    Args:
        model: the network the store was collected with.
        examples: what :func:`~.features.feature_examples` found.
        images_folder: the folder of the store's photos.
        judge: the layer that embeds the patches; None for :func:`judge_layer`'s.
        side: the side the patches are resized to before the judge sees them.
        center: subtract the mean embedding of all the patches first (see the module).
        batch_size: patches per forward pass.
        margin: on a token layer, patches of photo around the token's patch.
        field: the box of a position; None for :func:`~.features.unit_field`'s.
        cache: embeddings by (image, y, x), read and filled here: pass one dict to the calls
            on one store (several dictionaries of a layer share the neurons' patches) with
            the same judge, side and field.
        min_examples: a unit with fewer top examples (a rare feature, active on few photos)
            gets no score (NaN): a mean over one or two pairs is too noisy to set beside
            the others'. Default: the search's k, so that every score is a mean over the
            same number of pairs.
    """
    need = _needed(examples, min_examples)
    kind = examples.features
    judge = judge or judge_layer(model)
    field = field or unit_field(model, kind.layer, kind.size, margin)
    cache = {} if cache is None else cache
    points = _points(examples)
    missing = [key for key in points if key not in cache]
    new = embeddings(model, [points[key] for key in missing], images_folder, kind.size, field,
                     judge, side, batch_size)
    cache.update(zip(missing, new, strict=True))
    emb = torch.stack([cache[key] for key in points]) if points else torch.zeros(0, 0)
    if center and len(emb):
        emb = emb - emb.mean(dim=0)
    vectors = dict(zip(points, emb, strict=True))
    return MindedScores(judge, _scores(examples.features, vectors, need),
                        _scores(examples.neurons, vectors, need))


def store_mean(store: ActivationStore) -> np.ndarray:
    """The mean of the store's vectors [C] (float64, read shard by shard).

    Args:
        store: the activation vectors.
    """
    total = np.zeros(store.channels)
    for shard in store.shards():
        total += shard["vectors"].astype(np.float64).sum(axis=0)
    return total / max(len(store), 1)


def layer_mindedness(store: ActivationStore, examples: DictionaryExamples,
                     center: bool = True, min_examples: int | None = None) -> MindedScores:
    """The cheap single-mindedness (see the module): the mean pairwise cosine of the studied
    layer's own vectors at each unit's top positions, less the store's mean vector.

    Args:
        store: the activation vectors the examples were found in.
        examples: what :func:`~.features.feature_examples` found.
        center: subtract the store's mean vector first.
        min_examples: the fewest top examples a scored unit has (see
            :func:`single_mindedness`); default the search's k.
    """
    need = _needed(examples, min_examples)
    points = _points(examples)
    rows = np.asarray([e.row for e in points.values()], dtype=np.int64)
    vecs = torch.from_numpy(store.vectors(rows)).double()
    if center:
        vecs = vecs - torch.from_numpy(store_mean(store))
    vectors = dict(zip(points, vecs, strict=True))
    return MindedScores("layer", _scores(examples.features, vectors, need),
                        _scores(examples.neurons, vectors, need))


__all__ = ["Minded", "MindedScores", "embeddings", "judge_layer", "layer_mindedness",
           "mean_pairwise_cosine", "pick_units", "single_mindedness", "store_mean"]
