"""One self-contained HTML page of the building-block views of a photo (``featviz blocks``):
the semantic dictionary (hover a position of the photo to see its top channels), activation
grids beside the photo, neuron groups with their renders and maps, and the group-to-class
attribution table. Every picture is embedded; the page needs no server and no network."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import torch
from PIL import Image

from ..core import notebook as _nb
from ..core.files import write_text
from ..methods.building_blocks import BuildingBlocks

_STYLE = """body{font-family:sans-serif;margin:16px;max-width:1200px}
h2{margin-top:28px;border-bottom:1px solid #ccc}
.photo{position:relative;display:inline-block;vertical-align:top}
.photo img{width:448px;display:block}
.cells{position:absolute;inset:0;display:grid}
.cells div{outline:1px solid rgba(255,255,255,0.08)}
.cells div:hover,.cells div.on{outline:2px solid #e22;z-index:1}
#entry{display:inline-block;vertical-align:top;margin-left:16px;width:560px}
#entry figure{display:inline-block;margin:0 8px 8px 0;text-align:center;font-size:12px}
#entry img{width:128px;height:128px;image-rendering:auto}
.wide img{width:896px;max-width:100%;image-rendering:auto}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px}
td.pos{background:#e6f0ff} td.neg{background:#ffe9e6}
.groups figure{display:inline-block;margin:0 10px 10px 0;text-align:center;font-size:12px}
.groups img{width:160px;display:block}"""

# Hovering (or clicking) a cell shows that position's top channels; on load the strongest
# position is shown, and the count of decoded images is written for a headless browser test.
_SCRIPT = """function show(y,x){var e=ENTRIES[y][x],p=document.getElementById('entry');
var h='<b>'+LAYER+' y='+y+' x='+x+'</b><br>';e.forEach(function(cv){
h+='<figure><img alt="channel '+cv[0]+'" src="'+RENDERS[cv[0]]+'"><figcaption>channel '+cv[0]+
'<br>'+cv[1].toPrecision(3)+'</figcaption></figure>';});p.innerHTML=h;
document.querySelectorAll('.cells div').forEach(function(d){d.classList.toggle('on',
d.dataset.y==y&&d.dataset.x==x);});}
window.addEventListener('load',function(){show(FIRST[0],FIRST[1]);
setTimeout(function(){var n=0;document.querySelectorAll('img').forEach(function(i){
if(i.complete&&i.naturalWidth>0)n++;});document.body.setAttribute('data-images-loaded',n);
document.body.setAttribute('data-images',document.querySelectorAll('img').length);},300);});"""


def _png(img: torch.Tensor | Image.Image) -> str:
    """A data URI of a picture (a tensor or a PIL image) at its own size."""
    if isinstance(img, Image.Image):
        return _nb.data_uri(img, max_side=1 << 14, min_side=1)
    return _nb.own_size_uri(img)


def _img(img, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='{_png(img)}'>"


def _dictionary(blocks: BuildingBlocks) -> tuple[str, str]:
    """The dictionary section and its data (renders, entries) as a script."""
    d = blocks.dictionary
    h, w = d.shape
    cells = "".join(f"<div data-y='{y}' data-x='{x}' onmouseover='show({y},{x})' "
                    f"onclick='show({y},{x})'></div>" for y in range(h) for x in range(w))
    section = (f"<h2>Semantic dictionary: {html.escape(d.layer)}</h2><p>Hover a position of "
               f"the photo: the {d.channels.shape[2]} channels of <code>{html.escape(d.layer)}"
               f"</code> that fire most there ({html.escape(d.by)}), each shown by its feature "
               "visualization.</p><div class='photo'>"
               f"{_img(d.image, 'photo')}<div class='cells' style='grid-template-columns:"
               f"repeat({w},1fr);grid-template-rows:repeat({h},1fr)'>{cells}</div></div>"
               "<div id='entry'></div>")
    entries = [[[[int(c), float(v)] for c, v in zip(d.channels[y, x], d.values[y, x],
                                                    strict=True)]
                for x in range(w)] for y in range(h)]
    renders = {int(c): _png(img) for c, img in d.renders.items()}
    first = d.strongest(1)[0]
    data = (f"var LAYER={json.dumps(d.layer)};var ENTRIES={json.dumps(entries)};"
            f"var RENDERS={json.dumps(renders)};var FIRST={json.dumps(list(first))};")
    return section, data


def _grids(blocks: BuildingBlocks) -> str:
    parts = []
    for layer, grid in blocks.grids.items():
        h, w = grid.shape
        parts.append(f"<h2>Activation grid: {html.escape(layer)}</h2><p>For each of the "
                     f"{h}x{w} positions of <code>{html.escape(layer)}</code>, a picture of its "
                     "activation vector, placed where that position looks at the photo.</p>"
                     f"<div class='wide'>{_img(grid.beside_photo(), 'grid ' + layer)}</div>")
    return "".join(parts)


def _groups(blocks: BuildingBlocks) -> str:
    g = blocks.groups
    renders = blocks.group_renders.shown()
    maps = g.map_images()
    figures = "".join(
        f"<figure>{_img(renders[j], f'group {j}')}{_img(maps[j], f'group {j} map')}"
        f"<figcaption style='color:rgb({','.join(str(int(255 * v)) for v in g.colours[j])})'>"
        f"&#9632; group {j}</figcaption></figure>" for j in range(len(renders)))
    return (f"<h2>Neuron groups: {html.escape(g.layer)}</h2><p>The activations of "
            f"<code>{html.escape(g.layer)}</code> on this photo factorized into {len(renders)} "
            f"groups (non-negative matrix factorization, relative reconstruction error "
            f"{g.error:.2f}): each group's feature visualization, where it fires, and all of "
            f"them over the photo.</p><div class='groups'>{figures}</div>"
            f"<div class='groups'><figure>{_img(g.overlay(), 'groups over the photo')}"
            "<figcaption>all groups</figcaption></figure></div>")


def _table(blocks: BuildingBlocks) -> str:
    t = blocks.group_classes
    head = "".join(f"<th>{html.escape(n)}</th>" for n in t.names)
    rows = "".join(
        f"<tr><th>group {j}</th>" + "".join(
            f"<td class='{'pos' if v > 0 else 'neg'}'>{v:+.2f}</td>" for v in row.tolist())
        + "</tr>" for j, row in enumerate(t.values))
    return (f"<h2>Which group speaks for which class</h2><p>Attribution of each class logit to "
            f"each group ({html.escape(t.method)} × the group's part of the activation).</p>"
            f"<table><tr><th></th>{head}</tr>{rows}</table>")


def write(blocks: BuildingBlocks, path: str | os.PathLike, title: str = "") -> Path:
    """Write the page of ``blocks`` to ``path`` (one .html file, pictures embedded).

    Args:
        blocks: the building blocks to show.
        path: the .html file to write.
        title: the page title; empty for a default one.
    """
    title = title or f"featviz building blocks: {blocks.layer}"
    classes = ", ".join(f"{html.escape(n)} {p:.2f}" for _, n, p in blocks.top_classes)
    dictionary, data = _dictionary(blocks)
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in blocks.seconds.items())
    body = (f"<h1>{html.escape(title)}</h1><p>Top classes: {classes}</p>{dictionary}"
            f"{_grids(blocks)}{_groups(blocks)}{_table(blocks)}"
            f"<p style='color:#777;font-size:12px'>{html.escape(timing)}</p>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style><script>{data}{_SCRIPT}</script></head>"
            f"<body>{body}</body></html>")
    return write_text(path, page)
