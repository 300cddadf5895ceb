"""Tuning curves: how one unit answers a family of parametric stimuli drawn in its receptive
field (the synthetic-stimulus experiments of "Curve Detectors", Cammarata et al. 2020).

The unit is the centre position of a layer's map; every stimulus is drawn inside that
position's theoretical receptive field (:func:`~featviz.methods.receptive_field.theoretical`)
and the whole family passes through the model once, up to the layer, measuring every channel
at that position (:func:`measure`, shared with :func:`~featviz.methods.circuits.families.scan`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...core import layouts as _layouts
from ...core import model_info
from ...core.files import write_atomic
from ...core.hooks import LayerTap, frozen, on_output, only_tensor, resolve_layer
from ...core.sizes import SizeLike
from ...errors import ChannelError, FeatvizError, non_negative
from ..receptive_field import theoretical
from .stimuli import Box, Family, _batches, get_family


def parse_unit(unit: tuple[str, int] | str) -> tuple[str, int]:
    """``unit`` as (layer, channel): from a pair or a ``"layer:channel"`` string.

    Args:
        unit: ``("mixed3b", 379)`` or ``"mixed3b:379"``.
    """
    if isinstance(unit, str):
        layer, sep, channel = unit.rpartition(":")
        if not sep or not layer or not channel.strip().lstrip("-").isdigit():
            raise FeatvizError(f"a unit is 'layer:channel' (e.g. 'mixed3b:379'), got {unit!r}")
        return layer, int(channel)
    try:
        layer, channel = unit
    except (TypeError, ValueError):
        raise FeatvizError(f"a unit is (layer, channel) or 'layer:channel', got {unit!r}"
                           ) from None
    if not isinstance(layer, str) or isinstance(channel, bool) or not isinstance(channel, int):
        raise FeatvizError(f"a unit is (layer name, channel index), got {unit!r}")
    return layer, channel


class _Seen(Exception):
    """Stops the probe's forward pass once the layer has run."""


def layer_maps(model: nn.Module, layer: str, size: SizeLike | None = None
               ) -> tuple[int, tuple[int, int]]:
    """The channels and map size (h, w) of ``layer`` on an input of ``size``; an error when
    the layer gives no spatial maps (a logit or pooled vector, a transformer's tokens).

    Args:
        model: The network.
        layer: The layer's name.
        size: The input: one side or (height, width); default the model's.
    """
    resolve_layer(model, layer)
    rows, cols = model_info.input_hw(model, size)
    seen: list[torch.Tensor] = []

    def grab(_names, output) -> None:
        seen.append(only_tensor(output))
        raise _Seen

    x = torch.full((1, model_info.image_channels(model), rows, cols), 0.5,
                   device=model_info.model_device(model), dtype=model_info.model_dtype(model))
    with frozen(model), torch.no_grad(), on_output(model, [layer], grab), \
            contextlib.suppress(_Seen):
        model(x)
    if not seen or not isinstance(seen[0], torch.Tensor):
        raise FeatvizError(f"layer {layer!r} gave no tensor in the forward pass; pick a "
                           "convolutional layer whose output is a [B, C, H, W] map")
    out = seen[0]
    layout = _layouts.layout_of(layer, out, _layouts.declared(model), (rows, cols))
    if layout not in ("nchw", "nhwc"):
        what = "a transformer's token layer" if layout.startswith("tokens") else "no spatial maps"
        raise FeatvizError(f"layer {layer!r} has {what} (output {list(out.shape)}); tuning "
                           "curves need a convolutional layer's [B, C, H, W] maps, whose "
                           "centre unit has a receptive field to draw in")
    grid = out if layout == "nchw" else out.permute(0, 3, 1, 2)
    return int(grid.shape[1]), (int(grid.shape[2]), int(grid.shape[3]))


def stimulus_box(model: nn.Module, layer: str, size: SizeLike | None = None,
                 extent: float = 1.0) -> tuple[Box, tuple[int, int]]:
    """Where to draw stimuli for ``layer``'s centre unit: its theoretical receptive field,
    clipped to the image and scaled by ``extent`` about its centre (clipped again); with the
    unit's (y, x) in the layer's map.

    Args:
        model: The network.
        layer: The layer's name.
        size: The input: one side or (height, width); default the model's.
        extent: Scale of the box about its centre (1: the receptive field).
    """
    extent = non_negative("extent", extent, "the box's scale about the receptive field")
    if extent == 0:
        raise FeatvizError("extent must be > 0 (the box's scale about the receptive field)")
    rows, cols = model_info.input_hw(model, size)
    _, (h, w) = layer_maps(model, layer, (rows, cols))
    y, x = h // 2, w // 2
    top, left, bottom, right = theoretical(model, layer, input_size=(rows, cols)).box(y, x)
    top, left, bottom, right = max(top, 0), max(left, 0), min(bottom, rows), min(right, cols)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    hh, hw_ = extent * (bottom - top) / 2, extent * (right - left) / 2
    box = (max(round(cy - hh), 0), max(round(cx - hw_), 0),
           min(round(cy + hh), rows), min(round(cx + hw_), cols))
    return box, (y, x)


