"""The HTML page of the feature-map viewer's reports (:func:`featviz.methods.featuremaps.report`,
:meth:`~featviz.methods.featuremaps.Comparison.report`): one self-contained file, its images
embedded as data URLs, a side bar of links to the sections."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

import torch
from PIL import Image

from ..core.files import write_text


def histogram_image(values: torch.Tensor, bins: int = 60, size: tuple[int, int] = (260, 90),
                    title: str = "") -> Image.Image:
    """A small log-count histogram drawn with PIL (fast enough for hundreds of layers).

    Args:
        values: the activations, any shape.
        bins: how many bars.
        size: the bars' width and height in pixels (a line of numbers goes below).
        title: text written in the top left corner.
    """
    from PIL import ImageDraw

    v = values.float().flatten()
    lo, hi = float(v.min()), float(v.max())
    counts = torch.histc(v, bins=bins, min=lo, max=hi if hi > lo else lo + 1)
    w, h = size
    pic = Image.new("RGB", (w, h + 14), (255, 255, 255))
    draw = ImageDraw.Draw(pic)
    top = math.log1p(float(counts.max())) or 1.0
    bar = w / bins
    for i, c in enumerate(counts.tolist()):
        height = (h - 4) * math.log1p(c) / top
        draw.rectangle([i * bar, h - height, (i + 1) * bar - 1, h], fill=(64, 98, 187))
    draw.text((2, h + 1), f"{lo:.3g}", fill=(0, 0, 0))
    draw.text((w - 40, h + 1), f"{hi:.3g}", fill=(0, 0, 0))
    if title:
        draw.text((2, 1), title, fill=(0, 0, 0))
    return pic


def img_tag(pic: Image.Image, alt: str) -> str:
    """``pic`` as an ``<img>`` with the PNG inside (a data URL), so the page is one file.

    Args:
        pic: the picture.
        alt: its alternative text.
    """
    buf = io.BytesIO()
    pic.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


_STYLE = """body{font-family:sans-serif;margin:0;display:flex}
nav{width:220px;height:100vh;overflow:auto;border-right:1px solid #ccc;padding:8px;flex:none}
nav a{display:block;font-size:13px;text-decoration:none;color:#225}
main{padding:12px;overflow:auto;height:100vh;flex:1}
section{margin-bottom:28px} img{max-width:100%;image-rendering:pixelated}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:2px 6px}
.pair img{max-width:48%;margin-right:1%}"""

# counts the images that decoded, so a headless browser test can see they were displayed
_SCRIPT = """window.addEventListener('load',function(){var n=0;
document.querySelectorAll('img').forEach(function(i){if(i.naturalWidth>0)n++;});
document.body.setAttribute('data-images-loaded',n);});"""


def write_page(path: str | os.PathLike, title: str, nav: dict[str, str], body: str) -> Path:
    """Write the page to ``path`` (atomically); returns ``path``.

    Args:
        path: the .html file.
        title: the page's title and heading.
        nav: the side bar's links, each section's id to its link text.
        body: the HTML of the sections.
    """
    links = "".join(f"<a href='#{html.escape(n)}'>{html.escape(text)}</a>"
                    for n, text in nav.items())
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
            f"<nav id='layers'><b>layers</b>{links}</nav><main><h1>{html.escape(title)}</h1>"
            f"{body}</main></body></html>")
    return write_text(path, page)
