"""Token layers of vision transformers, for the methods that place a unit on the photo.

A transformer's layer hands featviz its patch tokens as an ``h x w`` grid (and its class token
apart, :mod:`featviz.core.layouts`). Its theoretical receptive field is the whole image from
the first attention on, so a field computed by gradient support says nothing about where a
token looks. What a token stands for is its patch: :func:`token_grid` tells whether a layer is
a token layer and how large its patches are (input size over grid size), and
:func:`token_field` gives the field the methods cut from the photo: the token's patch with a
margin of photo around it (:class:`TokenField`, whose :meth:`~TokenField.patch_box` is the
patch itself, to outline).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ..core import layouts as _layouts
from ..core import model_info
from ..core.hooks import frozen, on_output, only_tensor
from ..core.sizes import SizeLike
from ..errors import FeatvizError
from .receptive_field import ReceptiveField

#: patches of photo shown on each side of a token's own patch (a 3 x 3-patch window)
MARGIN = 1.0


@dataclass(frozen=True)
class TokenGrid:
    """Where a token layer's patches lie on the input.

    ``grid``: (rows, cols) of patch tokens; ``patch``: (height, width) in input pixels of one
    token's patch; ``prefix``: how many tokens (class, distillation, registers) precede the
    patches; ``layout``: its layout name (:data:`featviz.core.layouts.LAYOUTS`).
    """

    grid: tuple[int, int]
    patch: tuple[int, int]
    prefix: int
    layout: str

    @property
    def has_cls(self) -> bool:
        """Whether the layer carries a class token (taps hand it out under ``cls_key``)."""
        return self.prefix > 0


class _Seen(Exception):
    """Raised by the hook once the layer's output is seen: nothing after it needs to run."""


