"""Which layers of a model give a spatial map, and which of them sits in the middle: the layer
to render when nobody named one (a benchmark over many models, a first look at a new one)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core import layouts as _layouts
from ..core import model_info
from ..core.hooks import frozen, named_layers, on_output, only_tensor
from ..errors import FeatvizError

# the probe's batch: two images, so that an output whose first axis is not the batch (windows,
# heads, a bias computed once for all images) shows it
_BATCH = 2


@dataclass(frozen=True)
class SpatialLayer:
    """A layer whose output is a map: its path, its layout, its channels and its grid (h, w)
    as objectives see it (after :mod:`featviz.core.layouts`), for the probed image size."""

    name: str
    layout: str
    channels: int
    grid: tuple[int, int]


def spatial_layers(model: nn.Module, size: int | None = None) -> list[SpatialLayer]:
    """The layers of ``model`` whose output is a map of more than one position, in the order
    the forward pass runs them, found by running a batch of two grey images of ``size``
    (default: the size the model declares it takes, else its ``input_size``). Layers that run
    more than once per pass (their output is ambiguous), return no single tensor, give other
    than one map per image (attention windows, or a position bias that does not depend on the
    image at all), give attention weights (token by token) or whose layout cannot be told from
    their shape are left out.

    Args:
        model: the model to probe.
        size: the image side to probe with (default: the model's).
    """
    fixed = model_info.fixed_input_size(model)
    hw = fixed or model_info.input_hw(model, size)
    table = _layouts.declared(model)
    found: dict[str, SpatialLayer | None] = {}
    runs: dict[str, int] = {}
    sequence_lengths: set[int] = set()

    def record(names: list[str], output) -> None:
        runs[names[0]] = runs.get(names[0], 0) + 1
        found.setdefault(names[0], _as_spatial(names[0], output, table, hw))
        tensor = only_tensor(output)
        if isinstance(tensor, torch.Tensor) and tensor.dim() == 3:
            sequence_lengths.add(int(tensor.shape[1]))

    x = torch.full((_BATCH, model_info.input_channels(model) or 3, *hw), 0.5,
                   device=model_info.model_device(model), dtype=model_info.model_dtype(model))
    try:
        with on_output(model, named_layers(model), record), frozen(model), torch.no_grad():
            model(x)
    except Exception as err:
        raise FeatvizError(f"a {hw[0]}x{hw[1]} image does not run through the model "
                           f"({type(err).__name__}: {err})") from err
    return [s for name, s in found.items() if s is not None and runs[name] == 1
            and not _attention_weights(s, sequence_lengths)]


def _attention_weights(layer: SpatialLayer, sequence_lengths: set[int]) -> bool:
    """Whether ``layer``'s "grid" is a token-by-token matrix (attention weights [B, heads,
    N, N], or one class token's row [B, heads, 1, N]; CaiT's talking heads give them heads
    last): its sides are the lengths of the model's token sequences, not an image grid."""
    h, w = layer.grid
    return w in sequence_lengths and (h in sequence_lengths or h == 1)


def middle_layer(model: nn.Module, size: int | None = None) -> str:
    """The path of the spatial layer halfway along the forward pass (see
    :func:`spatial_layers`): a layer of mid-level features, neither the stem's edges nor the
    head's pooled vector, for rendering a model nobody has looked into yet.

    Args:
        model: the model to probe.
        size: the image side to probe with (default: the model's).
    """
    return middle_of(spatial_layers(model, size)).name


def middle_of(layers: list[SpatialLayer]) -> SpatialLayer:
    """The layer halfway along ``layers`` (as :func:`spatial_layers` lists them), or a
    :class:`FeatvizError` when there is none.

    Args:
        layers: the spatial layers, in the order the forward pass runs them.
    """
    if not layers:
        raise FeatvizError("no layer of the model gives a spatial map (every output is a "
                           "vector, a tuple, or of a layout featviz cannot tell); name a layer "
                           "and declare its layout: featviz.models.wrap(net, layouts=...)")
    return layers[len(layers) // 2]


def _as_spatial(name: str, output, table: _layouts.LayoutTable,
                image: tuple[int, int]) -> SpatialLayer | None:
    """``output`` as a :class:`SpatialLayer` when it is one tensor with a map per image of the
    probe's batch, of a known layout, and with more than one position, else None."""
    output = only_tensor(output)  # what the tap would capture
    if not isinstance(output, torch.Tensor) or output.dim() < 3 or output.shape[0] != _BATCH:
        return None
    try:
        layout = _layouts.layout_of(name, output, table, image)
        grid, _ = _layouts.to_grid(name, output, layout, image)
    except FeatvizError:
        return None
    if grid.dim() != 4 or grid.shape[2] * grid.shape[3] < 2:
        return None
    return SpatialLayer(name, layout, int(grid.shape[1]), (int(grid.shape[2]), int(grid.shape[3])))
