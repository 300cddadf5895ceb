"""Occlusion maps (Zeiler & Fergus 2013): how much a value drops when a grey square covers
each part of an image — one activation of a channel, or a class probability."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core import images as _images
from ..core import notebook as _nb
from ..core.hooks import OUTPUT, LayerTap, frozen
from ..core.model_info import image_channels, model_device
from ..errors import FeatvizError
from .dataset import spatial_activation


@dataclass(repr=False)
class Occlusion:
    """How much a value drops when a grey square covers each part of the image.

    ``drops``: [rows, cols] of ``base - occluded value``, the square's top-left corner at
    ``(i * stride, j * stride)``; ``base``: the value on the whole image.
    """

    drops: torch.Tensor
    base: float
    patch: int
    stride: int
    image: torch.Tensor
    what: str

    def heatmap(self) -> torch.Tensor:
        """Drops spread over the pixels each square covered (mean over overlaps), [H, W]."""
        h, w = self.image.shape[-2:]
        total = torch.zeros(h, w)
        count = torch.zeros(h, w)
        for i in range(self.drops.shape[0]):
            for j in range(self.drops.shape[1]):
                y, x = i * self.stride, j * self.stride
                total[y:y + self.patch, x:x + self.patch] += self.drops[i, j]
                count[y:y + self.patch, x:x + self.patch] += 1
        return total / count.clamp_min(1)

    def overlay(self) -> torch.Tensor:
        """The image dimmed where covering it lowers the value least: [3,H,W] in [0, 1] (a
        grayscale image in grey, N bands by their first three)."""
        heat = self.heatmap().clamp_min(0)
        heat = heat / heat.max().clamp_min(1e-12)
        img = self._rgb()
        red = torch.stack([heat, torch.zeros_like(heat), torch.zeros_like(heat)])
        return (0.35 * img + 0.65 * red).clamp(0, 1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the image beside its occlusion map as a PNG."""
        return _images.save(torch.stack([self._rgb(), self.overlay()]), path,
                            labels=self._labels(), ncol=2)

    def _labels(self) -> list[str]:
        return ["image", f"drop of {self.what}"]

    def __repr__(self) -> str:
        return (f"Occlusion({self.what}: {self.base:.4g} on the whole image, largest drop "
                f"{float(self.drops.max()):.4g}; {self.patch}-px square every {self.stride} px, "
                f"{_nb.shape(self.drops)} positions)")

    def _repr_png_(self) -> bytes:
        """The image beside its occlusion map, as :meth:`save` writes them."""
        return _nb.png(_images.grid(torch.stack([self._rgb(), self.overlay()]),
                                    self._labels(), ncol=2))

    def _repr_html_(self) -> str:
        """What was measured and its value on the whole image, above image and map."""
        page = _nb.Budget()
        (i, j) = divmod(int(self.drops.argmax()), self.drops.shape[1])
        page.text(f"<p>{self.base:.4g} on the whole image; largest drop "
                  f"{float(self.drops.max()):.4g} with the square at y={i * self.stride}, "
                  f"x={j * self.stride} ({self.patch} px, stride {self.stride})</p>")
        page.image(_images.grid(torch.stack([self._rgb(), self.overlay()]), self._labels(),
                                ncol=2), "occlusion")
        return page.html(f"occlusion: {self.what}")

    def _rgb(self) -> torch.Tensor:
        """The image [3,H,W] as shown beside the red map (see :func:`images.as_rgb`)."""
        return _images.as_rgb(self.image[0] if self.image.dim() == 4 else self.image)


def occlusion(
    model: nn.Module,
    img: torch.Tensor,
    layer: str | None = None,
    channel: int | None = None,
    *,
    target_class: int | None = None,
    position: tuple[int, int] | None = None,
    patch: int = 32,
    stride: int = 8,
    fill: float = 0.5,
    batch_size: int = 32,
) -> Occlusion:
    """Slide a grey ``patch`` x ``patch`` square over ``img`` in steps of ``stride`` and map
    how much the chosen value drops: one activation of ``channel`` in ``layer`` (at
    ``position``, by default the strongest on the whole image), or the softmax probability
    of ``target_class``.

    Args:
        model: the network.
        img: the image, [1, C, H, W] in [0, 1].
        layer: the layer of ``channel``; None to use ``target_class``.
        channel: the channel; None to use ``target_class``.
        target_class: the class whose probability is watched.
        position: the (row, column) of the unit in the layer's map; None for the strongest.
        patch: the side of the square, in pixels (default 32).
        stride: the step between squares, in pixels (default 8).
        fill: the grey value of the square (default 0.5).
        batch_size: occluded images per pass (default 32).
    """
    if (target_class is None) == (layer is None or channel is None):
        raise ValueError("give either layer= and channel=, or target_class=")
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be positive, got {patch} and {stride}")
    img = img[None] if img.dim() == 3 else img
    channels = image_channels(model)
    if img.dim() != 4 or img.shape[:2] != (1, channels):
        raise ValueError(f"occlusion takes one image [1,{channels},H,W] (the model's "
                         f"channels), got {list(img.shape)}")
    img = img.float().to(model_device(model))
    h, w = img.shape[-2:]
    if patch > min(h, w):
        raise ValueError(f"patch {patch} is larger than the image {h}x{w}")
    names = [OUTPUT] if target_class is not None else [layer]
    with frozen(model), LayerTap(model, names) as tap, torch.no_grad():
        value, what = _occlusion_value(tap, img, layer, channel, target_class, position)
        base = value(img)[0]
        corners = [(y, x) for y in range(0, h - patch + 1, stride)
                   for x in range(0, w - patch + 1, stride)]
        drops = []
        for start in range(0, len(corners), batch_size):
            chunk = corners[start:start + batch_size]
            batch = img.repeat(len(chunk), 1, 1, 1)
            for b, (y, x) in enumerate(chunk):
                batch[b, :, y:y + patch, x:x + patch] = fill
            drops.append(base - value(batch))
    rows = (h - patch) // stride + 1
    grid = torch.cat(drops).cpu().view(rows, -1)
    return Occlusion(grid, float(base), patch, stride, img.cpu(), what)


def _occlusion_value(tap, img, layer, channel, target_class, position):
    if target_class is not None:
        logits = tap(img)[OUTPUT]
        if not 0 <= target_class < logits.shape[1]:
            raise FeatvizError(f"class {target_class} is out of range for a model with "
                               f"{logits.shape[1]} outputs (valid: 0-{logits.shape[1] - 1})")
        return (lambda x: tap(x)[OUTPUT].softmax(1)[:, target_class]), f"class {target_class}"
    amap = spatial_activation(layer, tap(img)[layer], channel)[0]
    if position is None:
        idx = int(amap.argmax())
        position = (idx // amap.shape[1], idx % amap.shape[1])
    y, x = position
    if not (0 <= y < amap.shape[0] and 0 <= x < amap.shape[1]):
        raise FeatvizError(f"position y={y}, x={x} is outside layer {layer!r} of size "
                           f"{amap.shape[0]}x{amap.shape[1]}")
    return (lambda b: tap(b)[layer][:, channel, y, x]), f"{layer}:{channel} at y={y}, x={x}"
