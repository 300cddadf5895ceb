"""The images a render returns can come from an average of its last steps: ``render(ema=d)``.

Adam at a fixed rate does not settle: each step follows one random transform, so the
parameters jitter around where the objective is high, and the jitter stays in the image as
fine texture and a slightly lower objective under other transforms. Averaging the iterates
(Polyak & Juditsky, 1992; here an exponential moving average, as in the EMA of weights used to
train image models) keeps the direction the steps agree on and cancels what they do not. The
optimizer still steps the live parameters; only what is shown (snapshots, the held-out checks
of ``stop_at``, the final images) is the average.

The average starts as the plain mean of the iterates so far and becomes exponential once
``1 / (1 - d)`` steps have passed, so early snapshots are not pulled towards the starting noise.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from ...errors import FeatvizError


def check_decay(decay: float) -> float:
    """``decay`` checked: a number in [0, 1) (0: no averaging).

    Args:
        decay: The weight of the average so far, per step; 0 turns averaging off.
    """
    if isinstance(decay, bool) or not isinstance(decay, int | float) \
            or not math.isfinite(decay) or not 0 <= decay < 1:
        raise FeatvizError(f"ema must be a number in [0, 1) (the weight of the average so far; "
                           f"0.9-0.99 is typical, 0 turns it off), got {decay!r}")
    return float(decay)


class ParameterAverage:
    """An exponential moving average of ``param``'s trainable parameters with ``decay``, and
    the images those averaged parameters give (the module's own buffers are used as they are)."""

    def __init__(self, param: nn.Module, decay: float):
        self.param, self.decay = param, check_decay(decay)
        named = [(n, p) for n, p in param.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.live = [p for _, p in named]
        self.mean = [p.detach().clone() for p in self.live]
        self.count = 0

    @torch.no_grad()
    def update(self) -> None:
        """Fold the parameters of the step just taken into the average."""
        self.count += 1
        weight = max(1.0 - self.decay, 1.0 / self.count)
        for mean, live in zip(self.mean, self.live, strict=True):
            mean.lerp_(live.detach(), weight)

    def images(self) -> torch.Tensor:
        """What the parameterization gives with the averaged parameters."""
        return functional_call(self.param, dict(zip(self.names, self.mean, strict=True)), ())
