"""The microscope site's pages, written from what the site folder holds: ``index.html`` (the
layers with their progress and costs), a page per layer (its units' feature visualizations,
DeepDream and caricatures beside their photos, neuron groups, costs) and a page per finished
unit at a stable URL, ``<layer>/<channel>.html`` (see :mod:`.unit_page`).

Links and images are relative, so the site is browsed from the file system or any static
server, with nothing fetched from elsewhere; images are files of the site, not data URIs, as a
site can hold thousands of units. Pages can be written at any moment of a run: what is done
is shown, what is missing says "not computed yet".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ...core.files import folder_name, write_text
from ...errors import FeatvizError
from ..sweep import collect, read_settings
from . import store
from .page_parts import (
    NOT_YET,
    SiteView,
    data_img,
    duration,
    esc,
    img,
    link,
    mapping,
    megabytes,
    number,
    page,
    scrub,
    seconds_of,
    settings_line,
    shape_text,
    status,
    up,
)
from .unit_page import unit_html

_TASK_TITLES = {"dreams": "DeepDream", "caricatures": "Caricatures", "groups": "Neuron groups",
                "weights": "Connections", "tuning": "Orientation tuning",
                "classes": "Top classes", "facets": "Diversity facets",
                "paths": "Path similarity of the pictures to their top photos"}


def _read_sweep(site: Path) -> tuple[dict[str, dict[int, dict]], dict[str, list[int]]]:
    """The finished units of the site's sweep by layer and channel, and the channels its
    sweep.json plans per layer; both empty before the sweep has written anything."""
    folder = site / store.SWEEP_DIR
    try:
        by_layer = collect(folder)
    except FeatvizError:  # no sweep folder or no manifest yet: no unit is finished
        by_layer = {}
    records = {layer: {int(r["channel"]): r for r in recs} for layer, recs in by_layer.items()}
    planned = read_settings(folder).get("layers", {}) if folder.is_dir() else {}
    return records, planned if isinstance(planned, dict) else {}


def read_site(site: str | os.PathLike) -> SiteView:
    """Everything the pages show, read once: microscope.json, the sweep, each layer's tasks.

    Args:
        site: the site folder.
    """
    root = Path(site)
    if not root.is_dir():
        raise FeatvizError(f"microscope site not found: {root}")
    meta = store.read_meta(root)
    if not meta:
        raise FeatvizError(f"{root} holds no readable {store.META_FILE} (written by "
                           "`featviz microscope` when it starts)")
    records, planned = _read_sweep(root)
    listed = meta.get("layers")
    layers = [str(x) for x in listed] if isinstance(listed, list) else []
    layers += [x for x in records if x not in layers]  # swept, though not listed: still shown
    data = {layer: store.read_layer(root, layer) for layer in layers}
    return SiteView(root, meta, layers, records, planned, data)


def _units_total(view: SiteView, layer: str) -> int | None:
    """How many units the layer's pages will hold: those its sweep plans, else its channel
    count from its shape ([C, H, W] or [T, C]), else None."""
    planned = view.planned.get(layer)
    if isinstance(planned, list) and planned:
        return len(planned)
    shape = mapping(view.meta.get("shapes")).get(layer)
    if isinstance(shape, list) and shape and all(isinstance(s, int) for s in shape):
        return shape[0] if len(shape) == 3 else shape[-1]
    return None


def _costs(view: SiteView, layer: str) -> dict:
    """A layer's sweep seconds (each record's batch time shared among its batch; None when a
    record lacks it), its tasks' seconds, and its bytes on disk (sweep images + data)."""
    recs = view.records.get(layer, {}).values()
    times = [r.get("seconds") for r in recs]
    batches = [r.get("batch") if isinstance(r.get("batch"), int) and r["batch"] > 0 else 1
               for r in recs]
    sweep = None if any(not isinstance(t, (int, float)) for t in times) else sum(
        t / b for t, b in zip(times, batches, strict=True))
    extras = sum(seconds_of(p) for p in view.data.get(layer, {}).values())
    size = (store.folder_bytes(view.root / store.SWEEP_DIR / folder_name(layer))
            + store.folder_bytes(store.layer_dir(view.root, layer)))
    done = len(view.records.get(layer, {}))
    per_unit = (sweep + extras) / done if done and sweep is not None else None
    return {"sweep": sweep, "extras": extras, "bytes": size, "done": done, "per_unit": per_unit}


