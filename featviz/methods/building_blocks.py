"""The views of "The Building Blocks of Interpretability" (Olah et al., Distill 2018) for one
photo, made together: a semantic dictionary, activation grids, neuron groups with their
renders and spatial maps, and how much each group speaks for each of the photo's top classes.
:func:`building_blocks` runs them; ``featviz blocks`` writes them as one HTML page."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core import images as _images
from ..core import model_info
from ..core import notebook as _nb
from ..core.render import RenderResult
from ..core.sizes import side
from . import attribution as _attribution
from . import groups as _groups
from .activation_grid import ActivationGrid, activation_grid
from .featuremaps import top_classes
from .semantic_dictionary import SemanticDictionary, semantic_dictionary


@dataclass
class GroupAttribution:
    """How much each neuron group of a layer speaks for each of some classes: ``values``
    [groups, classes], the gradient × the group's part of the activation (or its integrated
    version) for each class logit; ``classes`` the class indices, ``names`` their names."""

    classes: list[int]
    names: list[str]
    values: torch.Tensor
    method: str

    def rows(self) -> list[list[str]]:
        """The table as text: one row per group, one column per class."""
        return [[f"{v:+.2f}" for v in row.tolist()] for row in self.values]

    def __repr__(self) -> str:
        return (f"GroupAttribution({self.values.shape[0]} groups x {len(self.classes)} classes, "
                f"{self.method})")

    def _repr_html_(self) -> str:
        """The table: one row per group, one column per class."""
        return _nb.table(["", *self.names],
                         [[f"group {j}", *row] for j, row in enumerate(self.rows())])


@dataclass
class BuildingBlocks:
    """Everything :func:`building_blocks` made for one photo; ``seconds`` per view."""

    image: torch.Tensor
    layer: str
    top_classes: list[tuple[int, str, float]]
    dictionary: SemanticDictionary
    grids: dict[str, ActivationGrid]
    groups: _groups.NeuronGroups
    group_renders: RenderResult
    group_classes: GroupAttribution
    seconds: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"BuildingBlocks({self.layer}: dictionary, grids at {', '.join(self.grids)}, "
                f"{self.groups.k} groups; {sum(self.seconds.values()):.0f} s)")

    def _repr_html_(self) -> str:
        """Every view in one cell: top classes, the dictionary at its strongest positions,
        the grids, the groups with their renders and maps, and the attribution table."""
        page = _nb.Budget()
        page.text("<p>Top classes: " + ", ".join(f"{n} {p:.2f}" for _, n, p in
                                                 self.top_classes) + "</p>")
        page.image(self.dictionary.figure(), "semantic dictionary")
        for layer, grid in self.grids.items():
            page.text(f"<p>activation grid {layer}</p>")
            page.image(_images.to_pil(grid.beside_photo()[0]), f"grid {layer}")
        renders = self.group_renders.shown()[:, :3]
        tiles = torch.cat([renders, self.groups.map_images()])
        labels = [f"group {j}" for j in range(len(renders))] * 2
        page.text(f"<p>neuron groups (error {self.groups.error:.2f})</p>")
        page.image(_images.grid(tiles, labels, ncol=len(renders)), "groups")
        page.text(self.group_classes._repr_html_())
        return page.html(f"building blocks: {self.layer}")


def group_class_attribution(model: nn.Module, groups: _groups.NeuronGroups,
                            classes: Sequence[int], method: str = "gradient",
                            steps: int = 32) -> GroupAttribution:
    """Attribution of each class logit in ``classes`` to each neuron group: the gradient (or
    the path-averaged gradient, ``method="integrated"``) of the logit at the groups' layer,
    times each group's part of the activation (its map ⊗ its direction), summed.

    Args:
        model: the network.
        groups: the neuron groups, with their layer and image.
        classes: the class indices.
        method: ``"gradient"`` (default) or ``"integrated"``.
        steps: integration points for ``"integrated"`` (default 32).
    """
    names = model_info.class_names(model)
    columns = []
    for c in classes:
        attr = _attribution.attribute(model, groups.image, groups.layer, int(c), method=method,
                                      steps=steps)
        columns.append(attr.to_directions(groups.maps, groups.directions)[0])
    return GroupAttribution(list(map(int, classes)),
                            [names[c] if names else str(c) for c in classes],
                            torch.stack(columns, dim=1).cpu(), method)


def building_blocks(model: nn.Module, image: torch.Tensor, layer: str, *,
                    grid_layers: Sequence[str] | None = None, groups: int = 6, n: int = 4,
                    classes: int = 4, size: int = 96, cell: int = 32, steps: int = 256,
                    seed: int = 0, method: str = "nmf",
                     folder: str | os.PathLike | None = None,
                    progress: bool = True) -> BuildingBlocks:
    """The article's views of ``image`` ([1,3,H,W] in [0, 1]) at ``layer``: its semantic
    dictionary (``n`` top channels per position, pictures ``size`` px, kept in ``folder``
    when given), activation grids at ``grid_layers`` (default: ``layer``; ``cell`` px per
    position), ``groups`` neuron groups with their renders and spatial maps, and the
    attribution of the top ``classes`` classes to the groups. ``steps`` for every render;
    ``method`` the factorization (``"pca"`` for layers with negative activations). ``size``
    is one side: the page lays every picture in a square tile.

    Args:
        model: the network.
        image: the photo, [1, 3, H, W] in [0, 1].
        layer: the layer of the dictionary and the groups.
        grid_layers: the layers of the activation grids; None for ``layer``.
        groups: the number of neuron groups (default 6).
        n: top channels per position in the semantic dictionary (default 4).
        classes: how many top classes are attributed (default 4).
        size: the side of the dictionary's pictures, in pixels.
        cell: the side of each activation grid cell, in pixels.
        steps: optimization steps of every render.
        seed: the random seed.
        method: the factorization, ``"nmf"`` (default) or ``"pca"``.
        folder: where channel pictures are kept; None keeps none.
        progress: show a progress bar.
    """
    side(size, "building_blocks", "its page lays every picture in a square tile")
    if image.dim() == 3:
        image = image[None]
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    tops = top_classes(model, image, max(classes, 5))
    dictionary = semantic_dictionary(model, image, layer, n=n, size=size, steps=steps,
                                     seed=seed, folder=folder, progress=progress)
    seconds["semantic dictionary"] = time.perf_counter() - t
    grids = {}
    for name in grid_layers or [layer]:
        t = time.perf_counter()
        grids[name] = activation_grid(model, image, name, cell=cell, steps=steps,
                                      groups=groups, seed=seed, method=method,
                                      progress=progress)
        seconds[f"activation grid {name}"] = time.perf_counter() - t
    t = time.perf_counter()
    found = _groups.neuron_groups(model, image, layer, k=groups, method=method, seed=seed)
    renders = found.render(model, size=size, steps=steps, seed=seed, progress=progress)
    seconds["neuron groups"] = time.perf_counter() - t
    t = time.perf_counter()
    table = group_class_attribution(model, found, [c for c, _, _ in tops[:classes]])
    seconds["group attribution"] = time.perf_counter() - t
    return BuildingBlocks(image[:1].cpu(), layer, tops, dictionary, grids, found, renders,
                          table, seconds)
