"""A unit's page of the microscope site (``SITE/<layer>/<channel>.html``): its feature
visualization, diversity facets, dataset examples, top classes by attribution, orientation
tuning as polar plots, and its strongest incoming and outgoing connections, each linked to
the other unit's page where the site has it. A view not computed yet, or that does not apply,
says so."""

from __future__ import annotations

from collections.abc import Mapping

from ..path_check import MEANING, caption
from .page_parts import (
    NOT_YET,
    SiteView,
    data_img,
    esc,
    img,
    link,
    mapping,
    number,
    page,
    polar_svg,
    scrub,
    status,
    up,
)
from .store import layer_page, unit_page

_TITLES = {"incoming": "Strongest incoming units", "outgoing": "Strongest outgoing units"}
_NONE = {"incoming": "none: no earlier layer feeds this one in the site",
         "outgoing": "none: no later layer of the site takes this one"}


def _section(ident: str, title: str, body: str) -> str:
    return f"<section id='{ident}'><h2>{esc(title)}</h2>{body}</section>"


def _unit_entry(view: SiteView, task: str, layer: str, channel: int) -> tuple[str | None, object]:
    """(the note standing in, None) when ``task`` has no result for the unit, else (None,
    the unit's entry of the task's ``units``)."""
    payload = view.task(layer, task)
    note = status(payload)
    if note:
        return note, None
    entry = mapping(payload.get("units")).get(str(channel))
    if entry is None:
        return f"<p class='missing'>{NOT_YET} for this unit</p>", None
    return None, entry


def _visualization(view: SiteView, layer: str, rec: Mapping) -> str:
    channel = rec["channel"]
    checked = mapping(mapping(view.task(layer, "paths")).get("units")).get(str(channel))
    line = caption(checked)  # how far the picture is processed like the unit's photos
    path = f"<br><span class='path' title='{esc(MEANING)}'>{esc(line)}</span>" if line else ""
    return (f"<figure>{img(up(view.vis(layer, channel)), f'{layer} unit {channel}', 'vis')}"
            f"<figcaption>objective {esc(number(rec.get('value'), '.4g'))} · seed "
            f"{esc(rec.get('seed', '?'))}{path}</figcaption></figure>")


def _facets(view: SiteView, layer: str, channel: int) -> str:
    note, entry = _unit_entry(view, "facets", layer, channel)
    if note:
        return note
    return data_img(view, layer, entry, f"diversity facets of {layer} unit {channel}", "wide")


def _examples(view: SiteView, rec: Mapping) -> str:
    """The sweep's top-k strip (patches above their projections) and each photo's class."""
    top = rec.get("topk")
    path = view.sweep_file(top.get("file")) if isinstance(top, Mapping) else None
    if path is None:
        return "<p class='na'>none: the sweep kept no dataset examples (it ran without photos)</p>"
    listed = top.get("sources")
    sources = [str(s) for s in listed] if isinstance(listed, list) else []
    classes = top.get("classes")
    classes = classes if isinstance(classes, list) and len(classes) == len(sources) else None
    items = "".join(f"<li>{esc(s)}{f' — {esc(c)}' if c else ''}</li>"
                    for s, c in zip(sources, classes or [None] * len(sources), strict=True))
    return (f"<p>the {len(sources)} photos that excite the unit most: patches above their "
            f"projections, left to right</p>"
            f"{img(up(path), 'top photos: ' + ', '.join(sources), 'wide')}<ol>{items}</ol>")


def _classes(view: SiteView, layer: str, channel: int) -> str:
    note, entry = _unit_entry(view, "classes", layer, channel)
    if note:
        return note
    rows = [f"<li>{esc(pair[0])} <span class='settings'>{esc(number(pair[1]))}</span></li>"
            for pair in (entry if isinstance(entry, list) else [])
            if isinstance(pair, (list, tuple)) and len(pair) == 2]
    photos = view.task(layer, "classes").get("photos")
    over = f" over {esc(photos)} photos" if photos is not None else ""
    return f"<p>by attribution{over}</p><ol>{''.join(rows)}</ol>"


def _family(name: str, family: Mapping, layer: str, channel: int) -> str:
    unit = mapping(family.get("units")).get(str(channel))
    if not isinstance(unit, Mapping):
        return (f"<figure><h3>{esc(name)}</h3><p class='missing'>{NOT_YET} for this unit</p>"
                "</figure>")
    period = family.get("period")
    period = float(period) if isinstance(period, (int, float)) and period > 0 else 180.0
    preferred = unit.get("preferred")
    preferred = float(preferred) if isinstance(preferred, (int, float)) else None
    angles, curve = family.get("orientations"), unit.get("curve")
    svg = polar_svg(angles if isinstance(angles, list) else [],
                    curve if isinstance(curve, list) else [], period, preferred,
                    f"{name}: response of {layer} unit {channel} by orientation")
    member = "yes" if unit.get("member") else "no"
    return (f"<figure class='tuning'><h3>{esc(name)}</h3>{svg}<figcaption>circular variance "
            f"{esc(number(unit.get('circular_variance'), '.2f'))} · "
            f"{'unimodal' if unit.get('unimodal') else 'not unimodal'} · preferred "
            f"{esc(number(preferred, 'g'))}° · period {period:g}°<br>member of the family: "
            f"<b>{member}</b></figcaption></figure>")


