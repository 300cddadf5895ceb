"""Objectives: what an optimization maximizes, as functions of a model's activations.

An :class:`Objective` maps ``{layer name: activation}`` to one value per batch element (shape
``[B]``) and knows which layers it needs, so that only those are hooked. Objectives combine with
``+ - * /`` and scalars; ``batch=i`` makes an objective drive only image ``i`` of the batch, so
one batch can render many channels at once. Objectives are maximized (as in lucid);
regularizers (:func:`l1`, :func:`l2`, :func:`clipping`, :func:`total_variation`, :func:`blur`)
return a penalty and are subtracted: ``channel("features.14", 12) - 0.05 * total_variation()``.
"""

from __future__ import annotations

import codecs
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ChannelError, FeatvizError, ObjectiveSyntaxError, closest
from .hooks import INPUT, OUTPUT
from .layouts import cls_key

Acts = Mapping[str, torch.Tensor]


class Objective:
    """A differentiable score of activations, one value per batch element.

    ``fn(acts)`` returns a tensor of shape ``[B]``; ``layers`` names the layers it reads
    (:data:`~featviz.hooks.INPUT` for the image, :data:`~featviz.hooks.OUTPUT` for the logits);
    ``batch_size`` is the smallest batch it needs (an objective with ``batch=3`` needs 4).
    ``channels`` names, for a layer it reads only some channels of, those channels (a layer
    not in it is read whole); a render may leave out what feeds only the other channels.
    """

    def __init__(self, fn: Callable[[Acts], torch.Tensor], layers: Iterable[str], name: str,
                 batch_size: int = 0, targets: Mapping[int, str] | None = None,
                 channels: Mapping[str, Iterable[int]] | None = None):
        self.fn = fn
        self.layers = frozenset(layers)
        self.name = name
        self.batch_size = batch_size
        # image index -> name of what drives that image alone (for labels of batched renders)
        self.targets = dict(targets or {})
        self.channels = {k: frozenset(v) for k, v in (channels or {}).items()
                         if k in self.layers}

    def label(self, i: int) -> str:
        """A short description of what drives image ``i`` of the batch."""
        return self.targets.get(i, self.name)

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def on(self, batch: int) -> Objective:
        """This objective driving image ``batch`` of the batch alone (others get 0)."""
        if self.targets:
            raise FeatvizError(f"{self.name} already drives particular images of the batch")
        return Objective(_on_element(self.fn, batch, self.name), self.layers,
                         f"{self.name}@{batch}", batch + 1, {batch: self.name}, self.channels)

    # -- algebra -------------------------------------------------------------------------
    def _combine(self, other: Objective | float, op, symbol: str, flip: bool = False) -> Objective:
        if isinstance(other, Objective):
            a, b = (other, self) if flip else (self, other)
            targets = dict(a.targets)
            for i, name in b.targets.items():
                targets[i] = f"{targets[i]} {symbol} {name}" if i in targets else name
            return Objective(lambda acts: op(a(acts), b(acts)), a.layers | b.layers,
                             f"({a.name} {symbol} {b.name})", max(a.batch_size, b.batch_size),
                             targets, merge_channels(a, b))
        if not isinstance(other, numbers.Real):
            return NotImplemented
        c = float(other)
        if flip:
            return Objective(lambda acts: op(c, self(acts)), self.layers,
                             f"({_num(c)} {symbol} {self.name})", self.batch_size, self.targets,
                             self.channels)
        return Objective(lambda acts: op(self(acts), c), self.layers,
                         f"({self.name} {symbol} {_num(c)})", self.batch_size, self.targets,
                         self.channels)

    def __add__(self, other):
        return self._combine(other, lambda a, b: a + b, "+")

    def __radd__(self, other):
        if isinstance(other, numbers.Real) and other == 0:  # lets sum([...]) work
            return self
        return self._combine(other, lambda a, b: a + b, "+", flip=True)

    def __sub__(self, other):
        return self._combine(other, lambda a, b: a - b, "-")

    def __rsub__(self, other):
        return self._combine(other, lambda a, b: a - b, "-", flip=True)

    def __mul__(self, other):
        return self._combine(other, lambda a, b: a * b, "*")

    def __rmul__(self, other):
        return self._combine(other, lambda a, b: a * b, "*", flip=True)

    def __truediv__(self, other):
        if isinstance(other, numbers.Real) and other == 0:
            raise ZeroDivisionError(f"dividing objective {self.name} by zero")
        return self._combine(other, lambda a, b: a / b, "/")

    def __neg__(self):
        return Objective(lambda acts: -self(acts), self.layers, f"-{self.name}", self.batch_size,
                         self.targets, self.channels)

    @staticmethod
    def sum(objectives: Iterable[Objective]) -> Objective:
        """Add a list of objectives (each may drive its own batch element)."""
        objectives = list(objectives)
        if not objectives:
            raise ValueError("Objective.sum needs at least one objective")
        total = objectives[0]
        for o in objectives[1:]:
            total = total + o
        return total