@dataclass
class Measurement:
    """Every channel of a layer's centre unit on every stimulus of a family.

    ``responses``: ``[N, C]`` (N stimuli in the family's grid order); ``baseline``: ``[C]``,
    the response to the plain grey image; ``box``: where the stimuli were drawn; ``unit``:
    (y, x) in the layer's map; ``size``: the input's (height, width); ``seconds``: the time
    taken.
    """

    layer: str
    family: Family
    responses: torch.Tensor
    baseline: torch.Tensor
    box: Box
    unit: tuple[int, int]
    size: tuple[int, int]
    seconds: float


def measure(model: nn.Module, layer: str, family: Family | str, *, size: SizeLike | None = None,
            batch_size: int = 64, extent: float = 1.0, background: float = 0.5) -> Measurement:
    """Draw every stimulus of ``family`` in the receptive field of ``layer``'s centre unit
    (:func:`stimulus_box`) and measure all of the layer's channels there, in one pass of the
    stimuli (in batches) through the model up to the layer.

    Args:
        model: The network (takes images in [0, 1]).
        layer: The layer's name.
        family: A stimulus family or its name (:data:`~.stimuli.FAMILIES`).
        size: The input: one side or (height, width); default the model's.
        batch_size: Stimuli per forward pass.
        extent: Scale of the stimulus box about the receptive field.
        background: The grey level around the stimuli.
    """
    start = time.perf_counter()
    fam = get_family(family)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FeatvizError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    rows, cols = model_info.input_hw(model, size)
    box, (y, x) = stimulus_box(model, layer, (rows, cols), extent)
    device, dtype = model_info.model_device(model), model_info.model_dtype(model)
    grey = torch.full((1, 3, rows, cols), float(background))
    table = _layouts.declared(model)

    def centre(images: torch.Tensor) -> torch.Tensor:
        act = tap(_channels(images, model).to(device, dtype))[layer]
        if _layouts.layout_of(layer, act, table, (rows, cols)) == "nhwc":
            act = act.permute(0, 3, 1, 2)
        return act[:, :, y, x].float().cpu()

    with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
        baseline = centre(grey)[0]
        outputs = [centre(batch) for batch in _batches(fam, (rows, cols), box, background,
                                                       batch_size)]
    return Measurement(layer, fam, torch.cat(outputs), baseline, box, (y, x), (rows, cols),
                       time.perf_counter() - start)