def token_grid(model: nn.Module, layer: str, size: SizeLike | None = None) -> TokenGrid | None:
    """The token grid of ``layer`` for inputs of ``size``, or None when it is no token layer.

    Runs the model once on one blank image up to ``layer`` and reads the layout of its output
    (declared by the model or recognized from its shape, as taps do).

    Args:
        model: The network.
        layer: The layer's name (a path or an alias).
        size: One side or (height, width) of the input; default the model's.
    """
    rows, cols = model_info.input_hw(model, size)
    seen: dict[str, torch.Tensor] = {}

    def keep(_names: list[str], output: object) -> None:
        seen["out"] = only_tensor(output)
        raise _Seen

    x = torch.zeros(1, model_info.image_channels(model), rows, cols,
                    device=model_info.model_device(model), dtype=model_info.model_dtype(model))
    with (frozen(model), on_output(model, [layer], keep), torch.no_grad(),
          contextlib.suppress(_Seen)):
        model(x)
    act = seen.get("out")
    if not isinstance(act, torch.Tensor):
        return None
    layout = _layouts.layout_of(layer, act, _layouts.declared(model), (rows, cols))
    prefix = _layouts.prefix_tokens(layout)
    if prefix is None:
        return None
    grid, _ = _layouts.to_grid(layer, act, layout, (rows, cols))
    h, w = grid.shape[2:]
    return TokenGrid((h, w), (rows // h, cols // w), prefix, layout)


@dataclass(frozen=True)
class TokenField(ReceptiveField):
    """The field a token is shown with: its patch (``patch``, height and width in pixels) and
    ``margin`` patches of photo on every side. ``size`` is the whole window, ``jump`` the
    patch size, ``offset`` the centre of patch (0, 0)."""

    patch: tuple[int, int] = (1, 1)
    margin: float = MARGIN

    def patch_box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Input box (top, left, bottom, right), exclusive end, of token ``(y, x)``'s patch.

        Args:
            y: The token's row in the grid.
            x: The token's column in the grid.
        """
        top, left = y * self.jump[0], x * self.jump[1]
        return top, left, top + self.patch[0], left + self.patch[1]

    def focus(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Token ``(y, x)``'s patch inside its window :meth:`box`, as (top, left, bottom,
        right) from the window's top-left corner.

        Args:
            y: The token's row in the grid.
            x: The token's column in the grid.
        """
        top, left, _, _ = self.box(y, x)
        pt, pl, pb, pr = self.patch_box(y, x)
        return pt - top, pl - left, pb - top, pr - left


def token_field(model: nn.Module, layer: str, size: SizeLike | None = None,
                margin: float = MARGIN) -> TokenField | None:
    """The field to show ``layer``'s tokens with, or None when it is no token layer.

    A token is its patch plus ``margin`` patches of photo on each side (a window of 3 x 3
    patches by default, centred on the token's patch), not the whole image its theoretical
    field covers once attention has mixed the tokens.

    Args:
        model: The network.
        layer: The layer's name.
        size: One side or (height, width) of the input; default the model's.
        margin: Patches of photo on each side of the token's own patch; 0 shows the patch only.
    """
    if margin < 0:
        raise ValueError(f"margin must be 0 or more patches, got {margin}")
    grid = token_grid(model, layer, size)
    if grid is None:
        return None
    ph, pw = grid.patch
    side = (round(ph * (1 + 2 * margin)), round(pw * (1 + 2 * margin)))
    return TokenField(size=side, jump=(ph, pw), offset=((ph - 1) / 2, (pw - 1) / 2),
                      layer=layer, clipped=False, patch=(ph, pw), margin=margin)


def split_tokens(acts: dict[str, torch.Tensor], table: _layouts.LayoutTable,
                 image: tuple[int, int]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One image's layer outputs with every token sequence ``[N, C]`` laid out as its patch
    grid ``[C, h, w]`` (and an NHWC map as ``[C, h, w]``), as taps hand them to objectives,
    and the class tokens ``[C]`` apart, by layer. Outputs whose layout is neither, or cannot
    be told (a layer of a shape no layout describes), stay as they are: the viewer shows them
    raw rather than fail. A tensor shared by several names (an alias, a container handing on
    its last child's output) stays one tensor.

    Args:
        acts: Layer name -> its output for one image (the batch dimension dropped).
        table: The model's declared layouts (:func:`featviz.core.layouts.declared`).
        image: The input's (height, width).
    """
    out: dict[str, torch.Tensor] = {}
    cls: dict[str, torch.Tensor] = {}
    done: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for name, act in acts.items():
        if id(act) not in done:
            done[id(act)] = _as_grid(name, act, table, image)
        out[name], token = done[id(act)]
        if token is not None:
            cls[name] = token
    return out, cls


def _as_grid(name: str, act: torch.Tensor, table: _layouts.LayoutTable,
             image: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One output as the viewer shows it: (grid or as it was, class token or None)."""
    try:
        layout = _layouts.layout_of(name, act[None], table, image)
    except FeatvizError:  # an unknown layout is shown raw: the viewer shows every layer
        return act, None
    if layout != "nhwc" and _layouts.prefix_tokens(layout) is None:
        return act, None
    try:
        grid, token = _layouts.to_grid(name, act[None], layout, image)
    except FeatvizError:  # tokens that fill no grid are shown raw as well
        return act, None
    return grid[0].contiguous(), None if token is None else token[0].contiguous()


def class_cells(tiles: torch.Tensor, colours: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """Each map of ``tiles`` [N,3,h,w] with its class token beside it: a square cell of
    ``colours`` [N,3] right of the map, ``gap`` pixels of white between, framed in grey so a
    pale cell still shows, top-aligned; the cell is a quarter of the map's height (at least
    8 px), larger than one patch so that it reads at a glance.

    Args:
        tiles: The maps, coloured, [N, 3, h, w] in [0, 1].
        colours: The class token's colour for each map, [N, 3].
        gap: White pixels between a map and its cell.
    """
    n, c, h, w = tiles.shape
    cell = min(h, max(8, h // 4))
    out = torch.ones(n, c, h, w + gap + cell, dtype=tiles.dtype)
    out[..., :w] = tiles
    out[:, :, :cell, w + gap:] = 0.5  # the frame
    out[:, :, 1:cell - 1, w + gap + 1:w + gap + cell - 1] = colours[:, :, None, None]
    return out
