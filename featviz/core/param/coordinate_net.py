"""CPPN parameterization (Distill, "Differentiable Image Parameterizations", section 3): a
small network of 1x1 convolutions maps each pixel's (x, y) coordinates to its colour; the
network's weights are what the optimizer changes. Images come out smooth and resolution-free
(render small, sample the same network larger with ``CPPN.at(size)``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..sizes import SizeLike, hw
from .base import Parameterization
from .noise import Generators

# the output layer's values are standardized per image and scaled by this before the sigmoid:
# unbounded, they ran into its flat ends (InceptionV1 mixed4a:476, 128 px, 512 steps: 25 % of
# the pixels saturated, objective 554; standardized: 1.9 %, objective 676)
OUTPUT_SCALE = 1.5


def _composite(x: torch.Tensor) -> torch.Tensor:
    # the article's activation: atan and its square, scaled to unit variance for unit-normal
    # input (constants from the article's notebook), which doubles the channels
    x = torch.atan(x)
    return torch.cat([x / 0.67, x * x / 0.6], dim=1)


class CPPN(Parameterization):
    """``batch`` independent CPPNs evaluated together as grouped 1x1 convolutions.

    ``forward()`` gives [B,C,H,W] in [0, 1], C = ``channels``: the output layer's values,
    standardized per image (all channels together, so the colour balance stays) and scaled by
    :data:`OUTPUT_SCALE`, through a sigmoid; its weights start at zero, so every image starts
    grey. Coordinates span [-sqrt(3), sqrt(3)] on the longer side (unit variance), keeping the
    aspect ratio.
    """

    lr = 0.005  # the article's notebook: Adam with a small step, the weights are sensitive
    # render's transforms="auto": no jitter. Measured on MobileNetV2 features.14:12 at 128 px,
    # 512 steps: objective 17.2 without transforms, under 3 with the standard ones
    transforms = "none"

    def __init__(self, size: tuple[int, int], batch: int = 1, hidden: int = 24, layers: int = 8,
                 generator: Generators = None, seeds: list[int] | None = None,
                 channels: int = 3):
        super().__init__(batch, size, seeds)
        self.channels = channels
        if layers < 1 or hidden < 1:
            raise ValueError(f"a CPPN needs at least one layer of at least one channel, got "
                             f"layers={layers}, hidden={hidden}")
        self.hidden = hidden
        gens = (generator if isinstance(generator, (list, tuple))
                else [generator] * batch)
        if len(gens) != batch:
            raise ValueError(f"{len(gens)} generators for a batch of {batch} images")
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        fan_in = 2
        for _ in range(layers):
            # N(0, 1/fan_in) per image from its own generator (the article's initialization)
            w = torch.stack([torch.randn(hidden, fan_in, generator=g) for g in gens])
            self.weights.append(nn.Parameter(w.reshape(batch * hidden, fan_in, 1, 1)
                                             / math.sqrt(fan_in)))
            self.biases.append(nn.Parameter(torch.zeros(batch * hidden)))
            fan_in = 2 * hidden
        self.weights.append(nn.Parameter(torch.zeros(batch * channels, fan_in, 1, 1)))
        self.biases.append(nn.Parameter(torch.zeros(batch * channels)))

    def coordinates(self, size: tuple[int, int]) -> torch.Tensor:
        """The network's input [1, 2B, H, W]: (x, y) per pixel, repeated for each image."""
        h, w = size
        step = 2 * math.sqrt(3.0) / max(max(h, w) - 1, 1)  # the longer side spans ±sqrt(3)
        ys = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2) * step
        xs = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2) * step
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([xx, yy])
        return grid.repeat(self.batch, 1, 1)[None].to(self.weights[0].device)

    def at(self, size: SizeLike) -> torch.Tensor:
        """The images sampled at another ``size`` (the network is resolution-free).

        Args:
            size: one side or (height, width); another aspect ratio than the render's
                shows more (or less) of the same pattern, not a stretched one.
        """
        size = hw(size)
        net = self.coordinates(size)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            net = F.conv2d(net, w, b, groups=self.batch)
            net = _squashed(net, self.batch) if i == last else _composite_grouped(net, self.batch)
        return net.view(self.batch, self.channels, *size)

    def forward(self) -> torch.Tensor:
        return self.at(self.size)


def _squashed(x: torch.Tensor, batch: int) -> torch.Tensor:
    """The output layer's values of each image standardized, scaled and put through a
    sigmoid (a flat image, such as the all-zero start, stays grey)."""
    z = x.reshape(batch, -1)
    z = (z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True).clamp_min(1e-3)
    return torch.sigmoid(OUTPUT_SCALE * z).view_as(x)


def _composite_grouped(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The composite activation applied per image, keeping each image's channels together."""
    _, c, h, w = x.shape
    y = _composite(x.view(groups, c // groups, h, w))  # [B, 2*hidden, H, W]
    return y.reshape(1, 2 * c, h, w)
