"""Expanded weights: the linear map a network computes from one layer's channels to a later
layer's (Olah et al., "Zoom In: An Introduction to Circuits", Distill 2020).

Between two layers the network is read by its linear part (:class:`~featviz.methods._linear.
Linearized`: ReLUs and response normalization become identities, max-pooling becomes average
pooling; convolutions, batch norm in eval mode, average pooling, additions and
concatenations stay as they are). That map is affine in the source layer's activation, so its
gradient at any point is the map itself, exactly: the gradient of one target unit with respect
to the source layer, cut to the window of source positions that unit can reach, is the
``[C_target, C_source, kh, kw]`` tensor of expanded weights. For two adjacent convolutions it
is the second one's weight; through a bottleneck it is the composition of the two; through an
Inception block it is the sum over the branch paths.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ...core import model_info
from ...core.hooks import LayerTap, frozen, on_output, resolve_layer
from ...core.sizes import SizeLike
from ...errors import FeatvizError
from .._linear import Linearized, positive_twin

SIGNS = ("positive", "negative")


class CircuitError(FeatvizError):
    """Two layers between which there are no expanded weights (no linear path, no dependence,
    wrong order, no spatial maps)."""


@dataclass(frozen=True)
class Connection:
    """One source channel's connection to one target channel: ``strength`` is the sum of the
    weights of its sign over the window, ``weights`` the spatial map ``[kh, kw]``."""

    channel: int
    strength: float
    weights: torch.Tensor


@dataclass(repr=False)
class ExpandedWeights:
    """The expanded weights from ``source`` to ``target``: ``weights[t, s, i, j]`` is how much
    a unit of source channel ``s`` at window offset ``(i, j)`` adds to target channel ``t`` at
    ``position`` (a (y, x) of the target's map), the window being ``window`` = (top, left,
    bottom, right) of the source's map. ``clipped``: the window met the border of the largest
    input tried, so weights beyond it are missing."""

    weights: torch.Tensor
    source: str
    target: str
    position: tuple[int, int]
    window: tuple[int, int, int, int]
    clipped: bool = False

    def __repr__(self) -> str:
        t, s, kh, kw = self.weights.shape
        return (f"ExpandedWeights({self.source!r} -> {self.target!r}: {t} x {s} channels, "
                f"{kh}x{kw} offsets{', clipped' if self.clipped else ''})")

    def unit(self, channel: int) -> torch.Tensor:
        """The weights into one target channel, ``[C_source, kh, kw]``.

        Args:
            channel: The target channel.
        """
        return self.weights[_check(channel, self.weights.shape[0], self.target)]

    def strongest(self, channel: int, k: int = 4, sign: str = "positive") -> list[Connection]:
        """The ``k`` source channels that excite (``"positive"``) or inhibit (``"negative"``)
        target ``channel`` most, by the summed weights of that sign over the window.

        Args:
            channel: The target channel.
            k: How many connections.
            sign: ``"positive"`` or ``"negative"``.
        """
        return _ranked(self.unit(channel), k, sign)

    def outgoing(self, channel: int, k: int = 4, sign: str = "positive") -> list[Connection]:
        """The ``k`` target channels that source ``channel`` excites or inhibits most.

        Args:
            channel: The source channel.
            k: How many connections.
            sign: ``"positive"`` or ``"negative"``.
        """
        return _ranked(self.weights[:, _check(channel, self.weights.shape[1], self.source)],
                       k, sign)


def _check(channel: int, n: int, layer: str) -> int:
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < n:
        raise CircuitError(f"channel {channel!r} is not one of layer {layer!r}'s "
                           f"{n} channels (valid: 0-{n - 1})")
    return channel


def _ranked(maps: torch.Tensor, k: int, sign: str) -> list[Connection]:
    if sign not in SIGNS:
        raise CircuitError(f"sign must be one of {', '.join(SIGNS)}, got {sign!r}")
    signed = maps if sign == "positive" else -maps
    strength = signed.clamp(min=0).flatten(1).sum(1)
    order = strength.argsort(descending=True)[:k]
    return [Connection(int(c), float(strength[c]) * (1 if sign == "positive" else -1),
                       maps[c].detach().cpu()) for c in order if strength[c] > 0]


def expanded_weights(model: nn.Module, source: str, target: str, *,
                     size: SizeLike | None = None, position: tuple[int, int] | None = None,
                     chunk: int = 64, max_size: int = 1024) -> ExpandedWeights:
    """The expanded weights from layer ``source`` to layer ``target`` (see the module).

    Args:
        model: Any convolutional network (NCHW maps); it comes back exactly as it was.
        source: The earlier layer (a module path or alias).
        target: The later layer.
        size: The input side or (height, width) to start from; default: the model's. The
            input doubles (up to ``max_size``) while the window meets the map's border.
        position: The target unit (y, x); default: the centre of the target's map.
        chunk: Target channels whose gradients are taken together.
        max_size: The largest input side tried.
    """
    resolve_layer(model, source)
    resolve_layer(model, target)
    if source == target:
        raise CircuitError(f"source and target are both {source!r}; expanded weights join two "
                           "layers, the source before the target")
    hw = model_info.input_hw(model, size)
    with frozen(model):
        # linear first: a non-linear path (attention) may reach every position, and growing
        # the input for it would only cost memory
        _check_linear(model, source, target, hw, _shapes(model, source, target, hw)[0])
        while True:
            shapes = _shapes(model, source, target, hw)
            y, x = _position(position, shapes[1], target)
            window, touches = _window(model, source, target, hw, shapes[0], (y, x))
            bigger = (hw[0] * 2, hw[1] * 2)
            if not touches or max(bigger) > max_size or model_info.fixed_input_size(model):
                break
            hw = bigger
        grads = _gradients(model, source, target, hw, shapes[0], (y, x), chunk)
    top, left, bottom, right = window
    return ExpandedWeights(grads[:, :, top:bottom, left:right].contiguous(), source, target,
                           (y, x), window, clipped=touches)


class _Stop(Exception):
    """Raised by a hook to end a probing forward pass at the target."""


def _shapes(model: nn.Module, source: str, target: str, hw: tuple[int, int]
            ) -> tuple[torch.Size, torch.Size]:
    """The outputs' shapes of ``source`` and ``target`` for one image, checking that the
    source runs once, before the target, and that both give NCHW maps."""
    seen: dict[str, torch.Size] = {}
    fired = {source: 0}

    def record(names: list[str], output: object) -> None:
        if source in names:
            fired[source] += 1
            seen.setdefault(source, _spatial(source, output))
        if target in names:
            seen[target] = _spatial(target, output) if source in seen else None
            raise _Stop

    image = _image(model, hw, 1)
    with (on_output(model, [source, target], record), torch.no_grad(), Linearized(),
          contextlib.suppress(_Stop)):
        model(image)
    if target not in seen:
        raise CircuitError(f"layer {target!r} did not run in the forward pass; give a layer "
                           "the model computes")
    if seen[target] is None:
        raise CircuitError(f"source {source!r} runs after target {target!r} (or not at all "
                           "before it); the source must come first")
    if fired[source] > 1:
        raise CircuitError(f"layer {source!r} runs {fired[source]} times before {target!r}; "
                           "expanded weights need a source module that runs once")
    return seen[source], seen[target]


def _spatial(name: str, output: object) -> torch.Size:
    if not isinstance(output, torch.Tensor):
        raise CircuitError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
    if output.dim() != 4:
        raise CircuitError(f"layer {name!r} gives {list(output.shape)}, not [B, C, H, W] maps; "
                           "expanded weights join two convolutional layers (a transformer's "
                           "tokens pass through attention, which is not linear)")
    return output.shape


def _image(model: nn.Module, hw: tuple[int, int], batch: int,
           dtype: torch.dtype | None = None) -> torch.Tensor:
    p = next(model.parameters(), None)
    return torch.zeros(batch, model_info.image_channels(model), *hw,
                       dtype=dtype or (p.dtype if p is not None else torch.float32),
                       device=model_info.model_device(model))


def _position(position: tuple[int, int] | None, shape: torch.Size, target: str
              ) -> tuple[int, int]:
    h, w = shape[2], shape[3]
    if position is None:
        return h // 2, w // 2
    y, x = position
    if not (0 <= y < h and 0 <= x < w):
        raise CircuitError(f"position {position!r} is outside layer {target!r}'s {h}x{w} map "
                           f"(valid: y 0-{h - 1}, x 0-{w - 1})")
    return int(y), int(x)


def _forward(model: nn.Module, source: str, target: str, image: torch.Tensor,
             replace: torch.Tensor, mode: Linearized) -> torch.Tensor:
    """``target``'s output with ``source``'s output replaced by ``replace``."""
    def swap(names: list[str], output: object) -> torch.Tensor:
        return replace.clone()  # a clone: an in-place op after the layer must not touch it

    with on_output(model, [source], swap), LayerTap(model, [target]) as tap, mode:
        return tap(image)[target]


def _window(model: nn.Module, source: str, target: str, hw: tuple[int, int],
            src: torch.Size, position: tuple[int, int]) -> tuple[tuple[int, int, int, int], bool]:
    """The source positions the target unit depends on, (top, left, bottom, right), from the
    gradient support in a positive twin (where nothing cancels), and whether it meets the
    border of the source's map."""
    twin = positive_twin(model)
    x = torch.ones(1, *src[1:], dtype=torch.float64, device=model_info.model_device(model),
                   requires_grad=True)
    out = _forward(twin, source, target, _image(twin, hw, 1, torch.float64), x, Linearized())
    unit = out[0, :, position[0], position[1]].sum()
    grad = (torch.autograd.grad(unit, x, allow_unused=True)[0] if unit.requires_grad
            else None)  # no graph back to the source at all: another branch
    mask = grad[0].abs().sum(0) > 0 if grad is not None else torch.zeros(1, 1, dtype=torch.bool)
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    if not len(rows):
        raise CircuitError(f"target {target!r} does not depend on source {source!r} (they "
                           "are on different branches); give a source on the target's path")
    box = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
    touches = box[0] == 0 or box[1] == 0 or box[2] == src[2] or box[3] == src[3]
    return box, touches


