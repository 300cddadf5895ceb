"""timm models by name, an optional extra: ``featviz.models.load("timm:convnext_tiny")``.

The model comes with timm's own preprocessing (mean, std and input size from its pretrained
config), declares the one size it takes when timm says it takes only one (vision transformers,
MaxViT, ...), and how many leading tokens (class, distillation, registers) its token
sequences carry. timm is imported only here, when such a model is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import WeightsError, unknown
from .courses import for_timm
from .preprocess import Preprocessed
from .registry import register
from .sources import require, source_stats
from .spec import Family, ModelSpec, Request, WeightsSource
from .weights import default_spelled, load_state_dict_file, random_weights

# timm reads every weights= itself: "default" from the hub, or a file
WEIGHTS = WeightsSource("timm's pretrained, from the Hugging Face hub", kind="source")


def load_timm(name: str, weights: str | os.PathLike | None = "default",
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              **options: Any) -> Preprocessed:
    """Build timm model ``name`` (an architecture, optionally with a pretrained tag:
    ``"vit_small_patch16_224.augreg_in21k"``) wrapped for featviz. ``weights``: ``"default"``
    (timm's pretrained weights, downloaded from the Hugging Face hub), a local state_dict file,
    or ``None`` for random initialization. ``options`` go to ``timm.create_model``
    (``img_size=64`` for a smaller vision transformer). ``mean``/``std`` override timm's.

    Args:
        name: the timm model's name, without ``timm:``.
        weights: ``"default"``, a local state_dict file, or None.
        mean: the normalization mean (default: timm's for the model).
        std: the normalization std (default: timm's).
        options: keyword arguments for ``timm.create_model``.
    """
    timm = require("timm", "timm", "timm models")
    if not timm.is_model(name):
        raise unknown("model", name, timm.list_models(), hint="any timm model (timm.list_models())")
    weights = default_spelled(weights)
    net = _create(timm, name, pretrained=weights == "default", **options)
    if not random_weights(weights) and weights != "default":
        load_state_dict_file(net, weights)
    config = timm.data.resolve_model_data_config(net)
    h, w = _size(options.get("img_size"), config["input_size"][1:])
    fixed = bool(net.pretrained_cfg.get("fixed_input_size", False))
    model = Preprocessed(net, source_stats(config["mean"], net) if mean is None else mean,
                         source_stats(config["std"], net) if std is None else std, input_size=h,
                         name=f"timm:{name}", fixed_size=fixed, render=for_timm(net))
    if fixed and h != w:
        model.featviz_fixed_size = (h, w)
    prefix = getattr(net, "num_prefix_tokens", None)
    if isinstance(prefix, int):
        model.featviz_prefix_tokens = prefix
    return model


def _create(timm: Any, name: str, pretrained: bool, **options: Any) -> nn.Module:
    """``timm.create_model``, its download failure a :class:`WeightsError` that says what to
    do offline."""
    try:
        return timm.create_model(name, pretrained=pretrained, **options)
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise WeightsError(
            f"could not get timm's pretrained weights for {name} "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). Offline? Fetch the "
            "state_dict on a machine with internet and pass it with weights='file.pth' "
            "(--weights PATH), or pass weights=None for random init") from None


def _size(asked: int | Sequence[int] | None, default: Sequence[int]) -> tuple[int, int]:
    """The input (h, w): the ``img_size`` asked of timm, else the pretrained config's."""
    if asked is None:
        return int(default[0]), int(default[1])
    if isinstance(asked, int):
        return asked, asked
    return int(asked[0]), int(asked[1])


def _build(request: Request) -> Preprocessed:
    return load_timm(request.member, request.weights, request.mean, request.std,
                     **request.options)


def spec(name: str) -> ModelSpec:
    """The spec of timm model ``name``; timm checks the name when it is built.

    Args:
        name: the model's name after ``timm:``.
    """
    return ModelSpec(name=f"timm:{name}", build=_build, family="timm",
                     description="a timm model with timm's preprocessing", weights=WEIGHTS,
                     takes_options=True)


FAMILY = register(Family(
    "timm", spec=spec, prefix="timm", usage="timm:NAME", weights=WEIGHTS.description,
    description='any timm model, with its own preprocessing (pip install "featviz[timm]")',
    takes_options=True))
