"""Where the channels and the spatial grid are in a layer's output.

Convolutional layers give ``[B, C, H, W]`` ("nchw"). Swin and ConvNeXt blocks give
``[B, H, W, C]`` ("nhwc"); vision-transformer blocks give token sequences ``[B, 1+N, C]``
with a class token first ("tokens+cls") or ``[B, N, C]`` without one ("tokens"), the N patch
tokens being an ``h x w`` grid; DeiT's distillation token or register tokens make ``K`` leading
tokens ("tokens+K", "tokens+cls" being "tokens+1"); a pooled or linear layer gives ``[B, C]``
("vector").

Taps hand objectives every spatial layer as ``[B, C, H, W]`` (a view: gradients flow), so a
channel is always the mean over the patch grid and a neuron a position on it; a class token is
kept apart under :func:`cls_key`. A model declares the layouts of its layers in
``featviz_layouts`` (``{layer path or pattern: layout}``, see :func:`featviz.models.wrap`) and
how many leading tokens its token sequences carry in ``featviz_prefix_tokens`` (default 1);
undeclared ones are recognized by their shape, and a shape that fits no layout, or not the
declared one, is an error that says how to declare it, never a silent mean over the wrong axis.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import FeatvizError

LAYOUTS = ("nchw", "nhwc", "tokens", "tokens+cls", "tokens+K", "vector")
_DIMS = {"nchw": 4, "nhwc": 4, "vector": 2}
_TOKENS = re.compile(r"tokens(?:\+(cls|[1-9][0-9]*))?")
CLS_SUFFIX = "#cls"


class LayoutTable(dict):
    """A model's declared layouts, ``{layer path or fnmatch pattern: layout}``, and
    ``prefix_tokens``: how many leading tokens (class, distillation, register) precede the
    patch grid in its token sequences, for the ones recognized by shape."""

    def __init__(self, table: Mapping[str, str] = (), prefix_tokens: int = 1):
        super().__init__(table)
        self.prefix_tokens = prefix_tokens


def cls_key(layer: str) -> str:
    """The key under which a tap hands out ``layer``'s class token, [B, C].

    Args:
        layer: The layer's name.
    """
    return layer + CLS_SUFFIX


def declared(model: nn.Module) -> LayoutTable:
    """The model's declared layouts, ``{layer path or fnmatch pattern: layout}``, with its
    ``featviz_prefix_tokens`` (1 when it declares none).

    Args:
        model: The model; reads its ``featviz_layouts`` and ``featviz_prefix_tokens``.
    """
    table = LayoutTable(getattr(model, "featviz_layouts", {}) or {},
                        int(getattr(model, "featviz_prefix_tokens", 1)))
    for name, layout in table.items():
        if _dims(layout) is None:
            raise FeatvizError(f"layout {layout!r} declared for {name!r} is not one of "
                               f"{', '.join(LAYOUTS)} (K a number of leading tokens)")
    return table


def prefix_tokens(layout: str) -> int | None:
    """How many tokens precede the patch grid in a token layout ("tokens" 0, "tokens+cls" 1,
    "tokens+K" K); None for a layout that is no token sequence.

    Args:
        layout: A layout name, one of :data:`LAYOUTS`.
    """
    match = _TOKENS.fullmatch(layout)
    if match is None:
        return None
    count = match.group(1)
    return 0 if count is None else 1 if count == "cls" else int(count)


def _dims(layout: str) -> int | None:
    """The number of dimensions of a layout's tensors (None for no layout)."""
    return 3 if prefix_tokens(layout) is not None else _DIMS.get(layout)


def layout_of(name: str, act: torch.Tensor, table: Mapping[str, str],
              image: tuple[int, int]) -> str:
    """The layout of layer ``name``'s output ``act`` for an input image of ``image`` (h, w):
    declared (an exact path first, then the first matching pattern), else recognized from its
    shape.

    Args:
        name: The layer's path in the model.
        act: The layer's output tensor.
        table: Declared layouts, ``{path or fnmatch pattern: layout}`` (:func:`declared`).
        image: The input image's size, (h, w).
    """
    want = table.get(name) or next((v for k, v in table.items() if fnmatch.fnmatchcase(name, k)),
                                    None)
    if want is not None:
        if act.dim() != _dims(want):
            raise FeatvizError(f"layer {name!r} is declared {want!r} but gives a "
                               f"{act.dim()}-D output {list(act.shape)}; declare its layout as "
                               f"one of {', '.join(LAYOUTS)}")
        return want
    return guess(name, act, image, getattr(table, "prefix_tokens", 1))


