"""The machinery of :func:`featviz.methods.attribution.attribute`: a forward hook that reads a
layer's activation and can put another in its place (:class:`Substitution`), and the path of
integrated gradients along which it does (:func:`path_gradient`).

The substituted activation is the layer's own output, in the layer's own layout: an NCHW map
as it is, an NHWC map permuted to NCHW, a transformer's token sequence ``[B, T, C]`` as it is
(class token and patches together, so that both lie on the path and the attributions of the
two add up to the change of the target). :meth:`Substitution.unpack` lays such a tensor out
as the patch grid ``[B, C, h, w]`` and the leading tokens ``[B, K, C]`` apart.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..core import layouts as _layouts
from ..core.hooks import LayerTap, on_output
from ..core.objectives import Objective
from ..errors import FeatvizError, MismatchError

METHODS = ("gradient", "integrated")
# layouts whose [B, C, H, W] / [B, C] form is the output itself or a permutation of it; token
# layouts are taken too (see Substitution.unpack)
_SUPPORTED_LAYOUTS = ("nchw", "vector", "nhwc")


def check_args(method: str, steps: int, batch_size: int,
               baseline: torch.Tensor | float | None) -> tuple[str, int, int]:
    """``method``, ``steps`` and ``batch_size`` of :func:`attribute`, checked.

    Args:
        method: ``"gradient"`` or ``"integrated"``.
        steps: Points on the path, a whole number >= 1.
        batch_size: Model inputs per pass, a whole number >= 1.
        baseline: The baseline given (only ``"integrated"`` takes one).
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of "
                         f"{', '.join(METHODS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1 (points on the path from the "
                         f"baseline), got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if method == "gradient" and baseline is not None:
        raise ValueError("a baseline applies to method='integrated' only; gradient x "
                         "activation has none")
    return method, steps, batch_size


def path_gradient(sub: Substitution, image: torch.Tensor, act: torch.Tensor,
                  base: torch.Tensor, steps: int, batch_size: int) -> torch.Tensor:
    """The gradient averaged over the midpoint-rule points of the path from ``base`` to
    ``act`` (one image), the points fed ``batch_size`` at a time.

    Args:
        sub: The substitution of the layer.
        image: The input image, [C, H, W].
        act: The layer's activation at the image, in the substitution's form.
        base: The baseline, the same shape.
        steps: Points on the path.
        batch_size: Points per pass.
    """
    alphas = (torch.arange(steps, dtype=act.dtype, device=act.device) + 0.5) / steps
    total = torch.zeros_like(act)
    for start in range(0, steps, batch_size):
        alpha = alphas[start:start + batch_size].view(-1, *[1] * act.dim())
        points = base + alpha * (act - base)
        inputs = image[None].repeat(len(points), *[1] * image.dim())
        total += sub.gradient(inputs, points)[1].sum(dim=0)
    return total / steps


