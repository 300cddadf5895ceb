"""Each unit's diversity facets (Olah et al., "Feature Visualization", Distill 2017): ``n``
images that all raise the unit while a diversity term pushes their styles apart. Several
units share one render batch, each with the diversity term over its own ``n`` images only,
and image ``i`` of unit ``c`` always starts from seed ``seed + 100 c + i``, so a unit's facets
do not depend on the units beside it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...core import images as _images
from ...core import objectives as obj
from ...core.files import write_text
from ...core.render import render
from ...errors import FeatvizError
from .. import sweep as _sweep
from . import store


def facet_file(site: Path, layer: str, channel: int) -> Path:
    """Where unit ``channel`` of ``layer`` keeps its facets (side by side in one PNG).

    Args:
        site: The site's folder.
        layer: The layer.
        channel: The unit.
    """
    return store.layer_dir(site, layer) / "facets" / f"c{channel:04d}.png"


def within_units(layer: str, n: int, weights: Sequence[float]) -> obj.Objective:
    """The diversity term of Distill, taken within each run of ``n`` images (one unit's)
    and weighted per unit: minus the mean cosine similarity of an image's Gram matrix with
    the other images of its unit.

    Args:
        layer: The layer whose Gram matrices are compared.
        n: Images per unit (at least 2).
        weights: One weight per unit.
    """
    if n < 2:
        raise FeatvizError(f"facets need at least 2 images per unit, got {n}")
    w = torch.tensor([float(x) for x in weights for _ in range(n)])
    units, size = len(weights), len(weights) * n

    def fn(acts: dict[str, torch.Tensor]) -> torch.Tensor:
        act = acts[layer].float()[:size]
        flat = act.reshape(size, act.shape[1], -1)
        grams = F.normalize((flat @ flat.transpose(1, 2)).reshape(size, -1), dim=1)
        grams = grams.reshape(units, n, -1)
        sim = grams @ grams.transpose(1, 2)
        mine = -(sim.sum(2) - sim.diagonal(dim1=1, dim2=2)) / n
        value = mine.reshape(-1) * w.to(mine.device)
        if acts[layer].shape[0] > size:
            value = torch.cat([value, value.new_zeros(acts[layer].shape[0] - size)])
        return value

    return obj.Objective(fn, [layer], f"diversity within {units} units", size)


def render_facets(model: nn.Module, layer: str, records: Sequence[dict], values: dict,
                  site: Path) -> None:
    """Render the facets of the units of ``records`` (sweep records of one layer; one record
    for a ``KIND:LAYER``) in one batch, and write each unit's PNG with its share of the
    seconds beside it.

    Args:
        model: The network.
        layer: The layer, or ``KIND:LAYER``.
        records: The units' sweep records (``channel``, ``value``).
        values: The site's setting.
        site: The site's folder.
    """
    t0, n = time.perf_counter(), values["facets"]
    chans = [int(r["channel"]) for r in records]
    # the term is scale-free, a unit's activation is not: weigh it by the value the unit's own
    # feature visualization reached
    weights = [values["facet_diversity"] * max(abs(float(r.get("value") or 1.0)), 1e-6)
               for r in records]
    if _sweep.is_kind(layer):  # KIND:LAYER units (a transformer's MLP units): one at a time
        if len(chans) != 1:
            raise FeatvizError(f"{layer}: facets of its units render one unit per batch")
        target = _sweep.job_objective(layer, chans) + weights[0] * obj.diversity(
            _sweep.unit_layer(model, layer))
    else:
        target = obj.channel(layer, [c for c in chans for _ in range(n)]) + within_units(
            layer, n, weights)
    seeds = [values["seed"] + 100 * c + i for c in chans for i in range(n)]
    res = render(model, target, steps=values["facet_steps"], size=values["size"],
                 batch=len(seeds), seed=seeds, progress=False)
    shown = res.shown()[:, :3]
    share = (time.perf_counter() - t0) / len(chans)
    for j, c in enumerate(chans):
        path = facet_file(site, layer, c)
        _images.save(torch.cat(list(shown[j * n:(j + 1) * n]), dim=2), path)
        write_text(path.with_suffix(".json"), f'{{"seconds": {share:.3f}}}')


def pending(site: Path, layers: Sequence[str], rank: int, world_size: int,
            units: str | Sequence[int] = "all") -> list[tuple[str, dict]]:
    """This rank's share of the (layer, sweep record) facet jobs of ``units`` whose PNG is
    missing.

    Args:
        site: The site's folder.
        layers: The site's layers.
        rank: This process's rank.
        world_size: How many ranks share the jobs.
        units: The units asked for (``"all"``, ``"0-31"``, a list): a run for some units
            renders their facets only, even where the sweep holds more.
    """
    folder = site / store.SWEEP_DIR
    records = _sweep.collect(folder) if any(folder.glob("manifest*")) else {}
    wanted = _sweep.parse_channel_spec(units)
    jobs = [(layer, rec) for layer in layers for rec in records.get(layer, [])
            if wanted is None or int(rec["channel"]) in wanted]
    return [(layer, rec) for layer, rec in jobs[rank::world_size]
            if not facet_file(site, layer, int(rec["channel"])).is_file()]


def run(model: nn.Module, site: Path, layers: Sequence[str], values: dict, rank: int,
        world_size: int, log: Callable[[str], None],
        units: str | Sequence[int] = "all") -> int | None:
    """Render this rank's pending facets, as many units per batch as ``values["batch"]``
    images hold; the number rendered, or None when interrupted (a batch under way is not
    written and is redone next time).

    Args:
        model: The network.
        site: The site's folder.
        layers: The site's layers.
        values: The site's setting.
        rank: This process's rank.
        world_size: How many ranks share the jobs.
        log: Where progress lines go.
        units: The units asked for (see :func:`pending`).
    """
    n = values["facets"]
    if n < 2:
        return 0
    per_batch, done = max(1, values["batch"] // n), 0
    jobs = pending(site, layers, rank, world_size, units)
    for layer in dict.fromkeys(layer for layer, _ in jobs):
        mine = [rec for name, rec in jobs if name == layer]
        step = 1 if _sweep.is_kind(layer) else per_batch
        for start in range(0, len(mine), step):
            chunk = mine[start:start + step]
            try:
                render_facets(model, layer, chunk, values, site)
            except KeyboardInterrupt:
                log(f"interrupted during the facets of {layer}; run again to go on")
                return None
            done += len(chunk)
            log(f"[rank {rank}/{world_size}] {layer}: facets of {len(chunk)} units "
                f"({done}/{len(jobs)})")
    return done
