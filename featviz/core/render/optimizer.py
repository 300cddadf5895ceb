"""Adam with a floor under its denominator, relative to each image's own gradient scale.

Adam divides each coefficient's step by the root of its squared-gradient average, so a
Fourier coefficient the model barely responds to moves as far per step as one it responds to
strongly: weak but consistent gradients (the stride-2/4/8 grids of strided convolutions, the
highest frequencies) grow into checkerboards and grain as fast as the motif grows. A floor of
``floor`` times the mean root over each image's coefficients damps exactly those: a
coefficient whose gradient is far under its image's typical one steps in proportion to its
gradient (as plain momentum SGD would), the others as in Adam. Because the floor is relative,
multiplying the objective by any constant changes nothing, unlike Adam's fixed ``eps``.

The floor is taken per slice along a parameter's first dimension, which in featviz's
parameterizations is the image (or a unit of one image), so batching never changes an image.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class FlooredAdam(torch.optim.Optimizer):
    """Adam (bias-corrected moments as in Kingma & Ba) whose denominator is at least ``floor``
    times the mean of its root over each slice of a parameter's first dimension (each image):
    coefficients with gradients far below their image's typical one take proportionally smaller
    steps. β2 is 0.99 by default (Adam's is 0.999): a memory of ~100 steps, so the step sizes
    follow the gradients as the picture changes. ``floor=0`` is Adam with ``eps=1e-8``."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 0.05,
                 betas: tuple[float, float] = (0.9, 0.99), floor: float = 2.0):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if floor < 0:
            raise ValueError(f"floor must be >= 0, got {floor}")
        super().__init__(params, dict(lr=lr, betas=betas, floor=floor))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102  (torch's signature)
        loss = None if closure is None else closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group["lr"], b1, b2, group["floor"])
        return loss

    def _update(self, p: torch.Tensor, lr: float, b1: float, b2: float, floor: float) -> None:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["m"] = torch.zeros_like(p)
            state["v"] = torch.zeros_like(p)
        state["step"] += 1
        t, g = state["step"], p.grad
        state["m"].lerp_(g, 1 - b1)
        state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
        root = (state["v"] / (1 - b2 ** t)).sqrt_()
        per_image = root.mean(dim=tuple(range(1, root.dim())) or None, keepdim=True)
        denom = root.maximum(floor * per_image).clamp_min_(1e-8)
        p.addcdiv_(state["m"], denom, value=-lr / (1 - b1 ** t))
