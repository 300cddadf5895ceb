"""Images from datasets: streaming sources and running top-k activations.

A source is a folder of image files, any iterable of images (tensors, PIL images or paths) or
an indexable dataset such as a torchvision one (items ``(image, label)``). Sources are read in
batches and never held in memory whole, so a folder of thousands of images streams.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core import images as _images
from ..errors import ChannelError, FeatvizError

Source = str | os.PathLike | Iterable


# PIL's luminance weights (ITU-R 601), as images.load(..., channels=1) reads files
LUMA = (0.299, 0.587, 0.114)


def _pil_to_tensor(im: Image.Image, size: int, fit: str, channels: int = 3) -> torch.Tensor:
    im = _images.to_rgb(im) if channels != 1 else _images.to_rgb(im).convert("L")
    arr = np.asarray(_images._fit(im, size, fit), dtype=np.float32) / 255.0
    arr = arr[..., None] if arr.ndim == 2 else arr
    return _as_channels(torch.from_numpy(arr.copy()).permute(2, 0, 1), channels, "a PIL image")


def _as_channels(t: torch.Tensor, channels: int, where: str) -> torch.Tensor:
    """``t`` [C,H,W] with the ``channels`` the model takes: as it is when they match;
    grayscale repeated to RGB and RGBA cut to RGB for an RGB model; RGB(A) to luminance for a
    grayscale one; anything else is an error that names both counts."""
    c = t.shape[0]
    if c == channels:
        return t
    if channels == 3 and c in (1, 4):
        return t[:3] if c == 4 else t.expand(3, -1, -1)
    if channels == 1 and c in (3, 4):
        return torch.einsum("c,chw->hw", torch.tensor(LUMA, dtype=t.dtype), t[:3])[None]
    raise FeatvizError(f"{where}: a {c}-channel image for a model that takes {channels} "
                       f"channels")


def _tensor_image(t: torch.Tensor, size: int, where: str, channels: int = 3) -> torch.Tensor:
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise FeatvizError(f"{where}: expected an image tensor [C,H,W], got {list(t.shape)}")
    t = t.float() / 255.0 if not t.is_floating_point() else t.float()
    t = _as_channels(t, channels, where)
    s = size / min(t.shape[1:])
    h, w = max(size, round(t.shape[1] * s)), max(size, round(t.shape[2] * s))
    t = F.interpolate(t[None], (h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (h - size) // 2, (w - size) // 2
    return t[:, top:top + size, left:left + size].clamp(0, 1)


def iter_images(source: Source, size: int, fit: str = "crop",
                channels: int = 3) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, image [C,size,size] in [0, 1])`` from a folder, an iterable or a dataset,
    with the ``channels`` the model takes.

    For an RGB model greyscale images are repeated to RGB, RGBA is blended over white, 16-bit
    images are scaled to [0, 1] (see :func:`featviz.images.to_rgb`); for a grayscale one they
    are read as luminance; tensors of other band counts must have the model's. An unreadable
    file raises an error naming it.
    """
    if isinstance(source, (str, os.PathLike)):
        paths = _images.list_images(source)
        if not paths:
            raise FeatvizError(f"no image files in {source} (looked for "
                               f"{', '.join(_images.IMAGE_SUFFIXES)})")
        for p in paths:
            yield str(p), _images.load(p, size=size, fit=fit, channels=channels)[0]
        return
    items = (source[i] for i in range(len(source))) if _indexable(source) else iter(source)
    for i, item in enumerate(items):
        if isinstance(item, tuple):  # (image, label) as torchvision datasets give
            item = item[0]
        name = f"#{i}"
        if isinstance(item, (str, os.PathLike)):
            yield str(item), _images.load(item, size=size, fit=fit, channels=channels)[0]
        elif isinstance(item, Image.Image):
            yield name, _pil_to_tensor(item, size, fit, channels)
        elif torch.is_tensor(item):
            yield name, _tensor_image(item, size, f"item {i}", channels)
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


def iter_batches(source: Source, size: int, batch_size: int, fit: str = "crop",
                 channels: int = 3) -> Iterator[tuple[list[str], torch.Tensor]]:
    """Group :func:`iter_images` into batches ``(names, [B,C,size,size])``."""
    names: list[str] = []
    tiles: list[torch.Tensor] = []
    count = 0
    for name, img in iter_images(source, size, fit, channels):
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