def _channels(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """RGB stimuli as the model's channels: grey (their mean) for a one-channel model."""
    channels = model_info.image_channels(model)
    if channels == 3:
        return images
    if channels == 1:
        return images.mean(dim=1, keepdim=True)
    raise FeatvizError(f"stimuli are RGB or grey; the model takes {channels} channels")


def orientation_curve(responses: torch.Tensor, family: Family) -> torch.Tensor:
    """The best response per orientation: ``responses`` (shaped by ``family``'s grid, any
    leading dimensions allowed) maxed over every parameter but the orientation.

    Args:
        responses: Responses shaped ``[..., *family.shape]``.
        family: The family (must have an orientation).
    """
    if family.orientation is None:
        raise FeatvizError(f"family {family.name!r} has no orientation")
    names = list(family.params)
    lead = responses.dim() - len(names)
    axis = lead + names.index(family.orientation)
    others = [d for d in range(lead, responses.dim()) if d != axis]
    return responses.amax(dim=others) if others else responses


def circular_stats(curve: torch.Tensor, angles: Sequence[float], period: float,
                   baseline: torch.Tensor | float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Circular variance and unimodality of orientation curves ``[..., n]``.

    The curve is rectified above ``baseline`` (r = max(curve - baseline, 0)); circular
    variance is 1 - |Σ r e^{i·(360/period)·θ}| / Σ r (1 where Σ r = 0: no tuning). Unimodal:
    exactly one contiguous arc of the circular curve lies above half its maximum (a curve
    above half all round has no peak and is not unimodal).

    Args:
        curve: Orientation curves, orientation last.
        angles: The orientations in degrees.
        period: Their period in degrees.
        baseline: Subtracted before rectifying (a scalar or one per curve).
    """
    base = torch.as_tensor(baseline, dtype=curve.dtype)
    r = (curve - (base[..., None] if base.dim() else base)).clamp_min(0).double()
    theta = torch.tensor([math.radians(a * 360.0 / period) for a in angles], dtype=torch.float64)
    total = r.sum(-1)
    vector = torch.complex(r @ theta.cos(), r @ theta.sin()).abs()
    variance = torch.where(total > 0, 1 - vector / total.clamp_min(1e-300),
                           torch.ones_like(total))
    above = r > r.amax(-1, keepdim=True) / 2
    # an arc begins where the orientation before it is below half; a curve above half all
    # round begins nowhere: it has no peak
    starts = above & ~above.roll(1, dims=-1)
    unimodal = (starts.sum(-1) == 1) & (total > 0)
    return variance.float(), unimodal


@dataclass(repr=False)
class TuningCurve:
    """A unit's responses to a stimulus family.

    ``responses``: shaped by the family's grid (``family.shape``); ``grid``: the parameters
    of each stimulus (flat, in draw order); ``baseline``: the response to the plain grey
    image; ``box``: where the stimuli were drawn. For a family with an orientation:
    :attr:`orientation_curve` is the best response per orientation, rectified above the grey
    baseline for :attr:`circular_variance` = 1 − |Σ r_θ e^{i·(360/period)·θ}| / Σ r_θ (0: one
    orientation only, 1: untuned) and :attr:`selectivity` = 1 − circular variance.
    """

    layer: str
    channel: int
    family: Family
    responses: torch.Tensor
    baseline: float
    box: Box
    seconds: float = 0.0

    @property
    def grid(self) -> list[dict[str, Any]]:
        """The parameters of each stimulus, in the order of ``responses.flatten()``."""
        return self.family.grid()

    @property
    def preferred(self) -> dict[str, Any]:
        """The parameters of the stimulus with the largest response."""
        return self.grid[int(self.responses.flatten().argmax())]

    @property
    def orientations(self) -> list[float] | None:
        """The orientations in degrees (None for a family without)."""
        fam = self.family
        return list(fam.params[fam.orientation]) if fam.orientation else None

    @property
    def orientation_curve(self) -> torch.Tensor | None:
        """The best response per orientation (max over the other parameters)."""
        return orientation_curve(self.responses, self.family) if self.family.orientation else None

    def _stats(self) -> tuple[float, bool]:
        if self.family.orientation is None:
            return float("nan"), False
        cv, uni = circular_stats(self.orientation_curve, self.orientations, self.family.period,
                                 self.baseline)
        return float(cv), bool(uni)

    @property
    def circular_variance(self) -> float:
        """1 − |Σ r_θ e^{i·(360/period)·θ}| / Σ r_θ on the rectified orientation curve."""
        return self._stats()[0]

    @property
    def selectivity(self) -> float:
        """1 − :attr:`circular_variance` (1: responds to one orientation only)."""
        return 1 - self._stats()[0]

    @property
    def unimodal(self) -> bool:
        """Whether exactly one arc of the circular orientation curve is above half its peak."""
        return self._stats()[1]

    def __repr__(self) -> str:
        pref = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in self.preferred.items())
        tail = (f", circular variance {self.circular_variance:.2f}, "
                f"{'unimodal' if self.unimodal else 'not unimodal'}"
                if self.family.orientation else "")
        return (f"TuningCurve({self.layer}:{self.channel}, {self.family.name}, peak "
                f"{float(self.responses.max()):.3g} at {pref}; grey {self.baseline:.3g}{tail})")

    def plot(self, path: str | os.PathLike | None = None, ax: Any = None, by: str | None = None,
             legend: bool = True) -> Any:
        """Plot the response against orientation: a polar plot (a period of 180 degrees is
        shown twice round, a line being the same both ways), one line per value of ``by``
        (default the second parameter; the others maxed) and the overall best in black, the
        grey image's response dashed. A family without orientation gets a line plot over its
        first parameter. Returns the figure, or ``ax`` when one is given.

        Args:
            path: Where to write the plot as a PNG (atomically); None writes nothing.
            ax: A matplotlib axes to draw into (polar for the polar plot); None makes a figure.
            by: The parameter with one line per value; None: the family's second.
            legend: Whether to draw a legend (when there are few lines).
        """
        fig = None
        if ax is None:
            fig = new_figure((4.8 if legend else 3.4, 3.4))
            fig.subplots_adjust(left=0.08 if self.family.orientation else 0.14,
                                right=0.7 if legend else 0.92, bottom=0.14)
            ax = fig.add_subplot(projection="polar" if self.family.orientation else None)
        by, lines = _lines(self, by)
        if self.family.orientation is None:
            _plot_flat(self, ax, by, lines)
        else:
            _plot_polar(self, ax, by, lines)
        if legend and 0 < len(lines) <= 6:
            ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.1, 0.5))
        if path is not None:
            save_png(ax.figure, path)
        return fig if fig is not None else ax


def new_figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib figure outside pyplot (no global state to close, any backend).

    Args:
        figsize: (width, height) in inches.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise FeatvizError("plots need matplotlib: pip install 'featviz[plot]'") from err
    return Figure(figsize=figsize)


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically.

    Args:
        fig: A matplotlib figure.
        path: The file to write.
        dpi: Pixels per inch.
    """
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def _lines(curve: TuningCurve, by: str | None) -> tuple[str | None, list[tuple[Any, Any]]]:
    """The parameter with one line per value, and (value, responses maxed over the others
    but the orientation / first parameter) for each."""
    names = list(curve.family.params)
    keep = curve.family.orientation or names[0]
    others = [n for n in names if n != keep]
    by = by if by is not None else (others[0] if others else None)
    if by is not None and by not in others:
        raise FeatvizError(f"by must be one of {others}, got {by!r}")
    if by is None:
        return None, []
    r = curve.responses.movedim((names.index(keep), names.index(by)), (0, 1))
    flat = r.flatten(2).amax(dim=2) if r.dim() > 2 else r
    return by, [(value, flat[:, j]) for j, value in enumerate(curve.family.params[by])]


def _plot_polar(curve: TuningCurve, ax: Any, by: str | None, lines: list) -> None:
    angles = curve.orientations
    turns = round(360 / curve.family.period)  # a 180-degree period shown twice round
    theta = [math.radians(a + k * curve.family.period) for k in range(turns) for a in angles]
    theta = torch.tensor(theta + theta[:1])

    def closed(values: torch.Tensor) -> torch.Tensor:
        v = values.repeat(turns)
        return torch.cat([v, v[:1]])

    for value, values in lines:
        label = f"{by} {value:g}" if isinstance(value, float) else f"{by} {value}"
        ax.plot(theta.numpy(), closed(values).numpy(), lw=0.9, alpha=0.8, label=label)
    ax.plot(theta.numpy(), closed(curve.orientation_curve).numpy(), color="black", lw=1.8,
            label="max")
    ring = torch.linspace(0, 2 * math.pi, 97)
    ax.plot(ring.numpy(), [curve.baseline] * len(ring), color="grey", ls="--", lw=0.8,
            label="grey")
    low = min(0.0, float(curve.responses.min()), curve.baseline)
    ax.set_ylim(low, max(float(curve.responses.max()), curve.baseline) * 1.05 or 1.0)
    ax.set_title(f"{curve.layer}:{curve.channel} {curve.family.name}", fontsize=8)
    ax.tick_params(labelsize=5)


def _plot_flat(curve: TuningCurve, ax: Any, by: str | None, lines: list) -> None:
    first = list(curve.family.params)[0]
    values = curve.family.params[first]
    xs = list(range(len(values)))
    for value, resp in lines:
        ax.plot(xs, resp.numpy(), marker="o", ms=3, lw=0.9, label=f"{by} {value}")
    ax.axhline(curve.baseline, color="grey", ls="--", lw=0.8, label="grey")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(v) for v in values], fontsize=6, rotation=45)
    ax.set_xlabel(first, fontsize=7)
    ax.set_ylabel("response", fontsize=7)
    ax.set_title(f"{curve.layer}:{curve.channel} {curve.family.name}", fontsize=8)


