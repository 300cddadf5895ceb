"""Projecting one activation back to pixels (the job behind :func:`featviz.deconv.project`).

Keep one activation of a layer, zero all others, and run the backward pass with the ReLU rule
of the mode (:class:`~featviz.backward_rules.ReluBackwardRule`); :class:`Projection` holds the
signed result, :func:`signed_to_image` and :func:`display_patch` show it. Import these names
from :mod:`featviz.methods.deconv`, which re-exports them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from ..core import images as _images
from ..core import notebook as _nb
from ..core.backward_rules import ReluBackwardRule
from ..core.hooks import LayerTap, frozen
from ..core.model_info import image_channels, model_device
from ..errors import ChannelError
from .dataset import spatial_activation

MODES = ("deconvnet", "guided", "gradient")


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise naming the choices."""
    if mode not in MODES:
        raise ValueError(f"unknown projection mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def as_batch(img: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """[C,H,W] or [B,C,H,W] -> [B,C,H,W] float, with a clear error for anything else (C =
    ``channels``, the model's: 3 for RGB, 1 for grayscale, N bands)."""
    if not torch.is_tensor(img):
        raise TypeError(f"expected an image tensor, got {type(img).__name__} "
                        "(load files with featviz.images.load)")
    if img.dim() == 3:
        img = img[None]
    if img.dim() != 4 or img.shape[1] != channels:
        raise ValueError(f"expected images [B,{channels},H,W] in [0, 1] (the model takes "
                         f"{channels} channels), got {list(img.shape)}")
    return img.float()


@dataclass(repr=False)
class Projection:
    """Pixel-space projections of one activation per image.

    ``pixels``: [B,C,H,W] signed contributions; ``positions``: the (y, x) of the projected
    activation in each image's map; ``activations``: their values [B].
    """

    pixels: torch.Tensor
    positions: list[tuple[int, int]]
    activations: torch.Tensor
    layer: str
    channel: int
    mode: str

    def image(self) -> torch.Tensor:
        """The projections as viewable images [B,C,H,W] in [0, 1]: grey is zero, each image
        scaled by its largest absolute value (signed, as Zeiler & Fergus show them)."""
        return signed_to_image(self.pixels)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the rendered projection(s) as a PNG (a grid for a batch)."""
        return _images.save(self.image(), path, alpha=False)

    def __repr__(self) -> str:
        return (f"Projection({self.mode} of {self.layer}:{self.channel}, "
                f"{len(self.pixels)} image(s) {_nb.shape(self.pixels[0])}, positions="
                f"{self.positions[:4]}{'...' if len(self.positions) > 4 else ''}, "
                f"activations={_nb.numbers(self.activations.tolist())})")

    def _labels(self) -> list[str]:
        return [f"({y},{x}) = {float(a):.3g}"
                for (y, x), a in zip(self.positions, self.activations, strict=True)]

    def _picture(self) -> Image.Image:
        # each with its own contrast (display_patch, as top-k shows projections): scaled by
        # its largest value (image()), a few strong pixels leave the rest flat grey
        return _images.grid(_display(display_patch(self.pixels[:64])), self._labels()[:64])

    def _repr_png_(self) -> bytes:
        """The projection(s), each with its own contrast (:func:`display_patch`), labelled
        with the activation's position and value."""
        return _nb.png(self._picture())

    def _repr_html_(self) -> str:
        """What was projected (mode, layer, channel) above the labelled projections."""
        page = _nb.Budget()
        page.image(self._picture(), "projection")
        return page.html(f"{self.mode} projection of {self.layer}:{self.channel}")


def _display(t: torch.Tensor) -> torch.Tensor:
    """Images of any band count as shown in a notebook: four bands are bands, not alpha."""
    return t if t.shape[-3] in (1, 3) else _images.composite(
        t, [min(i, t.shape[-3] - 1) for i in range(3)])


def signed_to_image(t: torch.Tensor) -> torch.Tensor:
    """Map signed maps [B,C,H,W] to [0, 1] per image: 0.5 + 0.5 * t / max|t|."""
    scale = t.abs().flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (0.5 + 0.5 * t / scale).clamp(0, 1)


def display_patch(t: torch.Tensor, percentile: float = 99.5) -> torch.Tensor:
    """Show a signed projection [C,h,w] (or a batch [B,C,h,w], each on its own) in [0, 1].

    Zeiler & Fergus show every projection with its own contrast: it is centred on its mean and
    scaled so that the ``percentile`` of its absolute values reaches 0 or 1 (a few outliers
    clip rather than squash the rest to grey), so a weak unit's projection is as visible as a
    strong one's. An all-zero projection stays grey.
    """
    batch = (t if t.dim() == 4 else t[None]).float()
    flat = batch.flatten(1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    scale = torch.quantile(centred.abs(), percentile / 100, dim=1, keepdim=True)
    out = (0.5 + 0.5 * centred / scale.clamp_min(1e-12)).clamp(0, 1).view_as(batch)
    return out if t.dim() == 4 else out[0]


def project(
    model: nn.Module,
    img: torch.Tensor,
    layer: str,
    channel: int,
    position: tuple[int, int] | Sequence[tuple[int, int]] | None = None,
    mode: str = "deconvnet",
) -> Projection:
    """Project one activation of ``channel`` in ``layer`` back to pixel space.

    ``position`` is the (y, x) of the activation in the layer's map (one pair, or one per image
    of the batch); by default the strongest activation of the channel in each image. Every
    other activation of the layer is zeroed, and the unit signal runs backwards with the rule
    of ``mode``. The model comes back unchanged, with no hook or rule left on it.
    """
    check_mode(mode)
    x = as_batch(img, image_channels(model)).to(model_device(model))
    x = x.detach().requires_grad_(True)  # not the caller's
    rule = ReluBackwardRule(mode) if mode != "gradient" else contextlib.nullcontext()
    with frozen(model), LayerTap(model, [layer]) as tap, torch.enable_grad():
        with rule:
            act = tap(x)[layer]
        amap = spatial_activation(layer, act, channel)
        positions = _positions(amap, position, layer)
        rows = torch.arange(len(positions), device=act.device)
        ys = torch.tensor([p[0] for p in positions], device=act.device)
        xs = torch.tensor([p[1] for p in positions], device=act.device)
        signal = torch.zeros_like(act)
        signal[rows, channel, ys, xs] = 1.0
        (pixels,) = torch.autograd.grad(act, x, signal)
    return Projection(pixels.detach().cpu(), positions,
                      amap[rows, ys, xs].detach().cpu(), layer, channel, mode)


def _positions(amap: torch.Tensor, position, layer: str) -> list[tuple[int, int]]:
    b, h, w = amap.shape
    if position is None:
        flat = amap.detach().reshape(b, -1).argmax(dim=1)
        return [(int(i) // w, int(i) % w) for i in flat]
    if len(position) == 2 and all(isinstance(v, int) for v in position):
        position = [tuple(position)] * b
    if len(position) != b:
        raise ValueError(f"{len(position)} positions for a batch of {b} images")
    out = []
    for y, x in position:
        if not (0 <= y < h and 0 <= x < w):
            raise ChannelError(f"position y={y}, x={x} is outside layer {layer!r} of size "
                               f"{h}x{w} (valid: y 0-{h - 1}, x 0-{w - 1})")
        out.append((int(y), int(x)))
    return out
