"""The builders of objectives on a model's activations: channels, neurons, layers, classes,
directions, and the batch-wide diversity and interpolation.

Each builder's display name comes from its definition (:func:`~.base.builder`); the kinds of
the objective strings register here too (:func:`~.grammar.register`), in the order the grammar
lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import ChannelError, FeatvizError
from ..hooks import OUTPUT
from ..layouts import cls_key
from .base import Acts, Objective, _mean_rest, _num, builder, merge_channels, show_value
from .grammar import CHANNELS, FILE, LAYER, C, X, Y, register


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


def _show_channels(n: Any) -> str:
    """A channel, or a list of them as ``[1, 5, 9]`` (``[0..63]`` past three)."""
    if not isinstance(n, Sequence) or isinstance(n, str):
        return show_value(n)
    chans = [int(c) for c in n]
    return f"[{chans[0]}..{chans[-1]}]" if len(chans) > 3 else f"[{', '.join(map(str, chans))}]"


@register(LAYER, CHANNELS, example="channel:{layer}:12",
          help="mean activation of channel C; C may be a range 0-63 or a list 1,5,9")
@builder(show={"n": _show_channels})
def channel(layer: str, n: int | Sequence[int], batch: int | None = None) -> Objective:
    """Mean activation of channel ``n`` of ``layer`` (lucid's ``channel``).

    Args:
        layer: the layer's name.
        n: the channel, or a list of channels, one per batch element (image ``i`` maximizes
            channel ``n[i]``): the fast way to render many channels of one layer in one batch.
        batch: the one image of the batch it drives (all by default).
    """
    if isinstance(n, Sequence) and not isinstance(n, str):
        if batch is not None:
            raise ValueError("give either a list of channels or batch=, not both")
        return _channel_list(layer, [int(c) for c in n])
    n = int(n)
    return Objective(lambda acts: _mean_rest(_channel_map(layer, acts[layer], n)), [layer],
                     channels={layer: [n]})


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

    return Objective(fn, [layer], "", len(channels),
                     {i: channel.display(layer, c) for i, c in enumerate(channels)},
                     {layer: channels})


def _check_position(layer: str, h: int, w: int, x: int, y: int) -> None:
    if not (0 <= x < w and 0 <= y < h):
        raise ChannelError(f"position x={x}, y={y} is outside layer {layer!r} of size "
                           f"{h}x{w} (valid: x 0-{w - 1}, y 0-{h - 1})")


@register(LAYER, C, X, Y, optional=2, example="neuron:{layer}:12:3:3",
          help="channel C at the centre of the map, or at column X, row Y")
@builder()
def neuron(layer: str, n: int, x: int | None = None, y: int | None = None,
           batch: int | None = None) -> Objective:
    """Activation of channel ``n`` at one position of the layer's map (lucid's ``neuron``).

    Args:
        layer: the layer's name.
        n: the channel.
        x: the column (the token of a token sequence); the centre by default.
        y: the row; the centre by default.
        batch: the one image of the batch it drives (all by default).
    """
    n = int(n)

    def fn(acts: Acts) -> torch.Tensor:
        plane = _channel_map(layer, acts[layer], n)
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
        _check_position(layer, h, w, cx, cy)
        return plane[:, cy, cx]

    return Objective(fn, [layer], channels={layer: [n]})


@register(LAYER, example="layer:{layer}", help="DeepDream: mean squared activation of the layer")
@builder()
def layer(layer: str, batch: int | None = None) -> Objective:
    """DeepDream: the mean squared activation of the whole layer.

    Args:
        layer: the layer's name.
        batch: the one image of the batch it drives (all by default).
    """
    return Objective(lambda acts: _mean_rest(acts[layer].float() ** 2), [layer])


def _check_class(logits: torch.Tensor, n: int) -> None:
    if logits.dim() != 2:
        raise FeatvizError(f"class objectives need [B, classes] model outputs, got "
                           f"{list(logits.shape)}")
    if not 0 <= n < logits.shape[1]:
        raise ChannelError(f"class {n} is out of range for a model with {logits.shape[1]} "
                           f"outputs (valid: 0-{logits.shape[1] - 1})")


def _class_objective(n: int, scores: Callable[[torch.Tensor], torch.Tensor]) -> Objective:
    """Class ``n``'s column of ``scores`` of the model's output, checked as a class index."""

    def fn(acts: Acts) -> torch.Tensor:
        out = acts[OUTPUT]
        _check_class(out, n)
        return scores(out)[:, n]

    return Objective(fn, [OUTPUT])


@register(C, takes="C, a class index", example="logit:207",
          help="pre-softmax output for class C")
@builder()
def logit(n: int, batch: int | None = None) -> Objective:
    """The model's pre-softmax output for class ``n``.

    Args:
        n: the class index.
        batch: the one image of the batch it drives (all by default).
    """
    return _class_objective(int(n), lambda out: out)


@register(C, takes="C, a class index", example="softmax:207",
          help="softmax probability of class C")
@builder()
def softmax(n: int, batch: int | None = None) -> Objective:
    """The softmax probability of class ``n`` (tends to give worse images than :func:`logit`:
    it can rise by pushing other classes down instead of class ``n`` up).

    Args:
        n: the class index.
        batch: the one image of the batch it drives (all by default).
    """
    return _class_objective(int(n), lambda out: torch.softmax(out.float(), dim=1))


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


def _show_vectors(vector: Any) -> str:
    """``512-vector`` or ``3 512-vectors``; a text (``#2``, an image's label) as it is."""
    if isinstance(vector, str):
        return vector
    vecs = _vectors(vector)
    return (f"{vecs.shape[1]}-vector" if vecs.shape[0] == 1
            else f"{vecs.shape[0]} {vecs.shape[1]}-vectors")


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


def _per_image(fn, layer: str, made, vecs: torch.Tensor, batch: int | None) -> Objective:
    """An objective for one vector (``batch=`` as usual) or one vector per image, labelled
    by ``made``'s display name with the image's number for a vector."""
    if vecs.shape[0] == 1:
        return Objective(fn, [layer])
    if batch is not None:
        raise ValueError("give either one direction per image ([N, C]) or batch=, not both")
    return Objective(fn, [layer], "", vecs.shape[0],
                     {i: made.display(layer, f"#{i}") for i in range(vecs.shape[0])})


@register(LAYER, FILE, example="direction:{layer}:vector.pt",
          help="dot product with a vector of one weight per channel: a 1-D tensor\n"
               "saved with torch.save (.pt) or numpy.save (.npy)")
@builder(show={"vector": _show_vectors})
def direction(layer: str, vector: torch.Tensor | Sequence[float],
              batch: int | None = None, cossim_pow: float = 0.0) -> Objective:
    """Dot product of the activations with ``vector``, averaged over positions: a direction in
    activation space instead of a single channel.

    Args:
        layer: the layer's name.
        vector: one weight per channel [C], or one direction per image [N, C] (image ``i``
            maximizes row ``i``: many directions in one batch).
        batch: the one image of the batch it drives (all by default; not with [N, C]).
        cossim_pow: above 0, each position's dot product is multiplied by its cosine with the
            vector (floored at 0.1) to that power, lucid's ``direction(..., cossim_pow=)``,
            which makes images point the vector's way rather than just grow (activation grids
            and atlases use it).
    """
    vecs = _vectors(vector)

    def fn(acts: Acts) -> torch.Tensor:
        return _direction_values(layer, acts[layer], vecs, cossim_pow).mean(dim=1)

    return _per_image(fn, layer, direction, vecs, batch)


@builder(show={"vector": _show_vectors})
def direction_neuron(layer: str, vector: torch.Tensor | Sequence[float],
                     x: int | None = None, y: int | None = None, batch: int | None = None,
                     cossim_pow: float = 0.0) -> Objective:
    """Like :func:`direction` at one position of the layer's map (lucid's ``direction_neuron``).

    Args:
        layer: the layer's name.
        vector: one weight per channel [C], or one direction per image [N, C].
        x: the column (the position of a sequence); the centre by default.
        y: the row; the centre by default.
        batch: the one image of the batch it drives (all by default; not with [N, C]).
        cossim_pow: as in :func:`direction`.
    """
    vecs = _vectors(vector)

    def fn(acts: Acts) -> torch.Tensor:
        act = acts[layer]
        values = _direction_values(layer, act, vecs, cossim_pow)
        if act.dim() != 4:
            return values[:, values.shape[1] // 2 if x is None else x]
        h, w = act.shape[2:]
        cx, cy = (w // 2 if x is None else x), (h // 2 if y is None else y)
        _check_position(layer, h, w, cx, cy)
        return values[:, cy * w + cx]

    return _per_image(fn, layer, direction_neuron, vecs, batch)


@register(LAYER, C, example="class_token:{layer}:12",
          help="channel C of a vision transformer's class token")
@builder()
def class_token(layer: str, n: int, batch: int | None = None) -> Objective:
    """Channel ``n`` of the class token of a vision-transformer ``layer`` (its output's first
    token, which :func:`channel` and :func:`neuron` leave out: they read the patch grid).

    Args:
        layer: the layer's name.
        n: the channel.
        batch: the one image of the batch it drives (all by default).
    """
    n, key = int(n), cls_key(layer)

    def fn(acts: Acts) -> torch.Tensor:
        if key not in acts:
            raise FeatvizError(f"layer {layer!r} has no class token (its output is "
                               f"{list(acts[layer].shape)} after layout); class_token needs a "
                               "token sequence with a class token first (layout tokens+cls)")
        _check_channel(layer, acts[key], n)
        return acts[key][:, n]

    return Objective(fn, [layer])


@builder()
def diversity(layer: str) -> Objective:
    """Distill's diversity term: minus the mean cosine similarity of each image's Gram matrix
    with the others' in the batch. Add it with a positive weight (``+ 100 * diversity(...)``)
    to make the images of a batch differ in style, not just in position.

    Args:
        layer: the layer whose Gram matrices are compared.
    """

    def fn(acts: Acts) -> torch.Tensor:
        act = acts[layer].float()
        size = act.shape[0]
        if size < 2:
            raise FeatvizError("diversity needs a batch of at least 2 images")
        flat = act.reshape(size, act.shape[1], -1)
        grams = F.normalize((flat @ flat.transpose(1, 2)).reshape(size, -1), dim=1)
        sim = grams @ grams.T
        return -(sim.sum(dim=1) - sim.diagonal()) / size

    return Objective(fn, [layer], "", 2)


@builder(show={"n": None})
def interpolate(a: Objective, b: Objective, n: int) -> Objective:
    """A batch of ``n`` images moving from ``a`` to ``b``: image ``i`` maximizes
    ``(1 - t) * a + t * b`` with ``t = i / (n - 1)`` (Distill's interpolation figures; render it
    with ``param.aligned(size, n)`` so the frames line up).

    Args:
        a: the objective of the first image; it must drive the whole batch.
        b: the objective of the last image; it must drive the whole batch.
        n: the number of images, at least 2.
    """
    if n < 2:
        raise ValueError(f"an interpolation needs at least 2 images, got n={n}")
    if a.targets or b.targets:
        raise FeatvizError("interpolate takes objectives that drive the whole batch "
                           f"(got {a.name} and {b.name})")
    steps = [i / (n - 1) for i in range(n)]

    def fn(acts: Acts) -> torch.Tensor:
        va, vb = a(acts), b(acts)
        if va.shape[0] != n:
            raise FeatvizError(f"{interpolate.display(a, b, n)} was built for {n} images, "
                               f"the batch has {va.shape[0]}")
        t = torch.tensor(steps, device=va.device, dtype=va.dtype)
        return (1 - t) * va + t * vb

    targets = {i: f"{_num(round(1 - t, 2))}*{a.name} + {_num(round(t, 2))}*{b.name}"
               for i, t in enumerate(steps)}
    return Objective(fn, a.layers | b.layers, "", n, targets, merge_channels(a, b))
