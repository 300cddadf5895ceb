"""Hugging Face ``transformers`` image classifiers, an optional extra:
``featviz.models.load("hf:google/vit-base-patch16-224")`` or ``wrap_hf(model)`` for one built
or loaded already.

Their forward returns an output object; class objectives read its ``.logits`` (the layer tap
does). Their layers answer to their module paths (``vit.layers.5``, or ``vit.encoder.layer.5``
in transformers 4, whose layers return ``(hidden_states,)``: the tap takes the lone tensor).
Models that check the input size (ViT, DeiT, BEiT: a forward with ``interpolate_pos_encoding``)
declare their ``config.image_size`` as the one they take. transformers is imported only here.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ..errors import FeatvizError, WeightsError
from .imagenet import IMAGENET_MEAN, IMAGENET_STD
from .preprocess import Preprocessed
from .registry import register
from .sources import require, source_stats
from .spec import Family, ModelSpec, Request, WeightsSource
from .weights import default_spelled, load_state_dict_file, random_weights

# transformers reads every weights= itself: "default" from the hub or the folder, or a file
WEIGHTS = WeightsSource("the model's own, from the Hugging Face hub or its folder",
                        kind="source")

# parameters that are leading tokens of a token sequence, [1, K, C] each
_PREFIX_PARAMETERS = ("cls_token", "distillation_token", "dist_token", "register_tokens")


def wrap_hf(model: nn.Module, processor: Any = None, mean: Sequence[float] | None = None,
            std: Sequence[float] | None = None, input_size: int | None = None,
            fixed_size: bool | None = None, name: str = "",
            layouts: Mapping[str, str] | None = None) -> Preprocessed:
    """Wrap a ``transformers`` image classifier for featviz: [0, 1] RGB in, normalized with
    ``mean``/``std`` (default: the image ``processor``'s, else ImageNet's), logits read from the
    output's ``.logits``. ``input_size`` defaults to ``config.image_size``; ``fixed_size``
    (default: whether its forward takes ``interpolate_pos_encoding``, i.e. checks the size)
    says it takes no other size. The number of leading tokens of its token sequences is
    counted from its class, distillation and register token parameters.

    Args:
        model: the ``transformers`` image classifier.
        processor: its image processor, for its statistics and size; None for none.
        mean: the normalization mean (default: the processor's, else ImageNet's).
        std: the normalization std (default: the processor's, else ImageNet's).
        input_size: the image side (default: ``config.image_size``, else the processor's,
            else 224).
        fixed_size: whether it takes ``input_size`` only (default: whether it checks it).
        name: what messages and labels call it (default: ``config.name_or_path``).
        layouts: the layouts of layers whose shape does not tell them.
    """
    if not isinstance(model, nn.Module):
        raise FeatvizError(f"wrap_hf needs a transformers model (an nn.Module), got "
                           f"{type(model).__name__}")
    config = getattr(model, "config", None)
    size = int(input_size or _config_size(config) or _processor_size(processor) or 224)
    if fixed_size is None:
        fixed_size = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
    if mean is None:
        mean = source_stats(getattr(processor, "image_mean", None) or IMAGENET_MEAN, model)
    if std is None:
        std = source_stats(getattr(processor, "image_std", None) or IMAGENET_STD, model)
    wrapped = Preprocessed(model, mean, std, input_size=size,
                           name=name or getattr(config, "name_or_path", "") or type(model).__name__,
                           fixed_size=fixed_size, layouts=layouts)
    prefix = sum(p.shape[1] for n, p in model.named_parameters()
                 if n.rsplit(".", 1)[-1] in _PREFIX_PARAMETERS and p.dim() == 3)
    if prefix:
        wrapped.featviz_prefix_tokens = int(prefix)
    return wrapped


def load_hf(name: str, weights: str | os.PathLike | None = "default",
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
            **options: Any) -> Preprocessed:
    """Load a Hugging Face image classifier by hub id or local folder with
    ``AutoModelForImageClassification``, wrapped by :func:`wrap_hf` with its image processor's
    statistics when it has one. ``weights``: ``"default"`` (the model's own,
    ``from_pretrained``), ``None`` (its config, random initialization) or a local state_dict
    file. ``options`` go to ``from_pretrained``/``from_config``.

    Args:
        name: a hub id or a local folder, without ``hf:``.
        weights: ``"default"``, a local state_dict file, or None.
        mean: the normalization mean (default: the processor's, else ImageNet's).
        std: the normalization std, as ``mean``.
        options: keyword arguments for ``from_pretrained``/``from_config``.
    """
    transformers = require("transformers", "hf", "Hugging Face models")
    auto = transformers.AutoModelForImageClassification
    weights = default_spelled(weights)
    try:
        if weights == "default":
            net = auto.from_pretrained(name, **options)
        else:
            net = auto.from_config(transformers.AutoConfig.from_pretrained(name), **options)
    except OSError as err:  # not found locally, and the hub is unreachable or has no such id
        raise WeightsError(
            f"could not load Hugging Face model {name!r} ({str(err).splitlines()[0][:200]}). "
            "Offline? Save it on a machine with internet (model.save_pretrained(FOLDER), "
            "with its image processor) and load hf:FOLDER") from None
    if not random_weights(weights) and weights != "default":
        load_state_dict_file(net, weights)
    return wrap_hf(net, _processor(transformers, name), mean, std, name=f"hf:{name}")


def _processor(transformers: Any, name: str) -> Any:
    """The model's image processor, for its statistics; None when it has none saved."""
    try:
        return transformers.AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError, ImportError):
        return None


def _config_size(config: Any) -> int | None:
    size = getattr(config, "image_size", None)
    return int(size[0] if isinstance(size, (list, tuple)) else size) if size else None


def _processor_size(processor: Any) -> int | None:
    """The crop (else resize) size of an image processor: an int, or a dict or SizeDict
    (transformers 5) with a height or a shortest edge."""
    size = getattr(processor, "crop_size", None) or getattr(processor, "size", None)
    if size is None or isinstance(size, int):
        return size
    get = size.get if isinstance(size, Mapping) else lambda key: getattr(size, key, None)
    value = get("height") or get("shortest_edge")
    return int(value) if value else None


def _build(request: Request) -> Preprocessed:
    return load_hf(request.member, request.weights, request.mean, request.std,
                   **request.options)


def spec(name: str) -> ModelSpec:
    """The spec of Hugging Face model ``name``; transformers finds it when it is built.

    Args:
        name: a hub id or a local folder, after ``hf:``.
    """
    return ModelSpec(name=f"hf:{name}", build=_build, family="hf",
                     description="a transformers image classifier with its processor's "
                                 "preprocessing", weights=WEIGHTS, takes_options=True)


FAMILY = register(Family(
    "hf", spec=spec, prefix="hf", usage="hf:ID_OR_FOLDER", weights=WEIGHTS.description,
    description="a Hugging Face transformers image classifier by hub id or saved folder "
                '(pip install "featviz[hf]")', takes_options=True))