def guess(name: str, act: torch.Tensor, image: tuple[int, int], prefix: int = 1) -> str:
    """Recognize a layout from a shape, for an input image of ``image`` (h, w): 2-D vectors;
    3-D token sequences that fill a grid of the image's aspect (no class token) or do so after
    the model's ``prefix`` leading tokens; 4-D maps whose last two sides have the image's
    aspect (NCHW), else whose middle two do (NHWC), else the same two with the image's aspect
    less an unpadded border (a rectangle only, see :func:`_bordered`).

    Args:
        name: The layer's path, named in the error when no layout fits.
        act: The layer's output tensor; only its shape is read.
        image: The input image's size, (h, w).
        prefix: How many tokens lead the patch grid (default 1: a class token).
    """
    shape = list(act.shape)
    if act.dim() == 2:
        return "vector"
    if act.dim() == 3:
        if _grid(shape[1], image):
            return "tokens"
        if prefix > 0 and _grid(shape[1] - prefix, image):
            return "tokens+cls" if prefix == 1 else f"tokens+{prefix}"
    if act.dim() == 4:
        if _aspect(shape[2], shape[3], image):
            return "nchw"
        if _aspect(shape[1], shape[2], image):
            return "nhwc"
        if _bordered(shape[2], shape[3], image):
            return "nchw"
        if _bordered(shape[1], shape[2], image):
            return "nhwc"
    raise FeatvizError(f"cannot tell where the channels and the grid are in layer {name!r}'s "
                       f"output {shape}; declare it: featviz.models.wrap(net, layouts="
                       f"{{{name!r}: LAYOUT}}) with LAYOUT one of {', '.join(LAYOUTS)}")


def to_grid(name: str, act: torch.Tensor, layout: str, image: tuple[int, int]
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``act`` as ``[B, C, H, W]`` (a view where possible) and its class token ``[B, C]`` (None
    when it has none); a vector stays ``[B, C]``. Tokens are laid on a grid of the image's
    aspect (row-major, as patch embeddings flatten them) after the leading ones, of which the
    first is the class token.

    Args:
        name: The layer's path, named in errors.
        act: The layer's output tensor.
        layout: Its layout (:func:`layout_of`).
        image: The input image's size, (h, w), whose aspect the token grid takes.
    """
    if layout in ("nchw", "vector"):
        return act, None
    if layout == "nhwc":
        return act.permute(0, 3, 1, 2), None
    prefix = prefix_tokens(layout) or 0
    cls, tokens = (act[:, 0], act[:, prefix:]) if prefix else (None, act)
    hw = _grid(tokens.shape[1], image)
    if hw is None:
        raise FeatvizError(f"layer {name!r} has {tokens.shape[1]} patch tokens, which fill no "
                           f"grid of the image's aspect {image[0]}x{image[1]} (after {prefix} "
                           "leading tokens); declare its layout (tokens, tokens+cls, or "
                           "tokens+K for K leading tokens) to match")
    grid = tokens.transpose(1, 2).reshape(act.shape[0], act.shape[2], *hw)
    return grid, cls


def normalize(acts: dict[str, torch.Tensor], table: Mapping[str, str],
              image: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Every activation in the ``[B, C, H, W]`` / ``[B, C]`` form objectives read (for an input
    of ``image`` (h, w)), plus the class tokens under :func:`cls_key`; non-tensor values and
    pseudo-layers pass through.

    Args:
        acts: Activations by layer name, as a tap hands them out.
        table: Declared layouts, ``{path or fnmatch pattern: layout}`` (:func:`declared`).
        image: The input image's size, (h, w).
    """
    out: dict[str, torch.Tensor] = {}
    for name, act in acts.items():
        if name.startswith(":") or not isinstance(act, torch.Tensor):
            out[name] = act
            continue
        grid, cls = to_grid(name, act, layout_of(name, act, table, image), image)
        out[name] = grid
        if cls is not None:
            out[cls_key(name)] = cls
    return out


def _aspect(h: int, w: int, image: tuple[int, int]) -> bool:
    """Whether an ``h x w`` map has the image's aspect, up to the rounding of strides."""
    return h > 0 and w > 0 and abs(h * image[1] - w * image[0]) < max(image) * 1.0


def _bordered(h: int, w: int, image: tuple[int, int]) -> bool:
    """Whether an ``h x w`` map is a rectangular image less a border of one width on every
    side, then strided: unpadded convolutions take the same pixels off both sides, which
    changes the aspect of a rectangle (a 60x92 image gives 56x88 after two 3x3 ones). Solved
    for the stride ``s`` and the border ``k`` from ``h = (H - k) / s``, ``w = (W - k) / s``:
    a fit needs the map to lie the image's way (``s > 0``) and the border to be at most half
    the shorter side (down to ``-s``: padding that rounds up). A square image never gets
    here: its maps have its aspect exactly."""
    rows, cols = image
    if h <= 0 or w <= 0 or h == w or rows == cols:
        return False
    stride = (cols - rows) / (w - h)
    border = rows - stride * h
    return stride > 0 and -stride <= border <= min(rows, cols) / 2


def _grid(n: int, image: tuple[int, int]) -> tuple[int, int] | None:
    """The (h, w) grid of ``n`` cells with the image's aspect, if there is one."""
    if n <= 0:
        return None
    h = max(1, round(math.sqrt(n * image[0] / image[1])))
    return (h, n // h) if h * (n // h) == n and _aspect(h, n // h, image) else None