def _task_cell(payload: Mapping | None) -> str:
    if payload is None:
        return f"<td class='todo' title='{NOT_YET}'>–</td>"
    if "not_applicable" in payload:
        return (f"<td class='na' title='does not apply: {esc(scrub(payload['not_applicable']))}'>"
                "n/a</td>")
    return "<td class='done' title='computed'>✓</td>"


def _layer_row(view: SiteView, layer: str) -> tuple[str, dict]:
    costs = _costs(view, layer)
    total = _units_total(view, layer)
    tasks = "".join(_task_cell(view.task(layer, t)) for t in store.TASKS)
    shape = mapping(view.meta.get("shapes")).get(layer)
    row = (f"<tr><td>{link(store.layer_page(layer), layer)}</td><td>{esc(shape_text(shape))}</td>"
           f"<td class='num'>{costs['done']} of {total if total is not None else '?'}</td>"
           f"{tasks}<td class='num'>{duration(costs['sweep'])}</td>"
           f"<td class='num'>{duration(costs['extras'])}</td>"
           f"<td class='num'>{megabytes(costs['bytes'])}</td>"
           f"<td class='num'>{duration(costs['per_unit'])}</td></tr>")
    return row, costs


def _index_html(view: SiteView) -> str:
    rows, all_costs = zip(*(_layer_row(view, x) for x in view.layers), strict=True) \
        if view.layers else ((), ())
    known = [c["sweep"] for c in all_costs if c["sweep"] is not None]
    run = sum(known) + sum(c["extras"] for c in all_costs)
    unknown = " (some sweep times unknown)" if len(known) < len(all_costs) else ""
    done = sum(c["done"] for c in all_costs)
    model = str(view.meta.get("model", "?"))
    heads = "".join(f"<th title='{esc(_TASK_TITLES[t])}'>{esc(t)}</th>" for t in store.TASKS)
    empty = "" if done else ("<p class='missing' id='empty'>No unit is finished yet: the pages "
                             "fill in as the run goes on.</p>")
    wall = view.meta.get("run_seconds")
    wall = f" · wall time of the runs {duration(float(wall))}" if isinstance(
        wall, (int, float)) else ""
    body = (f"<h1>featviz microscope: {esc(model)}</h1>"
            f"<p class='settings'>{settings_line(view.meta)}</p>"
            f"<p>{done} units finished in {len(view.layers)} layers · compute time "
            f"{duration(run)}{unknown}{wall} · {megabytes(store.folder_bytes(view.root))} "
            "on disk · "
            f"started {esc(view.meta.get('started', '?'))}, updated "
            f"{esc(view.meta.get('updated', '?'))}</p>{empty}"
            f"<table id='layers'><tr><th>layer</th><th>shape</th><th>units done</th>{heads}"
            "<th>sweep</th><th>extras</th><th>on disk</th>"
            "<th title='(sweep + extras) / units done'>per unit</th></tr>"
            f"{''.join(rows)}</table>"
            "<p class='settings'>✓ computed · n/a does not apply (hover for why) · – not "
            "computed yet</p>")
    return page(f"{model} · featviz microscope", body)


def _grid(view: SiteView, layer: str) -> str:
    recs = view.records.get(layer, {})
    if not recs:
        return f"<p class='missing'>{NOT_YET}: no unit of this layer is finished</p>"
    cards = []
    for c, rec in sorted(recs.items()):
        picture = img(up(view.vis(layer, c)), f"{layer} unit {c}", "thumb", lazy=True)
        cards.append(f"<figure id='u{c}'><a href='{c}.html'>{picture}</a><figcaption>"
                     f"{link(f'{c}.html', f'unit {c}')} · "
                     f"{esc(number(rec.get('value'), '.3g'))}</figcaption></figure>")
    return f"<div class='grid'>{''.join(cards)}</div>"


