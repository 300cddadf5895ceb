"""The pieces the microscope pages are made of: the page frame (inline style and the
image-count script), escaped links and images, durations and sizes, the settings line, the
polar plot of a tuning curve drawn as inline SVG, and :class:`SiteView`, what one pass of the
page writer knows about the site. Every path here is relative to the site folder; pages one
folder down put ``../`` before it (:func:`up`)."""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from ...core.files import folder_name
from . import store

STYLE = """body{font-family:sans-serif;margin:16px;color:#222;max-width:1400px}
a{color:#225} h2{margin:24px 0 8px;font-size:18px} h3{margin:12px 0 4px;font-size:15px}
table{border-collapse:collapse;font-size:14px} td,th{border:1px solid #ccc;padding:4px 8px}
td.num{text-align:right} td.done{color:#161} td.na{color:#777} td.todo{color:#a60}
.grid{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0;border:1px solid #ddd;padding:4px;font-size:12px;width:min-content}
figure img{display:block;image-rendering:pixelated}
img.thumb{width:120px;height:120px} img.vis{width:320px;height:320px}
img.photo{width:200px;height:200px;object-fit:contain}
img.wide{height:180px;max-width:100%;object-fit:contain;image-rendering:pixelated}
img.big{height:360px;max-width:100%;object-fit:contain}
img.mini{width:40px;height:40px;vertical-align:middle;image-rendering:pixelated;margin-right:4px}
.pair{display:flex;gap:4px}
.missing{color:#a60} .na{color:#777} .settings{font-size:13px;color:#555}
nav{font-size:14px;margin-bottom:8px} nav.units{float:right}
ul.links{list-style:none;padding:0;margin:0} ul.links li{margin:2px 0}
.cols{display:flex;flex-wrap:wrap;gap:32px} svg text{font-size:10px;fill:#555}"""

# counts the images that decoded, so a headless browser test can see they were displayed;
# counted again as each later image arrives (a layer's grid loads lazily, after the page)
SCRIPT = """function fvCount(){if(!document.body)return;var n=0;
for(var i of document.images){if(i.complete&&i.naturalWidth>0)n++;}
document.body.setAttribute('data-images-loaded',n);}
window.addEventListener('load',fvCount);document.addEventListener('load',fvCount,true);"""

NOT_YET = "not computed yet"
# an absolute path of two parts or more, not part of a URL
_PATH = re.compile(r"(?<![\w.:/])(?:/[\w.+@~-]+){2,}")


