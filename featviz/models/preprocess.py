"""A network wrapped for featviz: images in [0, 1] in, its own normalization applied inside,
its layers addressable under the network's module paths and any aliases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..core import model_info
from ..core.render.options import check_declared
from ..errors import MismatchError
from .imagenet import IMAGENET_MEAN, IMAGENET_STD


class Preprocessed(nn.Module):
    """A network that takes images in [0, 1] and normalizes them itself: ``net((x - mean) /
    std)``, with one mean and std per channel (RGB, grayscale or any number of bands).

    Its layers are addressed by the inner network's own module paths (``featviz_layers``) and by
    the aliases in ``aliases``; ``input_size`` is the image size the network was trained on;
    ``fixed_size`` says that it takes no other (vision transformers, flatten + Linear heads):
    renders then fit their transformed images back to that size. ``layouts`` declares where
    channels and grid are in layers that are not ``[B, C, H, W]`` (``{path or pattern:
    "nhwc" | "tokens" | "tokens+cls" | ...}``, see :mod:`featviz.core.layouts`). ``channels``
    is the number the network takes (``featviz_channels``): by default its first
    convolution's, else the length of ``mean``/``std``, else 3. ``render`` holds the render
    options it declares for itself (``featviz_render``; a caller's choice overrides each).
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        aliases: Mapping[str, str] | None = None,
        input_size: int = 224,
        name: str = "",
        fixed_size: bool = False,
        layouts: Mapping[str, str] | None = None,
        channels: int | None = None,
        classes: Sequence[str] | None = None,
        render: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        channels = channels or _channels(net, mean, std)
        mean_t, std_t = _stats(mean, "mean", channels), _stats(std, "std", channels)
        if (std_t <= 0).any():
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.net = net
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)
        self.featviz_aliases = dict(aliases or {})
        self.input_size = int(input_size)
        self.featviz_fixed_size = self.input_size if fixed_size else None
        self.featviz_layouts = dict(layouts or {})
        self.featviz_channels = channels
        self.featviz_classes = list(classes) if classes is not None else None
        self.featviz_render = check_declared(render or {}, name or type(net).__name__)
        self.name = name or type(net).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_images(x, self.mean.shape[1], self.name)
        return self.net((x - self.mean) / self.std)

    def featviz_layers(self) -> dict[str, nn.Module]:
        """The inner network's modules by their own paths."""
        return {name: m for name, m in self.net.named_modules() if name}

    def extra_repr(self) -> str:
        mean = tuple(round(v, 4) for v in self.mean.flatten().tolist())
        std = tuple(round(v, 4) for v in self.std.flatten().tolist())
        fixed = ", fixed_size=True" if self.featviz_fixed_size else ""
        return (f"name={self.name!r}, mean={mean}, std={std}, "
                f"input_size={self.input_size}{fixed}")


@torch.fx.wrap  # a call in traced graphs (featviz.truncate), checked when the graph runs
def _check_images(x: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} expects images of shape [B, {channels}, H, W] in [0, 1], "
                         f"got {list(x.shape)}")
    return x


def _channels(net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> int:
    """The channels ``net`` takes: its first convolution's, else as many as the statistics
    give per channel, else 3 (RGB)."""
    known = model_info.input_channels(net)
    if known is not None:
        return known
    lengths = {len(list(v)) for v in (mean, std)} - {1}
    return lengths.pop() if len(lengths) == 1 else 3


def _stats(values: Sequence[float], what: str, channels: int = 3) -> torch.Tensor:
    t = torch.as_tensor(list(values), dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.repeat(channels)
    if t.numel() != channels:
        count = "1 value" if channels == 1 else f"1 or {channels} values"
        raise MismatchError(f"{what} needs {count} (one per input channel: the "
                         f"network takes {channels}), got {tuple(values)}")
    return t


def wrap(
    net: nn.Module,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    aliases: Mapping[str, str] | None = None,
    input_size: int = 224,
    name: str = "",
    fixed_size: bool = False,
    layouts: Mapping[str, str] | None = None,
    channels: int | None = None,
    classes: Sequence[str] | None = None,
    render: Mapping[str, Any] | None = None,
) -> Preprocessed:
    """Wrap any image network so that it takes [0, 1] images and normalizes with
    ``mean``/``std``.

    Args:
        net: the network, any ``nn.Module`` that takes an image batch.
        mean: the statistics the network was trained with, one value per input channel (or
            one for all); default 0, for a network that expects [0, 1] input.
        std: as ``mean``; default 1.
        aliases: other names of its layers, ``{alias: module path}`` (lucid's ``"mixed4a"``).
        input_size: the image side the network was trained on.
        name: what messages and labels call it (default: its class name).
        fixed_size: whether it takes ``input_size`` only (renders then fit their transformed
            images back to it); without it a render finds that out by a dry run.
        layouts: the layouts of layers that are not ``[B, C, H, W]`` and whose shape does not
            tell (``{"blocks.*": "nhwc"}``; see :mod:`featviz.core.layouts`).
        channels: the channels it takes (1 grayscale, 3 RGB, N bands); default its first
            convolution's, else the statistics' length.
        classes: the names of its outputs (top classes and render labels then speak words).
        render: render options it declares for itself, by name (a caller's choice overrides
            each), e.g. :data:`featviz.models.courses.TRANSFORMER` for a vision transformer.
    """
    return Preprocessed(net, mean if mean is not None else (0.0,),
                        std if std is not None else (1.0,), aliases, input_size, name,
                        fixed_size, layouts, channels, classes, render)
