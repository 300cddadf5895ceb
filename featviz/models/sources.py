"""Where :func:`featviz.models.load` finds a model named with a source prefix: ``timm:NAME``
(:mod:`.timm_source`) and ``hf:ID_OR_FOLDER`` (:mod:`.hf_source`), both optional extras whose
packages are imported only when such a model is asked for."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..core import model_info
from ..errors import FeatvizError

SOURCES = ("timm", "hf")


def source_of(name: str) -> str | None:
    """The source prefix of a model name (``"timm"`` for ``"timm:resnet18"``), None for a
    torchvision or featviz name."""
    prefix, colon, _ = name.partition(":")
    return prefix if colon and prefix in SOURCES else None


def from_source(name: str, weights: str | os.PathLike | None, mean: Sequence[float] | None,
                std: Sequence[float] | None, **options: Any) -> nn.Module:
    """Load ``name`` (``"timm:..."`` or ``"hf:..."``) from its source, wrapped for featviz."""
    prefix, _, rest = name.partition(":")
    if prefix == "timm":
        from .timm_source import load_timm as loader
    else:
        from .hf_source import load_hf as loader
    return loader(rest, weights, mean, std, **options)


def require(package: str, extra: str, what: str) -> Any:
    """Import the optional ``package``, or raise a :class:`FeatvizError` that says how to
    install it (``pip install "featviz[extra]"``); ``what`` names what needs it."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise FeatvizError(f"{what} need the {package} package ({err}); install it with: "
                           f'pip install "featviz[{extra}]"') from None


def random_weights(weights: Any) -> bool:
    """Whether ``weights`` asks for random initialization (None, "random", "none")."""
    return weights is None or (isinstance(weights, str) and weights.lower() in ("random", "none"))


def source_stats(values: Sequence[float], net: nn.Module) -> tuple[float, ...]:
    """A source's published RGB statistics fitted to ``net``'s input channels: as they are
    for a net that takes their count, else their average for every channel (timm and
    transformers build a 1- or N-channel net from ``in_chans``/``num_channels`` but keep the RGB
    statistics in their config; the average is what a gray image of RGB statistics has)."""
    values = tuple(float(v) for v in values)
    channels = model_info.input_channels(net)
    if channels is None or channels == len(values):
        return values
    return (sum(values) / len(values),)
