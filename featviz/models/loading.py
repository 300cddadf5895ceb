""":func:`load`: a model by name, built as its registered spec says and wrapped for featviz.

Nothing here knows a family: the spec (:mod:`featviz.models.spec`) says how to build the
network, what it takes and where its weights come from; :mod:`featviz.models.registry`
finds the spec by name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError
from . import download, registry
from .preprocess import Preprocessed
from .spec import Built, ModelSpec, Request, WeightsSource
from .weights import load_state_dict_file, names_file, random_weights


def load(
    name: str,
    weights: str | os.PathLike | Any | None = "default",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> Preprocessed:
    """Load a classifier by name, ready for featviz: eval mode, [0, 1] RGB input.

    Any name :func:`featviz.models.catalog` lists: torchvision's classifiers, ``inceptionv1``
    (BVLC GoogLeNet), ``cifar_resnet20/32/44/56``, ``"timm:NAME"`` and ``"hf:ID_OR_FOLDER"``
    (timm and Hugging Face ``transformers``, optional extras, with their own preprocessing),
    and any model registered with :func:`featviz.models.register`.

    Args:
        name: the model's name.
        weights: ``"default"`` (the model's published weights: torchvision's best, downloaded
            into the torch hub cache; ``inceptionv1``'s file in featviz's cache,
            ``$FEATVIZ_MODELS`` or else the user cache folder, downloaded from BVLC's Caffe
            release and converted when absent), a
            torchvision weight enum or its name (``"IMAGENET1K_V1"``), a path to a local
            state_dict file, or None (or ``"random"``) for random initialization.
        mean: the normalization mean, overriding the model's (default: its weights' own, else
            its spec's, ImageNet's for most).
        std: the normalization std, as ``mean``.
        device: where to put the model (default: where it was built, the CPU).
        options: keyword arguments for builders that take them (``timm.create_model``'s
            ``img_size=64``, ``in_chans=1``); an error for other models.
    """
    found = registry.find(name)
    if options and not (found and found[0].takes_options):
        raise TypeError(f"load() got options {sorted(options)}: they are for "
                        f"{registry.option_takers()} models only")
    if found is None:
        raise registry.unknown_model(name)
    spec, member = found
    request = Request(name, member, resolve_weights(spec.weights, name, weights), mean, std,
                      options)
    model = _finish(spec, request, spec.build(request))
    model.eval()
    return model.to(device) if device is not None else model


def resolve_weights(source: WeightsSource, name: str, weights: Any) -> Any:
    """What the builder of a model is given for ``weights``: None for random initialization,
    a local file as given, a name as its source lets through (the file a name stands for,
    for a source of kind "env"); for kind "source", ``weights`` as given.

    Args:
        source: where the model's weights come from.
        name: the model's name as the caller typed it, for messages.
        weights: the caller's ``weights=``.

    Raises:
        WeightsError: weights by name that the source has none of, or whose file is absent.
    """
    if source.kind == "source":
        return weights
    if random_weights(weights):
        return None
    if names_file(weights) or source.kind == "builder":
        return weights
    if source.kind == "env":
        return _env_file(source, name, weights)
    raise WeightsError(
        f"{name} has no downloadable weights; pass a local state_dict file with "
        "--weights PATH (weights='path.pth' in Python) or weights=None for random init")


def _env_file(source: WeightsSource, name: str, weights: Any) -> Path:
    """``"default"`` as the file ``source.file`` in the folder ``$source.env`` names (no
    public address serves it in the layout the builder takes), else an error that says where
    to get it; with ``source.fetch``, the file in featviz's cache, made when absent."""
    if not (isinstance(weights, str) and weights.lower() == "default"):
        raise WeightsError(f"{name} takes weights='default', a file path or None, not "
                           f"{weights!r}")
    folder = os.environ.get(source.env)
    if source.fetch is not None:
        return _cached_file(source, name, folder)
    if folder and (Path(folder) / source.file).is_file():
        return Path(folder) / source.file
    where = f"{folder}/{source.file} does not exist" if folder else f"{source.env} is unset"
    raise WeightsError(
        f"{name} needs {source.what} ({where}): pass weights='{source.file}' (--weights PATH), "
        f"put the file into the folder ${source.env} names, or use weights=None for random "
        "init")


def _cached_file(source: WeightsSource, name: str, folder: str | None) -> Path:
    """The file ``source.file`` in featviz's cache (``folder``, else the user cache folder),
    made by ``source.fetch`` when absent; an error that says where it was looked for and how
    else to give the weights."""
    target = download.cache_folder(source.env) / source.file
    if not target.is_file():
        try:
            source.fetch(target)
        except WeightsError as err:
            where = (f"featviz's cache is the folder ${source.env} names" if folder else
                     f"{source.env} is unset: featviz's cache is the user cache folder")
            raise WeightsError(
                f"{name} needs {source.what}: {target} does not exist ({where}), and {err}. "
                f"Or copy {source.file} from a machine that has it into {target.parent}, "
                "pass a local file with weights=PATH (--weights PATH), or use weights=None "
                "for random init") from None
    return target


def _finish(spec: ModelSpec, request: Request, made: Any) -> Preprocessed:
    """The builder's result with the weights file read into it and wrapped as the spec says,
    the caller's statistics over the weights' over the spec's."""
    net = made.net if isinstance(made, (Built, Preprocessed)) else made
    if not isinstance(net, nn.Module):
        raise TypeError(f"the builder of model {spec.name!r} returned "
                        f"{type(made).__name__}, not an nn.Module or Built")
    if spec.weights.kind != "source" and names_file(request.weights):
        load_state_dict_file(net, request.weights)
    if isinstance(made, Preprocessed):  # the source wrapped it itself (timm, transformers)
        return made
    built = made if isinstance(made, Built) else Built(net)
    mean = request.mean if request.mean is not None else built.mean or spec.mean
    std = request.std if request.std is not None else built.std or spec.std
    return Preprocessed(net, mean, std, spec.layer_aliases, built.input_size or spec.input_size,
                        request.name, fixed_size=spec.fixed_size, layouts=spec.layouts,
                        classes=spec.class_names(net), render=spec.render)


def from_source(name: str, weights: str | os.PathLike | None, mean: Sequence[float] | None,
                std: Sequence[float] | None, **options: Any) -> nn.Module:
    """Load a model named with a source prefix (``"timm:..."``, ``"hf:..."``): :func:`load`
    under its former name, kept for code that calls it.

    Args:
        name: the model's name, with its prefix.
        weights: as :func:`load` takes them.
        mean: as :func:`load` takes it.
        std: as :func:`load` takes it.
        options: keyword arguments for the source's builder.
    """
    if registry.source_of(name) is None:
        raise registry.unknown_model(name)
    return load(name, weights, mean, std, **options)
