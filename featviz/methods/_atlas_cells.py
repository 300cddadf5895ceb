"""The model run on an activation atlas's cells (the job behind
:func:`featviz.atlas.render_cells` and :func:`featviz.atlas.cell_classes`): one batched render
of every cell's average vector, and the classes each average speaks for. Import these names
from :mod:`featviz.methods.atlas`, which re-exports them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core import layouts as _layouts
from ..core import param as _param
from ..core.hooks import frozen, on_output
from ..core.model_info import class_names, input_hw, model_device
from ..core.render import RenderResult, render
from ..errors import FeatvizError
from .activation_grid import CELL_TRANSFORMS, GRID_COSSIM_POW, cell_objective, check_cell


def cell_classes(model: nn.Module, layer: str, means: np.ndarray, *, top: int = 3,
                 size: int | tuple[int, int] | None = None, batch_size: int = 32
                 ) -> list[list[tuple[str, float]]]:
    """Per cell the ``top`` classes its average vector speaks for: the rest of the network
    run on the layer's map filled with the vector at every position, each class logit minus
    its value for a map of zeros (a documented simplification of the article's gradient ×
    vector, which would need a backward pass per class; this one needs one forward pass per
    cell and gives every class at once) on a grey image of ``size`` (a side or (h, w))."""
    names = class_names(model)
    grey = torch.full((1, 3, *input_hw(model, size)), 0.5, device=model_device(model))
    vecs = torch.as_tensor(means, dtype=torch.float32)
    out = []
    with frozen(model), torch.no_grad():
        base = _tail(model, layer, grey, torch.zeros(1, vecs.shape[1]))
        for i in range(0, len(vecs), batch_size):
            part = vecs[i:i + batch_size]
            logits = _tail(model, layer, grey.expand(len(part), -1, -1, -1), part) - base
            val, idx = logits.topk(min(top, logits.shape[1]), dim=1)
            out += [[(names[j].split(",")[0] if names else str(j), float(v))
                     for v, j in zip(vr.tolist(), ir.tolist(), strict=True)]
                    for vr, ir in zip(val, idx, strict=True)]
    return out


def _tail(model: nn.Module, layer: str, images: torch.Tensor, vecs: torch.Tensor):
    """The logits with ``layer``'s map replaced by ``vecs`` [B, C] at every position (every
    patch token of a token layer; its class token stays the grey image's own)."""
    table = _layouts.declared(model)

    def fill(_names, output):
        layout = None
        if isinstance(output, torch.Tensor) and output.dim() in (3, 4):
            layout = _layouts.layout_of(layer, output, table, tuple(images.shape[-2:]))
        lead = _layouts.prefix_tokens(layout) if layout else None
        if layout not in ("nchw", "nhwc") and lead is None:
            raise FeatvizError(f"layer {layer!r} has no map [B, C, H, W] or token sequence "
                               "to fill")
        v = vecs.to(output)
        if layout == "nchw":
            return v[:, :, None, None].expand_as(output).clone()
        if layout == "nhwc":
            return v[:, None, None, :].expand_as(output).clone()
        filled = output.clone()
        filled[:, lead:] = v[:, None, :]
        return filled

    with on_output(model, [layer], fill):
        return model(images).float().cpu()


def render_cells(model: nn.Module, layer: str, means: np.ndarray, *, cell: int = 32,
                 steps: int = 256, cossim_pow: float = GRID_COSSIM_POW, seed: int = 0,
                 progress: bool = True, **render_kw) -> RenderResult:
    """One batched render of ``cell``-pixel images, image k making the centre of ``layer``
    point along ``means[k]`` (``objectives.direction_neuron`` with lucid's cosine weighting,
    as the article's atlases and the activation grid do; every patch of a transformer's
    token layer, :func:`~featviz.methods.activation_grid.cell_objective`; the grid's
    small-cell transforms unless ``transforms`` is given). Refuses a cell too small to reach
    the layer."""
    check_cell(model, layer, cell)
    vecs = torch.as_tensor(np.asarray(means), dtype=torch.float32)
    objective = cell_objective(model, layer, vecs, cossim_pow)
    par = _param.image(cell, batch=len(vecs), seed=seed, device=model_device(model))
    render_kw.setdefault("transforms", list(CELL_TRANSFORMS))
    return render(model, objective, par, steps=steps, seed=seed, progress=progress,
                  **render_kw)
