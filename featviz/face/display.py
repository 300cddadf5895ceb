"""featviz in a notebook: how each result shows itself, and the sweep views of the face tier.

Jupyter shows the last value of a cell through its ``_repr_html_`` / ``_repr_png_``. Every
featviz result defines them on its own class, calling down to :mod:`featviz.core.notebook`
for the PNG bytes, inline images and the size budget (classes of the lower tiers cannot
import this module: imports flow face -> methods -> models -> core). So do the sweep's own
views, :class:`SweepFolder` and :class:`~featviz.face.sweep.SweepResult`'s display, which
live in :mod:`featviz.face.sweep` (and are named here too). This module holds
:func:`html` / :func:`png` for any result, and :data:`RICH` — which result class shows
itself how.

In a notebook::

    res = featviz.render(model, obj.channel("mixed4a", 476), steps=64)
    res                                    # the images, labels, objective values, snapshots
    featviz.display.SweepFolder("sweep/")  # a sweep folder as thumbnails per layer
"""

from __future__ import annotations

from typing import Any

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
from .sweep import SweepFolder, SweepResult

__all__ = ["RICH", "html", "png", "SweepFolder", "sweep_result_html"]

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


def html(result: Any) -> str:
    """The HTML a notebook shows for ``result`` (any featviz result; see :data:`RICH`), e.g.
    to write into a page of one's own; an error for an object that has none.

    Args:
        result: a featviz result.
    """
    method = getattr(result, "_repr_html_", None)
    if method is None:
        raise FeatvizError(f"{type(result).__name__} has no HTML view")
    return method()


def png(result: Any) -> bytes:
    """The PNG bytes a notebook shows for ``result``, for results that are one picture; an
    error for one that has none.

    Args:
        result: a featviz result that is one picture.
    """
    method = getattr(result, "_repr_png_", None)
    if method is None:
        raise FeatvizError(f"{type(result).__name__} has no PNG view")
    return method()


def sweep_result_html(result: SweepResult) -> str:
    """What :class:`SweepResult` shows (its own ``_repr_html_``): this rank's counts and
    time, then the folder's images (:class:`SweepFolder`) when it knows its folder.

    Args:
        result: what one rank of a sweep did.
    """
    return result._repr_html_()
