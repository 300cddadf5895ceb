"""The top-k dataset search (the job behind :func:`featviz.deconv.top_k`): stream a source of
images through the model once, keep each channel's strongest units, and cut every hit's patch
(its receptive field) and its projections (Zeiler & Fergus 2013). :class:`TopK` and
:class:`TopKEntry` hold and show the result. Import these names from
:mod:`featviz.methods.deconv`, which re-exports them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..core import images as _images
from ..core import notebook as _nb
from ..core.hooks import LayerTap, frozen
from ..core.model_info import image_channels, input_size, model_device
from ..errors import FeatvizError
from ._projection import _display, check_mode, display_patch, project
from .dataset import Label, RunningTopK, iter_labelled_batches, labelled, spatial_activation
from .receptive_field import ReceptiveField, theoretical
from .tokens import TokenField, token_field


@dataclass(repr=False)
class TopKEntry:
    """One of the strongest activations of a channel: where it is and what it sees."""

    value: float
    source: str
    position: tuple[int, int]
    patch: torch.Tensor  # [C,h,w] the input the unit sees (its receptive field), grey outside
    projection: torch.Tensor  # [C,h,w] the projection over the same box, rendered to [0, 1]
    label: Label | None = None  # the class of the source photo, where the source tells it
    # every mode's rendered projection over the box, the first (``projection``) included
    projections: dict[str, torch.Tensor] = dc_field(default_factory=dict)
    box: tuple[int, int, int, int] | None = None  # (top, left, bottom, right) in the image
    # a token's own patch inside ``patch`` (top, left, bottom, right), outlined when shown;
    # None for a convolutional unit, whose whole box is its field
    focus: tuple[int, int, int, int] | None = None

    @property
    def class_name(self) -> str | None:
        """The short class name of the source photo (its first synonym), or None."""
        return self.label.short if self.label is not None else None

    def __repr__(self) -> str:
        name = f", class {self.class_name!r}" if self.class_name else ""
        return (f"TopKEntry({self.value:.4g} at {self.position} of {Path(self.source).name}"
                f"{name}, patch {_nb.shape(self.patch)}, modes {list(self.projections)})")

    def _picture(self) -> Image.Image:
        modes = list(self.projections) or ["projection"]
        shown = [self.patch] + [self.projections.get(m, self.projection) for m in modes]
        tiles = _tiles(shown, 96, [self.focus] * len(shown))
        return _images.grid(_display(tiles), ["patch", *modes], ncol=len(modes) + 1)

    def _repr_png_(self) -> bytes:
        """The patch beside its projection in every mode it holds."""
        return _nb.png(self._picture())

    def _repr_html_(self) -> str:
        """Value, source photo and its class, above the patch and its projections."""
        page = _nb.Budget()
        page.text(_nb.table(["value", "source", "position", "class"],
                            [(f"{self.value:.4g}", Path(self.source).name, self.position,
                              self.class_name or "")]))
        page.image(self._picture(), "patch and projections")
        return page.html("top-k entry")


@dataclass(repr=False)
class TopK:
    """The top-k dataset patches per channel with their projections (Zeiler & Fergus)."""

    layer: str
    mode: str
    field: ReceptiveField
    entries: dict[int, list[TopKEntry]]

    @property
    def modes(self) -> list[str]:
        """The projection modes every entry holds, ``mode`` first."""
        first = next((e for es in self.entries.values() for e in es), None)
        return list(first.projections) if first is not None and first.projections else [self.mode]

    @property
    def field_text(self) -> str:
        """What each patch shows, in words: the receptive field and its jump, or for tokens
        the token's own patch in its window."""
        size = f"{self.field.size[0]}x{self.field.size[1]} px"
        if isinstance(self.field, TokenField):  # a token: its patch, outlined, in a window
            return (f"each token's {self.field.patch[0]}x{self.field.patch[1]} px patch, "
                    f"outlined in a {size} window of the photo")
        return f"receptive field {size}, jump {self.field.jump[0]}"

    def grid(self, tile: int = 72, modes: Sequence[str] | None = None) -> Image.Image:
        """One block per channel: the k patches (each with its photo's class, where known),
        then the k projections of each of ``modes`` (default: all the entries hold)."""
        modes = list(modes) if modes is not None else self.modes
        blocks = [(f"{self.layer}:{c}  patches | {' | '.join(modes)}",
                   _block(entries, modes, tile)) for c, entries in self.entries.items() if entries]
        if not blocks:
            raise FeatvizError("no entries to show")
        tensors = [_images.from_pil(b) for _, b in blocks]
        h = max(t.shape[1] for t in tensors)
        w = max(t.shape[2] for t in tensors)
        padded = torch.ones(len(tensors), 3, h, w)
        for i, t in enumerate(tensors):
            padded[i, :, :t.shape[1], :t.shape[2]] = t
        ncol = 1 if len(modes) > 1 else min(2, len(blocks))
        return _images.grid(padded, labels=[name for name, _ in blocks], ncol=ncol, pad=8)

    def save(self, path: str | os.PathLike, tile: int = 72,
             modes: Sequence[str] | None = None) -> Path:
        """Write :meth:`grid` as a PNG."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.grid(tile, modes).save(path)
        return path

    def __repr__(self) -> str:
        counts = {c: len(e) for c, e in self.entries.items()}
        shown = list(counts.items())[:6]
        return (f"TopK({self.layer}, {self.mode}, field {self.field.size[0]}x"
                f"{self.field.size[1]} px, entries per channel {dict(shown)}"
                f"{'...' if len(counts) > 6 else ''})")

    def _repr_png_(self) -> bytes:
        """:meth:`grid`, scaled to fit a notebook cell."""
        return _nb.png(self.grid(tile=48))

    def _repr_html_(self) -> str:
        """Per channel (at most 16): its block of patches and projections, and a table of the
        hits (value, source photo, class)."""
        page = _nb.Budget()
        page.text(f"<p>{self.layer}, {self.field_text}; patches | {' | '.join(self.modes)}</p>")
        for c, entries in list(self.entries.items())[:16]:
            if not entries:
                continue
            page.text(f"<p><b>channel {c}</b></p>")
            page.image(_block(entries, self.modes, 48), f"{self.layer}:{c}")
            page.text(_nb.table(["value", "source", "class"],
                                [(f"{e.value:.4g}", Path(e.source).name, e.class_name or "")
                                 for e in entries]))
        if len(self.entries) > 16:
            page.text(f"<p>... and {len(self.entries) - 16} more channels</p>")
        return page.html(f"top-{max(map(len, self.entries.values()), default=0)} dataset "
                         f"patches of {self.layer}")


def _block(entries: Sequence[TopKEntry], modes: Sequence[str], tile: int) -> Image.Image:
    """One channel's block: the patches (labelled with their classes where any is known)
    beside one grid of projections per mode, side by side."""
    n = math.ceil(math.sqrt(len(entries)))
    names = [e.class_name or "" for e in entries]
    labels = names if any(names) else None
    focus = [e.focus for e in entries]
    parts = [_images.grid(_tiles([e.patch for e in entries], tile, focus), labels, ncol=n,
                          pad=2)]
    for mode in modes:
        shown = [e.projections.get(mode, e.projection) for e in entries]
        parts.append(_images.grid(_tiles(shown, tile, focus),
                                  [""] * len(entries) if labels else None,
                                  ncol=n, pad=2))
    block = Image.new("RGB", (sum(p.width for p in parts) + 6 * (len(parts) - 1),
                              max(p.height for p in parts)), (255, 255, 255))
    x = 0
    for part in parts:
        block.paste(part, (x, 0))
        x += part.width + 6
    return block


def _tiles(patches: list[torch.Tensor], tile: int,
           focus: Sequence[tuple[int, int, int, int] | None] | None = None) -> torch.Tensor:
    """Scale patches to a common display size: nearest neighbour when enlarging (pixels stay
    visible), antialiased when shrinking (no aliasing of photo detail); a ``focus`` box (a
    token's patch inside its window) is outlined on the scaled tile."""
    def scaled(p: torch.Tensor) -> torch.Tensor:
        if max(p.shape[1:]) <= tile:
            return F.interpolate(p[None], (tile, tile), mode="nearest")[0]
        return F.interpolate(p[None], (tile, tile), mode="bilinear", antialias=True,
                             align_corners=False)[0].clamp(0, 1)

    boxes = list(focus) if focus is not None else [None] * len(patches)
    return torch.stack([outline(scaled(p), box, p.shape[1:])
                        for p, box in zip(patches, boxes, strict=True)])


def outline(tile: torch.Tensor, box: tuple[int, int, int, int] | None,
            crop: tuple[int, int] | torch.Size) -> torch.Tensor:
    """``tile`` [C,h,w] (a crop of size ``crop`` scaled to it) with ``box`` outlined just
    outside its edges, black then white, so the line shows on dark and light photos alike
    and covers none of the box's own pixels; unchanged when ``box`` is None.

    Args:
        tile: The scaled crop, values in [0, 1].
        box: (top, left, bottom, right) in the crop's pixels, exclusive end; or None.
        crop: The crop's (height, width) before scaling.
    """
    if box is None:
        return tile
    out = tile.clone()
    h, w = out.shape[1:]
    sy, sx = h / crop[0], w / crop[1]
    top, left = round(box[0] * sy), round(box[1] * sx)
    bottom, right = round(box[2] * sy), round(box[3] * sx)
    for ring, value in ((1, 0.0), (2, 1.0)):  # the white ring outside the black one
        t, le, b, r = top - ring, left - ring, bottom + ring - 1, right + ring - 1
        ys, xs = slice(max(t, 0), min(b, h - 1) + 1), slice(max(le, 0), min(r, w - 1) + 1)
        for y in (t, b):
            if 0 <= y < h:
                out[:, y, xs] = value
        for x in (le, r):
            if 0 <= x < w:
                out[:, ys, x] = value
    return out


def crop_box(img: torch.Tensor, box: tuple[int, int, int, int], fill: float = 0.5) -> torch.Tensor:
    """Cut ``box`` (top, left, bottom, right) out of [C,H,W]; parts outside are ``fill``."""
    top, left, bottom, right = box
    out = torch.full((img.shape[0], bottom - top, right - left), fill, dtype=img.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(bottom, img.shape[1]), min(right, img.shape[2])
    if y1 > y0 and x1 > x0:
        out[:, y0 - top:y1 - top, x0 - left:x1 - left] = img[:, y0:y1, x0:x1]
    return out


@dataclass
class _Scan:
    """What one pass over a source leaves: the tracker, the name and class of every image
    seen, and the images still among the hits (uint8, by image id)."""

    tracker: RunningTopK
    names: list[str]
    labels: list[Label | None]
    kept: dict[int, torch.Tensor]


def _scan(model: nn.Module, images, layer: str, channels: list[int], k: int,
          size: int | tuple[int, int], batch_size: int) -> _Scan:
    """Stream ``images`` through ``model`` once, batch by batch, keeping each channel's ``k``
    strongest units and only the images among them."""
    device = model_device(model)
    scan = _Scan(RunningTopK(len(channels), k), [], [], {})
    index = torch.tensor(channels)
    with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
        for batch_names, batch_labels, batch in iter_labelled_batches(
                images, size, batch_size, channels=image_channels(model)):
            act = tap(batch.to(device))[layer]
            for c in (min(channels), max(channels)):
                spatial_activation(layer, act, c)
            maps = act[:, index.to(act.device)].flatten(2)
            values, flat = maps.max(dim=2)
            w = act.shape[3]
            positions = torch.stack([flat // w, flat % w], dim=2)
            ids = torch.arange(len(scan.names), len(scan.names) + len(batch_names))
            scan.names.extend(batch_names)
            scan.labels.extend(batch_labels)
            scan.tracker.update(values, ids, positions)
            in_use = scan.tracker.ids_in_use()
            for i, image_id in enumerate(ids.tolist()):
                if image_id in in_use:  # uint8: a quarter of the memory, exact for files
                    scan.kept[image_id] = (batch[i] * 255).round().to(torch.uint8)
            for image_id in [i for i in scan.kept if i not in in_use]:
                del scan.kept[image_id]
    return scan


def top_k(
    model: nn.Module,
    images: str | os.PathLike | Iterable,
    layer: str,
    channels: Iterable[int],
    k: int = 9,
    *,
    size: int | tuple[int, int] | None = None,
    batch_size: int = 32,
    mode: str | Sequence[str] = "deconvnet",
    labels: str | os.PathLike | None = None,
    signal: float | None = 0.95,
    margin: float = 1.0,
) -> TopK:
    """Find the ``k`` images of ``images`` that excite each channel most, and project them.

    ``images`` is a folder, a :class:`~featviz.methods.dataset.LabelledFolder`, an iterable of
    images or an indexable dataset; it is streamed in batches of ``batch_size`` (only the
    current top-k images are kept). A folder's ``labels.tsv`` (or the ``labels`` file) gives
    each entry the class of its photo. Each image is scaled to cover ``size`` (a side or
    (h, w); default: the model's input size) and its centre cut out. For every hit the patch
    the unit sees (its theoretical receptive field) is cut from the image and from the unit's
    projection, shown with its own contrast (:func:`display_patch`); ``mode`` is one mode of
    :func:`project` or several (each entry then holds them all, the first as ``projection``).
    ``signal`` trims the box, for each channel, to the square around the unit's centre that
    holds that share of its projections' absolute sum (the theoretical field is often far
    wider than the part that matters); None keeps the whole theoretical box.

    On a token layer (a vision transformer's, :mod:`featviz.methods.tokens`) the theoretical
    field is the whole image, which shows nothing of where the token sits: each hit is then
    the token's own patch with ``margin`` patches of photo around it, the patch outlined
    (:attr:`TopKEntry.focus`), and ``signal`` is not applied (the window is small already).

    Args:
        model: The network.
        images: A folder, a labelled folder, an iterable of images or an indexable dataset.
        layer: The layer whose channels are searched.
        channels: The channels to search.
        k: Hits kept per channel.
        size: One side or (height, width) the images are cut to; default the model's.
        batch_size: Images per forward pass.
        mode: One projection mode of :func:`project`, or several.
        labels: A labels file for a folder without ``labels.tsv``.
        signal: Share of the projections' absolute sum the trimmed box keeps; None: no trim.
        margin: On a token layer, patches of photo shown on each side of the token's patch.
    """
    modes = [mode] if isinstance(mode, str) else list(mode)
    for m in modes:
        check_mode(m)
    channels = [int(c) for c in channels]
    if not channels or not modes:
        raise ValueError("top_k needs at least one channel and one mode")
    size = input_size(model, size)
    scan = _scan(model, labelled(images, labels), layer, channels, k, size, batch_size)
    rf = token_field(model, layer, size, margin) or theoretical(model, layer, input_size=size)
    entries = {c: _entries(model, scan, j, layer, c, rf, modes, signal)
               for j, c in enumerate(channels)}
    return TopK(layer, modes[0], rf, entries)


def _entries(model: nn.Module, scan: _Scan, j: int, layer: str, channel: int,
             rf: ReceptiveField, modes: Sequence[str], signal: float | None) -> list[TopKEntry]:
    """The entries of tracked channel ``j`` (``channel`` of ``layer``): each hit's patch and
    its projections, cut to the unit's receptive-field box (trimmed to ``signal``) and shown
    each with its own contrast."""
    valid = torch.isfinite(scan.tracker.values[j])
    ids = scan.tracker.image_ids[j][valid].tolist()
    pos = [tuple(p) for p in scan.tracker.positions[j][valid].tolist()]
    imgs = torch.stack([scan.kept[i].float() / 255 for i in ids])
    boxes = [rf.box(y, x) for y, x in pos]
    raw = {m: [crop_box(pixels, box, fill=0.0) for pixels, box in zip(
        project(model, imgs, layer, channel, position=pos, mode=m).pixels, boxes, strict=True)]
        for m in modes}
    tokens = isinstance(rf, TokenField)
    focus = [rf.focus(y, x) if tokens else None for y, x in pos]
    trim = signal is not None and not tokens
    margin = signal_margin(torch.stack(raw[modes[0]]), signal) if trim else 0
    if margin:
        boxes = [(t + margin, le + margin, b - margin, r - margin) for t, le, b, r in boxes]
        raw = {m: [c[:, margin:c.shape[1] - margin, margin:c.shape[2] - margin] for c in cs]
               for m, cs in raw.items()}
    # cut first, then scale: the contrast is the box's own, not the whole image's
    shown = {m: [display_patch(c) for c in cs] for m, cs in raw.items()}
    return [TopKEntry(float(scan.tracker.values[j][n]), scan.names[i], (y, x),
                      crop_box(imgs[n], boxes[n]), shown[modes[0]][n], scan.labels[i],
                      {m: shown[m][n] for m in modes}, boxes[n], focus[n])
            for n, (i, (y, x)) in enumerate(zip(ids, pos, strict=True))]


def signal_margin(crops: torch.Tensor, share: float = 0.95) -> int:
    """How many pixels can be cut from every side of the boxes ``crops`` [B,C,h,w] (signed
    projections, centred on their unit) while the centred square left keeps ``share`` of their
    summed absolute values; 0 when nothing can go (or there is no signal)."""
    energy = crops.abs().sum(dim=(0, 1))
    total = float(energy.sum())
    h, w = energy.shape
    if total <= 0:
        return 0
    # ring distance from the border: the square kept after cutting m from each side is ring >= m
    ys = torch.minimum(torch.arange(h), torch.arange(h).flip(0))[:, None]
    xs = torch.minimum(torch.arange(w), torch.arange(w).flip(0))[None, :]
    ring = torch.minimum(ys, xs)
    best = 0
    for m in range(1, (min(h, w) - 1) // 2):
        if float(energy[ring >= m].sum()) < share * total:
            break
        best = m
    return best
