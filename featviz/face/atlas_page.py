"""One self-contained HTML page of an activation atlas (``featviz atlas``): the atlas with
every cell hoverable; hovering (or clicking) a cell shows its render enlarged, how many vectors
it averages, the top classes of their images, the classes its average speaks for, and a few
of the source patches the vectors came from. Every picture is embedded; no server needed."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import torch.nn.functional as F

from ..core import images as _images
from ..core import notebook as _nb
from ..core.files import write_text
from ..core.sizes import hw
from ..methods.atlas import Atlas
from ..methods.atlas_store import ActivationStore

_STYLE = """body{font-family:sans-serif;margin:16px}
.atlas{position:relative;display:inline-block;vertical-align:top}
.atlas img{width:720px;display:block;image-rendering:auto}
.cells{position:absolute;inset:0;display:grid}
.cells div:hover,.cells div.on{outline:2px solid #e22;z-index:1}
#entry{display:inline-block;vertical-align:top;margin-left:16px;width:420px;font-size:13px}
#entry .big{width:256px;height:256px;display:block;image-rendering:auto}
#entry .patch{width:96px;height:96px;margin:0 6px 6px 0}
table{border-collapse:collapse} td{border:1px solid #ccc;padding:2px 6px}"""

# Hovering (or clicking) a cell shows its entry; on load the fullest cell is shown, and the
# count of decoded images is written on the body for a headless browser test.
_SCRIPT = """function rows(list,fmt){return list.map(function(c){return '<tr><td>'+c[0]+
'</td><td>'+fmt(c[1])+'</td></tr>';}).join('');}
function show(k){var c=CELLS[k],p=document.getElementById('entry');
var h='<b>cell row '+c.row+', column '+c.col+'</b>: '+c.count+' vectors<br>'+
'<img class="big" alt="render of cell '+k+'" src="'+c.render+'">'+
'<p>Top classes of the source images</p><table>'+rows(c.top,function(v){
return (100*v).toFixed(0)+' %';})+'</table>';
if(c.speaks.length){h+='<p>Classes the average vector speaks for (logit change)</p><table>'+
rows(c.speaks,function(v){return v.toFixed(2);})+'</table>';}
h+='<p>Source patches</p>'+c.patches.map(function(s,i){return '<img class="patch" alt="patch '+
i+'" src="'+s+'">';}).join('');p.innerHTML=h;
document.querySelectorAll('.cells div').forEach(function(d){d.classList.toggle('on',
d.dataset.k==k);});}
window.addEventListener('load',function(){show(FIRST);
setTimeout(function(){var n=0;document.querySelectorAll('img').forEach(function(i){
if(i.complete&&i.naturalWidth>0)n++;});document.body.setAttribute('data-images-loaded',n);
document.body.setAttribute('data-images',document.querySelectorAll('img').length);},300);});"""


def _patches(store: ActivationStore, where: dict, indices: list[int],
             side: int = 64) -> list[str]:
    """The part of each source photo around the position a vector came from: a square of
    three positions' width (mid layers see more than that; enough to recognize the thing).
    ``where`` holds the store's image, y and x columns."""
    images, ys, xs = (where[c][indices] for c in ("image", "y", "x"))
    h, w = store.map_shape
    rows, cols = hw(store.size)
    out = []
    for img, y, x in zip(images.tolist(), ys.tolist(), xs.tolist(), strict=True):
        try:
            photo = _images.load(store.images[img], size=(rows, cols))[0]
        except Exception:  # a moved or deleted photo: the page is still worth having
            continue
        step = max(rows, cols) / max(h, w)
        cy, cx, half = (y + 0.5) * step, (x + 0.5) * step, 1.5 * step
        top = int(max(0, min(rows - 2 * half, cy - half)))
        left = int(max(0, min(cols - 2 * half, cx - half)))
        crop = photo[:, top:top + int(2 * half), left:left + int(2 * half)]
        crop = F.interpolate(crop[None], size=(side, side), mode="bilinear",
                             align_corners=False)[0]
        out.append(_nb.own_size_uri(crop))
    return out


def _cells(atlas: Atlas, store: ActivationStore, patches: int) -> list[dict]:
    g = atlas.grid
    speaks = atlas.classes or [[] for _ in g.cells]
    where = {c: store.column(c) for c in ("image", "y", "x")}  # read once, not per cell
    return [{"row": int(r), "col": int(c), "count": int(n),
             "render": _nb.own_size_uri(atlas.renders[k]),
             "top": [[html.escape(name), share] for name, share in g.top_classes[k]],
             "speaks": [[html.escape(name), v] for name, v in speaks[k]],
             "patches": _patches(store, where, g.examples[k][:patches])}
            for k, ((r, c), n) in enumerate(zip(g.cells.tolist(), g.counts, strict=True))]


def write(atlas: Atlas, store: ActivationStore, path: str | os.PathLike, title: str = "",
          patches: int = 4) -> Path:
    """Write the page of ``atlas`` (made from ``store``, whose photos give the source
    patches, ``patches`` per cell) to ``path``: one .html file, pictures embedded.

    Args:
        atlas: the atlas to show.
        store: the activation store the atlas was made from.
        path: the .html file to write.
        title: the page title; empty for a default one.
        patches: source photo patches shown per cell (default 4).
    """
    g = atlas.grid
    what = f" of {' vs '.join(atlas.selected)}" if atlas.selected else ""
    title = title or f"featviz activation atlas{what}: {atlas.layer}"
    table = g.cell_index()
    cells = "".join(
        f"<div data-k='{table[r, c]}' onmouseover='show({table[r, c]})' "
        f"onclick='show({table[r, c]})'></div>" if table[r, c] >= 0 else "<div></div>"
        for r in range(g.n) for c in range(g.n))
    data = (f"var CELLS={json.dumps(_cells(atlas, store, patches))};"
            f"var FIRST={int(g.counts.argmax())};")
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in atlas.seconds.items())
    body = (f"<h1>{html.escape(title)}</h1><p>{len(g.cells)} cells of a {g.n}x{g.n} grid "
            f"over {int(g.counts.sum())} activation vectors of <code>{html.escape(atlas.layer)}"
            f"</code>; each cell is the feature visualization of its vectors' average, "
            "fainter where it holds fewer. Hover a cell.</p><div class='atlas'>"
            f"<img alt='atlas' src='{_nb.own_size_uri(atlas.picture()[0])}'><div class='cells' "
            f"style='grid-template-columns:repeat({g.n},1fr);grid-template-rows:"
            f"repeat({g.n},1fr)'>{cells}</div></div><div id='entry'></div>"
            f"<p style='color:#777;font-size:12px'>{html.escape(timing)}</p>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style><script>{data}{_SCRIPT}</script></head>"
            f"<body>{body}</body></html>")
    return write_text(path, page)
