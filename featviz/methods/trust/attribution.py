"""Attribution profiles: how much of a unit's activation each channel of an earlier layer
carries (activation x gradient, summed over positions). Two images whose unit activations
arrive through the same channels have alike profiles, whatever else they hold; an activation
that arrives through another path (an added circuit, a visualization that found a shortcut)
has a different one, even when the images look alike to the layers below."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...core import layouts as _layouts
from ...core.hooks import frozen, on_output, only_tensor
from ...core.model_info import model_device, model_dtype


def attribution_profiles(model: nn.Module, images: torch.Tensor, unit: tuple[str, int],
                         layers: Sequence[str], batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Per image and per earlier layer, each channel's share of the unit's activation: the
    sum over positions of activation x d(unit)/d(activation), the unit being its channel's
    mean over positions ([N, C] per layer, on the CPU). The unit's own layer (the last of
    ``layers``) gets its activation profile instead (its attribution is the unit alone).

    Args:
        model: The network.
        images: [N, C, H, W] images in [0, 1] at the size the model takes.
        unit: ``(layer path, channel)``.
        layers: The layers, in forward order, ending with the unit's.
        batch_size: Images per forward and backward pass.
    """
    parts: list[dict[str, torch.Tensor]] = []
    table = _layouts.declared(model)
    device, dtype = model_device(model), model_dtype(model)
    with frozen(model):
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device=device, dtype=dtype)
            parts.append(_batch(model, x, unit, list(layers), table))
    return {n: torch.cat([p[n] for p in parts]) for n in layers}


def _batch(model: nn.Module, x: torch.Tensor, unit: tuple[str, int], layers: list[str],
           table) -> dict[str, torch.Tensor]:
    outputs: dict[str, torch.Tensor] = {}

    def keep(names: list[str], output) -> None:
        # the module's own output (no copy): the gradient must reach it through the model
        for name in names:
            outputs[name] = only_tensor(output)

    x = x.clone().requires_grad_(True)
    with on_output(model, layers, keep), torch.enable_grad():
        model(x)
    hw = tuple(x.shape[-2:])
    own = _layouts.normalize({unit[0]: outputs[unit[0]]}, table, hw)[unit[0]]
    score = own[:, unit[1]].flatten(1).mean(1).sum()
    earlier = layers[:-1]  # none for a unit of the first layer
    grads = torch.autograd.grad(score, [outputs[n] for n in earlier],
                                allow_unused=True) if earlier else ()
    prods = {n: (outputs[n] * g if g is not None else torch.zeros_like(outputs[n])).detach()
             for n, g in zip(earlier, grads, strict=True)}
    grid = _layouts.normalize(prods, table, hw)
    out = {n: grid[n].float().flatten(2).sum(2).cpu() if grid[n].dim() > 2
           else grid[n].float().cpu() for n in earlier}
    out[unit[0]] = own.detach().float().flatten(2).mean(2).cpu()
    return out
