"""CIFAR-10 ResNets (He et al. 2016, the 6n+2 variant with parameter-free "option A" shortcuts).

The module paths and state_dict keys follow the common PyTorch definition of these networks, so
the widely shared checkpoints (ResNet-20/32/44/56) load with ``strict=True``. Every ReLU is its
own module object so that each is addressable as a layer and none fires twice per pass.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register
from .spec import ModelSpec, Request, WeightsSource

DEPTHS = (20, 32, 44, 56, 110)
# no public address serves these in this layout: a file or random weights only
WEIGHTS = WeightsSource("a local state_dict file only (--weights PATH)", kind="files")


class _ZeroPadShortcut(nn.Module):
    """Subsample by 2 and pad the new channels with zeros on both sides (no parameters)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra = extra_channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.extra, self.extra))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity or zero-padded shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _ZeroPadShortcut(out_channels - in_channels)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: a 16-channel stem, three stages of n blocks, global pooling."""

    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_channels, out_channels, stride)]
        blocks += [BasicBlock(out_channels, out_channels) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))


def cifar_resnet(depth: int = 20, num_classes: int = 10) -> CifarResNet:
    """Build a randomly initialized CIFAR ResNet.

    Args:
        depth: the number of layers, 6n+2 (20, 32, 44, 56, 110).
        num_classes: the outputs of its last layer.
    """
    return CifarResNet(depth, num_classes)


def _build(depth: int, request: Request) -> CifarResNet:
    return cifar_resnet(depth)


#: one spec per depth: ``load("cifar_resnet20")``; ImageNet's statistics, as they were trained
SPECS = tuple(register(ModelSpec(
    name=f"cifar_resnet{depth}", build=partial(_build, depth), family="cifar",
    description=f"CIFAR-10 ResNet-{depth} (He et al. 2016: 6n+2 layers, zero-padded shortcuts)",
    input_size=32, weights=WEIGHTS)) for depth in DEPTHS)
