"""The two settings of a microscope site, ``quick`` (a preview) and ``full``, and how a user's
own values override them. The values are recorded in the site's ``microscope.json``: a resume
with other values is refused, so one site never mixes two settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import FeatvizError
from ...methods.circuits import FAMILIES

#: name -> the values it sets. ``steps``/``size``/``k``/``batch``: the feature visualizations
#: and top-k patches (a sweep); ``facets``: diversity images per unit (0: none), rendered with
#: ``facet_steps`` and the diversity term weighted by ``facet_diversity`` times the unit's own
#: feature-visualization value (the term is scale-free, the unit's activation is not);
#: ``photos``: sample photos for each layer's DeepDream and caricature, rendered with
#: ``dream_steps``; ``groups``: neuron groups (NMF) of the first photo; ``families``: the
#: stimulus families scanned for tuning curves; ``class_photos``: photos whose predicted
#: class is attributed to every unit; ``connections``: strongest connections kept per unit.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"steps": 64, "size": 128, "batch": 16, "k": 4, "facets": 2, "facet_steps": 32,
              "facet_diversity": 0.5, "photos": 2, "dream_steps": 32, "groups": 6,
              "families": ["curves", "high_low"], "class_photos": 32, "connections": 6,
              "seed": 0},
    "full": {"steps": 512, "size": 224, "batch": 16, "k": 9, "facets": 4, "facet_steps": 256,
             "facet_diversity": 0.5, "photos": 4, "dream_steps": 128, "groups": 6,
             "families": ["lines", "gabors", "curves", "high_low"], "class_photos": 500,
             "connections": 8, "seed": 0},
}


def resolve(setting: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The values of ``setting`` with ``overrides`` (those not None) put over them.

    Args:
        setting: ``"quick"`` or ``"full"``.
        overrides: Values to change, by the names of :data:`PRESETS`.
    """
    if setting not in PRESETS:
        raise FeatvizError(f"unknown microscope setting {setting!r}; choose one of "
                           f"{', '.join(PRESETS)}")
    values = dict(PRESETS[setting])
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise FeatvizError(f"unknown microscope value(s) {', '.join(unknown)}; the values are "
                           f"{', '.join(values)}")
    values.update(given)
    bad = [f for f in values["families"] if f not in FAMILIES]
    if bad:
        raise FeatvizError(f"unknown stimulus family {bad[0]!r}; the families are "
                           f"{', '.join(FAMILIES)}")
    for name in ("steps", "size", "batch", "k"):
        if not isinstance(values[name], int) or values[name] < 1:
            raise FeatvizError(f"{name} must be a whole number >= 1, got {values[name]!r}")
    return values