def merge_channels(a: Objective, b: Objective) -> dict[str, frozenset[int]]:
    """The channels two objectives read together: per layer the union, where both read only
    some; a layer either reads whole is read whole."""
    merged = {}
    for layer in a.layers | b.layers:
        parts = [o.channels.get(layer) for o in (a, b) if layer in o.layers]
        if all(p is not None for p in parts):
            merged[layer] = frozenset().union(*parts)
    return merged


def _num(c: float) -> str:
    return f"{c:g}"


def _on_element(obj_fn: Callable[[Acts], torch.Tensor], batch: int | None, name: str):
    """Evaluate ``obj_fn`` on batch element ``batch`` only; other elements get 0."""
    if batch is None:
        return obj_fn
    if not isinstance(batch, int) or batch < 0:
        raise ValueError(f"batch must be a non-negative image index, got {batch!r}")

    def fn(acts: Acts) -> torch.Tensor:
        size = _batch_size(acts)
        if batch >= size:
            raise FeatvizError(f"objective {name} drives image {batch} of the batch, but the "
                               f"batch has {size} images (valid: 0-{size - 1})")
        value = obj_fn({k: v[batch:batch + 1] for k, v in acts.items()})
        mask = torch.zeros(size, device=value.device, dtype=value.dtype)
        mask[batch] = 1
        return mask * value

    return fn


def _batch_size(acts: Acts) -> int:
    return next(iter(acts.values())).shape[0]


def _make(fn, layers, name, batch: int | None, channels=None) -> Objective:
    if batch is None:
        return Objective(fn, layers, name, channels=channels)
    label = f"{name}@{batch}"
    return Objective(_on_element(fn, batch, label), layers, label, batch + 1, {batch: name},
                     channels)


def _channels_of(layer: str, act: torch.Tensor) -> int:
    # [B, C, H, W] conv maps, [B, C] vectors, [B, tokens, C] transformer sequences
    return act.shape[-1] if act.dim() == 3 else act.shape[1]


def _check_channel(layer: str, act: torch.Tensor, channel: int) -> None:
    n = _channels_of(layer, act)
    if not 0 <= channel < n:
        raise ChannelError(f"channel {channel} is out of range for layer {layer!r}, which has "
                           f"{n} channels (valid: 0-{n - 1})")


def _channel_map(layer: str, act: torch.Tensor, channel: int) -> torch.Tensor:
    """The activation of one channel per batch element, spatial or token axes kept."""
    _check_channel(layer, act, channel)
    if act.dim() == 3:
        return act[:, :, channel]
    return act[:, channel]


def _mean_rest(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).mean(dim=1)


def channel(layer: str, n: int | Sequence[int], batch: int | None = None) -> Objective:
    """Mean activation of channel ``n`` of ``layer`` (lucid's ``channel``).

    ``n`` may be a list of channels, one per batch element (image ``i`` maximizes channel
    ``n[i]``): the fast way to render many channels of one layer in one batch.
    """
    if isinstance(n, Sequence) and not isinstance(n, str):
        if batch is not None:
            raise ValueError("give either a list of channels or batch=, not both")
        return _channel_list(layer, [int(c) for c in n])
    n = int(n)
    return _make(lambda acts: _mean_rest(_channel_map(layer, acts[layer], n)), [layer],
                 f"channel({layer}, {n})", batch, {layer: [n]})


def _channel_list(layer: str, channels: list[int]) -> Objective:
    if not channels:
        raise ValueError("channel() needs at least one channel")
    index = torch.tensor(channels)

    def fn(acts: Acts) -> torch.Tensor:
        act = acts[layer]
        size = act.shape[0]
        if size < len(channels):
            raise FeatvizError(f"{len(channels)} channels need a batch of at least "
                               f"{len(channels)} images, got {size}")
        for c in (min(channels), max(channels)):
            _check_channel(layer, act, c)
        idx = index.to(act.device)
        rows = torch.arange(len(channels), device=act.device)
        picked = act[rows, :, idx] if act.dim() == 3 else act[rows, idx]
        values = _mean_rest(picked)
        if size > len(channels):
            values = torch.cat([values, values.new_zeros(size - len(channels))])
        return values

    short = f"{channels[0]}..{channels[-1]}" if len(channels) > 3 else ", ".join(map(str, channels))
    return Objective(fn, [layer], f"channel({layer}, [{short}])", len(channels),
                     {i: f"channel({layer}, {c})" for i, c in enumerate(channels)},
                     {layer: channels})


