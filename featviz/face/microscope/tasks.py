"""The views of one layer a microscope site computes beside the sweep: each task takes the
model, the layer and the :class:`Context`, writes its images into the layer's data folder and
returns the payload :mod:`.store` keeps (or raises :class:`NotApplicable` with the reason a
reader is shown)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...core import images as _images
from ...core import layouts as _layouts
from ...core import model_info
from ...core import objectives as obj
from ...core import param as _param
from ...core.hooks import frozen, on_output
from ...core.render import render
from ...errors import FeatvizError
from ...methods import circuits, groups, inversion
from . import store


class NotApplicable(Exception):
    """The task does not apply to the layer; the message says why."""


@dataclass
class Context:
    """What every task of one site shares: the values of its setting, the layers in order,
    the sample photos (paths) and the folder of photos."""

    values: dict[str, Any]
    layers: list[str]
    photos: list[Path]
    images: Path | None
    site: Path
    class_images: list[Path] = field(default_factory=list)
    modules: dict[str, str] = field(default_factory=dict)

    def module(self, layer: str) -> str:
        """The model layer a site layer's units live in: the layer itself, or for
        ``KIND:LAYER`` the layer its objectives read (``mlp:blocks.8``: the MLP's units)."""
        return self.modules.get(layer, layer)

    def neighbours(self, layer: str) -> tuple[str | None, str | None]:
        """The layers before and after ``layer`` in the site's list."""
        i = self.layers.index(layer)
        return (self.layers[i - 1] if i else None,
                self.layers[i + 1] if i + 1 < len(self.layers) else None)


def _photo(ctx: Context, path: Path) -> torch.Tensor:
    """The photo at the site's size, [3, H, W]."""
    img = _images.load(path, size=ctx.values["size"])
    return img[0] if img.dim() == 4 else img


def dreams(model: nn.Module, layer: str, ctx: Context) -> dict:
    """DeepDream of each sample photo at the layer (the photo as the starting image, the
    layer's mean squared activation raised, the photo's own pixels as parameters)."""
    if not ctx.photos:
        raise NotApplicable("no photos were given (--images)")
    folder, items = store.layer_dir(ctx.site, layer), []
    for i, path in enumerate(ctx.photos):
        photo = _photo(ctx, path)
        p = _param.image(ctx.values["size"], init=photo, fft=False, decorrelate=False)
        result = render(model, obj.layer(ctx.module(layer)), p, steps=ctx.values["dream_steps"],
                        seed=ctx.values["seed"], progress=False, pace="careful")
        _images.save(photo, folder / f"photo_{i}.png")
        _images.save(result.shown()[0], folder / f"dream_{i}.png")
        items.append({"photo": path.name, "original": f"photo_{i}.png", "file": f"dream_{i}.png"})
    return {"items": items}


def caricatures(model: nn.Module, layer: str, ctx: Context) -> dict:
    """lucid's caricature of each sample photo at the layer."""
    if not ctx.photos:
        raise NotApplicable("no photos were given (--images)")
    folder, items = store.layer_dir(ctx.site, layer), []
    for i, path in enumerate(ctx.photos):
        photo = _photo(ctx, path)[None]
        made = inversion.caricature(model, photo, ctx.module(layer),
                                    steps=ctx.values["dream_steps"], size=ctx.values["size"],
                                    seed=ctx.values["seed"], progress=False)
        _images.save(photo[0], folder / f"photo_{i}.png")
        _images.save(made.image[0], folder / f"caricature_{i}.png")
        items.append({"photo": path.name, "original": f"photo_{i}.png",
                      "file": f"caricature_{i}.png"})
    return {"items": items}


def neuron_groups(model: nn.Module, layer: str, ctx: Context) -> dict:
    """The layer's neuron groups (NMF of its activations) on the first sample photo."""
    if not ctx.photos:
        raise NotApplicable("no photos were given (--images)")
    try:
        found = groups.neuron_groups(model, _photo(ctx, ctx.photos[0]), ctx.module(layer),
                                     k=ctx.values["groups"])
    except (FeatvizError, ValueError) as e:
        raise NotApplicable(str(e)) from None
    found.save(store.layer_dir(ctx.site, layer) / "groups.png")
    return {"photo": ctx.photos[0].name, "file": "groups.png", "k": ctx.values["groups"]}


def _ranked(ew: circuits.ExpandedWeights, k: int, outgoing: bool) -> dict[str, dict]:
    """Per unit, its ``k`` strongest connections of each sign as [channel, strength] pairs
    (:meth:`~featviz.methods.circuits.ExpandedWeights.strongest`, or ``outgoing``)."""
    rank = ew.outgoing if outgoing else ew.strongest
    units = ew.weights.shape[1 if outgoing else 0]
    return {str(u): {sign: [[c.channel, round(c.strength, 5)] for c in rank(u, k, sign)]
                     for sign in circuits.expanded.SIGNS} for u in range(units)}


def connections(model: nn.Module, layer: str, ctx: Context) -> dict:
    """The strongest incoming units (from the previous layer of the site) and outgoing ones
    (into the next) by expanded weight; where there is none, why."""
    before, after = ctx.neighbours(layer)
    k = ctx.values["connections"]
    payload: dict[str, Any] = {"source": before, "target": after, "incoming": {},
                               "outgoing": {}, "source_error": None, "target_error": None}
    for side, other in (("source", before), ("target", after)):
        if other is None:
            payload[f"{side}_error"] = f"no {'earlier' if side == 'source' else 'later'} layer " \
                                       "in this site"
            continue
        pair = ((ctx.module(other), ctx.module(layer)) if side == "source"
                else (ctx.module(layer), ctx.module(other)))
        try:
            ew = circuits.expanded_weights(model, *pair, size=ctx.values["size"])
        except FeatvizError as e:
            payload[f"{side}_error"] = str(e)
            continue
        if side == "source":
            payload["incoming"] = _ranked(ew, k, outgoing=False)
        else:
            payload["outgoing"] = _ranked(ew, k, outgoing=True)
    return payload


def tuning(model: nn.Module, layer: str, ctx: Context) -> dict:
    """Every unit's orientation tuning for each stimulus family of the setting."""
    families = {}
    for name in ctx.values["families"]:
        try:
            found = circuits.scan(model, ctx.module(layer), name, size=ctx.values["size"])
        except FeatvizError as e:
            raise NotApplicable(str(e)) from None
        units = {}
        for c in range(found.channels):
            curve = found.orientation_curves[c]
            units[str(c)] = {"curve": [round(float(v), 5) for v in curve],
                             "circular_variance": round(float(found.circular_variances[c]), 4),
                             "unimodal": bool(found.unimodal[c]),
                             "preferred": float(found.preferred_orientation(c)),
                             "member": c in found.found}
        families[name] = {"period": found.family.period,
                          "orientations": [float(a) for a in found.family.params[
                              found.family.orientation]], "units": units}
    return {"families": families}


def classes(model: nn.Module, layer: str, ctx: Context) -> dict:
    """Every unit's top classes by attribution: over the class photos, each photo's predicted
    class logit is attributed to the layer's channels (gradient x activation, summed over
    positions) and the attributions are summed per class."""
    names = model_info.class_names(model)
    photos = ctx.class_images
    if not photos:
        raise NotApplicable("no photos were given (--images)")
    scores: torch.Tensor | None = None
    with frozen(model):
        for path in photos:
            attr, cls, n_classes = _attribution(model, ctx.module(layer), _photo(ctx, path),
                                                ctx.values["size"])
            if scores is None:
                scores = torch.zeros(n_classes, attr.shape[0])
            scores[cls] += attr
    assert scores is not None
    top = scores.topk(min(5, scores.shape[0]), dim=0)
    units = {str(c): [[names[int(i)] if names else str(int(i)), round(float(v), 5)]
                      for v, i in zip(top.values[:, c], top.indices[:, c], strict=True) if v > 0]
             for c in range(scores.shape[1])}
    return {"units": units, "photos": len(photos)}


def _attribution(model: nn.Module, layer: str, photo: torch.Tensor, size: int
                 ) -> tuple[torch.Tensor, int, int]:
    """The gradient x activation of the photo's predicted class logit at each channel of
    ``layer`` (summed over positions or tokens), that class and the number of classes."""
    kept: list[torch.Tensor] = []

    def keep(_names, output) -> None:
        if isinstance(output, torch.Tensor):
            output.retain_grad()
            kept.append(output)

    x = photo[None].to(model_info.model_device(model)).requires_grad_(True)
    with on_output(model, [layer], keep):
        logits = model(x)
    cls, n_classes = int(logits[0].argmax()), int(logits.shape[-1])
    logits[0, cls].backward()
    act = kept[0]
    layout = _layouts.layout_of(layer, act, _layouts.declared(model), (size, size))
    prod = (act.grad * act).detach()[0].float().cpu()
    if layout == "nchw":
        return prod.sum((1, 2)), cls, n_classes
    if layout == "nhwc":
        return prod.sum((0, 1)), cls, n_classes
    return prod.reshape(-1, prod.shape[-1]).sum(0), cls, n_classes


#: task name -> its function (``facets`` is per unit: see :mod:`.build`)
LAYER_TASKS: dict[str, Callable[[nn.Module, str, Context], dict]] = {
    "dreams": dreams, "caricatures": caricatures, "groups": neuron_groups,
    "weights": connections, "tuning": tuning, "classes": classes,
}