def _photo_pairs(view: SiteView, layer: str, task: str) -> str:
    """DeepDream or caricature images, each beside the photo it started from."""
    payload = view.task(layer, task)
    note = status(payload)
    if note:
        return note
    made = "dream" if task == "dreams" else "caricature"
    cards = []
    items = payload.get("items")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        photo = str(item.get("photo", "?"))
        cards.append(f"<figure><div class='pair'>"
                     f"{data_img(view, layer, item.get('original'), photo, 'photo')}"
                     f"{data_img(view, layer, item.get('file'), f'{made} of {photo}', 'photo')}"
                     f"</div><figcaption>{esc(photo)}: the photo, then its {made}</figcaption>"
                     "</figure>")
    return f"<div class='grid'>{''.join(cards)}</div>" if cards else "<p>no photos</p>"


def _groups(view: SiteView, layer: str) -> str:
    payload = view.task(layer, "groups")
    note = status(payload)
    if note:
        return note
    photo = str(payload.get("photo", "?"))
    return (f"<div>{data_img(view, layer, payload.get('file'), f'groups of {photo}', 'big')}"
            f"<p>{esc(payload.get('k', '?'))} groups of the layer's units (NMF of its "
            f"activations) on {esc(photo)}</p></div>")


def _cost_table(view: SiteView, layer: str) -> str:
    costs = _costs(view, layer)
    rows = [f"<tr><td>feature visualizations (sweep)</td><td>{costs['done']} units</td>"
            f"<td class='num'>{duration(costs['sweep'])}</td><td></td></tr>"]
    for task in store.TASKS:
        payload = view.task(layer, task)
        state = NOT_YET if payload is None else (
            "does not apply" if "not_applicable" in payload else "computed")
        took = duration(seconds_of(payload)) if payload else ""
        rows.append(f"<tr><td>{esc(task)}</td><td>{state}</td><td class='num'>{took}</td>"
                    f"<td>{esc((payload or {}).get('written', ''))}</td></tr>")
    return (f"<table id='costs'><tr><th>part</th><th>state</th><th>time</th><th>written</th>"
            f"</tr>{''.join(rows)}</table><p>per unit {duration(costs['per_unit'])} · "
            f"{megabytes(costs['bytes'])} on disk (sweep images and data)</p>")


def _layer_html(view: SiteView, layer: str) -> str:
    total = _units_total(view, layer)
    done = len(view.records.get(layer, {}))
    shape = mapping(view.meta.get("shapes")).get(layer)
    sections = [("units", "Feature visualizations", _grid(view, layer)),
                ("dreams", "DeepDream", _photo_pairs(view, layer, "dreams")),
                ("caricatures", "Caricatures", _photo_pairs(view, layer, "caricatures")),
                ("groups", "Neuron groups", _groups(view, layer)),
                ("costs", "Costs", _cost_table(view, layer))]
    body = (f"<nav>{link('../index.html', 'all layers')} › {esc(layer)}</nav>"
            f"<h1>{esc(layer)}</h1><p class='settings'>{settings_line(view.meta)}</p>"
            f"<p>shape {esc(shape_text(shape))} · {done} of "
            f"{total if total is not None else '?'} units finished</p>"
            + "".join(f"<section id='{i}'><h2>{t}</h2>{b}</section>" for i, t, b in sections))
    return page(f"{layer} · {view.meta.get('model', '')} · featviz microscope", body)


def write_site(site: str | os.PathLike) -> Path:
    """Write the site's pages from what its folder holds now: ``index.html``, each layer's
    page and each page of a unit whose feature visualization is finished. Safe to call at
    any point of a run (and again after it): a partial site shows what is done. Returns the
    index's path.

    Args:
        site: the site folder, holding microscope.json.
    """
    view = read_site(site)
    for layer in view.layers:
        write_text(view.root / store.layer_page(layer), _layer_html(view, layer))
        units = sorted(view.records.get(layer, {}))
        for i, c in enumerate(units):
            before = units[i - 1] if i else None
            after = units[i + 1] if i + 1 < len(units) else None
            write_text(view.root / store.unit_page(layer, c),
                       unit_html(view, layer, c, before, after))
    return write_text(view.root / "index.html", _index_html(view))


__all__ = ["write_site", "read_site"]
