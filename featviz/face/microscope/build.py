"""Building a microscope site: the sweep (every unit's feature visualization and top-k
dataset examples), then each layer's views (:mod:`.tasks`), then each unit's diversity
facets, then the pages. Every piece is written whole and its presence marks it done, so a
run killed at any moment and started again loses at most the piece it was making and redoes
nothing; under ``torchrun`` the ranks split the sweep's units, the layers' tasks and the
facets round-robin, and rank 0 writes the pages once all have finished."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...core import images as _images
from ...core import model_info
from ...core.hooks import LayerTap, frozen
from ...errors import FeatvizError
from ...methods.dataset import labelled
from .. import sweep as _sweep
from ..sweep.manifest import _jsonable, _now
from . import facets, pages, presets, store
from .tasks import LAYER_TASKS, Context, NotApplicable


@dataclass
class MicroscopeResult:
    """What one rank did: its sweep, the layer tasks it ran or found done, the facets it
    rendered, its seconds; ``index`` is the site's index page (rank 0, when finished)."""

    site: Path
    rank: int
    world_size: int
    sweep: Any
    tasks_run: list[tuple[str, str]] = field(default_factory=list)
    tasks_done_before: int = 0
    facets_run: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    index: Path | None = None


def microscope(model: nn.Module, out: str | os.PathLike, layers: Sequence[str], *,
               images: str | os.PathLike | None = None, setting: str = "quick",
               units: str | Sequence[int] = "all", model_name: str | None = None,
               weights: str | None = None, rank: int = 0,
               world_size: int = 1, log: Callable[[str], None] | None = None,
               **values: Any) -> MicroscopeResult:
    """Build (or go on building) the microscope site of ``layers`` of ``model`` in ``out``.

    Args:
        model: The network.
        out: The site's folder (created; reused to resume).
        layers: The layers, in the order the site lists them; neighbours are joined by
            expanded weights.
        images: A folder of photos (with a ``labels.tsv`` for classes): the top-k dataset
            examples, DeepDream and caricature photos, neuron groups, top classes.
        setting: ``"quick"`` (a preview) or ``"full"``; see :data:`.presets.PRESETS`.
        units: The units of each layer: ``"all"``, a range ``"0-31"`` or a list (a site of
            part of a layer, to be grown later with ``"all"``).
        model_name: How the site names the model (default: its class name).
        weights: The weights' name as the site shows it (a file name, never a path).
        rank: This process's rank.
        world_size: How many ranks share the work.
        log: Where progress lines go (default: printed).
        **values: Values of the setting to change (``steps=128``, ``families=["curves"]``).
    """
    log = log or (lambda msg: print(msg, flush=True))
    start = time.perf_counter()
    values = presets.resolve(setting, values)
    fixed = model_info.fixed_input_size(model)
    if fixed:  # a model of one input size (a ViT's position embeddings) sets the size
        values["size"] = fixed[0] if fixed[0] == fixed[1] else list(fixed)
    layers = list(dict.fromkeys(layers))
    site = Path(out)
    ctx = _context(site, values, layers, images)
    ctx.modules = {layer: _sweep.unit_layer(model, layer) for layer in layers}
    name = model_name or type(model).__name__
    weights = Path(weights).name if weights else None
    if rank == 0:
        _agree(site, name, weights, setting, values, layers, images)
        _record_shapes(model, site, layers, values["size"])
    swept = _sweep.sweep(model, site / store.SWEEP_DIR, layers, units, steps=values["steps"],
                         size=values["size"], batch=values["batch"], seed=values["seed"],
                         images=images, k=values["k"], rank=rank, world_size=world_size,
                         settings={"model": name, "weights": weights}, log=log)
    result = MicroscopeResult(site, rank, world_size, swept)
    if not swept.interrupted:
        made = None
        if _layer_tasks(model, ctx, rank, world_size, result, log):
            made = facets.run(model, site, layers, values, rank, world_size, log, units)
        result.facets_run = made or 0
        result.interrupted = made is None
    else:
        result.interrupted = True
    result.seconds = time.perf_counter() - start
    if not result.interrupted:
        _meet(world_size)
        if rank == 0:
            if _path_checks(model, ctx, log):
                result.index = _finish(site, layers, ctx, result.seconds)
                log(f"wrote {result.index}")
            else:
                result.interrupted = True
    return result


def _context(site: Path, values: dict, layers: list[str],
             images: str | os.PathLike | None) -> Context:
    """The shared context: the photos the layer tasks use, picked evenly from the folder."""
    photos: list[Path] = []
    if images is not None:
        found = _images.list_images(images)
        if not found:
            raise FeatvizError(f"no image files in {images}")
        labelled(images)  # a bad labels file fails now, naming its line
        photos = _spread(found, values["photos"])
        class_images = _spread(found, values["class_photos"])
    return Context(values, layers, photos, Path(images) if images else None, site,
                   class_images if images is not None else [])


def _spread(items: list[Path], n: int) -> list[Path]:
    """``n`` of ``items`` spread evenly (all of them when there are fewer)."""
    if n <= 0:
        return []
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _agree(site: Path, name: str, weights: str | None, setting: str, values: dict,
           layers: list[str], images: str | os.PathLike | None) -> None:
    """Write ``microscope.json``, or check that an existing one has the same model, setting
    and values (a site never mixes two); a new layer list replaces the old one."""
    meta = {"model": name, "weights": weights, "setting": setting, "settings": values,
            "images": Path(images).name if images else None}
    old = store.read_meta(site) if (site / "microscope.json").is_file() else {}
    for key in ("model", "weights", "setting", "settings", "images"):
        if old and old.get(key) != _jsonable(meta[key]):
            raise FeatvizError(f"{site} is a microscope site made with {key} "
                               f"{old.get(key)!r}, not {meta[key]!r}; use another --out or "
                               "the same settings")
    store.write_meta(site, {**old, **meta, "layers": layers,
                            "started": old.get("started", _now()), "updated": _now()})


