"""What results need to show themselves in a notebook: PNG bytes, inline ``<img>`` tags, small
HTML tables, and a size budget that keeps one cell's HTML small.

Jupyter calls ``_repr_png_`` / ``_repr_html_`` on the last value of a cell. The result classes
of every tier define those methods and build their pictures with :mod:`featviz.core.images`;
what turns a picture into bytes of bounded size lives here, in the lowest tier, so that the
classes call down and never up. Everything is self-contained: pictures go inline as base64
PNG, so a saved notebook or its HTML export shows them without the files.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence

import torch
from PIL import Image

from . import images as _images

#: the longest side of any picture shown in a cell, in pixels
MAX_SIDE = 768
#: small pictures are enlarged (nearest neighbour, whole factors) until their longest side
#: reaches this: a 64-px render is a stamp in a notebook otherwise
MIN_SIDE = 256
#: the most characters one result's HTML may take (a notebook holds every output it shows)
MAX_HTML = 2_000_000

_STYLE = "font-family:sans-serif;font-size:13px"
_TABLE = "border-collapse:collapse;font-size:12px;margin:4px 0"
_CELL = "border:1px solid #ccc;padding:1px 6px;text-align:left"


def fit(pic: Image.Image, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> Image.Image:
    """``pic`` scaled to show in a cell: shrunk (antialiased, aspect kept) when its longest
    side passes ``max_side``, enlarged by a whole factor (nearest neighbour, pixels stay
    sharp) while it stays under ``min_side``.

    Args:
        pic: The picture.
        max_side: The longest its longest side may be, in pixels.
        min_side: Enlarge small pictures until their longest side would pass this.
    """
    side = max(pic.size)
    if side > max_side:
        pic = pic.copy()
        pic.thumbnail((max_side, max_side), Image.LANCZOS)
    elif 0 < side < min_side:
        factor = min(min_side // side + (min_side % side > 0), max_side // side)
        if factor > 1:
            pic = pic.resize((pic.width * factor, pic.height * factor), Image.NEAREST)
    return pic


def picture(images: torch.Tensor | Sequence[torch.Tensor] | Image.Image,
            labels: Sequence[str] | None = None, ncol: int | None = None) -> Image.Image:
    """One picture of ``images``: a PIL image as it is, one tensor image [C,H,W] (or
    [1,C,H,W]) without labels as itself, else a labelled grid (:func:`images.grid`).

    Args:
        images: A PIL image, one tensor image or a batch, or a sequence of images.
        labels: One label per image, for a grid; None for no labels.
        ncol: Grid columns; None for a near-square layout.
    """
    if isinstance(images, Image.Image):
        return images
    if torch.is_tensor(images) and not labels and (
            images.dim() == 3 or (images.dim() == 4 and images.shape[0] == 1)):
        return _images.to_pil(images)
    return _images.grid(images, labels, ncol)


def png(pic: Image.Image, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> bytes:
    """``pic`` as PNG bytes, sized by :func:`fit`: what ``_repr_png_`` returns.

    Args:
        pic: The picture.
        max_side: Largest side allowed (see :func:`fit`).
        min_side: Side small pictures are enlarged toward (see :func:`fit`).
    """
    buf = io.BytesIO()
    fit(pic, max_side, min_side).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(pic: Image.Image, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> str:
    """``pic`` as a ``data:image/png;base64,...`` URI, sized by :func:`fit` (for pages that
    place pictures from a script, like ``featviz blocks``).

    Args:
        pic: The picture.
        max_side: Largest side allowed (see :func:`fit`).
        min_side: Side small pictures are enlarged toward (see :func:`fit`).
    """
    return "data:image/png;base64," + base64.b64encode(png(pic, max_side, min_side)).decode(
        "ascii")


def own_size_uri(img: torch.Tensor) -> str:
    """A data URI of an image tensor ([C,H,W] or [1,C,H,W] in [0, 1]) at its own size, for
    pages whose styles enlarge it (a 32-px render shown at 256 px costs a 32-px PNG).

    Args:
        img: An image tensor [C,H,W] or [1,C,H,W] in [0, 1]; first 3 channels used.
    """
    img = img[0] if img.dim() == 4 else img
    return data_uri(_images.to_pil(img[:3].float().clamp(0, 1)), max_side=1 << 14, min_side=1)


def img_tag(pic: Image.Image, alt: str = "", max_side: int = MAX_SIDE,
            min_side: int = MIN_SIDE) -> str:
    """An ``<img>`` tag holding ``pic`` inline as a base64 PNG, sized by :func:`fit`.

    Args:
        pic: The picture.
        alt: The tag's alt text (escaped); empty by default.
        max_side: Largest side allowed (see :func:`fit`).
        min_side: Side small pictures are enlarged toward (see :func:`fit`).
    """
    return (f'<img alt="{html.escape(alt)}" style="image-rendering:pixelated;max-width:100%" '
            f'src="{data_uri(pic, max_side, min_side)}">')


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A small HTML table; every cell is escaped (layer names may hold ``<``).

    Args:
        header: The column titles.
        rows: The rows, each a sequence of cell values.
    """
    head = "".join(f'<th style="{_CELL}">{html.escape(str(h))}</th>' for h in header)
    body = "".join("<tr>" + "".join(f'<td style="{_CELL}">{html.escape(str(c))}</td>'
                                    for c in row) + "</tr>" for row in rows)
    return f'<table style="{_TABLE}"><tr>{head}</tr>{body}</table>'


