"""featviz: see what the units, channels, layers and classes of an image network respond to.

    import featviz
    from featviz import objectives as obj
    model = featviz.models.load("mobilenet_v2", weights="mobilenet_v2.pth")
    featviz.render(model, obj.channel("features.14", 12), steps=512).save("channel.png")
"""

from . import (
    dataset,
    deconv,
    featuremaps,
    hooks,
    images,
    inversion,
    models,
    objectives,
    param,
    receptive_field,
    transforms,
)
from .errors import (
    ChannelError,
    FeatvizError,
    NonFiniteLossError,
    ObjectiveSyntaxError,
    UnknownNameError,
    WeightsError,
)
from .render import RenderResult, render

__version__ = "0.1.0"

__all__ = [
    "render", "RenderResult", "hooks", "images", "models", "objectives", "param", "transforms",
    "deconv", "dataset", "receptive_field", "inversion", "featuremaps",
    "FeatvizError", "UnknownNameError", "ChannelError", "ObjectiveSyntaxError", "WeightsError",
    "NonFiniteLossError", "__version__",
]