def tuning(model: nn.Module, unit: tuple[str, int] | str, family: Family | str, *,
           size: SizeLike | None = None, batch_size: int = 64, extent: float = 1.0
           ) -> TuningCurve:
    """The tuning curve of ``unit`` (a layer's channel at the centre of its map) for a
    stimulus family drawn in that position's receptive field.

    Args:
        model: The network (takes images in [0, 1]).
        unit: ``(layer, channel)`` or ``"layer:channel"``; the channel indexes dim 1 of the
            layer's [B, C, H, W] output.
        family: A :class:`~.stimuli.Family` or a name of :data:`~.stimuli.FAMILIES`.
        size: The input: one side or (height, width); default the model's.
        batch_size: Stimuli per forward pass.
        extent: Scale of the stimulus box about the receptive field (1: the field itself).
    """
    layer, channel = parse_unit(unit)
    fam = get_family(family)  # a wrong name fails before any work
    channels, _ = layer_maps(model, layer, size)
    if not 0 <= channel < channels:
        raise ChannelError(f"channel {channel} is out of range for layer {layer!r}, which has "
                           f"{channels} channels (valid: 0-{channels - 1})")
    m = measure(model, layer, fam, size=size, batch_size=batch_size, extent=extent)
    return TuningCurve(layer, channel, fam, m.responses[:, channel].reshape(fam.shape),
                       float(m.baseline[channel]), m.box, m.seconds)
