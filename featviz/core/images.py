"""Images in and out: files to tensors, tensors to PIL, labelled grids, PNG and GIF export.

Images of any channel count are shown as they can be: grayscale as grayscale, RGB and RGBA as
they are, and N spectral bands as a false-colour composite of three of them (``bands=``, by
default the first three), or one grey tile per band (:func:`band_grid`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from ..errors import FeatvizError
from .files import write_atomic
from .sizes import SizeLike, hw

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load(path: str | os.PathLike, size: SizeLike | None = None,
         fit: str = "crop", device: str | torch.device | None = None,
         channels: int = 3) -> torch.Tensor:
    """Read an image file as a [1,C,H,W] float tensor in [0, 1]: RGB (``channels=3``) or
    grayscale (``channels=1``, PIL's luminance of the RGB image).

    With ``size`` (one side or (height, width)), ``fit="crop"`` scales the image until it
    covers the size and cuts the centre (aspect kept), ``fit="resize"`` stretches the whole
    image to the size. An unreadable file raises an error
    naming its path.

    Args:
        path: The image file to read.
        size: One side or (height, width) to bring the image to; None keeps its own size.
        fit: ``"crop"`` (cover the size and cut the centre) or ``"resize"`` (stretch).
        device: Where to put the tensor; None leaves it on the CPU.
        channels: 3 for RGB or 1 for grayscale.
    """
    if channels not in (1, 3):
        raise FeatvizError(f"image files are read as grayscale (channels=1) or RGB (3), not "
                           f"{channels} channels; pass images of other bands as tensors")
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = to_rgb(im) if channels == 3 else to_rgb(im).convert("L")
            if size is not None:
                im = _fit(im, size, fit)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (FileNotFoundError, IsADirectoryError):
        raise FeatvizError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise FeatvizError(f"cannot read image file {path}: {err}") from err
    arr = arr[..., None] if arr.ndim == 2 else arr
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None]
    return t.to(device) if device is not None else t


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB: greyscale is repeated over the three channels,
    transparency is blended over white, 16-bit and float images are scaled by their range.

    Args:
        im: A PIL image of any mode.
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if im.mode == "F":
            top = max(float(arr.max()), 1.0) if arr.max() > 1 else 1.0
        im = Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _fit(im: Image.Image, size: SizeLike, fit: str) -> Image.Image:
    h, w = hw(size)
    if fit == "resize":
        return im.resize((w, h), Image.BILINEAR)
    if fit != "crop":
        raise ValueError(f"fit must be 'crop' or 'resize', got {fit!r}")
    s = max(h / im.height, w / im.width)
    im = im.resize((max(w, round(im.width * s)), max(h, round(im.height * s))), Image.BILINEAR)
    left, top = (im.width - w) // 2, (im.height - h) // 2
    return im.crop((left, top, left + w, top + h))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name.

    Args:
        folder: The folder to list (not searched recursively).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FeatvizError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def composite(img: torch.Tensor, bands: Sequence[int] | None = None) -> torch.Tensor:
    """The channels of ``img`` ([..., C, H, W]) to show: ``bands``, three channel indices (a
    false-colour composite shown as RGB) or one (grayscale); by default grayscale, RGB and
    RGBA images as they are, and other channel counts as their first three bands (the last
    repeated for two).

    Args:
        img: Image or batch, [..., C, H, W].
        bands: Three channel indices (shown as RGB) or one (grayscale); None picks by channel count.
    """
    c = img.shape[-3]
    if bands is None:
        if c in (1, 3, 4):
            return img
        bands = [min(i, c - 1) for i in range(3)]
    bands = [int(b) for b in bands]
    if len(bands) not in (1, 3) or not all(-c <= b < c for b in bands):
        raise FeatvizError(f"bands must be three channel indices (or one) of the image's {c} "
                           f"channels (0-{c - 1}), got {tuple(bands)}")
    return img[..., bands, :, :]


def as_rgb(img: torch.Tensor, bands: Sequence[int] | None = None) -> torch.Tensor:
    """``img`` [..., C, H, W] as three channels, to show or draw over in colour: grayscale
    repeated, RGBA without its alpha, N bands as the composite of ``bands``.

    Args:
        img: Image or batch, [..., C, H, W].
        bands: Channels to show for an N-band image (see :func:`composite`); None: the default.
    """
    t = composite(img, bands)
    if t.shape[-3] == 1:
        return t.expand(*t.shape[:-3], 3, *t.shape[-2:])
    return t[..., :3, :, :]


def to_pil(img: torch.Tensor, bands: Sequence[int] | None = None) -> Image.Image:
    """Turn a [C,H,W] or [1,C,H,W] tensor in [0, 1] (or a [H,W] map) into a PIL image:
    grayscale, RGB, RGBA, or the false-colour composite of ``bands`` (see :func:`composite`).

    Args:
        img: A [C,H,W] or [1,C,H,W] tensor in [0, 1], or a [H,W] map.
        bands: Channels to show (see :func:`composite`); None: the default choice.
    """
    t = img.detach().float().cpu()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"to_pil takes one image; got a batch of {t.shape[0]} (use grid)")
        t = t[0]
    if t.dim() == 3:
        t = composite(t, bands)
    arr = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    if arr.dim() == 2:
        return Image.fromarray(arr.numpy(), "L")
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0].numpy(), "L")
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB" if arr.shape[0] == 3 else "RGBA")


def from_pil(im: Image.Image) -> torch.Tensor:
    """A PIL image as a [3,H,W] float tensor in [0, 1].

    Args:
        im: A PIL image of any mode (converted by :func:`to_rgb`).
    """
    arr = np.asarray(to_rgb(im), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def grid(images: torch.Tensor | Sequence[torch.Tensor], labels: Sequence[str] | None = None,
         ncol: int | None = None, pad: int = 4, background: int = 255) -> Image.Image:
    """Lay out a batch [B,C,H,W] (or a list of images) in a grid, each with an optional label
    written underneath; ``ncol`` defaults to a near-square layout. A label wider than its tile
    goes onto two lines, and the end of it (the unit number) always stays visible. A grid of
    grayscale images is a grayscale image; N-band images show their first three bands.

    Args:
        images: A batch [B,C,H,W] or a sequence of images.
        labels: One label per image, written underneath; None for no labels.
        ncol: Number of columns; None for a near-square layout.
        pad: Pixels between tiles and around the edge.
        background: Grey level (0-255) of the sheet behind the tiles; 255 is white.
    """
    tiles = [to_pil(t) for t in (images if not torch.is_tensor(images) else images.unbind(0))]
    if not tiles:
        raise ValueError("grid needs at least one image")
    if labels is not None and len(labels) != len(tiles):
        raise ValueError(f"{len(labels)} labels for {len(tiles)} images")
    ncol = ncol or math.ceil(math.sqrt(len(tiles)))
    nrow = math.ceil(len(tiles) / ncol)
    tw, th = max(t.width for t in tiles), max(t.height for t in tiles)
    font = ImageFont.load_default()
    lines = [label_lines(str(label), tw, font) for label in labels] if labels else []
    label_h = 2 + _LINE * max(map(len, lines)) if lines else 0
    sheet = Image.new("RGB", (ncol * (tw + pad) + pad, nrow * (th + label_h + pad) + pad),
                      (background,) * 3)
    draw = ImageDraw.Draw(sheet)
    for i, tile in enumerate(tiles):
        x = pad + (i % ncol) * (tw + pad)
        y = pad + (i // ncol) * (th + label_h + pad)
        sheet.paste(_opaque(tile), (x, y))
        for k, line in enumerate(lines[i] if lines else []):
            draw.text((x, y + th + 1 + k * _LINE), line, fill=(0, 0, 0), font=font)
    return sheet.convert("L") if all(t.mode == "L" for t in tiles) else sheet


_LINE = 12  # pixels per label line in PIL's default font
_BREAKS = ":., _(/=-"  # a label may go onto its second line after one of these


def label_lines(text: str, width: int,
                font: ImageFont.ImageFont | ImageFont.FreeTypeFont | None = None) -> list[str]:
    """``text`` as the lines of a grid label at most ``width`` pixels wide: one line when it
    fits; else two, the second holding the longest end of it that starts after a separator
    (``:``, ``.``, a space...) and fits, the first the rest, cut with "…" when too long. So
    ``channel:features.14:12`` under a 64-pixel tile reads ``channel:fea…`` / ``14:12``: the
    unit number survives any tile on which it fits at all.

    Args:
        text: The label.
        width: The widest a line may be, in pixels.
        font: The font to measure with; None for PIL's default font.
    """
    font = font or ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength

    def fits(s: str) -> bool:
        return measure(s, font=font) <= width

    if fits(text):
        return [text]
    # ends that start after a separator keep whole numbers; any end will do when none fits
    starts = [i + 1 for i, ch in enumerate(text[:-1]) if ch in _BREAKS] + list(range(len(text)))
    end = next((text[i:] for i in starts if fits(text[i:].strip())), "")
    rest = text[:len(text) - len(end)].rstrip()
    while rest and not fits(rest):  # keep the start of the first line, mark the cut
        rest = rest[:-2] + "…" if len(rest) > 2 else ""
    return [line for line in (rest, end.strip()) if line]


def _opaque(tile: Image.Image) -> Image.Image:
    """An RGB tile; an RGBA one is shown over a grey checkerboard, so transparency shows."""
    if tile.mode != "RGBA":
        return tile.convert("RGB")
    cell = 8
    yy, xx = np.mgrid[:tile.height, :tile.width]
    board = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 204, 153).astype(np.uint8)
    back = Image.fromarray(np.stack([board] * 3, -1), "RGB")
    back.paste(tile, (0, 0), tile)
    return back


def band_grid(img: torch.Tensor, names: Sequence[str] | None = None, ncol: int | None = None,
              normalize: bool = False) -> Image.Image:
    """One grey tile per channel (band) of one image [C,H,W] or [1,C,H,W] in [0, 1], labelled
    with ``names`` (default ``band 0``, ``band 1``, ...); ``normalize`` stretches each band to
    its own min-max, for bands of low contrast.

    Args:
        img: One image, [C,H,W] or [1,C,H,W], in [0, 1].
        names: One label per band; None for ``band 0``, ``band 1``, ...
        ncol: Number of columns; None for a near-square layout.
        normalize: Stretch each band to its own min-max; False shows values as they are.
    """
    t = img.detach().float().cpu()
    t = t[0] if t.dim() == 4 and t.shape[0] == 1 else t
    if t.dim() != 3:
        raise ValueError(f"band_grid takes one image [C,H,W], got {list(img.shape)}")
    if normalize:
        lo = t.flatten(1).amin(1).view(-1, 1, 1)
        hi = t.flatten(1).amax(1).view(-1, 1, 1)
        t = (t - lo) / (hi - lo).clamp_min(1e-12)
    names = list(names) if names is not None else [f"band {i}" for i in range(len(t))]
    return grid(t[:, None], names, ncol)


def stretch(img: torch.Tensor, percentile: float = 0.5) -> torch.Tensor:
    """Each image of ``img`` ([B,C,H,W] or [C,H,W]) with its contrast stretched: its values
    (all channels together, so colours keep their balance) clipped at the ``percentile`` and
    ``100 - percentile`` percentiles, then scaled to fill [0, 1]. How the MACO paper's
    reference code shows its images (it clips at 1 %; 0.5 % keeps the clipped, flat areas
    under 5 % of the pixels); an image without contrast stays as it is.

    Args:
        img: Images [B,C,H,W] or one image [C,H,W].
        percentile: Percent of values clipped at each end (default 0.5).
    """
    batch = img if img.dim() == 4 else img[None]
    flat = batch.detach().float().flatten(1)
    q = torch.tensor([percentile / 100, 1 - percentile / 100], device=flat.device)
    lo, hi = torch.quantile(flat, q, dim=1).view(2, -1, 1, 1, 1).unbind(0)
    out = torch.where(hi > lo, (batch.float().clamp(lo, hi) - lo) / (hi - lo).clamp_min(1e-12),
                      batch.float())
    return out if img.dim() == 4 else out[0]


def save(images: torch.Tensor, path: str | os.PathLike, labels: Sequence[str] | None = None,
         ncol: int | None = None, bands: Sequence[int] | None = None,
         alpha: bool = True) -> Path:
    """Write one image, or a labelled grid of a batch, as a PNG (or any format PIL knows).
    Grayscale images are written as grayscale; images of N bands as the false-colour
    composite of ``bands`` (three channel indices shown as RGB; default the first three).
    Four channels are RGBA unless ``alpha=False`` says they are four bands (RGB + NIR).

    Args:
        images: One image [C,H,W] or a batch [B,C,H,W].
        path: The file to write; its suffix picks the format (none: PNG).
        labels: One label per image, for a grid; None for no labels.
        ncol: Grid columns; None for a near-square layout.
        bands: Channel indices to show (see :func:`composite`); None: the default choice.
        alpha: Treat four channels as RGBA; False treats them as four bands (RGB shown).
    """
    if bands is None and not alpha and images.shape[-3] == 4:
        bands = (0, 1, 2)
    if bands is not None:
        images = composite(images, bands)
    path = Path(path)
    fmt = image_format(path)
    single = images.dim() == 3 or (images.dim() == 4 and images.shape[0] == 1)
    pic = to_pil(images) if single and not labels else grid(images if images.dim() == 4
                                                            else images[None], labels, ncol)
    write_atomic(path, lambda tmp: pic.save(tmp, format=fmt))
    return path


def image_format(path: str | os.PathLike) -> str:
    """The PIL format ``path``'s suffix names (no suffix: PNG); an error naming the suffix and
    the ones that work when PIL cannot write it.

    Args:
        path: The file name whose suffix to look up.
    """
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "PNG"
    Image.init()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise FeatvizError(f"cannot write {path}: {suffix!r} is not an image format; use one "
                           f"of {', '.join(IMAGE_SUFFIXES)}")
    return fmt



def save_gif(frames: Sequence[torch.Tensor], path: str | os.PathLike,
             seconds_per_frame: float = 0.2, labels: Sequence[str] | None = None) -> Path:
    """Write frames (each one image [C,H,W] or a batch, laid out as a grid) as a looping GIF.

    Args:
        frames: The frames, each one image [C,H,W] or a batch (shown as a grid).
        path: The GIF file to write.
        seconds_per_frame: How long each frame shows (default 0.2 s).
        labels: One label per image of a frame's grid; None for no labels.
    """
    import imageio.v2 as imageio

    if not frames:
        raise ValueError("save_gif needs at least one frame")
    path = Path(path)
    pics = []
    for f in frames:
        batch = f if f.dim() == 4 else f[None]
        pic = to_pil(batch) if batch.shape[0] == 1 and not labels else grid(batch, labels)
        pics.append(np.asarray(_opaque(pic)))
    write_atomic(path, lambda tmp: imageio.mimsave(tmp, pics, format="GIF",
                                                   duration=seconds_per_frame * 1000, loop=0))
    return path
