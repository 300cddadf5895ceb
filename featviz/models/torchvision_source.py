"""torchvision's classifiers as one family: every name ``torchvision.models.list_models``
gives, with torchvision's weight enums (downloaded into the torch hub cache) or a local file.

What differs between members is data here: lucid's layer names for GoogLeNet, the families
that take one input size only or keep channels last. torchvision is imported only when a
member is asked for or listed (importing it costs about a second).
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..errors import WeightsError, unknown
from .courses import for_torchvision
from .imagenet import imagenet_classes
from .registry import register
from .spec import Built, Family, ModelSpec, Request, WeightsSource
from .weights import names_file

#: lucid's InceptionV1 layer names -> torchvision GoogLeNet module paths.
LUCID_INCEPTION_V1 = {
    "conv2d0": "conv1",
    "maxpool0": "maxpool1",
    "conv2d1": "conv2",
    "conv2d2": "conv3",
    "maxpool1": "maxpool2",
    "mixed3a": "inception3a",
    "mixed3b": "inception3b",
    "maxpool4": "maxpool3",
    "mixed4a": "inception4a",
    "mixed4b": "inception4b",
    "mixed4c": "inception4c",
    "mixed4d": "inception4d",
    "mixed4e": "inception4e",
    "maxpool10": "maxpool4",
    "mixed5a": "inception5a",
    "mixed5b": "inception5b",
}
#: other names of members -> the member
RENAMES = {"inception_v1": "googlenet"}
#: layer aliases of members
LAYER_ALIASES = {"googlenet": LUCID_INCEPTION_V1}
#: input sizes other than 224 (of random weights or a local file; an enum says its own)
INPUT_SIZES = {"inception_v3": 299}
#: members built with auxiliary heads unless told not to: featviz never runs them
AUX_HEADS = ("googlenet", "inception_v3")
# torchvision families that check their input size (position embeddings, window grids)
FIXED_SIZE_FAMILIES = ("vit_", "maxvit_")
# where torchvision families keep channels and grid (see featviz.core.layouts); exact paths
# first, then fnmatch patterns in order. Undeclared layers are recognized by their shape.
FAMILY_LAYOUTS = {
    "vit_": {"conv_proj": "nchw", "encoder*": "tokens+cls"},
    "swin_": {"features.0.0": "nchw", "features.*": "nhwc", "norm": "nhwc"},
    "convnext_": {"features.*.block.[1-5]": "nhwc"},
}


def members() -> list[str]:
    """torchvision's classification models, by the names its builders take."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def spec(member: str) -> ModelSpec:
    """The spec of torchvision classifier ``member``.

    Args:
        member: a name :func:`members` lists (``"resnet50"``).
    """
    default = _default_weights(member)
    source = WeightsSource(
        f"{default.name} (torchvision's, downloaded)" if default else "a local file",
        kind="builder", input_size=_crop_size(default.transforms()) if default else None)
    return ModelSpec(
        name=member, build=build, family="torchvision", description=_describe(member, default),
        input_size=INPUT_SIZES.get(member, 224), layer_aliases=LAYER_ALIASES.get(member, {}),
        classes=imagenet_classes, weights=source,
        fixed_size=member.startswith(FIXED_SIZE_FAMILIES),
        layouts=next((v for k, v in FAMILY_LAYOUTS.items() if member.startswith(k)), {}),
        render=for_torchvision(member))


def build(request: Request) -> nn.Module | Built:
    """Build a torchvision classifier; download its enum weights when asked to.

    Args:
        request: the member and its weights: None (random), a local file (read by
            :func:`featviz.models.load` after), or an enum or its name.
    """
    import torchvision

    builder = torchvision.models.get_model_builder(request.member)
    local = names_file(request.weights)
    kwargs: dict[str, Any] = {}
    if request.member in AUX_HEADS:
        # random init only where no file overwrites it
        kwargs = {"aux_logits": False, "init_weights": not local}
    if local or request.weights is None:
        return builder(weights=None, **kwargs)
    enum = _weights_enum(request.name, request.member, request.weights)
    net = _download(builder, enum, request.name)
    preset = enum.transforms()
    stats = (tuple(preset.mean), tuple(preset.std)) if hasattr(preset, "mean") else (None, None)
    return Built(net, *stats,
                 input_size=_crop_size(preset) or INPUT_SIZES.get(request.member, 224))


def _download(builder: Any, enum: Any, name: str) -> nn.Module:
    """``builder(weights=enum)``; a failed download is a :class:`WeightsError` that says what
    to do offline."""
    try:
        return builder(weights=enum)
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
        from torch.hub import get_dir

        raise WeightsError(
            f"could not download {enum} for {name}: {err}. Offline? Fetch the file on a machine "
            f"with internet and pass --weights PATH (weights='file.pth' in Python), or put it "
            f"into the torch hub cache {os.path.join(get_dir(), 'checkpoints')}; or use random "
            f"weights with --weights random (weights=None), enough to try featviz out"
        ) from err


def _weights_enum(name: str, key: str, weights: Any) -> Any:
    """The torchvision weight enum ``weights`` names (``"default"``, ``"IMAGENET1K_V1"``,
    ``"ResNet50_Weights.IMAGENET1K_V2"``) or is."""
    import torchvision

    enum_cls = torchvision.models.get_model_weights(key)
    if isinstance(weights, enum_cls):
        return weights
    if isinstance(weights, str):
        wanted = "DEFAULT" if weights.lower() == "default" else weights.split(".")[-1]
        try:
            return enum_cls[wanted]
        except KeyError:
            choices = [w.name for w in enum_cls] + ["DEFAULT", "a local file path", "None"]
            raise unknown("weights", weights, choices, hint=f"for {name}") from None
    raise WeightsError(f"weights for {name} must be a name, {enum_cls.__name__}, a path or None; "
                       f"got {type(weights).__name__}")


def _default_weights(member: str) -> Any:
    """The member's DEFAULT weight enum, None where torchvision has none."""
    import torchvision

    try:
        return torchvision.models.get_model_weights(member).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def _crop_size(preset: Any) -> int | None:
    """The image side a weight enum's preset (``enum.transforms()``) crops to: what its
    weights were measured at."""
    size = getattr(preset, "crop_size", None)
    if size is None:
        return None
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _describe(member: str, default: Any) -> str:
    """One line on a member: its parameter count and its default weights' ImageNet top-1."""
    meta = getattr(default, "meta", {}) if default is not None else {}
    parts = [f"{meta['num_params'] / 1e6:.1f}M parameters"] if "num_params" in meta else []
    top1 = meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    if top1 is not None:
        parts.append(f"ImageNet top-1 {top1:.1f}%")
    if member.startswith(FIXED_SIZE_FAMILIES):
        parts.append("its input size only")
    if member in LAYER_ALIASES:
        parts.append("lucid's layer names")
    return "torchvision classifier" + (f" ({', '.join(parts)})" if parts else "")


FAMILY = register(Family("torchvision", spec=spec, members=members, aliases=RENAMES,
                         description="torchvision's classifiers"))
