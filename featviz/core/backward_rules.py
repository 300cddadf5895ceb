"""Modified backward rules for ReLU-like functions, wherever a model calls them.

A model may apply its ReLUs as modules (``nn.ReLU``, ``nn.ReLU6``), as functions inside
``forward`` (``F.relu``, ``torch.relu``, ``x.relu_()``, ``F.hardtanh(x, 0, 6)``), or reuse one
module object several times. Hooking modules misses or double-counts some of those, so the rules
here intercept the function calls themselves with a ``TorchFunctionMode``: every ReLU-like call
made while the mode is active gets the chosen backward rule, and nothing of the model changes.

Rules (``y = clamp(x, 0, hi)``, ``g`` the gradient arriving at ``y``):

- ``"redirect"``: lucid's redirected ReLU gradient. The normal gradient, except for a batch
  element whose normal gradient is zero everywhere (a dead unit): there ``g`` passes where it
  would push a clamped ``x`` back into the active range.
- ``"deconvnet"``: Zeiler & Fergus 2013: ``max(g, 0)``, the forward mask is ignored.
- ``"guided"``: guided backprop (Springenberg et al. 2015): ``max(g, 0)`` times the forward mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

RULES = ("redirect", "deconvnet", "guided")


class _ClampRule(torch.autograd.Function):
    """``clamp(x, 0, hi)`` forward with a rule-specific backward; saves only boolean masks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, hi: float, rule: str) -> torch.Tensor:
        ctx.rule = rule
        below = x <= 0
        # a plain ReLU (no upper bound) saves no second mask: one pass less each way
        ctx.bounded = math.isfinite(hi)
        ctx.save_for_backward(below, x >= hi if ctx.bounded else below)
        return x.clamp(0, hi) if ctx.bounded else x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        below, above = ctx.saved_tensors
        outside = below | above if ctx.bounded else below
        if ctx.rule == "deconvnet":
            return grad.clamp_min(0), None, None
        if ctx.rule == "guided":
            return grad.clamp_min(0).masked_fill(outside, 0), None, None
        normal = grad.masked_fill(outside, 0)
        # Per batch element (first dimension): does any normal gradient get through?
        alive = normal.reshape(grad.shape[0], -1).ne(0).any(dim=1) if grad.dim() else normal.ne(0)
        # on the CPU the answer costs no wait, and where every element is alive (most calls)
        # the redirected gradient is not needed
        if grad.device.type == "cpu" and bool(alive.all()):
            return normal, None, None
        # Loss gradients > 0 push x down; that is no help for a unit already below zero.
        pushing_out = below & (grad > 0)
        if ctx.bounded:
            pushing_out |= above & (grad < 0)
        redirected = grad.masked_fill(pushing_out, 0)
        alive = alive.view(-1, *([1] * (grad.dim() - 1))) if grad.dim() else alive
        return torch.where(alive, normal, redirected), None, None


def _relu_args(args, kwargs):
    inplace = kwargs.get("inplace", args[1] if len(args) > 1 else False)
    return math.inf, bool(inplace)


def _relu_inplace_args(args, kwargs):
    return math.inf, True


def _relu6_args(args, kwargs):
    inplace = kwargs.get("inplace", args[1] if len(args) > 1 else False)
    return 6.0, bool(inplace)


def _hardtanh_args(args, kwargs, inplace_default=False):
    lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
    hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
    inplace = kwargs.get("inplace", args[3] if len(args) > 3 else inplace_default)
    if lo != 0:  # a true hardtanh, not a ReLU6: leave it alone
        return None
    return float(hi), bool(inplace)


#: Every public spelling of a ReLU a model's forward may use, mapped to the parser of its
#: arguments into (hi, inplace) (None for a hardtanh that is no ReLU). The one list of them:
#: :mod:`featviz.receptive_field` linearizes the same calls.
RELU_LIKE = {
    F.relu: _relu_args,
    torch.relu: _relu_args,
    torch.Tensor.relu: _relu_args,
    F.relu_: _relu_inplace_args,
    torch.relu_: _relu_inplace_args,
    torch.Tensor.relu_: _relu_inplace_args,
    F.relu6: _relu6_args,
    F.hardtanh: _hardtanh_args,
    F.hardtanh_: lambda a, k: _hardtanh_args(a, k, inplace_default=True),
}


class ReluBackwardRule(TorchFunctionMode):
    """Give every ReLU-like call made inside this context the backward rule ``rule``.

    Use as ``with ReluBackwardRule("guided"): y = model(x)``; the backward pass may run after
    the block ends (the rule travels with the autograd graph). Nothing is left behind on exit.
    """

    def __init__(self, rule: str):
        if rule not in RULES:
            raise ValueError(f"unknown backward rule {rule!r}; choose one of {', '.join(RULES)}")
        super().__init__()
        self.rule = rule
        self.calls = 0  # how many ReLU-like calls were rewritten, for tests and diagnostics

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        parse = RELU_LIKE.get(func)
        if parse is None or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        parsed = parse(args, kwargs)
        x = args[0]
        if parsed is None or not isinstance(x, torch.Tensor) or not x.requires_grad:
            return func(*args, **kwargs)
        hi, inplace = parsed
        self.calls += 1
        out = _ClampRule.apply(x, hi, self.rule)
        if inplace and not x.is_leaf:
            # Keep in-place semantics for code that reads `x` afterwards; the masks saved by
            # _ClampRule do not depend on x, so overwriting it is safe for autograd.
            x.copy_(out)
            return x
        return out