class Substitution:
    """Taps the target's layers and, by a forward hook registered before the tap's, can
    replace ``layer``'s output with a given activation (given in the form :meth:`capture`
    returns, put back into the layer's own layout); records the output when replacing
    nothing. Use as a context manager: every hook goes on exit."""

    def __init__(self, model: nn.Module, layer: str, objective: Objective):
        self.model, self.layer, self.objective = model, layer, objective
        self.replace: torch.Tensor | None = None
        self.captured: torch.Tensor | None = None
        self.fired = 0
        self.layout = "nchw"
        self.image: tuple[int, int] = (1, 1)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Substitution:
        with contextlib.ExitStack() as stack:
            stack.enter_context(on_output(self.model, [self.layer], self._hook))
            self.tap = stack.enter_context(LayerTap(self.model, self.objective.layers))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    @property
    def tokens(self) -> bool:
        """Whether the layer gives token sequences (the substituted form is ``[B, T, C]``)."""
        return _layouts.prefix_tokens(self.layout) is not None

    def _hook(self, names: list[str], output: object) -> torch.Tensor | None:
        self.fired += 1
        if not isinstance(output, torch.Tensor):
            raise FeatvizError(f"layer {names[0]!r} returns {type(output).__name__}, not a "
                               "tensor; attribute to a layer whose output is a tensor")
        if self.replace is None:
            self.captured = output.detach().clone()  # a later in-place op must not change it
            return None
        if self.layout == "nhwc":
            return self.replace.permute(0, 2, 3, 1).clone()
        return self.replace.clone()  # a clone: a later in-place op must not touch the leaf

    def capture(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's activations and the target ``[B]`` at ``images`` (no gradients): a map
        as ``[B, C, H, W]``, a vector as ``[B, C]``, tokens as the layer gives them,
        ``[B, T, C]`` (:meth:`unpack` lays them out).

        Args:
            images: The input images, [B, C, H, W].
        """
        self.replace = None
        with torch.no_grad():
            if self.tap.stop_early and self.tap.names:
                self.tap(images[:1])  # the tap's first call learns where to stop: not counted
            self.fired, self.captured = 0, None
            output = self.objective(self.tap(images)).detach()
        if self.fired == 0:
            raise self._no_dependence()
        self.image = tuple(images.shape[-2:])
        self.layout = _layouts.layout_of(self.layer, self.captured, _layouts.declared(self.model),
                                         self.image)
        if self.layout not in _SUPPORTED_LAYOUTS and not self.tokens:
            raise FeatvizError(f"layer {self.layer!r} is laid out as {self.layout}; attribution "
                               f"takes layers laid out as {', '.join(_SUPPORTED_LAYOUTS)} or "
                               "token sequences")
        acts = self.captured.permute(0, 3, 1, 2) if self.layout == "nhwc" else self.captured
        self.captured = None
        return acts.contiguous(), output

    def unpack(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A tensor of the captured form as the patch grid ``[B, C, h, w]`` and the leading
        tokens ``[B, K, C]`` (the class token first; None for a layer that is no token layer
        or has none); any other form comes back as it is, with None.

        Args:
            t: Activations, gradients or attributions in the form :meth:`capture` returns.
        """
        if not self.tokens:
            return t, None
        k = _layouts.prefix_tokens(self.layout) or 0
        grid, _ = _layouts.to_grid(self.layer, t, self.layout, self.image)
        return grid.contiguous(), (t[:, :k].contiguous() if k else None)

    def baseline(self, baseline: torch.Tensor | float | None, acts: torch.Tensor) -> torch.Tensor:
        """The integration start in the captured form: zeros for None, else ``baseline``
        broadcast to the layer's map (``[B, C, H, W]`` / ``[B, C]``, its patch grid for
        tokens, whose leading tokens start from the mean of the patches' baseline).

        Args:
            baseline: None, a number or a tensor that broadcasts to the layer's map.
            acts: The captured activations.
        """
        if baseline is None:
            return torch.zeros_like(acts)
        grid, _ = self.unpack(acts)
        base = torch.as_tensor(baseline, device=acts.device, dtype=acts.dtype)
        try:
            base = torch.broadcast_to(base, grid.shape).clone()
        except RuntimeError:
            raise MismatchError(f"baseline of shape {list(base.shape)} does not broadcast to "
                                f"layer {self.layer!r}'s activation {list(grid.shape)} (give "
                                f"e.g. [{grid.shape[1]}, 1, 1] for one value per channel)"
                                ) from None
        if not self.tokens:
            return base
        k = _layouts.prefix_tokens(self.layout) or 0
        lead = base.mean(dim=(2, 3))[:, None].expand(-1, k, -1)
        return torch.cat([lead, base.flatten(2).transpose(1, 2)], dim=1).contiguous()

    def evaluate(self, inputs: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """The target ``[n]`` for ``inputs`` with the layer's output replaced by ``points``.

        Args:
            inputs: The input images, [n, C, H, W].
            points: The activations put in the layer's place, in the captured form.
        """
        self.replace, self.fired = points, 0
        try:
            values = self.objective(self.tap(inputs))
        finally:
            self.replace = None
        if self.fired != 1:
            raise self._no_dependence() if self.fired == 0 else FeatvizError(
                f"layer {self.layer!r} runs {self.fired} times in one forward pass (its module "
                "object is used more than once); attribute to a layer that runs once")
        return values

    def gradient(self, inputs: torch.Tensor, points: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The target ``[n]`` and its gradient with respect to the substituted ``points``.

        Args:
            inputs: The input images, [n, C, H, W].
            points: The activations put in the layer's place, in the captured form.
        """
        points = points.detach().requires_grad_(True)
        with torch.enable_grad():
            values = self.evaluate(inputs, points)
            if not values.requires_grad:
                raise self._no_dependence()
            (grad,) = torch.autograd.grad(values.sum(), points)
        return values.detach(), grad

    def _no_dependence(self) -> FeatvizError:
        reads = ", ".join(sorted(self.objective.layers)) or "no layer"
        return FeatvizError(
            f"target {self.objective.name} does not depend on layer {self.layer!r}: it reads "
            f"{reads}, which the layer does not feed (an earlier layer, or another branch), "
            "so its gradient there is zero; pick a target at or after the layer")
