"""The learning rate over a render's steps.

A schedule is a factor of the base learning rate as a function of the fraction of the steps
done, ``t`` in [0, 1). It runs through :class:`torch.optim.lr_scheduler.LambdaLR`, so any
optimizer a user builds follows it too.

- ``"constant"``: 1 throughout (lucid's and lucent's Adam at a fixed rate).
- ``"cosine"``: from 1 down to :data:`COSINE_FLOOR` along half a cosine (Loshchilov & Hutter,
  "SGDR", 2017). Large early steps find the motif fast; the small late ones stop Adam's
  step-to-step jitter, which otherwise stays in the image as high-frequency texture.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...errors import FeatvizError

ScheduleSpec = str | Callable[[float], float] | None
SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.05  # the last steps still move the image a little


def _constant(t: float) -> float:
    return 1.0


def _cosine(t: float) -> float:
    return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * t))


_NAMED = {"constant": _constant, "cosine": _cosine}


def factor(spec: ScheduleSpec) -> Callable[[float], float]:
    """The factor function ``spec`` names (None: constant); an error naming the choices for
    an unknown name.

    Args:
        spec: A schedule name (:data:`SCHEDULES`), a function of the fraction done, or None
            (constant).
    """
    if spec is None:
        return _constant
    if callable(spec):
        return spec
    key = str(spec).strip().lower()
    if key not in _NAMED:
        raise FeatvizError(f"unknown lr schedule {spec!r}; choose one of "
                           f"{', '.join(SCHEDULES)}, or pass a function of the fraction done")
    return _NAMED[key]


def scheduler(optimizer: torch.optim.Optimizer, spec: ScheduleSpec, steps: int
              ) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A scheduler stepping ``optimizer``'s rate along ``spec`` over ``steps`` steps; None for
    a constant rate (nothing to do each step).

    Args:
        optimizer: The optimizer whose learning rate to scale.
        spec: The schedule, as :func:`factor` takes it.
        steps: The render's number of steps (the fraction done is step / steps).
    """
    f = factor(spec)
    if f is _constant:
        return None
    total = max(int(steps), 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: f(min(step / total, 1.0)))
