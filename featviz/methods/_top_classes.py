"""The feature-map viewer's input and its softmax: one image checked against the model's
channels, the model's class names read from a list or a file, and the most probable classes
(:func:`top_classes`). Re-exported by :mod:`featviz.methods.featuremaps`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..core.hooks import frozen
from ..core.model_info import class_names, image_channels, model_device
from ..errors import FeatvizError


def one_image(img: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """``img`` as one image [1,C,H,W] of the model's ``channels``, or a clear error."""
    if not torch.is_tensor(img):
        raise TypeError("expected an image tensor (load files with featviz.images.load)")
    img = img[None] if img.dim() == 3 else img
    if img.dim() != 4 or img.shape[0] != 1 or img.shape[1] != channels:
        raise ValueError(f"expected one image [1,{channels},H,W] (the model's channels), got "
                         f"{list(img.shape)} (featviz.images.load(path, channels=1 or 3) "
                         "converts greyscale and RGBA files)")
    return img.float()


def read_labels(labels: str | os.PathLike | Sequence[str] | None, n: int) -> list[str]:
    """Class names: a list, a file with one per line (``a, b`` keeps ``a``), or indices.

    Args:
        labels: a list of names, a file of names, or None for the indices.
        n: the number of classes.
    """
    if labels is None:
        return [str(i) for i in range(n)]
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.is_file():
            raise FeatvizError(f"class name file not found: {path}")
        labels = [line.split(",")[0].strip() for line in _label_lines(path)]
    labels = list(labels)
    if len(labels) < n:
        raise FeatvizError(f"{len(labels)} class names for a model with {n} outputs")
    return labels


def _label_lines(path: Path) -> list[str]:
    """The lines of a class-name file; an error naming the file when it is not UTF-8 text
    (a binary file given by mistake) or cannot be read."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise FeatvizError(f"cannot read class names from {path}: not UTF-8 text (byte "
                           f"0x{err.object[err.start]:02x} at offset {err.start}); give a text "
                           "file with one class name per line") from None
    except OSError as err:
        raise FeatvizError(f"cannot read class names from {path}: {err.strerror}") from None


def top_classes(model: nn.Module, img: torch.Tensor, k: int = 5,
                labels: str | os.PathLike | Sequence[str] | None = None
                ) -> list[tuple[int, str, float]]:
    """The ``k`` most probable classes: (index, name, softmax probability); names from
    ``labels``, else the model's own (:func:`featviz.core.model_info.class_names`), else the
    indices."""
    img = one_image(img, image_channels(model))
    with frozen(model), torch.no_grad():
        out = model(img.to(model_device(model)))
    if not torch.is_tensor(out) or out.dim() != 2:
        raise FeatvizError("top_classes needs a model that returns [B, classes] logits")
    probs = out[0].float().softmax(0).cpu()
    names = read_labels(labels if labels is not None else class_names(model), len(probs))
    top = probs.topk(min(k, len(probs)))
    return [(int(i), names[int(i)], float(p)) for p, i in zip(top.values, top.indices,
                                                               strict=True)]
