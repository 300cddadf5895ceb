"""Weight views (Voss et al., "Visualizing Weights", Distill 2021; Olah et al., "Zoom In",
Distill 2020): the first layer's filters as a picture, a unit's strongest incoming and outgoing
connections shown by their feature visualizations beside the spatial weight maps, and the
weight factors (NMF) of a layer's expanded weights.

Feature visualizations come from a :class:`RenderCache`: the units a figure needs that it has
not rendered yet are rendered in one batch, and kept (in memory per model, and in a folder
when it is given), so a circuit figure of eight units costs one render batch, and the next
figure that shows one of them costs nothing for it.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ...core import images as _images
from ...core import model_info
from ...core import objectives as obj
from ...core.files import safe_name
from ...core.hooks import resolve_layer
from ...core.render import render
from ...core.sizes import SizeLike
from .expanded import CircuitError, Connection, ExpandedWeights, expanded_weights
from .tuning import parse_unit

Unit = tuple[str, Any]  # (layer, channel) or (layer, direction vector [C])


class RenderCache:
    """Feature visualizations of units, rendered in batches and kept per model.

    Args:
        steps: Render steps of each visualization.
        seed: A unit of channel ``c`` draws from ``seed + c`` (a direction from ``seed``),
            whatever else is in its batch, so a cached image equals a fresh one.
        size: The image side; default: the model's input size.
        folder: Where renders are also kept as PNGs (one folder per model); None: memory only.
        options: Any other option of :func:`featviz.render` (``pace="careful"``, ...).
    """

    def __init__(self, steps: int = 256, seed: int = 0, size: SizeLike | None = None,
                 folder: str | Path | None = None, **options: Any):
        self.steps, self.seed, self.size, self.options = steps, seed, size, options
        self.folder = Path(folder) if folder is not None else None
        self.rendered = 0  # render calls made (a test reads it: one per figure at most)
        self._memory: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, model: nn.Module, units: Sequence[Unit]) -> list[torch.Tensor]:
        """The images [3, H, W] of ``units``, rendering those not kept yet in one batch.

        Args:
            model: The network.
            units: ``(layer, channel)`` pairs, or ``(layer, vector)`` for a direction.
        """
        kept = self._memory.setdefault(model, {})
        keys = [self._key(u) for u in units]
        missing = [(k, u) for k, u in dict(zip(keys, units, strict=True)).items()
                   if k not in kept and not self._load(kept, k)]
        if missing:
            self._render(model, kept, missing)
        return [kept[k] for k in keys]

    def _key(self, unit: Unit) -> str:
        layer, what = unit
        name = str(what) if isinstance(what, int) else "d" + str(abs(hash(
            tuple(torch.as_tensor(what).flatten().tolist()))))
        return f"{safe_name(layer)}-{name}-s{self.steps}-seed{self.seed}-{self.size or 'auto'}"

    def _load(self, kept: dict, key: str) -> bool:
        path = self.folder / f"{key}.png" if self.folder else None
        if path is None or not path.is_file():
            return False
        kept[key] = _images.load(path)[0]  # [3, H, W], as a fresh render gives
        return True

    def _render(self, model: nn.Module, kept: dict, missing: list[tuple[str, Unit]]) -> None:
        parts, seeds = [], []
        for i, (_, (layer, what)) in enumerate(missing):
            if isinstance(what, int):
                parts.append(obj.channel(layer, what, batch=i))
                seeds.append(self.seed + what)
            else:
                parts.append(obj.direction(layer, torch.as_tensor(what), batch=i))
                seeds.append(self.seed)
        result = render(model, sum(parts[1:], parts[0]), steps=self.steps, size=self.size,
                        batch=len(missing), seed=seeds, progress=False, **self.options)
        self.rendered += 1
        for (key, _), image in zip(missing, result.images[:, :3], strict=True):
            kept[key] = image
            if self.folder is not None:
                _images.save(image, self.folder / f"{key}.png")


def first_layer(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Conv2d]:
    """The convolution that sees the image: ``layer``, or the first ``nn.Conv2d`` whose input
    channels are the image's.

    Args:
        model: The network.
        layer: A layer name, or None to find it.
    """
    if layer is not None:
        module = resolve_layer(model, layer)
        if not isinstance(module, nn.Conv2d):
            raise CircuitError(f"layer {layer!r} is a {type(module).__name__}, not a Conv2d")
        return layer, module
    channels = model_info.image_channels(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == channels:
            return name, module
    raise CircuitError("the model has no Conv2d taking the image's "
                       f"{channels} channels; name the first layer with layer=")


def first_layer_filters(model: nn.Module, layer: str | None = None, *, scale: int = 8,
                        ncol: int | None = None, path: str | Path | None = None) -> Image.Image:
    """The first layer's filters as a picture: each filter's RGB weights around mid-grey, by
    its own largest weight (so weak filters show their shape too), enlarged ``scale`` times.

    Args:
        model: The network.
        layer: The first convolution; None finds it (:func:`first_layer`).
        scale: Pixels per weight.
        ncol: Filters per row; None for a near-square sheet.
        path: Where to write the PNG; None writes nothing.
    """
    name, conv = first_layer(model, layer)
    w = conv.weight.detach().float().cpu()
    if w.shape[1] not in (1, 3):
        raise CircuitError(f"layer {name!r} takes {w.shape[1]} channels; filters show as "
                           "pictures for 1 or 3 input channels")
    peak = w.flatten(1).abs().amax(1).clamp(min=1e-12).view(-1, 1, 1, 1)
    tiles = (0.5 + 0.5 * w / peak).clamp(0, 1)
    tiles = torch.nn.functional.interpolate(tiles, scale_factor=scale, mode="nearest")
    sheet = _images.grid(tiles, ncol=ncol, pad=2)
    if path is not None:
        _images.save(_images.from_pil(sheet), path)
    return sheet


def weight_map(weights: torch.Tensor, scale: float, side: int) -> torch.Tensor:
    """A spatial weight map [kh, kw] as an RGB tile [3, side, side]: red for positive, blue
    for negative, white for zero, full colour at ``scale``.

    Args:
        weights: The map.
        scale: The weight shown at full colour (shared across a figure, so maps compare).
        side: The tile's side in pixels (nearest-neighbour enlarged).
    """
    v = (weights.float() / max(scale, 1e-12)).clamp(-1, 1)
    pos, neg = v.clamp(min=0), (-v).clamp(min=0)
    rgb = torch.stack([1 - neg, 1 - pos - neg, 1 - pos]).clamp(0, 1)
    return torch.nn.functional.interpolate(rgb[None], size=(side, side), mode="nearest")[0]


def _blank(side: int) -> torch.Tensor:
    return torch.ones(3, side, side)


@dataclass(repr=False)
class Circuit:
    """A unit with its strongest incoming connections from ``weights.source`` (``excites``,
    ``inhibits``), its strongest outgoing ones (``feeds``, when a next layer was given) and
    the figure of them all (``picture``)."""

    unit: tuple[str, int]
    weights: ExpandedWeights
    excites: list[Connection]
    inhibits: list[Connection]
    feeds: list[Connection]
    next_layer: str | None
    picture: Image.Image

    def __repr__(self) -> str:
        show = ", ".join(f"{c.channel} ({c.strength:+.3g})" for c in self.excites)
        return (f"Circuit({self.unit[0]}:{self.unit[1]} <- {self.weights.source}: excited by "
                f"{show})")

    def _repr_png_(self) -> bytes:
        import io
        buf = io.BytesIO()
        self.picture.save(buf, format="PNG")
        return buf.getvalue()


def circuit(model: nn.Module, unit: str | tuple[str, int], source: str, *, k: int = 4,
            next_layer: str | None = None, cache: RenderCache | None = None, tile: int = 128,
            path: str | Path | None = None) -> Circuit:
    """A unit and its strongest connections (Zoom In's circuit figures): the unit's feature
    visualization; the ``k`` source channels that excite it most and the ``k`` that inhibit it
    most, each by its feature visualization beside its spatial weight map (red positive, blue
    negative, one colour scale for the figure); with ``next_layer``, the ``k`` units of that
    layer it excites most ("is fed": their maps are the unit's weights into them). Every
    feature visualization the figure lacks is rendered in one batch through ``cache``.

    Args:
        model: The network.
        unit: ``"layer:channel"`` or ``(layer, channel)``.
        source: The earlier layer whose channels feed the unit.
        k: Connections of each kind.
        next_layer: A later layer for the outgoing connections; None leaves them out.
        cache: Where feature visualizations come from and are kept; None: a fresh
            :class:`RenderCache` (256 steps).
        tile: The side of each picture in the figure, in pixels.
        path: Where to write the figure (PNG); None writes nothing.
    """
    layer, channel = parse_unit(unit)
    ew = expanded_weights(model, source, layer)
    excites, inhibits = ew.strongest(channel, k), ew.strongest(channel, k, "negative")
    feeds = (expanded_weights(model, layer, next_layer).outgoing(channel, k) if next_layer
             else [])
    cache = cache or RenderCache()
    units = [(layer, channel), *[(source, c.channel) for c in excites + inhibits],
             *[(next_layer, c.channel) for c in feeds]]
    rows = [("excites", source, excites), ("inhibits", source, inhibits)]
    rows += [("is fed", next_layer, feeds)] if next_layer else []
    picture = _circuit_sheet((layer, channel), cache.get(model, units), rows, tile, k)
    if path is not None:
        _images.save(_images.from_pil(picture), path)
    return Circuit((layer, channel), ew, excites, inhibits, feeds, next_layer, picture)


def _circuit_sheet(unit: tuple[str, int], pictures: list[torch.Tensor],
                   rows: list[tuple[str, str, list[Connection]]], tile: int, k: int
                   ) -> Image.Image:
    """The figure: the unit, then a row per kind of connection, each a (picture, weight map)
    pair per connection."""
    def small(img: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(img[None].float(), size=(tile, tile),
                                               mode="bilinear", antialias=True)[0].clamp(0, 1)

    scale = max([float(c.weights.abs().max()) for _, _, r in rows for c in r] or [1.0])
    tiles = [small(pictures[0])] + [_blank(tile)] * (2 * k - 1)
    labels = [f"{unit[0]}:{unit[1]}, the unit"] + [""] * (2 * k - 1)
    it = iter(pictures[1:])
    for kind, layer, row in rows:
        for c in row:
            tiles += [small(next(it)), weight_map(c.weights, scale, tile)]
            labels += [f"{layer}:{c.channel} {kind}", f"weights, sum {c.strength:+.3g}"]
        tiles += [_blank(tile)] * (2 * (k - len(row)))
        labels += [""] * (2 * (k - len(row)))
    return _images.grid(torch.stack(tiles), labels, ncol=2 * k)
