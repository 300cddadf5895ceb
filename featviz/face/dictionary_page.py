"""A layer's dictionary features beside its neurons, on one static page and in one figure.

:func:`write` makes a folder holding ``index.html`` and its images (``images/``), linked by
relative paths, so that the folder can be moved or copied to a server as it is; the page has no
script and loads nothing from the internet. At its head a table of the dictionary's measures
(whatever the caller passes: FVU, L0, dead share, top-1 with and without the splice...), then
two sheets side by side, features and neurons: per unit its render (given by the caller, as a
tensor or an image file), its top patches, its top classes, its firing rate and its
single-mindedness (:mod:`featviz.methods.dictionary.minded`). :func:`sheet_png` draws the same
sheets as one PNG, a row per unit (render, then its patches), for documents. Every file is
written atomically (:mod:`featviz.core.files`).
"""

from __future__ import annotations

import html
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..core import images as _images
from ..core.files import write_atomic, write_text
from ..errors import FeatvizError
from ..methods.dictionary._units import UnitExamples
from ..methods.dictionary.minded import Minded

IMAGES = "images"
STYLE = """body{font-family:sans-serif;margin:16px;color:#222}
h1{font-size:20px} h2{font-size:17px;margin:16px 0 6px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:4px 6px;
vertical-align:top} td.num{text-align:right}
.cols{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
img.render{width:96px;height:96px;image-rendering:pixelated}
img.patches{height:64px;image-rendering:pixelated} ol{margin:0;padding-left:18px}
.na{color:#777}"""


@dataclass
class UnitCard:
    """One unit as the page shows it: ``kind`` ("feature" or "neuron"), ``unit`` (its
    index), ``render`` (an image [C,H,W] in [0, 1] or an image file; None: none), ``patches``
    (its top patches [k,C,h,w], :func:`~featviz.methods.dictionary.example_patches`),
    ``classes`` ((name, value) pairs, best first), ``firing_rate`` (a share) and ``score``
    (its single-mindedness); what is None shows as absent."""

    kind: str
    unit: int
    render: torch.Tensor | str | os.PathLike | None = None
    patches: torch.Tensor | None = None
    classes: Sequence[tuple[str, float]] = ()
    firing_rate: float | None = None
    score: float | None = None

    @property
    def title(self) -> str:
        """``feature 12``, ``neuron 3``."""
        return f"{self.kind} {self.unit}"


def unit_cards(examples: UnitExamples, units: Sequence[int] | None = None,
               patches: Mapping[int, torch.Tensor] | None = None,
               renders: Mapping[int, torch.Tensor | str | os.PathLike] | None = None,
               scores: Minded | None = None, classes: int = 5) -> list[UnitCard]:
    """The cards of ``units`` of one kind of a search, with what the caller computed.

    Args:
        examples: one kind (features or neurons) of
            :func:`~featviz.methods.dictionary.feature_examples`' result.
        units: the units to show, in order; None for all searched.
        patches: each unit's patches (:func:`~featviz.methods.dictionary.example_patches`).
        renders: each unit's render, a tensor [C,H,W] (or [1,C,H,W]) or an image file.
        scores: the kind's single-mindedness (:mod:`~featviz.methods.dictionary.minded`).
        classes: how many top classes per unit.
    """
    units = list(examples.units if units is None else units)
    patches, renders = patches or {}, renders or {}
    return [UnitCard(examples.kind, int(u), renders.get(u), patches.get(u),
                     examples.top_classes(u, classes), examples.firing_rate[int(u)],
                     scores.score(u) if scores is not None else None) for u in units]


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _img(path: str, alt: str, cls: str) -> str:
    return (f"<img class='{cls}' alt='{_esc(alt)}' title='{_esc(alt)}' "
            f"src='{_esc(quote(path, safe='/'))}'>")


