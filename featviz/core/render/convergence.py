"""When a render may stop before its last step: ``render(stop_at=...)``.

Every :data:`CHECK_EVERY` steps the current images are shown to the model under
:data:`DRAWS` random transforms that are the same at every check (a stream the optimization
never draws from), without gradients. Their mean objective per image is the *held-out*
objective: unlike the training objective it does not jump with each step's random transform,
so two checks compare like with like.

- ``stop_at="converged"``: stop once no image's held-out objective rose by more than
  :data:`TOLERANCE` (relative) over :data:`PATIENCE` checks in a row.
- ``stop_at=<number>``: stop once every image's held-out objective reached it.

A check costs :data:`DRAWS` forward passes without backward, about 4 % of the steps between.
"""

from __future__ import annotations

import math

import torch

from ...errors import FeatvizError
from .. import transforms as _transforms
from ..hooks import INPUT
from ..param import alpha as _alpha
from ..seeds import stream_seeds

CHECK_EVERY = 32
DRAWS = 4
TOLERANCE = 0.01
PATIENCE = 2

StopSpec = str | float | None


def parse(spec: StopSpec) -> str | float | None:
    """``stop_at`` checked: None, ``"converged"`` or a finite number.

    Args:
        spec: The ``stop_at`` option: None (run every step), ``"converged"`` or a number.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec.strip().lower() == "converged":
            return "converged"
        try:
            spec = float(spec)
        except ValueError:
            raise FeatvizError(f"stop_at must be 'converged' or a number (a held-out "
                               f"objective to reach), got {spec!r}") from None
    if isinstance(spec, bool) or not math.isfinite(float(spec)):
        raise FeatvizError(f"stop_at must be 'converged' or a finite number, got {spec!r}")
    return float(spec)


class StopRule:
    """Decides at check steps whether the render has reached what ``stop_at`` asks for, and
    keeps the held-out objective it measured (``steps``, ``values`` [K, B])."""

    def __init__(self, spec: str | float, seeds: list[int], device: torch.device,
                 every: int = CHECK_EVERY):
        self.spec, self.every, self.device = spec, every, device
        self.seeds = stream_seeds(seeds, "held-out")
        self.steps: list[int] = []
        self.values: list[torch.Tensor] = []

    def due(self, step: int) -> bool:
        return step % self.every == 0

    @torch.no_grad()
    def measure(self, plan, forward, step: int) -> torch.Tensor:
        """The held-out objective per image of the current images, on the device."""
        img = plan.images()
        if plan.alpha:  # RGBA: over mid grey, as a viewer sees it on a neutral page
            img = _alpha.blend(img, 0.5)
        streams = _transforms.ImageStreams(self.seeds, self.device)  # the same draws each time
        total = torch.zeros(plan.n_images, device=self.device)
        for _ in range(DRAWS):
            acts = forward(plan.view(img, streams), step)
            acts[INPUT] = img
            total += plan.evaluate(acts).float()
        return total / DRAWS

    def should_stop(self, plan, forward, step: int) -> bool:
        """Measure at a check step and say whether to stop."""
        values = self.measure(plan, forward, step).cpu()
        self.steps.append(step)
        self.values.append(values)
        if isinstance(self.spec, float):
            return bool((values >= self.spec).all())
        if len(self.values) <= PATIENCE:
            return False
        old = self.values[-1 - PATIENCE]
        gain = (self.values[-1] - old) / old.abs().clamp_min(1e-8)
        return bool((gain < TOLERANCE * PATIENCE).all())

    def history(self) -> torch.Tensor:
        """The held-out values measured, [K, B] on the CPU."""
        return torch.stack(self.values) if self.values else torch.empty(0)