def esc(value: object) -> str:
    """``value`` as text escaped for HTML content and single- or double-quoted attributes.

    Args:
        value: anything; shown as ``str(value)``.
    """
    return html.escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A whole HTML page with the inline style and image-count script.

    Args:
        title: the page's title (escaped here).
        body: the body's HTML.
    """
    # the empty icon keeps a browser from asking a server for /favicon.ico, which is not there
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<link rel='icon' href='data:,'><style>{STYLE}</style><script>{SCRIPT}</script>"
            f"</head><body>{body}</body></html>")


def up(path: str) -> str:
    """A site-relative path as seen from a page one folder down (a layer or unit page).

    Args:
        path: relative to the site folder.
    """
    return f"../{path}"


def href(path: str) -> str:
    """``path`` (relative, ``/``-separated) as an escaped URL for ``href`` or ``src``.

    Args:
        path: a relative file path.
    """
    return esc(quote(path, safe="/"))


def link(path: str, text: str, rel: str | None = None) -> str:
    """A link to ``path`` showing ``text`` (both escaped here).

    Args:
        path: the relative URL.
        text: the link's text.
        rel: its ``rel`` attribute (``prev``, ``next``), if any.
    """
    extra = f" rel='{esc(rel)}'" if rel else ""
    return f"<a href='{href(path)}'{extra}>{esc(text)}</a>"


def img(path: str, alt: str, cls: str, lazy: bool = False) -> str:
    """An image of the site by relative URL, its ``alt`` also its tooltip.

    Args:
        path: the relative URL of the image file.
        alt: what it shows.
        cls: its CSS class (``thumb``, ``vis``, ``photo``, ``wide`` (a strip, a fixed height),
            ``big`` (the same, taller), ``mini``).
        lazy: load it only when scrolled near (for a layer's grid of hundreds of units).
    """
    loading = " loading='lazy'" if lazy else ""
    return (f"<img class='{esc(cls)}' alt='{esc(alt)}' title='{esc(alt)}' "
            f"src='{href(path)}'{loading}>")


def scrub(text: object) -> str:
    """``text`` with every absolute path cut to its last part (an error message kept as a
    reason may name a file of the machine that made the site, which the pages do not show).

    Args:
        text: a reason or an error message.
    """
    return _PATH.sub(lambda m: m.group(0).rsplit("/", 1)[-1], str(text))


def status(payload: Mapping | None) -> str | None:
    """The paragraph that stands in for a task's view when the task is missing ("not
    computed yet") or does not apply (its reason); None when it is computed.

    Args:
        payload: the task's stored result, or None.
    """
    if payload is None:
        return f"<p class='missing'>{NOT_YET}</p>"
    if "not_applicable" in payload:
        return f"<p class='na'>does not apply: {esc(scrub(payload['not_applicable']))}</p>"
    return None


def mapping(value: object) -> Mapping:
    """``value`` when it is a dict, else an empty one: a hand-edited file may hold anything
    where a dict belongs, and a page shows what it can rather than fail.

    Args:
        value: a value read from JSON.
    """
    return value if isinstance(value, Mapping) else {}


def seconds_of(payload: Mapping | None) -> float:
    """The ``seconds`` a stored task took (0 when absent or not a number).

    Args:
        payload: a task's stored result, or None.
    """
    value = mapping(payload).get("seconds")
    return float(value) if isinstance(value, (int, float)) else 0.0


def number(value: object, spec: str = ".3g") -> str:
    """``value`` formatted with ``spec`` when it is a number, else ``?``.

    Args:
        value: the value (a JSON number, or anything else).
        spec: a format spec.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "?"
    return format(value, spec)


def duration(seconds: float | None) -> str:
    """Seconds as a person reads them: ``12.3 s``, ``4.5 min``, ``2.1 h``; ``?`` when unknown.

    Args:
        seconds: a duration, or None.
    """
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def megabytes(size: int) -> str:
    """A size in bytes as megabytes, two decimals.

    Args:
        size: bytes.
    """
    return f"{size / 1e6:.2f} MB"


def shape_text(shape: object) -> str:
    """A layer's shape as ``C×H×W`` (or ``T×C``); ``?`` when unknown.

    Args:
        shape: a list of ints, or anything else.
    """
    if isinstance(shape, (list, tuple)) and shape:
        return "×".join(str(s) for s in shape)
    return "?"


def _shown(value: object) -> str:
    """A setting's value in the settings line: a path by its file name only."""
    if isinstance(value, str):
        return store.file_label(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_shown(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps({k: _shown(v) for k, v in value.items()})
    return str(value)


def settings_line(meta: Mapping) -> str:
    """The model, its weights (the file's name only: the page is shared, the folder it sat in
    is nobody else's business), the setting, the photos' folder (by name) and the setting's
    values, as one escaped line.

    Args:
        meta: the contents of microscope.json.
    """
    parts = [f"model {_shown(meta.get('model', '?'))}"]
    if meta.get("weights") is not None:
        parts.append(f"weights {_shown(meta['weights'])}")
    if meta.get("setting") is not None:
        parts.append(f"setting {_shown(meta['setting'])}")
    if meta.get("images") is not None:
        parts.append(f"photos {_shown(meta['images'])}")
    settings = meta.get("settings")
    if isinstance(settings, Mapping):
        parts += [f"{k} {_shown(v)}" for k, v in settings.items() if v is not None]
    return esc(" · ".join(parts))


def _safe_relative(name: object) -> bool:
    """Whether ``name`` is a relative path that stays inside its folder."""
    if not isinstance(name, str) or not name or "\\" in name or ":" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


@dataclass
class SiteView:
    """What the page writer read of a site: its description, its layers in order, the
    finished feature visualizations by layer and channel, the channels each layer's sweep
    plans, and each layer's stored tasks."""

    root: Path
    meta: dict
    layers: list[str]
    records: dict[str, dict[int, dict]] = field(default_factory=dict)
    planned: dict[str, list[int]] = field(default_factory=dict)
    data: dict[str, dict[str, dict]] = field(default_factory=dict)

    def record(self, layer: str, channel: int) -> dict | None:
        """The sweep record of a finished unit, or None.

        Args:
            layer: the unit's layer.
            channel: the unit's channel.
        """
        return self.records.get(layer, {}).get(channel)

    def vis(self, layer: str, channel: int) -> str | None:
        """The site-relative path of a unit's feature visualization, or None.

        Args:
            layer: the unit's layer.
            channel: the unit's channel.
        """
        rec = self.record(layer, channel)
        return f"{store.SWEEP_DIR}/{rec['file']}" if rec else None

    def has_page(self, layer: str, channel: int) -> bool:
        """Whether the unit has a page in this site (its layer is in it, its image done).

        Args:
            layer: the unit's layer.
            channel: the unit's channel.
        """
        return layer in self.layers and self.record(layer, channel) is not None

    def sweep_file(self, name: object) -> str | None:
        """The site-relative path of a file of the sweep folder when it exists, else None.

        Args:
            name: the file's path relative to the sweep folder, from a record.
        """
        if _safe_relative(name) and (self.root / store.SWEEP_DIR / name).is_file():
            return f"{store.SWEEP_DIR}/{name}"
        return None

    def data_file(self, layer: str, name: object) -> str | None:
        """The site-relative path of an image a task of ``layer`` made, when it exists and
        lies inside the layer's data folder, else None.

        Args:
            layer: the layer whose data folder holds the image.
            name: the file's path relative to that folder, from the task's JSON.
        """
        if _safe_relative(name) and (store.layer_dir(self.root, layer) / name).is_file():
            return f"{store.DATA_DIR}/{folder_name(layer)}/{name}"
        return None

    def task(self, layer: str, task: str) -> dict | None:
        """A layer's stored task result, or None.

        Args:
            layer: the layer.
            task: one of :data:`~.store.TASKS`.
        """
        return self.data.get(layer, {}).get(task)


def data_img(view: SiteView, layer: str, name: object, alt: str, cls: str) -> str:
    """An image a task of ``layer`` made, from a page one folder down; a note in its place
    when the file is missing.

    Args:
        view: the site.
        layer: the layer whose data folder holds the image.
        name: the image's path relative to that folder, from the task's JSON.
        alt: what it shows.
        cls: its CSS class.
    """
    path = view.data_file(layer, name)
    if path is None:
        return f"<span class='missing'>image missing: {esc(name)}</span>"
    return img(up(path), alt, cls)


def polar_svg(orientations: Sequence[float], curve: Sequence[float], period: float,
              preferred: float | None, title: str, size: int = 200) -> str:
    """A tuning curve as an inline SVG polar plot: the response (below zero drawn as zero) at
    each orientation as a closed line in a circle, 0° to the right and angles counter-
    clockwise; a 180° period is drawn twice round, as an orientation is the same line both
    ways. The preferred orientation is marked by a red spoke.

    Args:
        orientations: the angles in degrees.
        curve: the response at each angle.
        period: the angles' period, 180 (orientation) or 360 (direction).
        preferred: the preferred angle in degrees, or None.
        title: what the plot shows (its tooltip).
        size: the plot's side in pixels.
    """
    # a hand-edited or cut-short curve loses its unmatched tail rather than the whole plot
    pairs = sorted((float(a) % period, max(float(v), 0.0))
                   for a, v in zip(orientations, curve, strict=False)
                   if isinstance(a, (int, float)) and isinstance(v, (int, float)))
    centre, radius = size / 2, size / 2 - 16
    top = max((v for _, v in pairs), default=0.0) or 1.0
    turns = max(1, round(360 / period))

    def xy(angle: float, r: float) -> tuple[float, float]:
        theta = math.radians(angle)
        return centre + r * math.cos(theta), centre - r * math.sin(theta)

    points = " ".join("{:.1f},{:.1f}".format(*xy(a + k * period, radius * v / top))
                      for k in range(turns) for a, v in pairs)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{size}' height='{size}' "
             f"viewBox='0 0 {size} {size}' role='img'><title>{esc(title)}</title>",
             f"<circle cx='{centre}' cy='{centre}' r='{radius}' fill='none' stroke='#bbb'/>",
             f"<circle cx='{centre}' cy='{centre}' r='{radius / 2}' fill='none' stroke='#ddd'/>",
             f"<line x1='{centre - radius}' y1='{centre}' x2='{centre + radius}' y2='{centre}' "
             "stroke='#ddd'/>",
             f"<line x1='{centre}' y1='{centre - radius}' x2='{centre}' y2='{centre + radius}' "
             "stroke='#ddd'/>"]
    for angle, anchor, dy in ((0, "start", 4), (90, "middle", -2), (180, "end", 4),
                              (270, "middle", 10)):
        x, y = xy(angle, radius + 3)
        parts.append(f"<text x='{x:.1f}' y='{y + dy:.1f}' text-anchor='{anchor}'>"
                     f"{angle % period:g}°</text>")
    if preferred is not None:
        for k in range(turns):
            x, y = xy(preferred + k * period, radius)
            parts.append(f"<line class='preferred' x1='{centre}' y1='{centre}' x2='{x:.1f}' "
                         f"y2='{y:.1f}' stroke='#c22' stroke-width='2'/>")
    if pairs:
        parts.append(f"<polygon class='curve' points='{points}' fill='rgba(40,60,160,0.15)' "
                     "stroke='#236' stroke-width='1.5'/>")
    parts.append("</svg>")
    return "".join(parts)
