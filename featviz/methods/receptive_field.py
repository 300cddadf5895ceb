"""Receptive fields: which input pixels a unit of a layer can see, and how much it uses them.

:func:`theoretical` measures the theoretical receptive field (TRF) of any convolutional model,
branches and skip connections included, by its exact gradient support: a float64 copy of the
model is made linear and positive (every weight of a convolution or linear layer set to
1/fan-in, batch norm made an identity, ReLU-like functions made identities, max-pooling turned
into average pooling), so that no gradient can cancel or be cut off, and the input pixels with
a non-zero gradient for one unit are exactly those that unit depends on. The user's model is
never touched.

:func:`effective` measures the effective receptive field (Luo, Li, Urtasun & Zemel, NIPS 2016):
the mean |∂y_centre/∂x| over inputs, with a Gaussian fit, the area that holds a share of the
gradient mass, and its ratio to the theoretical field.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import nn

from ..core import images as _images
from ..core import markdown, model_info
from ..core import notebook as _nb
from ..core.files import write_atomic
from ..core.hooks import LayerTap, frozen, resolve_layer
from ..core.sizes import SizeLike
from ..errors import FeatvizError
from ._linear import Linearized, positive_twin


@dataclass(frozen=True)
class ReceptiveField:
    """The theoretical receptive field of the units of one layer.

    ``size``: (height, width) in input pixels; ``jump``: (dy, dx) input pixels between
    neighbouring units (the layer's total stride); ``offset``: (y, x) input position of the
    centre of unit (0, 0) (may be negative: partly in the padding); ``clipped``: True when the
    field is wider than the largest input tried, so ``size`` is a lower bound.
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    offset: tuple[float, float]
    layer: str = ""
    clipped: bool = False

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Input box (top, left, bottom, right), exclusive end, of unit ``(y, x)``; it may
        reach outside the image."""
        cy = self.offset[0] + y * self.jump[0]
        cx = self.offset[1] + x * self.jump[1]
        top = round(cy - (self.size[0] - 1) / 2)
        left = round(cx - (self.size[1] - 1) / 2)
        return top, left, top + self.size[0], left + self.size[1]

    def _repr_html_(self) -> str:
        """A one-row table: layer, size, jump, offset (Jupyter)."""
        size = f"{self.size[0]}x{self.size[1]}{' (at least)' if self.clipped else ''}"
        return _nb.table(["layer", "receptive field px", "jump px", "offset (y, x)"],
                         [(self.layer, size, f"{self.jump[0]}x{self.jump[1]}",
                           f"({self.offset[0]:g}, {self.offset[1]:g})")])


def _supports(twin: nn.Module, layer: str, size: tuple[int, int]):
    """Run the linearized copy once on an input of ``size`` (height, width); return the
    layer's map size and a function giving the input box (top, left, bottom, right) a unit
    depends on."""
    x = torch.ones(1, model_info.image_channels(twin), *size, dtype=torch.float64,
                   device=model_info.model_device(twin), requires_grad=True)
    with Linearized(), LayerTap(twin, [layer]) as tap:
        act = tap(x)[layer]
    if act.dim() != 4:
        raise FeatvizError(f"layer {layer!r} has no spatial maps (output {list(act.shape)}); "
                           "receptive fields need a convolutional layer")

    def box(y: int, x_: int) -> tuple[int, int, int, int]:
        (grad,) = torch.autograd.grad(act[0, :, y, x_].sum(), x, retain_graph=True)
        mask = grad[0].abs().sum(0) > 0
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        if not len(rows):
            raise FeatvizError(f"unit ({y}, {x_}) of layer {layer!r} depends on no input pixel")
        return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1

    return tuple(act.shape[2:]), box


def theoretical(model: nn.Module, layer: str, input_size: SizeLike | None = None,
                max_size: int = 2048) -> ReceptiveField:
    """Measure the theoretical receptive field of ``layer`` (size, jump, offset).

    Starts at ``input_size`` (one side or (height, width); default: the model's, else 224) and
    doubles the input while the centre unit's field touches the border, until its longer side
    would pass ``max_size`` or the model takes one size only; then ``clipped`` is set.

    Args:
        model: the network.
        layer: the layer whose centre unit is traced back to the input.
        input_size: the first input size tried, one side or (height, width).
        max_size: the longest input side tried before giving up with ``clipped`` set.
    """
    resolve_layer(model, layer)  # a clear error for a wrong name before any copying
    twin = positive_twin(model)
    rows, cols = model_info.input_hw(model, input_size)
    while True:
        (h, w), unit_box = _supports(twin, layer, (rows, cols))
        y, x = h // 2, w // 2
        box = unit_box(y, x)
        touches = box[0] == 0 or box[1] == 0 or box[2] == rows or box[3] == cols
        # a fixed-size model (a ViT's position embeddings) takes no larger input: stop there
        if not touches or max(rows, cols) * 2 > max_size or model_info.fixed_input_size(model):
            break
        rows, cols = rows * 2, cols * 2
    # neighbours' boxes are shifted by the jump (compare the far edges when clipped)
    jump = [1, 1]
    if h > 1:
        other = unit_box(y + 1 if y + 1 < h else y - 1, x)
        jump[0] = abs(other[0] - box[0]) if not touches else abs(other[2] - box[2])
    if w > 1:
        other = unit_box(y, x + 1 if x + 1 < w else x - 1)
        jump[1] = abs(other[1] - box[1]) if not touches else abs(other[3] - box[3])
    jump = [max(j, 1) for j in jump]
    centre = ((box[0] + box[2] - 1) / 2, (box[1] + box[3] - 1) / 2)
    offset = (centre[0] - y * jump[0], centre[1] - x * jump[1])
    return ReceptiveField((box[2] - box[0], box[3] - box[1]), (jump[0], jump[1]), offset, layer,
                          clipped=touches)


# -- effective receptive field (Luo et al. 2016) ------------------------------------------
ERF_WEIGHTS = ("trained", "random", "uniform")


@dataclass(repr=False)
class EffectiveField:
    """The effective receptive field of a layer's centre unit.

    ``map``: [H, W] mean |∂y/∂x| (or its square) over the inputs, summed over colour channels and
    normalized to sum 1; ``trf``: the theoretical field of the layer; ``unit``: the centre unit
    (y, x) in the layer's map; ``samples``: how many inputs were averaged.
    """

    map: torch.Tensor
    layer: str
    trf: ReceptiveField
    unit: tuple[int, int]
    samples: int
    weights: str = "trained"

    @property
    def label(self) -> str:
        """``layer``, with the kind of weights when they are not the model's own."""
        return self.layer if self.weights == "trained" else f"{self.layer} ({self.weights})"

    @property
    def centre(self) -> tuple[float, float]:
        """Centre of mass (y, x) of the map, in input pixels."""
        h, w = self.map.shape
        ys, xs = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
        m = self.map.double()
        return float((m.sum(1) * ys).sum()), float((m.sum(0) * xs).sum())

    @property
    def sigmas(self) -> tuple[float, float]:
        """Standard deviations (y, x) of the 2-D Gaussian fitted by moments."""
        h, w = self.map.shape
        cy, cx = self.centre
        ys, xs = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
        m = self.map.double()
        vy = float((m.sum(1) * (ys - cy) ** 2).sum())
        vx = float((m.sum(0) * (xs - cx) ** 2).sum())
        return math.sqrt(vy), math.sqrt(vx)

    @property
    def sigma(self) -> float:
        """The fitted Gaussian's standard deviation, mean of the two axes, in pixels."""
        return sum(self.sigmas) / 2

    def area(self, share: float = 0.95) -> int:
        """Pixels in the smallest set that holds ``share`` of the gradient mass."""
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        values = self.map.flatten().sort(descending=True).values
        return int((values.cumsum(0) < share).sum()) + 1

    def radius(self, share: float = 0.95) -> float:
        """Radius of the disc around the centre of mass that holds ``share`` of the mass."""
        h, w = self.map.shape
        cy, cx = self.centre
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                                torch.arange(w, dtype=torch.float64), indexing="ij")
        r = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt().flatten()
        order = r.argsort()
        mass = self.map.double().flatten()[order].cumsum(0)
        return float(r[order][int((mass < share).sum().clamp_max(len(r) - 1))])

    def area_fraction(self, share: float = 0.95) -> float:
        """:meth:`area` as a fraction of the theoretical receptive field's area."""
        return self.area(share) / (self.trf.size[0] * self.trf.size[1])

    def ratio_to(self, trf: ReceptiveField | None = None, share: float = 0.95) -> float:
        """ERF area (holding ``share`` of the mass) over the area of ``trf`` (default: own)."""
        trf = trf or self.trf
        return self.area(share) / (trf.size[0] * trf.size[1])

    def profile(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Radial profile: (radius in px, mean map value at that radius) around the centre."""
        h, w = self.map.shape
        cy, cx = self.centre
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                                torch.arange(w, dtype=torch.float64), indexing="ij")
        r = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt().round().long().flatten()
        total = torch.zeros(int(r.max()) + 1, dtype=torch.float64).index_add_(
            0, r, self.map.double().flatten())
        count = torch.zeros_like(total).index_add_(0, r, torch.ones_like(r, dtype=torch.float64))
        keep = count > 0
        return torch.arange(len(total))[keep].double(), (total / count.clamp_min(1))[keep]

    def plot(self, path: str | os.PathLike) -> Path:
        """Heat map with the theoretical field's box and the fitted Gaussian (1 and 2 σ)."""
        return EffectiveFields([self]).plot(path)

    def __repr__(self) -> str:
        return (f"EffectiveField({self.label}: σ {self.sigma:.2f} px, 95% radius "
                f"{self.radius():.1f} px, TRF {self.trf.size[0]}x{self.trf.size[1]} px, unit "
                f"{self.unit}, {self.samples} samples, map {_nb.shape(self.map)})")

    def picture(self) -> Image.Image:
        """The map as a heat map (inferno, scaled to its peak) with the theoretical field's
        box in cyan: what a notebook shows, without matplotlib's axes."""
        pic = _images.to_pil(_nb.heat(self.map))
        top, left, bottom, right = self.trf.box(*self.unit)
        ImageDraw.Draw(pic).rectangle([left, top, right - 1, bottom - 1], outline=(0, 255, 255))
        return pic

    def _repr_png_(self) -> bytes:
        """:meth:`picture` (Jupyter)."""
        return _nb.png(self.picture())

    def _repr_html_(self) -> str:
        """:meth:`picture` beside its measures (Jupyter)."""
        return EffectiveFields([self])._repr_html_()


@dataclass(repr=False)
class EffectiveFields:
    """Effective receptive fields of several layers (:func:`effective_layers`)."""

    fields: list[EffectiveField]

    def table(self) -> str:
        """Markdown: layer, TRF size, ERF σ, 95 % area / TRF area."""
        return markdown.table(
            ["layer", "TRF px", "ERF σ px", "95% radius px", "ERF/TRF area"],
            [(f.label, f.trf.size[0], f"{f.sigma:.2f}", f"{f.radius():.1f}",
              f"{f.ratio_to():.3f}") for f in self.fields])

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.label} σ {f.sigma:.2f}" for f in self.fields[:8])
        return f"EffectiveFields({shown}{', ...' if len(self.fields) > 8 else ''})"

    def _repr_html_(self) -> str:
        """The heat maps in a row (theoretical field's box in cyan) above :meth:`table`."""
        page = _nb.Budget()
        pics = [_images.from_pil(f.picture()) for f in self.fields[:16]]
        if pics and len({p.shape for p in pics}) == 1:
            page.image(_images.grid(torch.stack(pics), [f.label for f in self.fields[:16]],
                                    ncol=min(len(pics), 6)), "effective receptive fields")
        else:  # maps of different input sizes: one picture each
            for f, p in zip(self.fields, pics, strict=False):
                page.image(_images.to_pil(p), f.label, max_side=256)
        page.text(_nb.table(["layer", "TRF px", "ERF σ px", "95% radius px", "ERF/TRF area"],
                            [(f.label, f.trf.size[0], f"{f.sigma:.2f}", f"{f.radius():.1f}",
                              f"{f.ratio_to():.3f}") for f in self.fields]))
        return page.html("effective receptive fields")

    def plot(self, path: str | os.PathLike) -> Path:
        """One heat map per layer (TRF box, Gaussian 1σ/2σ ellipses) and the radial profiles."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from matplotlib.patches import Ellipse, Rectangle
        except ImportError as err:
            raise FeatvizError("plots need matplotlib: pip install 'featviz[plot]'") from err
        n = len(self.fields)
        fig, axes = plt.subplots(1, n + 1, figsize=(3.2 * (n + 1), 3.8), squeeze=False)
        for ax, f in zip(axes[0], self.fields, strict=False):
            ax.imshow(f.map.numpy(), cmap="inferno")
            top, left, bottom, right = f.trf.box(*f.unit)
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                   fill=False, edgecolor="cyan", lw=1, ls="--"))
            cy, cx = f.centre
            sy, sx = f.sigmas
            for k in (1, 2):
                ax.add_patch(Ellipse((cx, cy), 2 * k * sx, 2 * k * sy, fill=False,
                                     edgecolor="white", lw=0.8))
            ax.set_title(f"{f.label}\nσ {f.sigma:.1f} px, TRF {f.trf.size[0]} px", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        ax = axes[0][-1]
        for f in self.fields:
            r, v = f.profile()
            ax.plot(r.numpy(), (v / v.max()).numpy(), label=f.label)
        ax.set_xlabel("distance from centre (px)")
        ax.set_ylabel("mean gradient (normalized)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        # the format from the name the user gave: the temporary file's suffix is not one
        fmt = Path(path).suffix.lstrip(".").lower() or "png"
        try:  # a failed save leaves any earlier plot at ``path`` as it was
            return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format=fmt))
        finally:
            plt.close(fig)


def _reinitialized(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every layer's parameters reset to their random initial state,
    drawn from ``seed``; the caller's random state is left as it was.

    ``reset_parameters`` draws from torch's default generators and takes no generator of its
    own, so the generators it uses (the CPU's, and the model's GPU's) are seeded for the reset
    and put back after it: the same weights for the same seed, and nothing changed for the
    caller's later draws.
    """
    twin = copy.deepcopy(model)
    device = model_info.model_device(twin)
    gpus = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus, device_type="cuda"), torch.no_grad():
        torch.random.default_generator.manual_seed(seed)
        for index in gpus:
            torch.cuda.default_generators[index].manual_seed(seed)
        for m in twin.modules():
            if hasattr(m, "reset_parameters") and m is not twin:
                m.reset_parameters()
    return twin.eval()


