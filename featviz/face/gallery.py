"""A static HTML gallery of a sweep folder: ``index.html`` with the layers and one page per
layer with a grid of its channels (visualization, channel, objective reached and, where the
sweep kept them, the top-k dataset patches). Every image is embedded as a base64 data URI, so
the pages need nothing but each other; a partial sweep shows what is done.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.files import write_text
from . import path_check
from .sweep import collect, folder_name, is_kind, read_settings

_STYLE = """body{font-family:sans-serif;margin:16px;color:#222}
a{color:#225}
table{border-collapse:collapse;font-size:14px} td,th{border:1px solid #ccc;padding:4px 8px}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;border:1px solid #ddd;padding:4px;font-size:12px;width:min-content}
figure img{display:block;image-rendering:pixelated}
figure img.vis{width:160px;height:160px}
figure img.top{width:160px;margin-top:4px}
td img{width:64px;height:64px;image-rendering:pixelated}
ol.classes{margin:2px 0 0 18px;padding:0;font-size:11px;max-width:160px}
.settings{font-size:13px;color:#555}
.path{color:#555}"""

# counts the images that decoded, so a headless browser test can see they were displayed
_SCRIPT = """window.addEventListener('load',function(){var n=0;
document.querySelectorAll('img').forEach(function(i){if(i.naturalWidth>0)n++;});
document.body.setAttribute('data-images-loaded',n);});"""


def page_name(layer: str) -> str:
    """The file name of ``layer``'s gallery page.

    Args:
        layer: the layer's name.
    """
    return f"layer_{folder_name(layer)}.html"


def _data_uri(path: Path) -> str:
    mime = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
            ".webp": "image/webp"}.get(path.suffix.lower(), "image/png")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _img(path: Path, alt: str, cls: str) -> str:
    text = html.escape(alt, quote=True)
    return f"<img class='{cls}' alt='{text}' title='{text}' src='{_data_uri(path)}'>"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
            f"{body}</body></html>")


def _settings_line(settings: Mapping) -> str:
    """The sweep's settings in one line; a weights file by its name (the page is shared, the
    folder it sat in is nobody else's business)."""
    keys = ("model", "weights", "steps", "size", "lr", "transforms", "seed", "k")
    shown = dict(settings)
    if isinstance(shown.get("weights"), str) and ("/" in shown["weights"] or os.sep in
                                                  shown["weights"]):
        shown["weights"] = Path(shown["weights"]).name
    parts = [f"{k} {shown[k]}" for k in keys if shown.get(k) is not None]
    return html.escape(" · ".join(str(p) for p in parts))


def _unit(layer: str, c: int) -> str:
    """A job's name on the page: ``channel 5``, or for a ``KIND:LAYER`` sweep the objective
    string that renders it again (``mlp:blocks.8:5``)."""
    return f"{layer}:{int(c)}" if is_kind(layer) else f"channel {int(c)}"


def _card(folder: Path, rec: Mapping, check: Mapping | None = None) -> str:
    c, layer = rec["channel"], rec["layer"]
    value = rec.get("value")
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else "?"
    parts = [f"<figure id='c{int(c)}'>", _img(folder / rec["file"], f"{layer} channel {c}", "vis"),
             f"<figcaption>{html.escape(_unit(layer, c))}<br>objective {html.escape(shown)}"]
    line = path_check.caption(check)
    if line:  # recorded by `featviz paths`: how far the picture is processed like photos
        parts.append(f"<br><span class='path' title='{html.escape(path_check.MEANING)}'>"
                     f"{html.escape(line)}</span>")
    top = rec.get("topk")
    if isinstance(top, dict) and top.get("file") and (folder / top["file"]).is_file():
        parts.append(_top_photos(folder, top))
    else:
        parts.append("</figcaption>")
    parts.append("</figure>")
    return "".join(parts)


def _top_photos(folder: Path, top: Mapping) -> str:
    """The end of a card's caption and its top-k strip, then (as OpenAI Microscope pairs a
    unit's image with its dataset examples) the class of each photo, in strip order."""
    sources = [str(s) for s in top.get("sources", [])]
    classes = top.get("classes")
    classes = classes if isinstance(classes, list) and len(classes) == len(sources) else None
    named = [f"{s} ({c})" if c else s for s, c in zip(sources, classes or [None] * len(sources),
                                                      strict=True)]
    out = (f"<br>top-{len(sources)} photos (patches above their projections)</figcaption>"
           f"{_img(folder / top['file'], 'top photos: ' + ', '.join(named), 'top')}")
    if classes:
        items = "".join(f"<li>{html.escape(str(c).split(',')[0] if c else '?')}</li>"
                        for c in classes)
        out += f"<ol class='classes' title='classes of the top photos'>{items}</ol>"
    return out


def write(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the gallery of the sweep in ``folder``: ``index.html`` (default: in the folder,
    else at ``out``) and one ``layer_NAME.html`` page per layer beside it. Returns the index
    path.

    Args:
        folder: the sweep folder.
        out: the index file to write; None for ``index.html`` in ``folder``.
    """
    folder = Path(folder)
    layers = collect(folder)
    meta = read_settings(folder)
    settings = meta.get("settings", {})
    expected: Mapping[str, Sequence[int]] = meta.get("layers", {})
    index = Path(out) if out else folder / "index.html"
    index.parent.mkdir(parents=True, exist_ok=True)
    title = f"featviz sweep: {settings.get('model', folder.name)}"
    rows = []
    checks = path_check.read(folder)
    for layer, recs in layers.items():
        page = page_name(layer)
        of = len(expected.get(layer, [])) or len(recs)
        best = max(recs, key=lambda r: r.get("value") if isinstance(r.get("value"), (int, float))
                   else float("-inf"))
        link = f"<a href='{html.escape(page, quote=True)}'>{html.escape(layer)}</a>"
        rows.append(f"<tr><td>{link}</td><td>{len(recs)} of {of}</td>"
                    f"<td>{_img(folder / best['file'], f'{layer} strongest channel', 'thumb')}"
                    f" {html.escape(_unit(layer, best['channel']))}</td></tr>")
        by_channel = path_check.units_of(checks, layer)
        cards = "\n".join(_card(folder, r, by_channel.get(r["channel"])) for r in recs)
        body = (f"<p><a href='{html.escape(index.name, quote=True)}'>all layers</a></p>"
                f"<h1>{html.escape(layer)}</h1><p class='settings'>{_settings_line(settings)}"
                f" · {len(recs)} of {of} channels</p><div class='grid'>{cards}</div>")
        write_text(index.parent / page, _page(f"{layer} · {title}", body))
    total = sum(len(r) for r in layers.values())
    body = (f"<h1>{html.escape(title)}</h1><p class='settings'>{_settings_line(settings)}</p>"
            f"<p>{total} channels in {len(layers)} layers</p>"
            f"<table id='layers'><tr><th>layer</th><th>channels</th><th>strongest</th></tr>"
            f"{''.join(rows)}</table>")
    write_text(index, _page(title, body))
    return index


__all__ = ["write", "collect", "page_name"]