def neuron(layer: str, n: int, x: int | None = None, y: int | None = None,
           batch: int | None = None) -> Objective:
    """Activation of channel ``n`` at one position: the centre by default, or column ``x``,
    row ``y`` of the layer's map (lucid's ``neuron``)."""
    n = int(n)

    def fn(acts: Acts) -> torch.Tensor:
        act = acts[layer]
        plane = _channel_map(layer, act, n)
        if plane.dim() == 1:  # a vector layer: the channel is the neuron
            return plane
        if plane.dim() == 2:  # token sequence: x indexes tokens
            t = plane.shape[1] // 2 if x is None else x
            if not 0 <= t < plane.shape[1]:
                raise ChannelError(f"token {t} is outside layer {layer!r} with "
                                   f"{plane.shape[1]} tokens (valid: 0-{plane.shape[1] - 1})")
            return plane[:, t]
        h, w = plane.shape[1:]
        cx, cy = (w // 2 if x is None else x), (h // 2 if y is None else y)
        if not (0 <= cx < w and 0 <= cy < h):
            raise ChannelError(f"position x={cx}, y={cy} is outside layer {layer!r} of size "
                               f"{h}x{w} (valid: x 0-{w - 1}, y 0-{h - 1})")
        return plane[:, cy, cx]

    where = "" if x is None and y is None else f", x={x}, y={y}"
    return _make(fn, [layer], f"neuron({layer}, {n}{where})", batch, {layer: [n]})


def class_token(layer: str, n: int, batch: int | None = None) -> Objective:
    """Channel ``n`` of the class token of a vision-transformer ``layer`` (its output's first
    token, which :func:`channel` and :func:`neuron` leave out: they read the patch grid)."""
    n, key = int(n), cls_key(layer)

    def fn(acts: Acts) -> torch.Tensor:
        if key not in acts:
            raise FeatvizError(f"layer {layer!r} has no class token (its output is "
                               f"{list(acts[layer].shape)} after layout); class_token needs a "
                               "token sequence with a class token first (layout tokens+cls)")
        _check_channel(layer, acts[key], n)
        return acts[key][:, n]

    return _make(fn, [layer], f"class_token({layer}, {n})", batch)


def layer(layer: str, batch: int | None = None) -> Objective:
    """DeepDream: the mean squared activation of the whole layer."""
    return _make(lambda acts: _mean_rest(acts[layer].float() ** 2), [layer],
                 f"layer({layer})", batch)


def _check_class(logits: torch.Tensor, n: int) -> None:
    if logits.dim() != 2:
        raise FeatvizError(f"class objectives need [B, classes] model outputs, got "
                           f"{list(logits.shape)}")
    if not 0 <= n < logits.shape[1]:
        raise ChannelError(f"class {n} is out of range for a model with {logits.shape[1]} "
                           f"outputs (valid: 0-{logits.shape[1] - 1})")


def logit(n: int, batch: int | None = None) -> Objective:
    """The model's pre-softmax output for class ``n``."""
    n = int(n)

    def fn(acts: Acts) -> torch.Tensor:
        out = acts[OUTPUT]
        _check_class(out, n)
        return out[:, n]

    return _make(fn, [OUTPUT], f"logit({n})", batch)


def softmax(n: int, batch: int | None = None) -> Objective:
    """The softmax probability of class ``n`` (tends to give worse images than :func:`logit`:
    it can rise by pushing other classes down instead of class ``n`` up)."""
    n = int(n)

    def fn(acts: Acts) -> torch.Tensor:
        out = acts[OUTPUT]
        _check_class(out, n)
        return torch.softmax(out.float(), dim=1)[:, n]

    return _make(fn, [OUTPUT], f"softmax({n})", batch)


# lucid floors the cosine at 0.1 before raising it to a power (objectives_util._dot_cossim),
# so a vector pointing away still gets a small push instead of none
COSSIM_FLOOR = 0.1


def _vectors(vector: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """A direction as [1, C] (one for every image) or [N, C] (image i gets row i)."""
    vec = torch.as_tensor(vector, dtype=torch.float32)
    if vec.dim() > 2:
        raise ValueError(f"a direction is a vector [C] or one per image [N, C], got shape "
                         f"{tuple(vec.shape)}")
    return vec.reshape(1, -1) if vec.dim() < 2 else vec


def _positions_last(act: torch.Tensor) -> torch.Tensor:
    """Activations as [B, positions, C]: spatial maps, token sequences and vectors alike."""
    if act.dim() == 4:
        return act.flatten(2).transpose(1, 2)
    if act.dim() == 3:
        return act
    return act.unsqueeze(1)


def _dot_cossim(acts: torch.Tensor, vecs: torch.Tensor, cossim_pow: float) -> torch.Tensor:
    """Dot products [B, P] of activations [B, P, C] with vectors [B, C], times the cosine
    (floored at :data:`COSSIM_FLOOR`) to the power ``cossim_pow``: lucid's cosine-weighted
    direction, which rewards pointing the same way, not just being large."""
    dot = torch.einsum("bpc,bc->bp", acts, vecs)
    if not cossim_pow:
        return dot
    cos = dot / (acts.norm(dim=-1) + 1e-4) / (vecs.norm(dim=-1, keepdim=True) + 1e-4)
    return dot * cos.clamp(min=COSSIM_FLOOR) ** cossim_pow


def _direction_values(layer: str, act: torch.Tensor, vecs: torch.Tensor,
                      cossim_pow: float) -> torch.Tensor:
    """[B, P] cosine-weighted dot products, with the vector count and length checked."""
    n = _channels_of(layer, act)
    if vecs.shape[1] != n:
        raise ChannelError(f"direction vector has {vecs.shape[1]} entries but layer {layer!r} "
                           f"has {n} channels")
    size = act.shape[0]
    if vecs.shape[0] not in (1, size):
        raise FeatvizError(f"{vecs.shape[0]} direction vectors need a batch of "
                           f"{vecs.shape[0]} images, got {size}")
    v = vecs.to(device=act.device, dtype=act.dtype).expand(size, -1)
    return _dot_cossim(_positions_last(act), v, cossim_pow)


def _direction_name(kind: str, layer: str, vecs: torch.Tensor, cossim_pow: float,
                    where: str = "") -> str:
    what = (f"{vecs.shape[1]}-vector" if vecs.shape[0] == 1
            else f"{vecs.shape[0]} {vecs.shape[1]}-vectors")
    pow_ = f", cossim_pow={_num(cossim_pow)}" if cossim_pow else ""
    return f"{kind}({layer}, {what}{where}{pow_})"


def _per_image(fn, layer: str, name: str, kind: str, vecs: torch.Tensor,
               batch: int | None) -> Objective:
    """An objective for one vector (``batch=`` as usual) or one vector per image."""
    if vecs.shape[0] == 1:
        return _make(fn, [layer], name, batch)
    if batch is not None:
        raise ValueError("give either one direction per image ([N, C]) or batch=, not both")
    return Objective(fn, [layer], name, vecs.shape[0],
                     {i: f"{kind}({layer}, #{i})" for i in range(vecs.shape[0])})


def direction(layer: str, vector: torch.Tensor | Sequence[float],
              batch: int | None = None, cossim_pow: float = 0.0) -> Objective:
    """Dot product of the activations with ``vector`` (one weight per channel), averaged over
    positions: a direction in activation space instead of a single channel. ``vector`` may be
    [N, C], one direction per image (image ``i`` maximizes row ``i``: many directions in one
    batch). ``cossim_pow > 0`` multiplies each position's dot product by its cosine with the
    vector (floored at 0.1) to that power, lucid's ``direction(..., cossim_pow=)``, which
    makes images point the vector's way rather than just grow (activation grids and atlases
    use it)."""
    vecs = _vectors(vector)

    def fn(acts: Acts) -> torch.Tensor:
        return _direction_values(layer, acts[layer], vecs, cossim_pow).mean(dim=1)

    name = _direction_name("direction", layer, vecs, cossim_pow)
    return _per_image(fn, layer, name, "direction", vecs, batch)


def direction_neuron(layer: str, vector: torch.Tensor | Sequence[float],
                     x: int | None = None, y: int | None = None, batch: int | None = None,
                     cossim_pow: float = 0.0) -> Objective:
    """Like :func:`direction` at one position of the layer's map: the centre by default, or
    column ``x``, row ``y`` (lucid's ``direction_neuron``). ``vector`` [C] or [N, C] (one per
    image), ``cossim_pow`` as in :func:`direction`."""
    vecs = _vectors(vector)

    def fn(acts: Acts) -> torch.Tensor:
        act = acts[layer]
        values = _direction_values(layer, act, vecs, cossim_pow)
        if act.dim() != 4:
            return values[:, values.shape[1] // 2 if x is None else x]
        h, w = act.shape[2:]
        cx, cy = (w // 2 if x is None else x), (h // 2 if y is None else y)
        if not (0 <= cx < w and 0 <= cy < h):
            raise ChannelError(f"position x={cx}, y={cy} is outside layer {layer!r} of size "
                               f"{h}x{w} (valid: x 0-{w - 1}, y 0-{h - 1})")
        return values[:, cy * w + cx]

    where = "" if x is None and y is None else f", x={x}, y={y}"
    name = _direction_name("direction_neuron", layer, vecs, cossim_pow, where)
    return _per_image(fn, layer, name, "direction_neuron", vecs, batch)


def diversity(layer: str) -> Objective:
    """Distill's diversity term: minus the mean cosine similarity of each image's Gram matrix
    with the others' in the batch. Add it with a positive weight (``+ 100 * diversity(...)``)
    to make the images of a batch differ in style, not just in position."""

    def fn(acts: Acts) -> torch.Tensor:
        act = acts[layer].float()
        size = act.shape[0]
        if size < 2:
            raise FeatvizError("diversity needs a batch of at least 2 images")
        flat = act.reshape(size, act.shape[1], -1)
        grams = F.normalize((flat @ flat.transpose(1, 2)).reshape(size, -1), dim=1)
        sim = grams @ grams.T
        return -(sim.sum(dim=1) - sim.diagonal()) / size

    return Objective(fn, [layer], f"diversity({layer})", 2)


def interpolate(a: Objective, b: Objective, n: int) -> Objective:
    """A batch of ``n`` images moving from ``a`` to ``b``: image ``i`` maximizes
    ``(1 - t) * a + t * b`` with ``t = i / (n - 1)`` (Distill's interpolation figures; render it
    with ``param.aligned(size, n)`` so the frames line up)."""
    if n < 2:
        raise ValueError(f"an interpolation needs at least 2 images, got n={n}")
    if a.targets or b.targets:
        raise FeatvizError("interpolate takes objectives that drive the whole batch "
                           f"(got {a.name} and {b.name})")
    steps = [i / (n - 1) for i in range(n)]

    def fn(acts: Acts) -> torch.Tensor:
        va, vb = a(acts), b(acts)
        if va.shape[0] != n:
            raise FeatvizError(f"interpolate({a.name}, {b.name}) was built for {n} images, "
                               f"the batch has {va.shape[0]}")
        t = torch.tensor(steps, device=va.device, dtype=va.dtype)
        return (1 - t) * va + t * vb

    targets = {i: f"{_num(round(1 - t, 2))}*{a.name} + {_num(round(t, 2))}*{b.name}"
               for i, t in enumerate(steps)}
    return Objective(fn, a.layers | b.layers, f"interpolate({a.name}, {b.name})", n, targets,
                     merge_channels(a, b))


# -- regularizers: penalties on the image (pre-transform), to be subtracted -------------
def l1(constant: float = 0.5) -> Objective:
    """Mean absolute difference of the pixels from ``constant`` (grey by default; lucid uses 0
    and a sum, so its weights are larger by the pixel count)."""
    return Objective(lambda acts: _mean_rest((acts[INPUT] - constant).abs()), [INPUT],
                     f"l1({_num(constant)})")


def l2(constant: float = 0.5) -> Objective:
    """Root mean square difference of the pixels from ``constant``."""
    return Objective(lambda acts: (_mean_rest((acts[INPUT] - constant) ** 2) + 1e-12).sqrt(),
                     [INPUT], f"l2({_num(constant)})")


RAIL_MARGIN = 0.05  # colours this close to 0 or 1 count as on the rails (clipping, RailGuard)


def clipping(margin: float = RAIL_MARGIN) -> Objective:
    """Mean distance of the colour values from ``[margin, 1 - margin]``: zero for every value
    inside, growing linearly past it. Subtracted with a large weight (about 1e4 for a channel of
    InceptionV1) it keeps a render off the rails, where a sigmoid parameterization under Adam
    drifts into flat black, white or pure-colour areas, and leaves every other pixel alone."""
    if not 0 <= margin < 0.5:
        raise ValueError(f"clipping margin must be in [0, 0.5), got {margin!r}")

    def fn(acts: Acts) -> torch.Tensor:
        img = acts[INPUT]
        return _mean_rest(torch.relu(margin - img) + torch.relu(img - (1 - margin)))

    return Objective(fn, [INPUT], f"clipping({_num(margin)})")


def neighbour_difference() -> Objective:
    """Mean squared difference of each image from its neighbours in the batch (image ``i``
    against ``i - 1`` and ``i + 1``, half each): subtract it to make an interpolation
    sequence change smoothly from frame to frame (Distill's aligned-interpolation penalty)."""

    def fn(acts: Acts) -> torch.Tensor:
        img = acts[INPUT]
        if img.shape[0] < 2:
            raise FeatvizError("neighbour_difference needs a batch of at least 2 images")
        step = _mean_rest((img[1:] - img[:-1]) ** 2)  # [B-1]: between i and i+1
        zero = step.new_zeros(1)
        return 0.5 * (torch.cat([zero, step]) + torch.cat([step, zero]))

    return Objective(fn, [INPUT], "neighbour_difference()", 2)


def total_variation(beta: float | None = None) -> Objective:
    """Total variation of the image, per pixel: ``|dx| + |dy|`` (lucid's anisotropic form) or,
    with ``beta``, ``(dx² + dy²)^(beta/2)`` as in Mahendran & Vedaldi's TV^β."""

    def fn(acts: Acts) -> torch.Tensor:
        img = acts[INPUT]
        dx = img[..., :-1, 1:] - img[..., :-1, :-1]
        dy = img[..., 1:, :-1] - img[..., :-1, :-1]
        if beta is None:
            return _mean_rest(dx.abs() + dy.abs())
        return _mean_rest((dx ** 2 + dy ** 2 + 1e-8) ** (beta / 2))

    return Objective(fn, [INPUT], "total_variation()" if beta is None else f"tv(beta={beta:g})")


def blur(sigma: float | None = None) -> Objective:
    """Half the mean squared difference between the image and a blurred copy of it that is held
    constant (lucid's ``blur_input_each_step``): subtracting it blurs the image a little each
    step. The copy uses lucid's 3x3 binomial kernel, or a Gaussian of ``sigma`` pixels."""
    import kornia

    def fn(acts: Acts) -> torch.Tensor:
        img = acts[INPUT]
        with torch.no_grad():
            if sigma is None:
                k = torch.tensor([1.0, 2.0, 1.0], device=img.device, dtype=img.dtype)
                kernel = (k[:, None] * k[None, :] / 16)[None]
                blurred = kornia.filters.filter2d(img, kernel, border_type="reflect")
            else:
                size = 2 * int(3 * sigma + 0.5) + 1
                blurred = kornia.filters.gaussian_blur2d(img, (size, size), (sigma, sigma),
                                                         border_type="reflect")
        return 0.5 * _mean_rest((img - blurred) ** 2)

    return Objective(fn, [INPUT], "blur()" if sigma is None else f"blur({sigma:g})")


# -- strings from the command line ----------------------------------------------------
GRAMMAR = """objective strings: terms joined with '+' or '-', each with an optional 'WEIGHT*'
(kinds in any case; spaces around ':', '+', '-' and '*' do not matter):
  channel:LAYER:C           mean activation of channel C; C may be a range 0-63 or a list 1,5,9
  neuron:LAYER:C[:X:Y]      channel C at the centre of the map, or at column X, row Y
  layer:LAYER               DeepDream: mean squared activation of the layer
  logit:C                   pre-softmax output for class C
  softmax:C                 softmax probability of class C
  direction:LAYER:FILE      dot product with a vector of one weight per channel: a 1-D tensor
                            saved with torch.save (.pt) or numpy.save (.npy)
  class_token:LAYER:C       channel C of a vision transformer's class token
  e.g. channel:features.14:12   or   channel:mixed4a:97 - 0.5*neuron:mixed4a:3
A '+' or '-' starts a new term only where one follows it ([WEIGHT*]KIND:); anywhere else it
belongs to the term: a range 0-63, a weight -0.5* or 1e-3*, a '-' inside a layer name."""

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
# a '+' or '-' (or a run of them, '+-') followed by the head of a term, [WEIGHT*]NAME: (or
# a weight that lacks its '*', 0.5channel:, so that the error can say so)
_JOIN = re.compile(rf"[-+](?:\s*[-+])*(?=\s*(?P<weight>{_NUMBER}\s*\*)?\s*"
                   rf"(?P<kind>(?:{_NUMBER}\s*)?[a-z_]\w*)\s*:)", re.IGNORECASE)
_HEAD = re.compile(rf"\s*(?:(?P<weight>{_NUMBER})\s*\*)?(?P<body>.*)", re.IGNORECASE | re.DOTALL)
# kind -> its arguments and an example, which errors fill in with the user's own layer
_USAGE = {
    "channel": ("LAYER:C", "channel:{layer}:12"),
    "neuron": ("LAYER:C or LAYER:C:X:Y", "neuron:{layer}:12:3:3"),
    "layer": ("LAYER", "layer:{layer}"),
    "logit": ("C, a class index", "logit:207"),
    "softmax": ("C, a class index", "softmax:207"),
    "direction": ("LAYER:FILE", "direction:{layer}:vector.pt"),
    "class_token": ("LAYER:C", "class_token:{layer}:12"),
}
_VECTOR_FILE = ("a 1-D tensor of one weight per channel, saved with torch.save(v, 'v.pt') or "
                "numpy.save('v.npy', v)")


class _Term(NamedTuple):
    """One term of an objective string: the whole string and the term as written (for
    errors), its kind in lower case and its ':'-separated arguments, stripped."""

    spec: str
    text: str
    kind: str
    args: list[str]

    def error(self, why: str) -> ObjectiveSyntaxError:
        return _syntax(self.spec, why, self.text)

    def usage(self) -> str:
        """What this kind takes, with an example that uses the user's layer where given."""
        takes, example = _USAGE[self.kind]
        named = self.args and self.args[0] and not self.args[0].isdigit()
        return f"{self.kind} takes {takes}, e.g. " + repr(
            example.format(layer=self.args[0] if named else "features.14"))


def _syntax(spec: str, why: str, term: str = "") -> ObjectiveSyntaxError:
    where = f", term {term!r}" if term and term != spec.strip() else ""
    return ObjectiveSyntaxError(f"cannot read objective {spec!r}{where}: {why}\n{GRAMMAR}")


# more channels than any layer has: a typo (0-9999999999), refused before a list is built
MAX_CHANNELS = 1 << 20


def parse_channels(text: str, spec: str = "", term: str = "") -> list[int]:
    """Read ``"12"``, ``"0-63"`` or ``"1,5,9"`` (or a mix, ``"0-3,8"``) as a list of ints; a
    malformed one raises an :class:`ObjectiveSyntaxError` naming ``spec`` and ``term``."""
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise _syntax(spec or text, f"channel {part.strip()!r} is not a number (12), a range "
                                        "(0-63) or a list (1,5,9)", term)
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise _syntax(spec or text, f"range {part.strip()!r} runs backwards (write "
                                        f"{hi}-{lo})", term)
        if len(out) + hi - lo + 1 > MAX_CHANNELS:
            raise _syntax(spec or text, f"{part.strip()!r} names more than {MAX_CHANNELS} "
                                        "channels; no layer has that many", term)
        out.extend(range(lo, hi + 1))
    return out


def _pieces(text: str) -> tuple[str | None, str, list[str]]:
    """A term's weight as written (or None), its kind as written and its arguments."""
    head = _HEAD.fullmatch(text)
    kind, *args = [part.strip() for part in head["body"].split(":")]
    return head["weight"], kind, args


def _int(t: _Term, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise t.error(f"{what} must be a whole number, got {text!r}; {t.usage()}") from None


def _arity(t: _Term, counts: tuple[int, ...]) -> None:
    """Raise an error showing the right form when ``t`` has a wrong number of arguments or an
    empty one."""
    if len(t.args) in counts and all(t.args):
        return
    why = t.usage()
    if len(t.args) > max(counts):  # most often two terms that the string failed to join
        why += ("; if this is two terms, join them with '+' or '-' and write a weight as "
                "WEIGHT*KIND:..., e.g. 'channel:L:12 - 0.5*channel:L:20'")
    raise t.error(why)


def _channel_term(t: _Term) -> Objective:
    _arity(t, (2,))
    chans = parse_channels(t.args[1], t.spec, t.text)
    return channel(t.args[0], chans[0]) if len(chans) == 1 else channel(t.args[0], chans)


def _neuron_term(t: _Term) -> Objective:
    _arity(t, (2, 4))
    xy = [_int(t, a, "X and Y") for a in t.args[2:]] or [None, None]
    return neuron(t.args[0], _int(t, t.args[1], "C"), *xy)


def _class_token_term(t: _Term) -> Objective:
    _arity(t, (2,))
    return class_token(t.args[0], _int(t, t.args[1], "C"))


def _layer_term(t: _Term) -> Objective:
    _arity(t, (1,))
    return layer(t.args[0])


def _class_term(make: Callable[[int], Objective]) -> Callable[[_Term], Objective]:
    def term(t: _Term) -> Objective:
        _arity(t, (1,))
        return make(_int(t, t.args[0], "C"))

    return term


def _direction_term(t: _Term) -> Objective:
    if len(t.args) < 2 or not t.args[0] or not t.args[1]:
        raise t.error(t.usage())
    # a path may itself hold ':' (C:\...), so FILE is everything after LAYER
    return direction(t.args[0], load_vector(":".join(t.args[1:])))


def load_vector(path: str | os.PathLike) -> torch.Tensor:
    """Read a direction vector: a 1-D tensor saved with ``torch.save`` or an array saved with
    ``numpy.save`` (told apart by content, not by suffix), as float32. Anything else — a
    missing file, a text file, a dict, a 2-D tensor — raises a :class:`FeatvizError` naming
    the path and what the file should hold."""
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "not found"
        raise FeatvizError(f"direction vector file {state}: {path} (it should hold "
                           f"{_VECTOR_FILE})")
    try:
        value = _read_array(path)
    except Exception:  # noqa: BLE001 - any reader failure means the same to the user
        raise FeatvizError(f"cannot read direction vector file {path}: {_not_an_array(path)}"
                           f"; it should hold {_VECTOR_FILE}") from None
    return _as_vector(path, value)


def _read_array(path: Path):
    with path.open("rb") as f:
        numpy_file = f.read(6) == b"\x93NUMPY"  # numpy.save's magic string
    if numpy_file:
        return np.load(path, allow_pickle=False)
    return torch.load(path, map_location="cpu", weights_only=True)


def _not_an_array(path: Path) -> str:
    """Why ``path`` could not be read, in the user's terms rather than the unpickler's."""
    with path.open("rb") as f:
        head = f.read(200)
    if not head:
        return "it is empty"
    try:  # an incremental decoder does not fail on a character cut at byte 200
        text = codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text or not text.strip():
        return "it is neither a torch.save nor a numpy.save file"
    first = text.strip().splitlines()[0]
    return (f"it is a text file (it starts {first[:40]!r}); write the numbers with "
            "torch.save(torch.tensor([...]), 'v.pt') instead")


def _as_vector(path: Path, value) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not torch.is_tensor(value):
        raise FeatvizError(f"direction vector file {path} holds a {type(value).__name__}, not a "
                           f"tensor; it should hold {_VECTOR_FILE}")
    numeric = value.is_floating_point() or value.dtype in _INTEGER_DTYPES
    if value.squeeze().dim() > 1 or value.numel() == 0 or not numeric:
        raise FeatvizError(f"direction vector file {path} holds a {value.dtype} tensor of shape "
                           f"{list(value.shape)}; it should hold {_VECTOR_FILE}")
    value = value.float().flatten()
    if not torch.isfinite(value).all():
        raise FeatvizError(f"direction vector file {path} holds NaN or infinite weights")
    return value


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# objective kind of the string grammar -> the function reading its LAYER/C/... arguments
_TERMS: dict[str, Callable[[_Term], Objective]] = {
    "channel": _channel_term,
    "neuron": _neuron_term,
    "layer": _layer_term,
    "logit": _class_term(logit),
    "softmax": _class_term(softmax),
    "direction": _direction_term,
    "class_token": _class_token_term,
}
# the kinds whose first argument is LAYER
_LAYER_KINDS = ("channel", "neuron", "layer", "direction", "class_token")


def _joins(before: str, m: re.Match) -> bool:
    """Whether the '+'/'-' found by ``m`` ends the term written so far, ``before``: not the '-'
    of an exponent (``1e-3*...``), nor a '-' inside a layer name (``channel:block-1:3``: a '-'
    in the LAYER place followed by a name that is no objective kind)."""
    if m["weight"] and re.search(r"[\d.]e$", before, re.IGNORECASE):
        return False
    if m.group() != "-" or m["weight"] or m["kind"].lower() in _TERMS:
        return True
    _, kind, args = _pieces(before)
    return not (kind.lower() in _LAYER_KINDS and len(args) == 1)


def _split_terms(spec: str) -> list[tuple[float, str]]:
    """The terms of ``spec`` as (sign, text as written): the sign from the '+'/'-' run before
    each (a leading one included), the text with its weight still in front."""
    terms: list[tuple[float, str]] = []
    start, sign = 0, 1.0
    for m in _JOIN.finditer(spec):
        before = spec[start:m.start()]
        if not _joins(before, m):
            continue
        if before.strip():
            terms.append((sign, before))
        sign = -1.0 if m.group().count("-") % 2 else 1.0
        start = m.end()
    terms.append((sign, spec[start:]))
    return terms


def _unknown_kind(kind: str) -> str:
    kinds = ", ".join(_TERMS)
    if not kind:
        return f"a term needs a kind before its first ':' ({kinds})"
    if re.match(_NUMBER, kind):
        return (f"{kind!r} is no objective kind; a weight is written WEIGHT*KIND:..., "
                "e.g. '0.5*channel:features.14:12'")
    near = closest(kind.lower(), _TERMS, n=1)
    return f"unknown objective kind {kind!r}; did you mean {near[0]!r}? (kinds: {kinds})"


def _parse_term(spec: str, sign: float, text: str) -> tuple[float, Objective]:
    weight, kind, args = _pieces(text)
    t = _Term(spec, text.strip(), kind.lower(), args)
    if t.kind not in _TERMS:
        raise t.error(_unknown_kind(kind))
    return sign * float(weight or 1), _TERMS[t.kind](t)


def _weighted(weight: float, o: Objective) -> Objective:
    return o if weight == 1 else -o if weight == -1 else weight * o


def parse(spec: str) -> Objective:
    """Turn a command-line objective string into an :class:`Objective` (grammar in
    :data:`GRAMMAR`): ``"channel:features.14:12"``, ``"neuron:mixed4a:3:5:5"``,
    ``"Channel : mixed4a : 97 - 0.5 * neuron:mixed4a:3"``, ... A malformed string raises an
    :class:`ObjectiveSyntaxError` naming the offending term and the form it should take."""
    if not isinstance(spec, str) or not spec.strip():
        raise _syntax(str(spec), "it is empty")
    dangling = re.search(r"[+*]\s*$", spec)
    if dangling:
        raise _syntax(spec, f"it ends with {dangling.group().strip()!r}, which needs a term "
                            "after it")
    (first_weight, total), *rest = [_parse_term(spec, sign, text)
                                    for sign, text in _split_terms(spec)]
    total = _weighted(first_weight, total)
    for weight, o in rest:  # 'a - 0.5*b' reads back as such, not as 'a + -0.5*b'
        total = total - _weighted(-weight, o) if weight < 0 else total + _weighted(weight, o)
    return total


def expand(spec: str) -> list[str]:
    """Split a ``channel:LAYER:RANGE`` string into one string per channel, for rendering a
    layer in several batches; any other string comes back as it is."""
    terms = _split_terms(spec)
    if len(terms) == 1 and terms[0][0] == 1:
        weight, kind, args = _pieces(terms[0][1])
        if weight is None and kind.lower() == "channel" and len(args) == 2:
            return [f"channel:{args[0]}:{c}" for c in parse_channels(args[1], spec)]
    return [spec]