class Budget:
    """Builds one result's HTML within :data:`MAX_HTML` characters: each picture is shrunk
    by halves until it fits what is left, and left out (with a note) when even a small one
    does not. So a result of hundreds of layers or a batch of 64 large images still makes a
    cell a notebook can hold."""

    def __init__(self, limit: int = MAX_HTML, max_side: int = MAX_SIDE):
        self.left, self.max_side = limit, max_side
        self.parts: list[str] = []
        self.dropped = 0

    def text(self, markup: str) -> None:
        """Add ``markup`` (already HTML) as it is; text is small, so it always goes in."""
        self.parts.append(markup)
        self.left -= len(markup)

    def image(self, pic: Image.Image, alt: str = "", max_side: int | None = None) -> bool:
        """Add ``pic`` as an inline image, as large as ``max_side`` (default the budget's)
        and the characters left allow; False when it was left out."""
        side = max_side or self.max_side
        while side >= 32:
            tag = img_tag(pic, alt, side, min(MIN_SIDE, side))
            if len(tag) <= self.left:
                self.text(tag)
                return True
            side //= 2
        self.dropped += 1
        return False

    def html(self, title: str = "") -> str:
        """The whole block: ``title`` in bold, then the parts, and a note of any picture the
        budget left out."""
        head = f"<b>{html.escape(title)}</b><br>" if title else ""
        note = (f"<p><i>{self.dropped} picture(s) left out to keep this output under "
                f"{MAX_HTML // 1_000_000} MB; save them to files instead.</i></p>"
                if self.dropped else "")
        return f'<div style="{_STYLE}">{head}{"".join(self.parts)}{note}</div>'


def shape(t: torch.Tensor) -> str:
    """A tensor's shape as ``3x64x64``: what a short ``__repr__`` shows instead of values.

    Args:
        t: The tensor.
    """
    return "x".join(str(s) for s in t.shape)


def numbers(values: Iterable[float], most: int = 6) -> str:
    """The first ``most`` of ``values`` to four digits, ``...`` after them when there are more.

    Args:
        values: The numbers.
        most: How many to show at most (default 6).
    """
    values = list(values)
    shown = ", ".join(f"{float(v):.4g}" for v in values[:most])
    return f"[{shown}{', ...' if len(values) > most else ''}]"


def heat(values: torch.Tensor, cmap: str = "inferno") -> torch.Tensor:
    """A map [H, W] as a colour picture [3,H,W]: scaled by its largest value and coloured by
    matplotlib's ``cmap`` (grey without matplotlib).

    Args:
        values: The map, [H, W], non-negative.
        cmap: Name of a matplotlib colormap (default ``"inferno"``).
    """
    v = values.detach().float().cpu()
    v = (v / v.max().clamp_min(1e-12)).clamp(0, 1)
    try:
        import matplotlib

        lut = torch.tensor(matplotlib.colormaps[cmap](torch.linspace(0, 1, 256).numpy())[:, :3],
                           dtype=torch.float32)
    except ImportError:
        return v[None].expand(3, -1, -1)
    return lut[(v * 255).round().long()].permute(2, 0, 1)