def _inputs(inputs, size: tuple[int, int], samples: int, seed: int, channels: int = 3):
    """Yield [B,C,H,W] batches of ``size`` (H, W): uniform noise, or images from a
    folder/iterable."""
    if isinstance(inputs, str) and inputs == "noise":
        gen = torch.Generator().manual_seed(seed)
        done = 0
        while done < samples:
            n = min(8, samples - done)
            yield torch.rand(n, channels, *size, generator=gen)
            done += n
        return
    from .dataset import iter_batches

    done = 0
    for _, batch in iter_batches(inputs, size, 8, channels=channels):
        batch = batch[: samples - done]
        yield batch
        done += len(batch)
        if done >= samples:
            return


def _centre_gradient(tap: LayerTap, x: torch.Tensor, mode, layer: str, channel: int | None
                     ) -> tuple[torch.Tensor, tuple[int, int]]:
    """The gradient with respect to ``x`` of the centre unit of ``layer`` (``channel``, or the
    sum over channels), with the unit's (y, x) in the layer's map."""
    with mode:
        act = tap(x)[layer]
    if act.dim() != 4:
        raise FeatvizError(f"layer {layer!r} has no spatial maps (output {list(act.shape)}); "
                           "effective fields need a convolutional layer")
    unit = (act.shape[2] // 2, act.shape[3] // 2)
    centre = act[:, :, unit[0], unit[1]]
    if channel is not None:
        if not 0 <= channel < act.shape[1]:
            raise FeatvizError(f"channel {channel} is out of range for layer {layer!r} "
                               f"(valid: 0-{act.shape[1] - 1})")
        centre = centre[:, channel]
    (grad,) = torch.autograd.grad(centre.sum(), x)
    return grad, unit


def _warn_if_cut(layer: str, trf: ReceptiveField, size: tuple[int, int]) -> None:
    """Warn when the theoretical field is larger than the input of ``size`` (height, width),
    so the effective one is cut at the borders."""
    rows, cols = size
    if trf.size[0] <= rows and trf.size[1] <= cols:
        return
    import warnings

    where = f"{rows}-px" if rows == cols else f"{rows}x{cols}-px"
    warnings.warn(f"the theoretical receptive field of {layer!r} ({trf.size[0]} px) is larger "
                  f"than the {where} input: the effective field is cut at the borders; "
                  f"pass input_size >= {trf.size[0]} to see all of it", stacklevel=3)


def effective(
    model: nn.Module,
    layer: str,
    input_size: SizeLike | None = None,
    samples: int = 32,
    inputs: str | os.PathLike | object = "noise",
    weights: str = "trained",
    channel: int | None = None,
    squared: bool = False,
    seed: int = 0,
) -> EffectiveField:
    """Measure the effective receptive field of the centre unit of ``layer`` (Luo et al. 2016).

    The gradient of the centre unit (``channel``, or the sum over channels) with respect to the
    input, absolute (or ``squared``), summed over colour channels and averaged over ``samples``
    inputs: uniform noise (``"noise"``) or images from a folder / iterable. ``weights``:
    ``"trained"`` (the model as it is), ``"random"`` (a re-initialized copy) or ``"uniform"``
    (Luo's case: a copy with equal positive weights and no nonlinearities). ``input_size``:
    one side or (height, width), default the model's. The model itself is never changed.

    Args:
        model: the network.
        layer: the layer whose centre unit is measured.
        input_size: one side or (height, width); None for the model's.
        samples: how many inputs the gradient is averaged over.
        inputs: ``"noise"``, a folder of images or an iterable of images.
        weights: ``"trained"``, ``"random"`` or ``"uniform"`` (see above).
        channel: the centre unit's channel; None sums over all channels.
        squared: square the gradient instead of taking its absolute value.
        seed: the random seed of the noise and of re-initialized weights.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if weights not in ERF_WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(ERF_WEIGHTS)}, got {weights!r}")
    resolve_layer(model, layer)
    size = model_info.input_hw(model, input_size)
    trf = theoretical(model, layer, input_size=size)
    _warn_if_cut(layer, trf, size)
    if weights == "uniform":
        net, mode, dtype = positive_twin(model), Linearized(), torch.float64
    else:
        net = _reinitialized(model, seed) if weights == "random" else model
        mode, dtype = contextlib.nullcontext(), torch.float32
    device = model_info.model_device(net)
    total = torch.zeros(size, dtype=torch.float64)
    count = 0
    unit = (0, 0)
    with frozen(net), LayerTap(net, [layer]) as tap:
        for batch in _inputs(inputs, size, samples, seed, model_info.image_channels(model)):
            x = batch.to(device=device, dtype=dtype).detach().requires_grad_(True)
            grad, unit = _centre_gradient(tap, x, mode, layer, channel)
            g = grad.double().abs() if not squared else grad.double() ** 2
            total += g.sum(dim=1).sum(dim=0).cpu()
            count += len(batch)
    if count == 0:
        raise FeatvizError("no inputs to average over")
    mass = float(total.sum())
    if mass == 0:
        raise FeatvizError(f"the centre unit of {layer!r} does not depend on the input (all "
                           "gradients are zero): a dead unit; try weights='random' or another "
                           "channel")
    return EffectiveField((total / mass).float(), layer, trf, unit, count, weights)


def effective_layers(model: nn.Module, layers: list[str], **kwargs: Any) -> EffectiveFields:
    """:func:`effective` for several layers with the same settings.

    Args:
        model: the network.
        layers: the layers to measure.
        **kwargs: the settings of :func:`effective` (``samples``, ``inputs``, ...).
    """
    return EffectiveFields([effective(model, layer, **kwargs) for layer in layers])