def _number(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _score(value: float) -> str:
    """A score with two decimals ('–' for NaN, no '-0.00')."""
    return "–" if math.isnan(value) else f"{value:.2f}".replace("-0.00", "0.00")


def _save_render(render: torch.Tensor | str | os.PathLike, folder: Path, stem: str) -> str:
    """The render as a file of the page's image folder; its path relative to the page."""
    if torch.is_tensor(render):
        name = f"{IMAGES}/{stem}.png"
        _images.save(render[0] if render.dim() == 4 else render, folder / name)
        return name
    source = Path(render)
    if not source.is_file():
        raise FeatvizError(f"render image not found: {source}")
    name = f"{IMAGES}/{stem}{source.suffix.lower() or '.png'}"
    write_atomic(folder / name, lambda tmp: shutil.copyfile(source, tmp))
    return name


def _strip(patches: torch.Tensor, pad: int = 2) -> Image.Image:
    """The patches side by side, one row."""
    return _images.grid(patches, ncol=len(patches), pad=pad)


def _save_patches(patches: torch.Tensor, folder: Path, stem: str) -> str:
    name = f"{IMAGES}/{stem}.png"
    strip = _strip(patches)
    write_atomic(folder / name, lambda tmp: strip.save(tmp, format="PNG"))
    return name


def _row(card: UnitCard, folder: Path) -> str:
    """One unit's table row, its images written beside the page."""
    stem = f"{card.kind}{card.unit:05d}"
    render = (_img(_save_render(card.render, folder, f"{stem}_render"), f"{card.title} render",
                   "render") if card.render is not None else "<span class='na'>–</span>")
    if card.patches is not None and len(card.patches):
        patches = _img(_save_patches(card.patches, folder, f"{stem}_patches"),
                       f"{card.title}: top patches", "patches")
    else:
        patches = "<span class='na'>never fires</span>"
    classes = "".join(f"<li title='{_esc(name)}'>{_esc(str(name).split(',')[0])} "
                      f"({_number(float(v))})</li>" for name, v in card.classes)
    rate = "–" if card.firing_rate is None else f"{card.firing_rate:.2%}"
    score = "–" if card.score is None else _score(float(card.score))
    return (f"<tr><td>{_esc(card.title)}</td><td>{render}</td><td>{patches}</td>"
            f"<td><ol>{classes}</ol></td><td class='num'>{rate}</td>"
            f"<td class='num'>{score}</td></tr>")


def _sheet(name: str, cards: Sequence[UnitCard], folder: Path) -> str:
    head = ("<tr><th>unit</th><th>render</th><th>top patches</th><th>top classes</th>"
            "<th>firing rate</th><th>single-minded</th></tr>")
    rows = "".join(_row(card, folder) for card in cards)
    return f"<section><h2>{_esc(name)} ({len(cards)})</h2><table>{head}{rows}</table></section>"


def _measures(measures: Mapping[str, object]) -> str:
    if not measures:
        return ""
    rows = "".join(f"<tr><td>{_esc(k)}</td><td class='num'>{_esc(_number(v))}</td></tr>"
                   for k, v in measures.items())
    return f"<h2>the dictionary</h2><table><tr><th>measure</th><th>value</th></tr>{rows}</table>"


def write(folder: str | os.PathLike, layer: str, features: Sequence[UnitCard],
          neurons: Sequence[UnitCard], measures: Mapping[str, object] | None = None,
          title: str | None = None, name: str = "index.html") -> Path:
    """Write the page of ``layer``'s features beside its neurons into ``folder`` (the page
    and an ``images`` folder beside it); returns the page's path.

    Args:
        folder: the folder to write (made if missing).
        layer: the layer's name, for the heading.
        features: the features' cards (:func:`unit_cards`), in the order shown.
        neurons: the neurons' cards, in the order shown.
        measures: the dictionary's measures by name (FVU, L0, dead %, top-1...), shown as a
            table; None or empty for none.
        title: the page's title; by default from ``layer``.
        name: the page's file name.
    """
    folder = Path(folder)
    title = title or f"{layer}: dictionary features and neurons"
    body = (f"<h1>{_esc(title)}</h1>{_measures(measures or {})}<div class='cols'>"
            f"{_sheet('features', features, folder)}{_sheet('neurons', neurons, folder)}</div>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<link rel='icon' href='data:,'><style>{STYLE}</style></head><body>{body}"
            "</body></html>")
    return write_text(folder / name, page)


# -- the figure --------------------------------------------------------------------------
def _fit(img: torch.Tensor, tile: int) -> torch.Tensor:
    """[C,h,w] scaled to [3, tile, tile]: nearest when enlarging (pixels stay visible),
    antialiased when shrinking."""
    img = img[None].float()
    if max(img.shape[2:]) <= tile:
        out = F.interpolate(img, (tile, tile), mode="nearest")[0]
    else:
        out = F.interpolate(img, (tile, tile), mode="bilinear", antialias=True,
                            align_corners=False)[0].clamp(0, 1)
    return out.expand(3, -1, -1) if out.shape[0] == 1 else out[:3]


def _render_tile(render: torch.Tensor | str | os.PathLike | None, tile: int) -> torch.Tensor:
    if render is None:
        return torch.ones(3, tile, tile)
    img = render if torch.is_tensor(render) else _images.load(render)
    return _fit(img[0] if img.dim() == 4 else img, tile)


def _sheet_image(cards: Sequence[UnitCard], tile: int, count: int) -> Image.Image:
    """One sheet: a row per card, its render (labelled with the unit) then ``count`` patches
    (white where fewer; the first labelled with the unit's single-mindedness)."""
    tiles, labels = [], []
    for card in cards:
        patches = card.patches if card.patches is not None else torch.ones(0, 3, tile, tile)
        row = [_render_tile(card.render, tile)] + [_fit(p, tile) for p in patches[:count]]
        tiles += row + [torch.ones(3, tile, tile)] * (count + 1 - len(row))
        score = "" if card.score is None else _score(float(card.score))
        labels += ([f"#{card.unit}", score] + [""] * count)[:count + 1]
    return _images.grid(tiles, labels, ncol=count + 1, pad=3)


def sheet_png(path: str | os.PathLike, sheets: Mapping[str, Sequence[UnitCard]],
              tile: int = 64, patches: int | None = None) -> Path:
    """Write one PNG of ``sheets`` side by side (the feature sheet beside the neuron sheet),
    each titled by its name and holding a row per unit: its render (labelled ``#unit``),
    then its top patches (the first labelled with the unit's single-mindedness score).

    Args:
        path: the PNG to write.
        sheets: title -> the cards of that sheet, in order (e.g. ``{"features": ...,
            "neurons": ...}``).
        tile: the side of every image in the figure.
        patches: patches per row; None for the most any card has.
    """
    if not sheets or not any(sheets.values()):
        raise FeatvizError("sheet_png needs at least one sheet with a unit")
    count = patches if patches is not None else max(
        (len(c.patches) for cards in sheets.values() for c in cards if c.patches is not None),
        default=0)
    parts = [(name, _sheet_image(cards, tile, count)) for name, cards in sheets.items() if cards]
    head, gap = 18, 16
    width = sum(p.width for _, p in parts) + gap * (len(parts) - 1)
    figure = Image.new("RGB", (width, head + max(p.height for _, p in parts)), "white")
    draw, font, x = ImageDraw.Draw(figure), ImageFont.load_default(), 0
    for name, part in parts:
        draw.text((x + 3, 3), f"{name}: #unit, single-mindedness", fill="black", font=font)
        figure.paste(part, (x, head))
        x += part.width + gap
    return write_atomic(path, lambda tmp: figure.save(tmp, format="PNG"))
