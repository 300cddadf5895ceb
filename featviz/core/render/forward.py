"""How one render step runs the model: through the layer tap (hooks; with lucid's redirected
ReLU gradient for the first steps), or through a compiled copy of the model cut after the
objective's deepest layer; under bf16 autocast when asked."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ...errors import FeatvizError
from .. import truncate as _truncate
from ..backward_rules import ReluBackwardRule
from ..hooks import LayerTap
from ..layouts import normalize


class Forward:
    """Runs the model on a step's transformed images and returns the tapped activations
    (float32). Steps up to ``redirect_steps`` use the redirected ReLU gradient through the
    tap; later steps use ``fast`` (the compiled truncated model) when there is one."""

    def __init__(self, tap: LayerTap, fast: Callable | None, redirect_steps: int, amp: bool,
                 device: torch.device, dtype: torch.dtype = torch.float32):
        self.tap, self.fast = tap, fast
        self.redirect_steps, self.amp, self.device = redirect_steps, amp, device
        self.dtype = dtype  # the model's: a half-precision model gets its input cast to it

    def __call__(self, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        rule = ReluBackwardRule("redirect") if step <= self.redirect_steps else None
        with rule or contextlib.nullcontext(), self._autocast():
            x = x.to(self.dtype)
            if self.fast is not None and rule is None:
                self.tap.remove()  # its hooks would fire inside the compiled graph
                acts = normalize(self.fast(x), self.tap.layouts, tuple(x.shape[-2:]))
            else:
                acts = self.tap(x)
        # objectives are computed in float32, whatever the model ran in
        if self.amp or self.dtype != torch.float32:
            return {k: v.float() if v.is_floating_point() else v for k, v in acts.items()}
        return acts

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def amp_allowed(amp: bool, device: torch.device) -> bool:
    """Whether bf16 autocast runs on ``device`` (CUDA and CPU); a warning where it cannot."""
    if amp and device.type not in ("cuda", "cpu"):
        warnings.warn(f"amp=True needs a CUDA or CPU model, not {device.type}; rendering in "
                      "float32", stacklevel=4)
        return False
    return amp


class _FastForward:
    """The compiled truncated model. If its first call fails to compile (no C++ compiler, an
    op the compiler lacks), a warning, and the same traced graph runs eagerly from then on."""

    def __init__(self, truncated: _truncate.Truncated):
        self.run: Callable[[torch.Tensor], dict[str, torch.Tensor]] = truncated
        self.checked = False

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # each step is a new iteration for CUDA graphs ("reduce-overhead"): the last step's
        # outputs may be overwritten (no-op without CUDA graphs)
        torch.compiler.cudagraph_mark_step_begin()
        if self.checked:
            return self.run(x)
        try:
            acts = self.run(x)
        except (FeatvizError, KeyboardInterrupt):
            raise
        except Exception as err:  # an eager rerun raises again if the model itself is at fault
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); rendering "
                          "without it", stacklevel=3)
            self.run = _truncate.Truncated(self.run.graph_module, self.run.names)
            acts = self.run(x)
        self.checked = True
        return acts


def compile_mode(compile: bool | str | None) -> str | None:
    """The torch.compile mode ``compile`` asks for, or None; an error for an unknown mode."""
    if compile is False or compile is None:
        return None
    mode = "default" if compile is True else compile
    if mode not in _truncate.COMPILE_MODES:
        raise ValueError(f"compile must be True, False or a torch.compile mode "
                         f"({', '.join(_truncate.COMPILE_MODES)}), got {compile!r}")
    return mode


def fast_forward(model: nn.Module, layers: Sequence[str], mode: str | None):
    """What runs the model in the steps without a backward rule: None (the hook-based tap),
    or, with a compile mode, the compiled truncated model."""
    if mode is None:
        return None
    try:
        return _FastForward(_truncate.compiled(model, layers, mode))
    except _truncate.TruncationError as err:
        warnings.warn(f"compile=True needs a model torch.fx can trace; rendering without it "
                      f"({err})", stacklevel=4)
        return None
