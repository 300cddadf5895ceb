"""Facts about a user's model that every room asks for: its device, the input size it expects,
the channels its first convolution takes. One home each, so they are answered alike."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .sizes import SizeLike, compact, hw

DEFAULT_INPUT_SIZE = 224  # ImageNet's, for a model that does not say


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither).

    Args:
        model: The model.
    """
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def input_size(model: nn.Module, size: SizeLike | None = None) -> int | tuple[int, int]:
    """The image size to use for ``model``: one side for a square, (height, width) for a
    rectangle (a square pair comes back as its side, so both spellings take one path).
    :func:`input_hw` always gives the pair.

    Args:
        model: the network; its ``input_size`` attribute (set by
            :func:`featviz.models.load`/``wrap``) is the default, else 224.
        size: the size asked for: one side, (height, width), or None (or 0) for the default.
    """
    if size is None or (not isinstance(size, Sequence) and size == 0):
        size = getattr(model, "input_size", None) or DEFAULT_INPUT_SIZE
    return compact(size)


def input_hw(model: nn.Module, size: SizeLike | None = None) -> tuple[int, int]:
    """:func:`input_size` as a (height, width) pair, for code that works on either shape.

    Args:
        model: the network (its ``input_size`` is the default).
        size: one side, (height, width), or None for the model's.
    """
    return hw(input_size(model, size))


def declared_render(model: nn.Module) -> dict:
    """The render options ``model`` declares for itself (``featviz_render``, set by
    :func:`featviz.models.load` for the models it knows, e.g. the transformer course of
    ViT-Tiny, or by :func:`featviz.models.wrap`'s ``render=``); a caller's choice overrides
    each. An empty dict for a model that declares none.

    Args:
        model: The model.
    """
    return dict(getattr(model, "featviz_render", None) or {})


def input_channels(model: nn.Module) -> int | None:
    """The channels of the images the model takes: as it declares them (``featviz_channels``,
    set by :func:`featviz.models.wrap`), else its first convolution's input channels (None
    when it has neither).

    Args:
        model: The model.
    """
    declared = getattr(model, "featviz_channels", None)
    if declared is not None:
        return int(declared)
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.in_channels
    return None


def image_channels(model: nn.Module) -> int:
    """The channels of the images to make for ``model``: :func:`input_channels`, or 3 (RGB)
    for a model that does not tell.

    Args:
        model: The model.
    """
    return input_channels(model) or 3


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter or buffer (float32 for a
    model with none): what its input must be cast to.

    Args:
        model: The model.
    """
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The one input size the model takes, when it declares one (``featviz_fixed_size``, set by
    :func:`featviz.models.wrap` with ``fixed_size=True`` and for model families known to need
    it, such as vision transformers); None for a model that takes any size.

    Args:
        model: The model.
    """
    size = getattr(model, "featviz_fixed_size", None)
    return None if size is None else hw(size)


def class_names(model: nn.Module) -> list[str] | None:
    """The names of the model's output classes, as it declares them (``featviz_classes``, set
    by :func:`featviz.models.load` for ImageNet classifiers), else None.

    Args:
        model: The model.
    """
    names = getattr(model, "featviz_classes", None)
    return list(names) if names is not None else None
