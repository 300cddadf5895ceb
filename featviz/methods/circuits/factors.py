"""Weight factors (Voss et al., "Visualizing Weights", Distill 2021): a layer's expanded
weights read through a few directions of the source layer instead of its hundreds of channels.

The expanded weights ``[C_target, C_source, kh, kw]`` are split by sign (NMF needs non-negative
numbers: positive weights and the size of negative ones are rows of their own) and laid out as
a matrix with one row per (target channel, sign, offset) and one column per source channel;
non-negative matrix factorization gives ``k`` source directions (``directions [k,
C_source]``, each a mix of source channels, shown by its feature visualization) and, for every
target unit, a signed spatial map per direction (``maps [C_target, k, kh, kw]``: positive part
minus negative part).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from ...core import images as _images
from ..groups import ChannelReducer
from .expanded import CircuitError, ExpandedWeights
from .views import RenderCache, weight_map


@dataclass(repr=False)
class WeightFactors:
    """``k`` non-negative source directions and each target unit's signed maps on them;
    ``explained``: 1 − ‖M − WH‖ / ‖M‖ of the split matrix M (1 is a perfect fit)."""

    directions: torch.Tensor
    maps: torch.Tensor
    units: list[int]
    weights: ExpandedWeights
    explained: float

    def __repr__(self) -> str:
        return (f"WeightFactors({self.weights.source!r} -> {self.weights.target!r}: "
                f"{len(self.directions)} directions for {len(self.units)} units, "
                f"{self.explained:.0%} explained)")

    def unit(self, channel: int) -> torch.Tensor:
        """One target unit's maps on the directions, ``[k, kh, kw]``.

        Args:
            channel: The target channel (one of ``units``).
        """
        if channel not in self.units:
            raise CircuitError(f"channel {channel} was not factored; factored units: "
                               f"{_shown(self.units)}")
        return self.maps[self.units.index(channel)]


def _shown(units: list[int]) -> str:
    return ", ".join(map(str, units[:8])) + (", ..." if len(units) > 8 else "")


def weight_factors(ew: ExpandedWeights, k: int = 6, *, units: Sequence[int] | None = None,
                   seed: int = 0, max_iter: int = 400) -> WeightFactors:
    """Factor the expanded weights of ``units`` (all target channels by default) into ``k``
    source directions (see the module).

    Args:
        ew: Expanded weights from :func:`~featviz.methods.circuits.expanded_weights`.
        k: Directions.
        units: Target channels to factor together; one unit alone gives its own factors.
        seed: The factorization's random state.
        max_iter: The factorization's iterations at most.
    """
    n_target, n_source, kh, kw = ew.weights.shape
    units = list(range(n_target)) if units is None else [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < n_target]
    if bad or not units:
        raise CircuitError(f"units must be channels of {ew.target!r} (0-{n_target - 1}), "
                           f"got {bad or 'none'}")
    if not 1 <= k <= n_source:
        raise CircuitError(f"k must be 1-{n_source} (the source's channels), got {k}")
    w = ew.weights[units].double().permute(0, 2, 3, 1)  # [U, kh, kw, S]
    split = torch.stack([w.clamp(min=0), (-w).clamp(min=0)], 1)  # [U, 2, kh, kw, S]
    matrix = split.reshape(-1, n_source)
    reducer = ChannelReducer(k, "nmf", seed=seed, layer=ew.source, max_iter=max_iter)
    loadings = torch.as_tensor(reducer.fit_transform(matrix), dtype=torch.float64)
    directions = torch.as_tensor(reducer.directions, dtype=torch.float64)
    fit = loadings @ directions
    explained = 1 - float((matrix - fit).norm() / matrix.norm().clamp(min=1e-12))
    parts = loadings.reshape(len(units), 2, kh, kw, k)
    maps = (parts[:, 0] - parts[:, 1]).permute(0, 3, 1, 2)  # [U, k, kh, kw]
    return WeightFactors(directions.float(), maps.float().contiguous(), units, ew, explained)


def factor_figure(model: nn.Module, factors: WeightFactors, channel: int, *,
                  cache: RenderCache | None = None, tile: int = 128,
                  path: str | Path | None = None) -> Image.Image:
    """One unit's weights through the factors: for each source direction its feature
    visualization above the unit's signed map on it (red positive, blue negative, one colour
    scale), the directions rendered in one batch through ``cache``.

    Args:
        model: The network the weights are of.
        factors: From :func:`weight_factors`.
        channel: The target unit.
        cache: Where feature visualizations come from and are kept.
        tile: The side of each picture, in pixels.
        path: Where to write the figure (PNG); None writes nothing.
    """
    maps = factors.unit(channel)
    cache = cache or RenderCache()
    source = factors.weights.source
    pictures = cache.get(model, [(source, d) for d in factors.directions])
    scale = float(maps.abs().max()) or 1.0
    order = maps.flatten(1).sum(1).argsort(descending=True).tolist()
    tiles, labels = [], []
    for f in order:
        tiles.append(torch.nn.functional.interpolate(pictures[f][None].float(), size=(tile, tile),
                                                     mode="bilinear", antialias=True)[0])
        labels.append(f"{source} factor {f}")
    for f in order:
        tiles.append(weight_map(maps[f], scale, tile))
        labels.append(f"{factors.weights.target}:{channel}, sum {float(maps[f].sum()):+.3g}")
    sheet = _images.grid(torch.stack(tiles).clamp(0, 1), labels, ncol=len(order))
    if path is not None:
        _images.save(_images.from_pil(sheet), path)
    return sheet