def _tuning(view: SiteView, layer: str, channel: int) -> str:
    payload = view.task(layer, "tuning")
    note = status(payload)
    if note:
        return note
    families = payload.get("families")
    if not isinstance(families, Mapping) or not families:
        return "<p class='na'>no stimulus family was measured</p>"
    return "<div class='grid'>" + "".join(
        _family(str(name), fam, layer, channel) for name, fam in families.items()
        if isinstance(fam, Mapping)) + "</div>"


def _other_unit(view: SiteView, layer: str, channel: int, strength: float) -> str:
    """One connection: the other unit's thumbnail where the site has its image, its name (a
    link to its page where there is one) and the strength."""
    thumb = view.vis(layer, channel)
    name = f"{layer} unit {channel}"
    shown = img(up(thumb), name, "mini") if thumb else ""
    shown += link(up(unit_page(layer, channel)), name) if view.has_page(layer, channel) \
        else esc(name)
    return f"<li>{shown} <span class='settings'>{esc(number(strength, '+.3g'))}</span></li>"


def _pairs(entries: object) -> list[tuple[int, float]]:
    """The well-formed [channel, strength] pairs of a connection list."""
    found = []
    for pair in entries if isinstance(entries, list) else []:
        if (isinstance(pair, (list, tuple)) and len(pair) == 2
                and isinstance(pair[0], (int, float)) and float(pair[0]).is_integer()
                and isinstance(pair[1], (int, float))):
            found.append((int(pair[0]), float(pair[1])))
    return found


def _side(view: SiteView, payload: Mapping, channel: int, side: str) -> str:
    """The incoming (from the ``source`` layer) or outgoing (into the ``target`` layer)
    connections of a unit, positive and negative."""
    key = "source" if side == "incoming" else "target"
    head = f"<h3>{_TITLES[side]}</h3>"
    if payload.get(f"{key}_error"):
        return f"{head}<p class='na'>does not apply: {esc(scrub(payload[f'{key}_error']))}</p>"
    other = payload.get(key)
    if not other:
        return f"{head}<p class='na'>{_NONE[side]}</p>"
    entry = mapping(payload.get(side)).get(str(channel))
    if not isinstance(entry, Mapping):
        return f"{head}<p class='missing'>{NOT_YET} for this unit</p>"
    where = "from" if side == "incoming" else "into"
    lists = []
    for sign in ("positive", "negative"):
        items = "".join(_other_unit(view, str(other), c, s) for c, s in _pairs(entry.get(sign)))
        lists.append(f"<div class='{sign}'><p>{sign}, {where} {esc(other)}</p>"
                     f"<ul class='links'>{items or '<li>none</li>'}</ul></div>")
    return f"<div id='{side}'>{head}<div class='cols'>{''.join(lists)}</div></div>"


def _weights(view: SiteView, layer: str, channel: int) -> str:
    payload = view.task(layer, "weights")
    note = status(payload)
    if note:
        return note
    return ("<p class='settings'>by expanded weight: the linear path between the two "
            "layers</p>" + "".join(_side(view, payload, channel, s)
                                   for s in ("incoming", "outgoing")))


def _nav(layer: str, channel: int, before: int | None, after: int | None) -> str:
    prev = link(up(unit_page(layer, before)), f"← unit {before}", "prev") \
        if before is not None else "<span class='na'>first unit</span>"
    nxt = link(up(unit_page(layer, after)), f"unit {after} →", "next") \
        if after is not None else "<span class='na'>last unit</span>"
    return (f"<nav class='units'>{prev} · {nxt}</nav><nav>{link('../index.html', 'all layers')}"
            f" › {link(up(layer_page(layer)), layer)} › unit {channel}</nav>")


def unit_html(view: SiteView, layer: str, channel: int, before: int | None,
              after: int | None) -> str:
    """The page of a unit whose feature visualization is finished.

    Args:
        view: the site.
        layer: the unit's layer.
        channel: the unit's channel.
        before: the layer's previous finished unit, or None.
        after: the layer's next finished unit, or None.
    """
    rec = view.record(layer, channel)
    body = [_nav(layer, channel, before, after), f"<h1>{esc(layer)} · unit {channel}</h1>",
            _section("visualization", "Feature visualization", _visualization(view, layer, rec)),
            _section("facets", "Diversity facets", _facets(view, layer, channel)),
            _section("examples", "Dataset examples", _examples(view, rec)),
            _section("classes", "Top classes", _classes(view, layer, channel)),
            _section("tuning", "Orientation tuning", _tuning(view, layer, channel)),
            _section("weights", "Connections", _weights(view, layer, channel))]
    model = view.meta.get("model", "")
    return page(f"{layer} unit {channel} · {model} · featviz microscope", "".join(body))