def _check_linear(model: nn.Module, source: str, target: str, hw: tuple[int, int],
                  src: torch.Size) -> None:
    """Raise unless the linearized map from source to target is affine: f(a) + f(b) equals
    f(a + b) + f(0) for random a, b."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(*src[1:], generator=gen) for _ in range(2))
    points = torch.stack([a, b, a + b, torch.zeros_like(a)])
    image = _image(model, hw, 4)
    mode = Linearized()
    with torch.no_grad():
        out = _forward(model, source, target, image, points.to(image), mode).double()
    gap = (out[0] + out[1] - out[2] - out[3]).abs().max()
    scale = out[:3].abs().max().clamp(min=1e-12)
    if gap > 1e-3 * scale:
        found = ", ".join(sorted(mode.seen)) or "an operation that is not linear"
        raise CircuitError(
            f"there is no linear path from {source!r} to {target!r}: between them the network "
            f"computes {found}, which stays non-linear with the ReLUs dropped; expanded weights "
            "pass convolutions, linear layers, batch norm, pooling, additions and "
            "concatenations (attention, layer norms and gates are not linear)")


def _gradients(model: nn.Module, source: str, target: str, hw: tuple[int, int],
               src: torch.Size, position: tuple[int, int], chunk: int) -> torch.Tensor:
    """d target[:, y, x] / d source, ``[C_target, C_source, H, W]``, by a backward pass per
    chunk of target channels (vectorized where torch can)."""
    image = _image(model, hw, 1)
    x = torch.zeros(1, *src[1:], dtype=image.dtype, device=image.device, requires_grad=True)
    out = _forward(model, source, target, image, x, Linearized())[0, :, position[0], position[1]]
    rows = []
    for start in range(0, out.shape[0], max(1, chunk)):
        eye = torch.eye(out.shape[0], dtype=out.dtype, device=out.device)[start:start + chunk]
        try:
            (g,) = torch.autograd.grad(out, x, eye, retain_graph=True, is_grads_batched=True)
            rows.append(g[:, 0])
        except RuntimeError:  # an op without a batching rule: one channel at a time
            rows.extend(torch.autograd.grad(out, x, e, retain_graph=True)[0]
                        for e in eye)
    return torch.cat(rows).detach()
