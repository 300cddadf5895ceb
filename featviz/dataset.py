"""Images from datasets: streaming sources, running top-k activations, occlusion maps.

A source is a folder of image files, any iterable of images (tensors, PIL images or paths) or
an indexable dataset such as a torchvision one (items ``(image, label)``). Sources are read in
batches and never held in memory whole, so a folder of thousands of images streams.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import images as _images
from .errors import ChannelError, FeatvizError
from .hooks import OUTPUT, LayerTap, frozen

Source = str | os.PathLike | Iterable


def _pil_to_tensor(im: Image.Image, size: int, fit: str) -> torch.Tensor:
    im = _images.to_rgb(im)
    arr = np.asarray(_images._fit(im, size, fit), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _tensor_image(t: torch.Tensor, size: int, where: str) -> torch.Tensor:
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
        raise FeatvizError(f"{where}: expected an image tensor [C,H,W] with 1, 3 or 4 channels, "
                           f"got {list(t.shape)}")
    t = t.float() / 255.0 if not t.is_floating_point() else t.float()
    t = t[:3] if t.shape[0] == 4 else t.expand(3, -1, -1) if t.shape[0] == 1 else t
    s = size / min(t.shape[1:])
    h, w = max(size, round(t.shape[1] * s)), max(size, round(t.shape[2] * s))
    t = F.interpolate(t[None], (h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (h - size) // 2, (w - size) // 2
    return t[:, top:top + size, left:left + size].clamp(0, 1)


def iter_images(source: Source, size: int, fit: str = "crop") -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, image [3,size,size] in [0, 1])`` from a folder, an iterable or a dataset.

    Greyscale images are repeated to RGB, RGBA is blended over white, 16-bit images are scaled
    to [0, 1] (see :func:`featviz.images.to_rgb`). An unreadable file raises an error naming it.
    """
    if isinstance(source, (str, os.PathLike)):
        paths = _images.list_images(source)
        if not paths:
            raise FeatvizError(f"no image files in {source} (looked for "
                               f"{', '.join(_images.IMAGE_SUFFIXES)})")
        for p in paths:
            yield str(p), _images.load(p, size=size, fit=fit)[0]
        return
    items = (source[i] for i in range(len(source))) if _indexable(source) else iter(source)
    for i, item in enumerate(items):
        if isinstance(item, tuple):  # (image, label) as torchvision datasets give
            item = item[0]
        name = f"#{i}"
        if isinstance(item, (str, os.PathLike)):
            yield str(item), _images.load(item, size=size, fit=fit)[0]
        elif isinstance(item, Image.Image):
            yield name, _pil_to_tensor(item, size, fit)
        elif torch.is_tensor(item):
            yield name, _tensor_image(item, size, f"item {i}")
        else:
            raise FeatvizError(f"item {i} of the image source is a {type(item).__name__}; "
                               "expected a tensor, a PIL image or a file path")


def _indexable(source) -> bool:
    return hasattr(source, "__getitem__") and hasattr(source, "__len__")


def spatial_activation(layer: str, act: torch.Tensor, channel: int) -> torch.Tensor:
    """The [B,H,W] map of ``channel``, with clear errors for flat layers and bad channels."""
    if act.dim() != 4:
        raise FeatvizError(f"layer {layer!r} has no spatial maps (output {list(act.shape)}); "
                           "pick a convolutional layer")
    if not 0 <= channel < act.shape[1]:
        raise ChannelError(f"channel {channel} is out of range for layer {layer!r}, which has "
                           f"{act.shape[1]} channels (valid: 0-{act.shape[1] - 1})")
    return act[:, channel]


def iter_batches(source: Source, size: int, batch_size: int,
                 fit: str = "crop") -> Iterator[tuple[list[str], torch.Tensor]]:
    """Group :func:`iter_images` into batches ``(names, [B,3,size,size])``."""
    names: list[str] = []
    tiles: list[torch.Tensor] = []
    count = 0
    for name, img in iter_images(source, size, fit):
        names.append(name)
        tiles.append(img)
        count += 1
        if len(tiles) == batch_size:
            yield names, torch.stack(tiles)
            names, tiles = [], []
    if tiles:
        yield names, torch.stack(tiles)
    if count == 0:
        raise FeatvizError("the image source is empty")


class RunningTopK:
    """The ``k`` largest values per channel seen so far, with the image and position of each.

    ``update`` takes one batch's per-image maxima; memory stays at ``k`` entries per channel.
    """

    def __init__(self, n_channels: int, k: int):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self.values = torch.full((n_channels, 0), float("-inf"))
        self.image_ids = torch.zeros((n_channels, 0), dtype=torch.long)
        self.positions = torch.zeros((n_channels, 0, 2), dtype=torch.long)

    def update(self, values: torch.Tensor, image_ids: torch.Tensor,
               positions: torch.Tensor) -> None:
        """``values`` [B, n], ``image_ids`` [B], ``positions`` [B, n, 2] (y, x)."""
        vals = torch.cat([self.values, values.T.float().cpu()], dim=1)
        ids = torch.cat([self.image_ids, image_ids.cpu()[None].expand(vals.shape[0], -1)], dim=1)
        pos = torch.cat([self.positions, positions.transpose(0, 1).cpu()], dim=1)
        keep = vals.topk(min(self.k, vals.shape[1]), dim=1).indices
        self.values = vals.gather(1, keep)
        self.image_ids = ids.gather(1, keep)
        self.positions = pos.gather(1, keep[..., None].expand(-1, -1, 2))

    def ids_in_use(self) -> set[int]:
        return set(self.image_ids.flatten().tolist())


@dataclass
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
        """The image dimmed where covering it lowers the value least: [3,H,W] in [0, 1]."""
        heat = self.heatmap().clamp_min(0)
        heat = heat / heat.max().clamp_min(1e-12)
        img = self.image[0] if self.image.dim() == 4 else self.image
        red = torch.stack([heat, torch.zeros_like(heat), torch.zeros_like(heat)])
        return (0.35 * img + 0.65 * red).clamp(0, 1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the image beside its occlusion map as a PNG."""
        img = self.image[0] if self.image.dim() == 4 else self.image
        return _images.save(torch.stack([img, self.overlay()]), path,
                            labels=["image", f"drop of {self.what}"], ncol=2)


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
    of ``target_class``."""
    if (target_class is None) == (layer is None or channel is None):
        raise ValueError("give either layer= and channel=, or target_class=")
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be positive, got {patch} and {stride}")
    img = img[None] if img.dim() == 3 else img
    if img.dim() != 4 or img.shape[:2] != (1, 3):
        raise ValueError(f"occlusion takes one RGB image [1,3,H,W], got {list(img.shape)}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    img = img.float().to(device)
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
