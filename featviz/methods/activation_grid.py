"""Activation grids ("what the network sees", Olah et al., "The Building Blocks of
Interpretability", Distill 2018): for every spatial position of a layer on one photo, a
picture of that position's activation vector, all in one batched render, laid out on the
layer's grid so the picture lines up with the photo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import images as _images
from ..core import notebook as _nb
from ..core import objectives as _objectives
from ..core import param as _param
from ..core import transforms as _transforms
from ..core.hooks import LayerTap, frozen
from ..core.model_info import fixed_input_size, model_device
from ..core.render import RenderResult, render
from ..errors import FeatvizError
from . import groups as _groups
from .tokens import token_grid

# cosine power of the grid's direction objective: on InceptionV1 mixed4d (pets.jpg, 14x14
# cells of 32 px, 128 steps) each cell's own-position cosine was 0.50 at power 0 (a plain
# dot product), 0.59 at 1 and 0.65 at 4, against 0.21-0.24 to the other positions
GRID_COSSIM_POW = 4.0

# cells are small (tens of pixels): lucid's standard transforms (pad 12, jitter 8) would move
# a cell's content half out of view, so the grid uses a gentler set of the same kinds
CELL_TRANSFORMS = (
    _transforms.pad(4, fill=0.5),
    _transforms.jitter(4),
    _transforms.scale([0.95, 0.975, 1.0, 1.025, 1.05]),
    _transforms.rotate(list(range(-5, 6))),
    _transforms.jitter(2),
)


@dataclass
class ActivationGrid:
    """One photo's activation grid at ``layer``.

    ``vectors`` [h, w, C] are the layer's activation vectors on ``image`` [1,3,H,W];
    ``cells`` [h·w, 3, s, s] the rendered picture of each (row-major); ``render`` the render
    that made them (history, seconds); ``groups`` the factorization whose maps tied alike cells
    together (None without sharing).
    """

    layer: str
    image: torch.Tensor
    vectors: torch.Tensor
    cells: torch.Tensor
    render: RenderResult
    cossim_pow: float
    groups: _groups.NeuronGroups | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the layer's map: the grid's size in cells."""
        return tuple(self.vectors.shape[:2])

    def picture(self) -> torch.Tensor:
        """The cells put together on the layer's grid, [1, 3, h·s, w·s]: cell (y, x) sits where
        position (y, x) of the layer sees the photo."""
        h, w = self.shape
        s = self.cells.shape[-1]
        tiles = self.cells.reshape(h, w, 3, s, s).permute(2, 0, 3, 1, 4)
        return tiles.reshape(1, 3, h * s, w * s)

    def beside_photo(self) -> torch.Tensor:
        """The photo, resized to the grid picture's size, and the picture side by side."""
        grid = self.picture()
        photo = F.interpolate(self.image[:, :3], size=grid.shape[-2:], mode="bilinear",
                              align_corners=False)
        gap = torch.ones(1, 3, grid.shape[2], max(4, grid.shape[3] // 64))
        return torch.cat([photo, gap, grid], dim=3)

    def agreement(self, model: nn.Module) -> torch.Tensor:
        """Cosine similarity [h·w, h·w] between each cell's own activation vector (the layer at
        the centre of the rendered cell, no transforms) and every position's target vector:
        row i, column j says how much cell i looks like position j to the model. A good grid
        has the largest values on the diagonal."""
        return agreement(model, self.layer, self.cells,
                         self.vectors.reshape(-1, self.vectors.shape[-1]))

    def save(self, path) -> None:
        """Write :meth:`picture` as a PNG (or any format :func:`featviz.images.save` takes)."""
        _images.save(self.picture(), path)

    def __repr__(self) -> str:
        h, w = self.shape
        return (f"ActivationGrid({self.layer}: {h}x{w} cells of {self.cells.shape[-1]} px, "
                f"cossim_pow={self.cossim_pow:g}, {self.render.steps_done} steps in "
                f"{self.render.seconds:.0f} s)")

    def _repr_png_(self) -> bytes:
        """The photo and the grid side by side."""
        return _nb.png(_images.to_pil(self.beside_photo()[0]))

    def _repr_html_(self) -> str:
        """What the grid is, above the photo and the grid side by side."""
        page = _nb.Budget()
        h, w = self.shape
        page.text(f"<p>{h}x{w} positions, one picture of each position's activation vector "
                  f"(cosine power {self.cossim_pow:g}), {self.render.steps_done} steps</p>")
        page.image(_images.to_pil(self.beside_photo()[0]), f"grid {self.layer}")
        return page.html(f"activation grid: {self.layer}")


def cell_objective(model: nn.Module, layer: str, vectors: torch.Tensor,
                   cossim_pow: float = GRID_COSSIM_POW) -> _objectives.Objective:
    """The objective that makes render ``i`` a picture of ``vectors[i]`` [N, C] at ``layer``:
    the layer's centre pointing along it (``direction_neuron``, lucid's, for a map whose
    centre sees a part of the cell), or for a transformer's token layer every patch token
    (``direction``, the mean over the patch grid): a token's own input is one patch, a
    fourteenth of the cell's side on ViT-Tiny, so its centre token alone leaves the rest of
    the cell grey (measured: a 14 x 14 grid of ViT-Tiny's blocks.8.mlp.act cells showed a
    speck at each centre, nothing else), while every patch at once fills the cell.

    Args:
        model: the network to be rendered.
        layer: the layer of the vectors.
        vectors: one target vector per render, [N, C].
        cossim_pow: the power of lucid's cosine weighting.
    """
    if token_grid(model, layer) is not None:
        return _objectives.direction(layer, vectors, cossim_pow=cossim_pow)
    return _objectives.direction_neuron(layer, vectors, cossim_pow=cossim_pow)


def agreement(model: nn.Module, layer: str, renders: torch.Tensor,
              targets: torch.Tensor) -> torch.Tensor:
    """Cosine [N, K] between the activation of ``layer`` at the centre of each render
    [N, 3, s, s] (no transforms; the mean over the patches of a token layer, what
    :func:`cell_objective` drives there) and each target vector [K, C]: how much render i
    looks like target j to the model. Renders of directions should have the largest values
    on the diagonal (activation grids, atlases). A model that takes one input size sees the
    renders scaled to it, as render fits them.

    Args:
        model: the network that judges the renders.
        layer: the layer whose centre activation is compared.
        renders: the rendered images, [N, 3, s, s].
        targets: the target vectors, [K, C].
    """
    x = renders[:, :3].float()
    fixed = fixed_input_size(model)
    if fixed is not None and tuple(x.shape[-2:]) != tuple(fixed):
        x = F.interpolate(x, size=fixed, mode="bilinear", align_corners=False)
    with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
        act = tap(x.to(model_device(model)))[layer].float().cpu()
    if token_grid(model, layer) is not None:
        got = act.mean(dim=(2, 3))
    else:
        got = act[:, :, act.shape[2] // 2, act.shape[3] // 2]
    wanted = torch.as_tensor(targets, dtype=torch.float32)
    return F.normalize(got, dim=1) @ F.normalize(wanted, dim=1).T


def layer_vectors(model: nn.Module, image: torch.Tensor, layer: str) -> torch.Tensor:
    """The activation vectors of ``layer`` at every position of one photo, [h, w, C].

    Args:
        model: the network to run.
        image: the photo, [1, 3, H, W] or [3, H, W] in [0, 1].
        layer: the layer whose activation vectors are returned.
    """
    if image.dim() == 3:
        image = image[None]
    with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
        act = tap(image[:1].to(model_device(model)))[layer].float().cpu()
    if act.dim() != 4:
        raise FeatvizError(f"layer {layer!r} has no spatial positions (its output is "
                           f"{list(act.shape)}); an activation grid needs a map [C, H, W]")
    return act[0].permute(1, 2, 0)


def _runs_at(model: nn.Module, layer: str, size: int) -> bool:
    """Whether the model reaches ``layer`` on a ``size``-pixel image (too small an image dies
    in a pooling layer on the way)."""
    grey = torch.full((1, 3, size, size), 0.5, device=model_device(model))
    try:
        with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
            tap(grey)
    except FeatvizError:
        raise
    except (RuntimeError, ValueError, IndexError):
        return False
    return True


def check_cell(model: nn.Module, layer: str, cell: int) -> None:
    """A clear error when ``cell``-pixel images cannot reach ``layer`` (render would quietly
    resize every cell to the model's input size instead, many times slower), naming the
    smallest cell size that can. A model that takes one input size only gets every cell
    fitted to it by render, as any render.

    Args:
        model: the network to be rendered.
        layer: the layer the cells must reach.
        cell: the side of each cell, in pixels.
    """
    if fixed_input_size(model) is not None or _runs_at(model, layer, cell):
        return
    size = cell
    while not _runs_at(model, layer, size):
        if size >= 1024:
            raise FeatvizError(f"layer {layer!r} cannot be reached by images of {cell} to "
                               f"{size} px; see `featviz layers` for the model's layers")
        size *= 2
    low = size // 2
    while size - low > 1:  # the smallest size that runs, between the two
        mid = (low + size) // 2
        low, size = (low, mid) if _runs_at(model, layer, mid) else (mid, size)
    raise FeatvizError(f"cells of {cell} px are too small for layer {layer!r}: the model "
                       f"cannot run an image that small that far; use cells of at least "
                       f"{size} px")


def _sharing(vectors: torch.Tensor, image: torch.Tensor, layer: str, k: int,
             seed: int, method: str = "nmf") -> tuple[torch.Tensor, _groups.NeuronGroups | None]:
    """Per cell, how much it takes of each shared group image: the factorization's spatial
    maps, each scaled to a maximum of 1 (lucid's notebook does the same), [h·w, k]."""
    h, w, c = vectors.shape
    if k <= 0:
        return torch.zeros(h * w, 0), None
    acts = vectors.permute(2, 0, 1)
    k = min(k, c, h * w)
    found = _groups.from_activations(acts, image, layer, k=k, method=method, seed=seed)
    maps = found.maps.reshape(k, -1).T.clamp_min(0)  # a signed method's negative parts: no share
    return maps / maps.amax(dim=0, keepdim=True).clamp_min(1e-8), found


def activation_grid(model: nn.Module, image: torch.Tensor, layer: str, *, cell: int = 48,
                    steps: int = 256, groups: int = 6, cossim_pow: float = GRID_COSSIM_POW,
                    seed: int = 0, method: str = "nmf", progress: bool = True,
                    **render_kw: Any) -> ActivationGrid:
    """Render, for every position of ``layer`` on ``image`` ([1,3,H,W] or [3,H,W] in
    [0, 1]), a ``cell``-pixel picture whose centre activation points along that position's
    vector (``objectives.direction_neuron`` with ``cossim_pow``: lucid's cosine weighting,
    which rewards the vector's direction over sheer size; on a transformer's token layer
    every patch token points along it, see :func:`cell_objective`), all cells in one batch.
    With
    ``groups > 0`` the cells share that many group images, mixed by a non-negative
    factorization of the photo's activations, so neighbouring cells that see alike things
    get alike pictures (lucid's parameterization; 0 renders every cell on its own;
    ``method="pca"`` for a layer with negative activations, where NMF cannot go). Other
    keywords go to :func:`featviz.render` (``transforms`` defaults to small-cell ones).

    Args:
        model: the network to visualize.
        image: the photo, [1, 3, H, W] or [3, H, W] in [0, 1].
        layer: the layer whose positions get a cell each.
        cell: the side of each cell, in pixels (default 48).
        steps: optimization steps of the render (default 256).
        groups: the number of shared group images; 0 renders every cell on its own.
        cossim_pow: the power of the cosine weighting of the direction objective.
        seed: the random seed of the render and the factorization.
        method: the factorization of the groups, ``"nmf"`` (default) or ``"pca"``.
        progress: show a progress bar.
        **render_kw: other options for :func:`featviz.render`.
    """
    if image.dim() == 3:
        image = image[None]
    vectors = layer_vectors(model, image, layer)
    check_cell(model, layer, cell)
    h, w, c = vectors.shape
    weights, found = _sharing(vectors, image, layer, groups, seed, method)
    par = _param.group_shared(cell, weights, seed=seed, device=model_device(model))
    objective = cell_objective(model, layer, vectors.reshape(h * w, c), cossim_pow)
    render_kw.setdefault("transforms", list(CELL_TRANSFORMS))
    result = render(model, objective, par, steps=steps, progress=progress, **render_kw)
    return ActivationGrid(layer, image[:1].cpu(), vectors, result.images, result,
                          cossim_pow, found)
