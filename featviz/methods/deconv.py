"""Projections of hidden activations back to pixels: deconvnet, guided backprop, gradients.

Zeiler & Fergus (2013) keep one activation of a layer, zero all others, and run the network
backwards: convolutions transposed, max-pooling routed through the "switches" recorded in the
forward pass, and a ReLU applied to the backward signal. In PyTorch the backward pass of a
convolution already is the transposed convolution and that of max-pooling already routes
through the switches, so the only change is the ReLU rule, made by
:class:`~featviz.backward_rules.ReluBackwardRule` for every ReLU however the model calls it:

- ``"deconvnet"``: the backward signal is rectified, the forward mask ignored;
- ``"guided"``: guided backprop (Springenberg et al. 2015), rectified and masked;
- ``"gradient"``: the plain gradient of the activation.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..core import images as _images
from ..core.backward_rules import ReluBackwardRule
from ..core.hooks import LayerTap, frozen
from ..core.model_info import image_channels, input_size, model_device
from ..errors import ChannelError, FeatvizError
from .dataset import RunningTopK, iter_batches, spatial_activation
from .occlusion import occlusion
from .receptive_field import ReceptiveField, theoretical

__all__ = ["MODES", "Projection", "project", "top_k", "TopK", "TopKEntry", "occlusion",
           "occlusion_check", "signed_to_image", "crop_box"]

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


@dataclass
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


def signed_to_image(t: torch.Tensor) -> torch.Tensor:
    """Map signed maps [B,C,H,W] to [0, 1] per image: 0.5 + 0.5 * t / max|t|."""
    scale = t.abs().flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (0.5 + 0.5 * t / scale).clamp(0, 1)


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


@dataclass
class TopKEntry:
    """One of the strongest activations of a channel: where it is and what it sees."""

    value: float
    source: str
    position: tuple[int, int]
    patch: torch.Tensor  # [C,h,w] the input the unit sees (its receptive field), grey outside
    projection: torch.Tensor  # [C,h,w] the projection over the same box, rendered to [0, 1]


@dataclass
class TopK:
    """The top-k dataset patches per channel with their projections (Zeiler & Fergus)."""

    layer: str
    mode: str
    field: ReceptiveField
    entries: dict[int, list[TopKEntry]]

    def grid(self, tile: int = 72) -> Image.Image:
        """One block per channel: the k projections beside the k patches, each 3x3-ish."""
        blocks = []
        for channel, entries in self.entries.items():
            if not entries:
                continue
            n = math.ceil(math.sqrt(len(entries)))
            proj = _images.grid(_tiles([e.projection for e in entries], tile), ncol=n, pad=2)
            pats = _images.grid(_tiles([e.patch for e in entries], tile), ncol=n, pad=2)
            block = Image.new("RGB", (proj.width + pats.width + 6, max(proj.height, pats.height)),
                              (255, 255, 255))
            block.paste(proj, (0, 0))
            block.paste(pats, (proj.width + 6, 0))
            blocks.append((f"{self.layer}:{channel}", block))
        if not blocks:
            raise FeatvizError("no entries to show")
        tensors = [_images.from_pil(b) for _, b in blocks]
        h = max(t.shape[1] for t in tensors)
        w = max(t.shape[2] for t in tensors)
        padded = torch.ones(len(tensors), 3, h, w)
        for i, t in enumerate(tensors):
            padded[i, :, :t.shape[1], :t.shape[2]] = t
        return _images.grid(padded, labels=[name for name, _ in blocks],
                            ncol=min(2, len(blocks)), pad=8)

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`grid` as a PNG."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.grid().save(path)
        return path


def _tiles(patches: list[torch.Tensor], tile: int) -> torch.Tensor:
    """Scale patches to a common display size (nearest neighbour: pixels stay visible)."""
    return torch.stack([F.interpolate(p[None], (tile, tile), mode="nearest")[0]
                        for p in patches])


def crop_box(img: torch.Tensor, box: tuple[int, int, int, int], fill: float = 0.5) -> torch.Tensor:
    """Cut ``box`` (top, left, bottom, right) out of [C,H,W]; parts outside are ``fill``."""
    top, left, bottom, right = box
    out = torch.full((img.shape[0], bottom - top, right - left), fill, dtype=img.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(bottom, img.shape[1]), min(right, img.shape[2])
    if y1 > y0 and x1 > x0:
        out[:, y0 - top:y1 - top, x0 - left:x1 - left] = img[:, y0:y1, x0:x1]
    return out


def _scan(model: nn.Module, images, layer: str, channels: list[int], k: int, size: int,
          batch_size: int) -> tuple[RunningTopK, list[str], dict[int, torch.Tensor]]:
    """Stream ``images`` through ``model`` once, keeping each channel's ``k`` strongest units:
    the tracker, the name of every image seen, and the images still among the hits (uint8)."""
    device = model_device(model)
    tracker = RunningTopK(len(channels), k)
    names: list[str] = []
    kept: dict[int, torch.Tensor] = {}
    index = torch.tensor(channels)
    with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
        for batch_names, batch in iter_batches(images, size, batch_size,
                                               channels=image_channels(model)):
            act = tap(batch.to(device))[layer]
            for c in (min(channels), max(channels)):
                spatial_activation(layer, act, c)
            maps = act[:, index.to(act.device)].flatten(2)
            values, flat = maps.max(dim=2)
            w = act.shape[3]
            positions = torch.stack([flat // w, flat % w], dim=2)
            ids = torch.arange(len(names), len(names) + len(batch_names))
            names.extend(batch_names)
            tracker.update(values, ids, positions)
            in_use = tracker.ids_in_use()
            for i, image_id in enumerate(ids.tolist()):
                if image_id in in_use:  # uint8: a quarter of the memory, exact for files
                    kept[image_id] = (batch[i] * 255).round().to(torch.uint8)
            for image_id in [i for i in kept if i not in in_use]:
                del kept[image_id]
    return tracker, names, kept


def top_k(
    model: nn.Module,
    images: str | os.PathLike | Iterable,
    layer: str,
    channels: Iterable[int],
    k: int = 9,
    *,
    size: int | None = None,
    batch_size: int = 32,
    mode: str = "deconvnet",
) -> TopK:
    """Find the ``k`` images of ``images`` that excite each channel most, and project them.

    ``images`` is a folder, an iterable of images or an indexable dataset; it is streamed in
    batches of ``batch_size`` (only the current top-k images are kept). Each image is resized
    on its shorter side and centre-cropped to ``size`` (default: the model's input size). For
    every hit the patch the unit sees (its theoretical receptive field) is cut from the image
    and from the unit's projection (``mode`` as in :func:`project`).
    """
    check_mode(mode)
    channels = [int(c) for c in channels]
    if not channels:
        raise ValueError("top_k needs at least one channel")
    size = input_size(model, size)
    tracker, names, kept = _scan(model, images, layer, channels, k, size, batch_size)
    field = theoretical(model, layer, input_size=size)
    entries: dict[int, list[TopKEntry]] = {}
    for j, c in enumerate(channels):
        valid = torch.isfinite(tracker.values[j])
        ids = tracker.image_ids[j][valid].tolist()
        pos = [tuple(p) for p in tracker.positions[j][valid].tolist()]
        imgs = torch.stack([kept[i].float() / 255 for i in ids])
        proj = project(model, imgs, layer, c, position=pos, mode=mode)
        rendered = proj.image()
        entries[c] = []
        for n, (image_id, (y, x)) in enumerate(zip(ids, pos, strict=True)):
            box = field.box(y, x)
            entries[c].append(TopKEntry(float(tracker.values[j][n]), names[image_id], (y, x),
                                        crop_box(imgs[n], box), crop_box(rendered[n], box)))
    return TopK(layer, mode, field, entries)


def occlusion_check(
    model: nn.Module,
    img: torch.Tensor,
    layer: str,
    channel: int,
    patch: int | None = None,
    n_random: int = 8,
    seed: int = 0,
) -> tuple[float, float]:
    """Zeiler & Fergus's test of a projection: cover the ``patch``-sized square where the
    deconvnet projection of the channel's strongest unit is largest, and, separately,
    ``n_random`` random squares of the same size. Returns (drop of the activation for the
    highlighted square, mean drop for the random ones); a trustworthy projection gives the
    first much larger."""
    img = as_batch(img, image_channels(model))[:1]
    h, w = img.shape[-2:]
    patch = patch or min(h, w) // 4
    proj = project(model, img, layer, channel, mode="deconvnet")
    y, x = proj.positions[0]
    energy = proj.pixels[0].abs().sum(0)[None, None]
    window = F.avg_pool2d(energy, patch, stride=1)[0, 0]
    best = int(window.argmax())
    corners = [(best // window.shape[1], best % window.shape[1])]
    gen = torch.Generator().manual_seed(seed)
    corners += [(int(torch.randint(h - patch + 1, (1,), generator=gen)),
                 int(torch.randint(w - patch + 1, (1,), generator=gen))) for _ in range(n_random)]
    batch = img.repeat(len(corners) + 1, 1, 1, 1)
    for b, (top, left) in enumerate(corners, start=1):
        batch[b, :, top:top + patch, left:left + patch] = 0.5
    with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
        values = tap(batch.to(model_device(model)))[layer][:, channel, y, x].cpu()
    drops = values[0] - values[1:]
    return float(drops[0]), float(drops[1:].mean())
