"""The optimization loop: make images that maximize an objective of a model's activations.

:func:`render` decides everything up front (:mod:`.setup`: a :class:`~.setup.Plan`), then runs
the loop (:mod:`.loop`), whose steps read like the data flow: ``param() -> stages ->
transforms -> model (stopped after the deepest needed layer) -> objective -> -sum().backward()
-> optimizer.step()``. Alpha blending and the saliency map are pluggable stages
(:mod:`.stages`); history, snapshots and progress live in :mod:`.recorder`; the learning rate's
course in :mod:`.schedule`, the optional average of the parameters in :mod:`.averaging` and the
optional early stop in :mod:`.convergence`.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..model_info import class_names, model_device
from ..objectives import Objective
from ..seeds import Seed
from . import options as _options
from .interrupt import Interrupt
from .loop import optimize
from .optimizer import FlooredAdam
from .recorder import Recorder
from .result import RenderResult
from .setup import Plan, preferred_transforms, prepare
from .stages import SaliencyMap

__all__ = ["render", "RenderResult", "Plan", "prepare", "preferred_transforms",
           "model_device", "FlooredAdam"]


def render(
    model: nn.Module,
    objective: Objective | str,
    param: nn.Module | str | None = None,
    *,
    steps: int = 512,
    size: int | tuple[int, int] | None = None,
    batch: int | None = None,
    seed: Seed = None,
    lr: float | None = None,
    course: Mapping[str, Any] | None = None,
    robustness: Mapping[str, Any] | None = None,
    speed: Mapping[str, Any] | None = None,
    output: Mapping[str, Any] | None = None,
    **options: Any,
) -> RenderResult:
    """Optimize images so that ``objective`` on ``model``'s activations is as high as possible.

    Args:
        model: any ``nn.Module`` that takes images (``featviz.models.load`` adds the
            preprocessing its weights expect).
        objective: an :class:`~featviz.objectives.Objective`, or a string such as
            ``"mixed4a:476"`` (short for ``"channel:mixed4a:476"``) or
            ``"channel:mixed4a:97 - 0.5*neuron:mixed4a:3"``.
        param: the images' parameterization: a module (``featviz.param.image(...)``), a kind
            name (``"fourier"``, ``"pixel"``, ``"maco"``, ``"laplacian"``, ``"cppn"``), or None
            for lucid's Fourier image with decorrelated colour. A
            :class:`~featviz.param.Parameterization` declares the defaults of ``lr``,
            ``transforms``, ``lr_schedule``, ``ema``, ``adam_floor``, ``rail_guard`` and
            ``saliency``; a value given here wins.
        steps: optimization steps.
        size: image side in pixels, or ``(height, width)``; default: the model's input size.
        batch: images optimized together; default: what the objective drives.
        seed: image ``i`` draws from ``seed + i`` alone (or ``seed[i]``), so batching never
            changes an image; None: a fresh draw.
        lr: Adam's learning rate; default: the parameterization's.
        course: options of the optimizer's course, e.g. ``{"ema": 0.95, "adam_floor": 1}``.
        robustness: options of what the images must survive, e.g. ``{"polish": 32}``.
        speed: options of how the model runs, e.g. ``{"memory_format": "channels_last"}``.
        output: options of what is reported and kept, e.g. ``{"progress": False}``.
        **options: any option by its name (``ema=0.95``), as in the groups.

    Every option is declared once in :mod:`featviz.core.render.options`; the list below is
    made from those declarations.
    """
    chosen = _options.gather(
        {"steps": steps, "size": size, "batch": batch, "seed": seed, "lr": lr, **options},
        {"course": course, "robustness": robustness, "speed": speed, "output": output})
    with torch.inference_mode(False), torch.enable_grad():
        plan = prepare(model, objective, param, chosen)
        s = plan.settings
        recorder = Recorder(plan.steps, s.record_every, s.thresholds, plan.device,
                            plan.objective.name, plan.lr, s.progress)
        return _run(plan, recorder, Interrupt(s.interrupt))


render.__doc__ += "\n" + "\n".join("    " + line for line in
                                    _options.help_text().splitlines()) + "\n"


def _run(plan: Plan, recorder: Recorder, stop: Interrupt) -> RenderResult:
    """The loop inside the model's session, then its result; a Ctrl-C the policy keeps ends
    the loop with what was made."""
    try:
        with stop, plan.session() as forward:
            optimize(plan, forward, recorder, stop)
    except KeyboardInterrupt:
        if not stop.keep or stop.requested:  # a second Ctrl-C interrupts for real
            raise
        stop.requested = True
    finally:
        recorder.close()
    return _result(plan, recorder, stop.requested)


def _result(plan: Plan, recorder: Recorder, interrupted: bool) -> RenderResult:
    """What the loop made, gathered on the CPU (the device synchronized first)."""
    if plan.device.type == "cuda":
        torch.cuda.synchronize(plan.device)
    seconds = time.perf_counter() - recorder.start
    with torch.no_grad():
        final = plan.images().detach().float().cpu()
    saliency = next((s.result() for s in plan.stages if isinstance(s, SaliencyMap)), None)
    history = recorder.history_tensor(plan.n_images)
    _warn_if_flat(history, plan)
    return RenderResult(
        images=final, snapshots=recorder.snapshots,
        history=history, history_steps=recorder.steps_recorded,
        labels=[_with_class_name(plan.objective.label(i), class_names(plan.model))
                for i in range(plan.n_images)], seconds=seconds,
        seeds=plan.seeds, steps_done=recorder.done, interrupted=interrupted,
        history_times=recorder.times, saliency=saliency, alpha=plan.alpha,
        display=getattr(plan.param, "display", None),
        held_out=None if plan.stop_rule is None else plan.stop_rule.history(),
        held_out_steps=[] if plan.stop_rule is None else plan.stop_rule.steps)


def _with_class_name(label: str, names: list[str] | None) -> str:
    """``logit(934)`` as ``logit(934) hotdog`` when the model names its classes."""
    match = re.fullmatch(r"(?:logit|softmax)\((\d+)\)", label)
    if names is None or match is None or int(match.group(1)) >= len(names):
        return label
    return f"{label} {names[int(match.group(1))]}"


# an objective whose magnitude never passed this did not respond to the image at all
FLAT = 1e-4


def _warn_if_flat(history: torch.Tensor, plan: Plan) -> None:
    """Warn when an image's objective stayed at about zero for the whole render: a unit dead
    for every image tried (random weights, or a unit that never fires)."""
    if len(history) < 2:
        return
    peak = history.abs().amax(dim=0)
    flat = [i for i in range(plan.n_images) if float(peak[i]) < FLAT]
    if flat:
        names = ", ".join(plan.objective.label(i) for i in flat[:4])
        warnings.warn(
            f"the objective stayed at about zero (|value| < {FLAT:g}) for {names}: the unit "
            f"does not respond to these images. Try more redirect_relu steps (now "
            f"{plan.redirect_steps}), another seed or a higher lr, or check that the model "
            "has trained weights", stacklevel=5)  # the caller of render