def _record_shapes(model: nn.Module, site: Path, layers: list[str], size: int) -> None:
    """Each layer's output shape (less the batch) for one image of the site's size, into
    ``microscope.json``."""
    names = {layer: _sweep.unit_layer(model, layer) for layer in layers}
    side = model_info.fixed_input_size(model) or (size, size)
    x = torch.zeros(1, model_info.image_channels(model), *side,
                    device=model_info.model_device(model))
    with frozen(model), LayerTap(model, list(dict.fromkeys(names.values()))) as tap, \
            torch.no_grad():
        acts = tap(x)
    meta = store.read_meta(site)
    meta["shapes"] = {layer: list(acts[names[layer]].shape[1:]) for layer in layers
                      if isinstance(acts.get(names[layer]), torch.Tensor)}
    store.write_meta(site, meta)


def _layer_tasks(model: nn.Module, ctx: Context, rank: int, world_size: int,
                 result: MicroscopeResult, log: Callable[[str], None]) -> bool:
    """Run this rank's share of the (layer, task) pieces not done yet; False when
    interrupted (the piece under way is not written and is redone next time)."""
    jobs = [(layer, task) for layer in ctx.layers for task in LAYER_TASKS]
    for layer, task in jobs[rank::world_size]:
        if store.is_done(ctx.site, layer, task):
            result.tasks_done_before += 1
            continue
        t0 = time.perf_counter()
        try:
            payload = LAYER_TASKS[task](model, layer, ctx)
            store.write_task(ctx.site, layer, task, payload, time.perf_counter() - t0)
        except (NotApplicable, FeatvizError) as e:
            store.write_not_applicable(ctx.site, layer, task, str(e), time.perf_counter() - t0)
        except KeyboardInterrupt:
            log(f"interrupted during {task} of {layer}; run the same command again to go on")
            return False
        result.tasks_run.append((layer, task))
        log(f"[rank {rank}/{world_size}] {layer}: {task} in {time.perf_counter() - t0:.1f} s")
    return True


def _path_checks(model: nn.Module, ctx: Context, log: Callable[[str], None]) -> bool:
    """Each layer's path check (:func:`featviz.methods.trust.path_similarity`) of its
    finished pictures against the site's photos, after every rank's sweep is done; a layer is
    checked again when it has units its check lacks. False when interrupted."""
    from ...methods.trust import path_similarity

    finished = _sweep.collect(ctx.site / store.SWEEP_DIR)
    for layer in ctx.layers:
        recs = finished.get(layer, [])
        old = store.read_task(ctx.site, layer, "paths") or {}
        if not recs or set(old.get("units", {})) >= {str(r["channel"]) for r in recs} \
                or "not_applicable" in old:
            continue
        if ctx.images is None:
            store.write_not_applicable(ctx.site, layer, "paths", "no photos were given "
                                       "(--images): there are no top photos to compare with")
            continue
        t0 = time.perf_counter()
        k = ctx.values["k"]
        try:
            found = path_similarity(
                model, [(ctx.module(layer), r["channel"]) for r in recs],
                [_images.load(ctx.site / store.SWEEP_DIR / r["file"])[0] for r in recs],
                ctx.images, k=k, randoms=2 * k, seed=ctx.values["seed"])
        except KeyboardInterrupt:
            log(f"interrupted during the path check of {layer}; run the same command again")
            return False
        payload = {"k": k, "randoms": 2 * k,
                   "units": {str(r["channel"]): f.to_dict() for r, f in zip(recs, found,
                                                                          strict=True)}}
        store.write_task(ctx.site, layer, "paths", payload, time.perf_counter() - t0)
        log(f"{layer}: path check of {len(recs)} units in {time.perf_counter() - t0:.1f} s")
    return True


def _meet(world_size: int) -> None:
    """Wait for every rank (under torchrun) before the pages are written."""
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _finish(site: Path, layers: list[str], ctx: Context, seconds: float) -> Path:
    """Record each layer's facets, and the run time, then write the pages."""
    for layer in layers:
        folder = store.layer_dir(site, layer) / "facets"
        files = sorted(folder.glob("c*.png")) if folder.is_dir() else []
        if ctx.values["facets"] < 2:
            store.write_not_applicable(site, layer, "facets", "this site's setting renders no "
                                       f"facets (facets {ctx.values['facets']})")
        elif files:
            spent = sum(_seconds(f.with_suffix(".json")) for f in files)
            store.write_task(site, layer, "facets",
                             {"units": {str(int(f.stem[1:])): f"facets/{f.name}" for f in files}},
                             spent)
    meta = store.read_meta(site)
    meta["updated"] = _now()
    meta["run_seconds"] = round(float(meta.get("run_seconds", 0.0)) + seconds, 1)
    store.write_meta(site, meta)
    return pages.write_site(site)


def _seconds(path: Path) -> float:
    import json
    try:
        return float(json.loads(path.read_text()).get("seconds", 0.0))
    except (OSError, ValueError):
        return 0.0
