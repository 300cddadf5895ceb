"""ImageNet's statistics and class names: the defaults of most model families."""

from __future__ import annotations

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_classes(net: nn.Module) -> list[str] | None:
    """ImageNet-1k's class names for a network with 1000 outputs, else None.

    The names are torchvision's list (it ships with torchvision, so no download); the output
    count is read from the last Linear or Conv2d module.

    Args:
        net: the classifier, unwrapped.
    """
    import torchvision  # here: importing it costs a second, and only ImageNet families need it

    last = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not last or getattr(last[-1], "out_features", getattr(last[-1], "out_channels", 0)) != 1000:
        return None
    return list(torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"])
