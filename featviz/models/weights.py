"""Weights by name or file: what a ``weights=`` argument asks for, and reading a state_dict file
(PyTorch or safetensors) into a network with a message that names the mismatching keys."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError


def default_spelled(weights: Any) -> Any:
    """``weights`` with ``"DEFAULT"`` (the command line's default, torchvision's spelling) in
    any case as ``"default"``, for the sources that read only the lower-case word.

    Args:
        weights: what the caller passed as ``weights=``.
    """
    return "default" if isinstance(weights, str) and weights.lower() == "default" else weights


def random_weights(weights: Any) -> bool:
    """Whether ``weights`` asks for random initialization.

    Args:
        weights: a ``weights=`` argument: None, "random" and "none" (any case) ask for it.
    """
    return weights is None or (isinstance(weights, str) and weights.lower() in ("random", "none"))


def names_file(weights: Any) -> bool:
    """Whether ``weights`` names a local file rather than weights by name (``"DEFAULT"``).

    A path object always does; a string does when it has a folder separator or a weights
    suffix, or when a file of that name exists.

    Args:
        weights: a ``weights=`` argument.
    """
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    return (os.sep in weights or "/" in weights or weights.endswith((".pth", ".pt", ".bin"))
            or Path(weights).exists())


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict file, unwrapping ``{"state_dict": ...}`` and ``module.`` prefixes.

    Args:
        path: a PyTorch file (``torch.save``) or a ``.safetensors`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        state = (_read_safetensors(path) if path.suffix == ".safetensors"
                 else torch.load(path, map_location="cpu", weights_only=True))
    except WeightsError:
        raise
    except Exception as err:
        raise WeightsError(f"cannot read weights file {path}: {err}") from err
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"],
                                                                           Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state_dict")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file (timm's and Hugging Face's format) as a state_dict."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise WeightsError(f"{path} is a .safetensors file: pip install safetensors (it comes "
                           "with featviz[timm] and featviz[hf]) to read it") from None
    return load_file(str(path), device="cpu")


def load_state_dict_file(net: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a local state_dict file into ``net`` strictly; on mismatch, name the path and the
    keys (auxiliary heads that featviz never builds are dropped from the file).

    Args:
        net: the network to load into, unwrapped.
        path: the file, as :func:`read_state_dict` reads it.
    """
    state = read_state_dict(path)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    # torchvision's published GoogLeNet/Inception files carry auxiliary heads featviz never runs
    unexpected_aux = [k for k in unexpected if k.startswith(("aux1.", "aux2.", "AuxLogits."))]
    unexpected = [k for k in unexpected if k not in unexpected_aux]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing in the file", missing), ("not in the model", unexpected),
                            ("of another shape", shapes)):
            if keys:
                more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                parts.append(f"{len(keys)} keys {label}: {', '.join(keys[:8])}{more}")
        raise WeightsError(f"weights file {path} does not match {type(net).__name__}: "
                           + "; ".join(parts))
    for k in unexpected_aux:
        state.pop(k)
    net.load_state_dict(state, strict=True)
    return net
