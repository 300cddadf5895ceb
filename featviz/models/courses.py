"""Render courses a model declares for itself (its ``featviz_render``): the options ``render``
uses for it where the caller names none.

:data:`TRANSFORMER` is the course of vision transformers (``load("vit_tiny")``, timm models
with a patch embedding); ``benchmarks/vit_quality.py`` measures it against the library's
defaults on ViT-Tiny, and ``docs/transformers.md`` reports what it found.
"""

from __future__ import annotations

from typing import Any

from ..core import transforms as T

#: the geometric transforms of :data:`TRANSFORMER`: a 32-px jitter moves the image by every
#: offset modulo the 16-px patch, so no patch-aligned pattern survives the average over steps
#: (the grid a ViT would otherwise print, as a stride-16 convolution would), then the
#: standard small zoom and rotation, drawn from ranges rather than lucid's lists
TRANSFORMER_TRANSFORMS = (T.pad(16), T.jitter(32), T.scale((0.9, 1.1)), T.rotate((-10, 10)),
                          T.jitter(8))
#: then a colour jitter (Ghiasi et al. 2022): each channel moved by up to 0.1 and its
#: contrast scaled by up to 1.25 per step. On ViT-Tiny's 16 units of benchmarks/vit_quality.py
#: it took the highest patch-grid energy from 1.19 to 1.12 (the median photo's: 1.13)
TRANSFORMER_COLOUR = T.color_jitter(0.1, 1.25)

#: what ``render`` does for a vision transformer unasked
TRANSFORMER: dict[str, Any] = {"transforms": [*TRANSFORMER_TRANSFORMS, TRANSFORMER_COLOUR]}

#: the careful pace (lucid's course), for a model on which the fast one leaves finer grain
#: than lucent's pictures have
CAREFUL: dict[str, Any] = {"pace": "careful"}

#: the courses of torchvision families, by name prefix. MobileNetV2: in
#: benchmarks/time_to_quality.py the fast course ended a channel and a logit with 1.17x and
#: 1.33x lucent's high-frequency share (never reaching lucent's bar) where the careful one
#: reached it in 192 and 432 steps
TORCHVISION_COURSES: dict[str, dict[str, Any]] = {"mobilenet_v2": CAREFUL}


def for_torchvision(member: str) -> dict[str, Any]:
    """The course of torchvision's ``member`` (``"mobilenet_v2"``): its family's in
    :data:`TORCHVISION_COURSES`, else none (the library's pace).

    Args:
        member: the torchvision builder's name.
    """
    return dict(next((v for k, v in TORCHVISION_COURSES.items() if member.startswith(k)), {}))


def for_timm(net: Any) -> dict[str, Any]:
    """The course of a timm network: :data:`TRANSFORMER` for one that cuts its input into
    patches (``patch_embed``: ViT, DeiT, BEiT, EVA, Swin, ...), else none.

    Args:
        net: the timm network.
    """
    return dict(TRANSFORMER) if hasattr(net, "patch_embed") else {}
