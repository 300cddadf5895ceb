"""featviz: see what the units, channels, layers and classes of an image network respond to.

    import featviz
    from featviz import objectives as obj
    model = featviz.models.load("mobilenet_v2", weights="mobilenet_v2.pth")
    featviz.render(model, obj.channel("features.14", 12), steps=512).save("channel.png")

The package is built in tiers, each importing only from the tiers below it:
``featviz.core`` (the optimization: hooks, objectives, parameterizations, transforms, the
render loop, image files), ``featviz.models`` (model specs and loaders), ``featviz.methods``
(projections, inversion, receptive fields, feature maps, attribution, neuron groups,
activation grids, semantic dictionaries, activation atlases, circuits, dictionary features)
and ``featviz.face`` (the command line, sweeps, the gallery, the Microscope site). The
modules users reach by their short names (``featviz.objectives``, ``featviz.param``,
``featviz.deconv``, ``featviz.cli``, ...) are the same module objects under both names,
imported when first used: ``import featviz`` loads the core and the render loop only.
"""

import importlib
import os
import sys
from types import ModuleType

from . import _short_names, errors
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

# short name -> the module in its tier, for every public module directly under core, methods and
# face (and models.cifar); `import featviz.X`, `from featviz.X import ...` and `featviz.X` all
# give the tier module, imported on first use
_ALIASES = _short_names.derive(os.path.dirname(__file__))
_short_names.install(__name__, _ALIASES)
# a short name that is also an attribute here (featviz.render, the function) is reached only by
# import statements; its module is registered now so that importing it never replaces the attribute
SHORT_NAMES = {short: full for short, full in _ALIASES.items() if short not in globals()}
sys.modules.update({f"{__name__}.{short}": importlib.import_module(f"{__name__}.{full}")
                    for short, full in _ALIASES.items() if short not in SHORT_NAMES})
_SUBPACKAGES = ("core", "models", "methods", "face")


def __getattr__(name: str) -> ModuleType:
    """``featviz.gallery``, ``featviz.models``, ...: import a short-named module or a tier the
    first time it is asked for (PEP 562); the import system then keeps it as an attribute."""
    if name in SHORT_NAMES or name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The attributes, with the short names and tiers not imported yet."""
    return sorted({*globals(), *SHORT_NAMES, *_SUBPACKAGES})


__all__ = [
    "render", "RenderResult", "hooks", "images", "models", "objectives", "param", "transforms",
    "deconv", "dataset", "occlusion", "receptive_field", "inversion", "featuremaps", "groups",
    "attribution", "activation_grid", "semantic_dictionary", "building_blocks",
    "atlas_store", "atlas", "atlas_page", "circuits", "dictionary",
    "metrics", "sweep", "gallery", "microscope", "display", "cli", "errors", "FeatvizError",
    "UnknownNameError",
    "ChannelError", "ObjectiveSyntaxError", "MismatchError", "WeightsError", "NonFiniteLossError",
    "__version__",
]
