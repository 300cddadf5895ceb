"""featviz: see what the units, channels, layers and classes of an image network respond to.

    import featviz
    from featviz import objectives as obj
    model = featviz.models.load("mobilenet_v2", weights="mobilenet_v2.pth")
    featviz.render(model, obj.channel("features.14", 12), steps=512).save("channel.png")

The package is built in tiers, each importing only from the tiers below it:
``featviz.core`` (the optimization: hooks, objectives, parameterizations, transforms, the
render loop, image files), ``featviz.models`` (model specs and loaders), ``featviz.methods``
(projections, inversion, receptive fields, feature maps, attribution, neuron groups,
activation grids, semantic dictionaries, activation atlases) and ``featviz.face``
(the command line, sweeps, the gallery). The modules users import by their short names
(``featviz.objectives``, ``featviz.param``, ``featviz.deconv``, ...) are the same module
objects under both names.
"""

import importlib
import sys

from . import errors
from .core.render import RenderResult, render
from .errors import (
    ChannelError,
    FeatvizError,
    MismatchError,
    NonFiniteLossError,
    ObjectiveSyntaxError,
    UnknownNameError,
    WeightsError,
)

__version__ = "0.1.0"

# short name -> the module in its tier; `import featviz.X` and `from featviz.X import ...` keep
# working for every module that had a top-level home before the tiers
SHORT_NAMES = {
    **{m: f"core.{m}" for m in ("hooks", "backward_rules", "truncate", "objectives",
                                "transforms", "images", "metrics", "markdown", "param")},
    **{m: f"methods.{m}" for m in ("deconv", "dataset", "occlusion", "inversion",
                                   "receptive_field", "featuremaps", "groups", "attribution",
                                   "activation_grid", "semantic_dictionary",
                                   "building_blocks", "atlas_store", "atlas")},
    **{m: f"face.{m}" for m in ("cli", "sweep", "gallery", "blocks_page", "atlas_page",
                                "display")},
    "cifar": "models.cifar",
}


def _alias_short_names() -> None:
    """Import every tier and register each module (and its submodules) under its short name
    as well, so that both names give the same module object (one copy of each class)."""
    for full in SHORT_NAMES.values():
        importlib.import_module(f"{__name__}.{full}")
    for short, full in SHORT_NAMES.items():
        prefix = f"{__name__}.{full}"
        for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
            sys.modules[f"{__name__}.{short}{name[len(prefix):]}"] = sys.modules[name]
    # the module that holds render() is reached as featviz.core.render; featviz.render is the
    # function itself
    sys.modules[f"{__name__}.render"] = sys.modules[f"{__name__}.core.render"]


_alias_short_names()
globals().update({short: sys.modules[f"{__name__}.{short}"] for short in SHORT_NAMES})
models = sys.modules[f"{__name__}.models"]

__all__ = [
    "render", "RenderResult", "hooks", "images", "models", "objectives", "param", "transforms",
    "deconv", "dataset", "occlusion", "receptive_field", "inversion", "featuremaps", "groups",
    "attribution", "activation_grid", "semantic_dictionary", "building_blocks",
    "atlas_store", "atlas", "atlas_page",
    "metrics", "sweep", "gallery", "display", "cli", "errors", "FeatvizError", "UnknownNameError",
    "ChannelError", "ObjectiveSyntaxError", "MismatchError", "WeightsError", "NonFiniteLossError",
    "__version__",
]
