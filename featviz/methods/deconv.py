"""Projections of hidden activations back to pixels: deconvnet, guided backprop, gradients.

Zeiler & Fergus (2013) keep one activation of a layer, zero all others, and run the network
backwards: convolutions transposed, max-pooling routed through the "switches" recorded in the
forward pass, and a ReLU applied to the backward signal. In PyTorch the backward pass of a
convolution already is the transposed convolution and that of max-pooling already routes
through the switches, so the only change is the ReLU rule, made by
:class:`~featviz.backward_rules.ReluBackwardRule` for every ReLU however the model calls it:

- ``"deconvnet"``: the backward signal is rectified, the forward mask ignored;
- ``"guided"``: guided backprop (Springenberg et al. 2015), rectified and masked;
- ``"gradient"``: the plain gradient of the activation.

The work lives in two parts, re-exported here: projecting one activation
(:mod:`featviz.methods._projection`: :func:`project`, :class:`Projection`, the display
helpers) and the top-k dataset search (:mod:`featviz.methods._topk`: :func:`top_k`,
:class:`TopK`, :class:`TopKEntry`). :func:`occlusion` is :mod:`featviz.methods.occlusion`'s;
:func:`occlusion_check`, below, is Zeiler & Fergus's test of a projection by covering it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.hooks import LayerTap, frozen
from ..core.model_info import image_channels, model_device
from ._projection import MODES, Projection, as_batch, display_patch, project, signed_to_image
from ._projection import check_mode as check_mode
from ._topk import TopK, TopKEntry, crop_box, top_k
from ._topk import outline as outline
from ._topk import signal_margin as signal_margin
from .occlusion import occlusion

__all__ = ["MODES", "Projection", "project", "top_k", "TopK", "TopKEntry", "occlusion",
           "occlusion_check", "signed_to_image", "display_patch", "crop_box"]


def occlusion_check(
    model: nn.Module,
    img: torch.Tensor,
    layer: str,
    channel: int,
    patch: int | None = None,
    n_random: int = 8,
    seed: int = 0,
) -> tuple[float, float]:
    """Zeiler & Fergus's test of a projection: cover the ``patch``-sized square where the
    deconvnet projection of the channel's strongest unit is largest, and, separately,
    ``n_random`` random squares of the same size. Returns (drop of the activation for the
    highlighted square, mean drop for the random ones); a trustworthy projection gives the
    first much larger.

    Args:
        model: the network.
        img: the image, [1, C, H, W] in [0, 1].
        layer: the layer of the channel.
        channel: the channel whose strongest unit is tested.
        patch: the side of the squares; None for a quarter of the image's shorter side.
        n_random: how many random squares (default 8).
        seed: the random seed of the random squares.
    """
    img = as_batch(img, image_channels(model))[:1]
    h, w = img.shape[-2:]
    patch = patch or min(h, w) // 4
    proj = project(model, img, layer, channel, mode="deconvnet")
    y, x = proj.positions[0]
    energy = proj.pixels[0].abs().sum(0)[None, None]
    window = F.avg_pool2d(energy, patch, stride=1)[0, 0]
    best = int(window.argmax())
    corners = [(best // window.shape[1], best % window.shape[1])]
    gen = torch.Generator().manual_seed(seed)
    corners += [(int(torch.randint(h - patch + 1, (1,), generator=gen)),
                 int(torch.randint(w - patch + 1, (1,), generator=gen))) for _ in range(n_random)]
    batch = img.repeat(len(corners) + 1, 1, 1, 1)
    for b, (top, left) in enumerate(corners, start=1):
        batch[b, :, top:top + patch, left:left + patch] = 0.5
    with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
        values = tap(batch.to(model_device(model)))[layer][:, channel, y, x].cpu()
    drops = values[0] - values[1:]
    return float(drops[0]), float(drops[1:].mean())
