"""Spearman rank correlation between activation profiles, computed for all pairs at once, and
the layers a path is compared at."""

from __future__ import annotations

import torch
from torch import nn

from ...core.hooks import layer_aliases, named_layers
from ...errors import FeatvizError
from ...models.spatial import spatial_layers

# modules whose output repeats its input's information at the same depth: a path compared
# at them would count one stage twice
_REPEATS = (nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Dropout,
            nn.LocalResponseNorm, nn.Identity)


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """The rank of every entry within its row (0-based), ties given the mean of their ranks,
    as Spearman's coefficient needs: a ReLU layer's profile holds many exact zeros, and
    ranking them in arbitrary order would add noise to every correlation.

    Args:
        x: A [N, D] tensor; each row is ranked on its own.
    """
    x = x.float()
    order = x.argsort(dim=1)
    sorted_x = x.gather(1, order)
    n, d = x.shape
    position = torch.arange(d, dtype=torch.float32, device=x.device).expand(n, d)
    # a run of equal values shares one group id; its members get the mean position
    new_group = torch.ones_like(sorted_x, dtype=torch.bool)
    new_group[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1
    sums = torch.zeros(n, d, device=x.device).scatter_add_(1, group, position)
    counts = torch.zeros(n, d, device=x.device).scatter_add_(1, group, torch.ones_like(position))
    mean_rank = (sums / counts.clamp_min(1)).gather(1, group)
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of every row of ``a`` with every row of ``b``: the Pearson
    correlation of their average ranks, [Na, Nb]. A constant row (every channel equal, as an
    all-zero profile is) correlates 0 with everything.

    Args:
        a: [Na, D] profiles.
        b: [Nb, D] profiles of the same length D.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise FeatvizError(f"spearman compares [N, D] profiles of one length D, got "
                           f"{list(a.shape)} and {list(b.shape)}")
    ra, rb = _standard(average_ranks(a)), _standard(average_ranks(b))
    return ra @ rb.T / a.shape[1]


def _standard(r: torch.Tensor) -> torch.Tensor:
    r = r - r.mean(dim=1, keepdim=True)
    std = r.pow(2).mean(dim=1, keepdim=True).sqrt()
    return torch.where(std > 0, r / std.clamp_min(1e-12), torch.zeros_like(r))


def path_layers(model: nn.Module, layer: str, size: int | None = None) -> list[str]:
    """The layers a unit of ``layer`` is compared at by default: the model's stages in
    forward order, ending with ``layer`` itself. The stages are the spatial layers (see
    :func:`featviz.models.spatial.spatial_layers`) at the shallowest module depth that gives
    the whole model at least six, leaving out pooling, normalization and activation modules
    (they repeat the stage before them) and a container whose last child is listed (the two
    give one output). For InceptionV1 these are conv2d0-conv2d2 and the mixed blocks.

    Args:
        model: The network.
        layer: The unit's layer (a module path or an alias).
        size: The image side to probe the model with (default: the model's).
    """
    path = layer_aliases(model).get(layer, layer)
    found = [s.name for s in spatial_layers(model, size)]
    if path not in found:
        raise FeatvizError(f"layer {layer!r} gives no spatial map; path similarity compares "
                           f"spatial layers (e.g. {', '.join(found[-3:])})")
    modules = named_layers(model)
    stages = [n for n in found if not _repeats(modules.get(n))]
    for depth in range(max(n.count(".") for n in stages) + 1):
        chosen = _at_depth(stages, modules, depth)
        if len(chosen) >= 6:
            break
    upto = [n for n in chosen if found.index(n) < found.index(path)]
    # a module enclosing the unit's layer, or its last child, gives no earlier stage
    same = set()
    name = path
    while _last_child(modules, name):
        name = f"{name}.{_last_child(modules, name)}"
        same.add(name)
    return [n for n in upto if not path.startswith(n + ".") and n not in same] + [path]


def _at_depth(names: list[str], modules: dict[str, nn.Module], depth: int) -> list[str]:
    """The ``names`` no deeper than ``depth``, less a container whose last child is among
    them (the two give one output)."""
    chosen = [n for n in names if n.count(".") <= depth]
    return [n for n in chosen if f"{n}.{_last_child(modules, n)}" not in chosen]


def _repeats(module: nn.Module | None) -> bool:
    """Whether ``module`` only pools, normalizes or activates (a container of such too)."""
    if module is None:
        return False
    children = list(module.children())
    if children and not isinstance(module, _REPEATS):
        return all(_repeats(c) for c in children)
    return isinstance(module, _REPEATS)


def _last_child(modules: dict[str, nn.Module], name: str) -> str:
    children = list(dict(modules[name].named_children())) if name in modules else []
    return children[-1] if children else ""
