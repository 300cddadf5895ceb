"""What a user asks of a loaded model: its layers with their output shapes, and the index of
a class by its name."""

from __future__ import annotations

import torch
from torch import nn

from ..core import model_info
from ..core.hooks import frozen, named_layers, on_output
from ..errors import FeatvizError, unknown


def layer_table(model: nn.Module, input_size: int | None = None) -> list[tuple[str, str, str]]:
    """Run one blank image through ``model`` and list (layer, module type, output shape).

    The image has the model's channels and dtype (1 for a grayscale net, N bands, bfloat16).
    Every addressable layer is listed in definition order; a module that does not run in the
    forward pass shows ``"not run"``. Hooks are removed and the model's state restored after.

    Args:
        model: the model, as :func:`featviz.models.load` or ``wrap`` gives it (or any module).
        input_size: the image size to run: one side or (height, width) (default: the
            model's).
    """
    rows, cols = model_info.input_hw(model, input_size)
    layers = named_layers(model)
    shapes: dict[str, str] = {}

    def record(names: list[str], output) -> None:
        shape = ("x".join(str(s) for s in output.shape[1:]) if isinstance(output, torch.Tensor)
                 else type(output).__name__)
        shapes.update(dict.fromkeys(names, shape))

    device = model_info.model_device(model)
    try:
        with on_output(model, layers, record), frozen(model), torch.no_grad():
            model(torch.full((1, model_info.image_channels(model), rows, cols), 0.5,
                             device=device, dtype=model_info.model_dtype(model)))
    except Exception as err:
        raise FeatvizError(f"a {rows}x{cols} image does not run through the model: "
                           f"{err}") from err
    return [(name, type(m).__name__, shapes.get(name, "not run")) for name, m in layers.items()]


def class_index(model: nn.Module, name: str | int) -> int:
    """The index of class ``name`` (its short name, any case: ``"hotdog"``) among the model's
    class names (see :func:`featviz.core.model_info.class_names`); an int is returned as it
    is. An unknown name is an error listing the closest ones.

    Args:
        model: a model with class names (an ImageNet classifier from ``load``, or ``wrap(...,
            classes=...)``).
        name: the class's name, or its index.
    """
    if isinstance(name, int):
        return name
    names = model_info.class_names(model)
    if names is None:
        raise FeatvizError(f"the model has no class names to look {name!r} up in; give the "
                           "class index")
    lowered = [n.lower() for n in names]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    raise unknown("class", name, names, hint="a class name of the model")
