"""Helpers of the sources whose library is an optional extra (:mod:`.timm_source`,
:mod:`.hf_source`): importing that library with a message that says how to install it, and
fitting the library's published statistics to the network's input channels."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..core import model_info
from ..errors import FeatvizError


def require(package: str, extra: str, what: str) -> Any:
    """Import the optional ``package``, or raise a :class:`FeatvizError` that says how to
    install it (``pip install "featviz[extra]"``).

    Args:
        package: the module to import (``"timm"``).
        extra: featviz's extra that installs it (``"timm"``, ``"hf"``).
        what: what needs it, for the message (``"timm models"``).
    """
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise FeatvizError(f"{what} need the {package} package ({err}); install it with: "
                           f'pip install "featviz[{extra}]"') from None


def source_stats(values: Sequence[float], net: nn.Module) -> tuple[float, ...]:
    """A source's published RGB statistics fitted to ``net``'s input channels: as they are
    for a net that takes their count, else their average for every channel (timm and
    transformers build a 1- or N-channel net from ``in_chans``/``num_channels`` but keep the RGB
    statistics in their config; the average is what a gray image of RGB statistics has).

    Args:
        values: the statistics (a mean or a std), one per RGB channel.
        net: the network built from the library.
    """
    values = tuple(float(v) for v in values)
    channels = model_info.input_channels(net)
    if channels is None or channels == len(values):
        return values
    return (sum(values) / len(values),)
