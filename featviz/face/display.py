"""featviz in a notebook: how each result shows itself, and the sweep views of the face tier.

Jupyter shows the last value of a cell through its ``_repr_html_`` / ``_repr_png_``. Every
featviz result defines them on its own class, calling down to :mod:`featviz.core.notebook`
for the PNG bytes, inline images and the size budget (classes of the lower tiers cannot
import this module: imports flow face -> methods -> models -> core). This module holds what
belongs to the face tier: the view of a sweep (:class:`SweepFolder`, and
:class:`~featviz.face.sweep.SweepResult`'s display), :func:`html` / :func:`png` for any
result, and :data:`RICH` — which result class shows itself how.

In a notebook::

    res = featviz.render(model, obj.channel("mixed4a", 476), steps=64)
    res                                    # the images, labels, objective values, snapshots
    featviz.display.SweepFolder("sweep/")  # a sweep folder as thumbnails per layer
"""

from __future__ import annotations

import html as _html
import os
from pathlib import Path
from typing import Any

from ..core import images as _images
from ..core import notebook as _nb
from ..core.render import RenderResult
from ..errors import FeatvizError
from ..methods import (
    activation_grid,
    atlas,
    attribution,
    building_blocks,
    deconv,
    featuremaps,
    groups,
    inversion,
    occlusion,
    receptive_field,
    semantic_dictionary,
)
from .gallery import collect
from .sweep import SweepResult, read_settings

#: every result class -> the rich forms it shows itself in (besides a short ``__repr__``)
RICH: dict[type, tuple[str, ...]] = {
    RenderResult: ("html", "png"),
    deconv.Projection: ("html", "png"),
    deconv.TopK: ("html", "png"),
    deconv.TopKEntry: ("html", "png"),
    occlusion.Occlusion: ("html", "png"),
    inversion.Inversion: ("html", "png"),
    inversion.InversionSweep: ("html", "png"),
    receptive_field.ReceptiveField: ("html",),
    receptive_field.EffectiveField: ("html", "png"),
    receptive_field.EffectiveFields: ("html",),
    featuremaps.FeatureMaps: ("html",),
    featuremaps.Stats: ("html",),
    featuremaps.Comparison: ("html",),
    SweepResult: ("html",),
    attribution.Attribution: ("html",),
    groups.NeuronGroups: ("html", "png"),
    activation_grid.ActivationGrid: ("html", "png"),
    semantic_dictionary.SemanticDictionary: ("html", "png"),
    building_blocks.GroupAttribution: ("html",),
    building_blocks.BuildingBlocks: ("html",),
    atlas.Atlas: ("html", "png"),
}

_SWEEP_LAYERS = 8  # layers a sweep view shows
_SWEEP_CHANNELS = 32  # channels per layer it shows


def html(result: Any) -> str:
    """The HTML a notebook shows for ``result`` (any featviz result; see :data:`RICH`), e.g.
    to write into a page of one's own; an error for an object that has none."""
    method = getattr(result, "_repr_html_", None)
    if method is None:
        raise FeatvizError(f"{type(result).__name__} has no HTML view")
    return method()


def png(result: Any) -> bytes:
    """The PNG bytes a notebook shows for ``result``, for results that are one picture; an
    error for one that has none."""
    method = getattr(result, "_repr_png_", None)
    if method is None:
        raise FeatvizError(f"{type(result).__name__} has no PNG view")
    return method()


class SweepFolder:
    """A sweep folder (``featviz sweep --out FOLDER`` or :func:`featviz.sweep.sweep`) as a
    notebook shows it: its settings, then per layer (at most 8) a labelled grid of its
    finished channels' images (at most 32), the objective under each. For the full set with
    the dataset patches, write the gallery: ``featviz gallery FOLDER``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"SweepFolder({str(self.folder)!r})"

    def _repr_html_(self) -> str:
        page = _nb.Budget()
        try:
            by_layer = collect(self.folder)
        except FeatvizError as err:
            return f"<p>{_html.escape(str(err))}</p>"
        settings = read_settings(self.folder)
        keys = ("model", "steps", "size", "param", "seed")
        page.text("<p>" + _html.escape(" · ".join(f"{k} {settings[k]}" for k in keys
                                                   if settings.get(k) is not None)) + "</p>")
        for layer, recs in list(by_layer.items())[:_SWEEP_LAYERS]:
            shown = recs[:_SWEEP_CHANNELS]
            tiles = [_images.load(self.folder / r["file"], size=96)[0] for r in shown]
            labels = [f"{r['channel']}: {r.get('value', float('nan')):.3g}" for r in shown]
            more = f" ({len(shown)} of {len(recs)})" if len(recs) > len(shown) else ""
            page.text(f"<p><b>{_html.escape(layer)}</b>{more}</p>")
            page.image(_images.grid(tiles, labels, ncol=8), layer)
        if len(by_layer) > _SWEEP_LAYERS:
            page.text(f"<p>{_SWEEP_LAYERS} of {len(by_layer)} layers shown</p>")
        page.text(f"<p>all of it: <code>featviz gallery {_html.escape(str(self.folder))}"
                  "</code></p>")
        return page.html(f"sweep {self.folder.name}")


def sweep_result_html(result: SweepResult) -> str:
    """What :class:`SweepResult` shows: this rank's counts and time, then the folder's
    images (:class:`SweepFolder`) when it knows its folder."""
    state = (f"interrupted by signal {result.signal}" if result.interrupted else "finished")
    counts = _nb.table(["rank", "jobs in all", "this rank's", "rendered", "already done",
                        "seconds", "state"],
                       [(f"{result.rank}/{result.world_size}", result.total, result.share,
                         result.rendered, result.skipped, f"{result.seconds:.1f}", state)])
    if result.folder is None or not any(Path(result.folder).glob("manifest.rank*.jsonl")):
        return counts
    return counts + SweepFolder(result.folder)._repr_html_()
