"""Facts about a user's model that every room asks for: its device, the input size it expects,
the channels its first convolution takes. One home each, so they are answered alike."""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_INPUT_SIZE = 224  # ImageNet's, for a model that does not say


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def input_size(model: nn.Module, size: int | None = None) -> int:
    """``size`` when given, else the model's ``input_size`` attribute (set by
    :func:`featviz.models.load`/``wrap``), else 224."""
    return int(size or getattr(model, "input_size", DEFAULT_INPUT_SIZE))


def input_channels(model: nn.Module) -> int | None:
    """The input channels of the model's first convolution (None when it has none)."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.in_channels
    return None
