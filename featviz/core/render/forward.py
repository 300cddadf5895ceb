"""How one render step runs the model: through the layer tap (hooks; with lucid's redirected
ReLU gradient for the first steps), or through the model traced and cut after the objective's
deepest layer, its branches that feed no channel the objective reads left out, its frozen batch
norms folded into their convolutions when it runs eagerly, compiled when asked; under bf16
autocast when asked."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ...errors import FeatvizError
from .. import fold as _fold
from .. import prune as _prune
from .. import truncate as _truncate
from ..backward_rules import ReluBackwardRule
from ..hooks import LayerTap
from ..layouts import normalize


class Forward:
    """Runs the model on a step's transformed images and returns the tapped activations
    (float32): through ``fast`` (the model traced and cut after the objective's layers, its
    unread branches left out, compiled when asked) once it is built at the first step and
    worth it, else through the tap. A compiled graph skips the steps up to ``redirect_steps``
    (lucid's redirected ReLU gradient, which the tap carries)."""

    def __init__(self, tap: LayerTap, fast: _FastForward | None, redirect_steps: int, amp: bool,
                 device: torch.device, dtype: torch.dtype = torch.float32):
        self.tap, self.fast = tap, fast
        self.redirect_steps, self.amp, self.device = redirect_steps, amp, device
        self.dtype = dtype  # the model's: a half-precision model gets its input cast to it

    def __call__(self, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        rule = ReluBackwardRule("redirect") if step <= self.redirect_steps else None
        x = x.to(self.dtype)
        fast = self._fast(x, rule is not None)
        with rule or contextlib.nullcontext(), self._autocast():
            if fast is not None:
                acts = normalize(fast(x), self.tap.layouts, tuple(x.shape[-2:]))
            else:
                acts = self.tap(x)
        # objectives are computed in float32, whatever the model ran in
        if self.amp or self.dtype != torch.float32:
            return {k: v.float() if v.is_floating_point() else v for k, v in acts.items()}
        return acts

    def _fast(self, x: torch.Tensor, ruled: bool) -> _FastForward | None:
        """The graph for this step, built at the first; None where the tap runs it."""
        if self.fast is not None and self.fast.run is None:
            self.tap.remove()  # tracing must not meet the tap's hooks
            built = self.fast.build(x)
            self.tap.__enter__()
            if not built:
                self.fast = None
        if self.fast is None or (ruled and self.fast.mode is not None):
            return None
        self.tap.remove()  # its hooks would fire inside the graph
        return self.fast

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def amp_allowed(amp: bool, device: torch.device) -> bool:
    """Whether bf16 autocast runs on ``device`` (CUDA and CPU); a warning where it cannot.

    Args:
        amp: Whether the caller asked for bf16 autocast.
        device: The model's device.
    """
    if amp and device.type not in ("cuda", "cpu"):
        warnings.warn(f"amp=True needs a CUDA or CPU model, not {device.type}; rendering in "
                      "float32", stacklevel=4)
        return False
    return amp


class _FastForward:
    """The model traced and cut after the objective's layers (:mod:`featviz.core.truncate`),
    built at the first step's images: its unread branches left out, compiled in ``mode``
    (None: run eagerly, where backward rules apply as in the tap, with batch norms folded and
    stems by phases when ``fold``; a compiler fuses on its own). If the compiled graph's
    first call fails (no C++ compiler, an op the compiler lacks), a warning, and the same
    traced graph runs eagerly from then on."""

    def __init__(self, model: nn.Module, layers: Sequence[str], mode: str | None,
                 channels: Mapping[str, frozenset[int]], fold: bool = True):
        self.model, self.layers, self.mode, self.channels = model, layers, mode, channels
        self.fold = fold and mode is None
        self.run: _truncate.Truncated | None = None
        self.checked = False

    def build(self, x: torch.Tensor) -> bool:
        """Trace at ``x`` (its first image shows the shapes); False where the tap is as good
        (no compile mode, no branch to leave out and nothing folded) or the model cannot be
        traced."""
        probe = x[:1].detach() if self.channels else None
        try:
            made = _truncate.cached(self.model, self.layers, self.mode, self.channels, probe,
                                    self.fold)
        except _truncate.TruncationError as err:
            if self.mode is not None:
                warnings.warn(f"compile=True needs a model torch.fx can trace; rendering "
                              f"without it ({err})", stacklevel=5)
            return False
        if self.mode is None and not made.pruned and not made.folded:
            return False
        self.run = made
        return True

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.mode is None:
            return self.run(x)
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
            self.run = _truncate.Truncated(self.run.graph_module, self.run.names,
                                           self.run.pruned, self.run.folded)
            acts = self.run(x)
        self.checked = True
        return acts


def compile_mode(compile: bool | str | None) -> str | None:
    """The torch.compile mode ``compile`` asks for, or None; an error for an unknown mode.

    Args:
        compile: The ``compile`` option: False/None (no compile), True (``"default"``) or a mode
            name.
    """
    if compile is False or compile is None:
        return None
    mode = "default" if compile is True else compile
    if mode not in _truncate.COMPILE_MODES:
        raise ValueError(f"compile must be True, False or a torch.compile mode "
                         f"({', '.join(_truncate.COMPILE_MODES)}), got {compile!r}")
    return mode


def fast_forward(model: nn.Module, layers: Sequence[str], mode: str | None,
                 channels: Mapping[str, frozenset[int]], fold: bool = True
                 ) -> _FastForward | None:
    """What runs the model instead of the hook-based tap, built at the first step: a traced
    graph with the branches no read channel comes from left out (``channels``, the
    objective's), compiled in ``mode`` or else, with ``fold``, its frozen batch norms folded
    into their convolutions and its stem's input gradient by phases; None (the tap) where
    none of that can apply.

    Args:
        model: The model.
        layers: The layers the objective reads; the graph is cut after the deepest.
        mode: The torch.compile mode (:func:`compile_mode`), or None for no compile.
        channels: The channels the objective reads, by layer name.
        fold: Whether the eager graph may fold (default True; False where someone watches
            the model's modules with hooks).
    """
    if not _prune.might_prune(model, channels):
        channels = {}  # nothing to prune: no probe to run, no shapes to learn
    if mode is None and not channels and not (fold and _fold.might_fold(model)):
        return None
    return _FastForward(model, layers, mode, channels, fold)
