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
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ..model_info import class_names, model_device
from ..objectives import Objective
from ..seeds import Seed
from .convergence import StopSpec
from .interrupt import Interrupt
from .loop import optimize
from .optimizer import FlooredAdam
from .recorder import Recorder
from .result import RenderResult
from .schedule import ScheduleSpec
from .setup import OptimizerFactory, Plan, preferred_transforms, prepare
from .stages import SaliencyMap

__all__ = ["render", "RenderResult", "Plan", "prepare", "preferred_transforms",
           "model_device", "FlooredAdam"]


def render(
    model: nn.Module,
    objective: Objective | str,
    param: nn.Module | None = None,
    *,
    steps: int = 512,
    size: int | tuple[int, int] | None = None,
    batch: int | None = None,
    transforms: str | Sequence | Callable | None = "auto",
    lr: float | None = None,
    optimizer: OptimizerFactory | None = None,
    thresholds: Iterable[int] = (),
    seed: Seed = None,
    progress: bool = True,
    amp: bool = False,
    redirect_relu: int = 16,
    record_every: int = 16,
    stop_early: bool = True,
    memory_format: str = "contiguous",
    saliency: bool | None = None,
    compile: bool | str = False,
    interrupt: str = "auto",
    lr_schedule: ScheduleSpec = None,
    stop_at: StopSpec = None,
    ema: float | None = None,
    adam_floor: float | None = None,
    rail_guard: float | None = None,
    polish: int = 0,
) -> RenderResult:
    """Optimize images so that ``objective`` on ``model``'s activations is as high as possible.

    ``param`` defaults to ``param.image(size, batch, seed=seed, channels=C)`` (Fourier, colour
    decorrelated for RGB) on the model's device; ``size`` to the model's ``input_size`` (else
    224); ``batch`` to what the objective drives. A :class:`~featviz.param.Parameterization`
    declares the defaults render uses (``lr``, ``transforms="auto"``, ``saliency``,
    ``lr_schedule``, ``ema``, ``adam_floor``, ``rail_guard``, its seeds); an argument given
    here wins. ``transforms``: ``"standard"``, ``"distill"``, ``"none"``, a list or a callable.
    ``optimizer`` builds another optimizer than Adam. RGBA images are blended over a new random
    background each step, their objective scaled by (1 - mean alpha). ``seed`` repeats a run
    exactly on the CPU: image ``i`` draws from ``seed + i`` alone (or ``seed[i]``), so batching
    never changes an image. ``thresholds`` keep snapshots; ``amp``: bf16 autocast;
    ``redirect_relu`` steps use lucid's redirected ReLU gradient (dead units get a signal);
    ``memory_format="channels_last"``: NHWC; ``compile`` (True or a ``torch.compile`` mode)
    runs the later steps through a compiled copy of the model cut after the deepest layer
    (pays on GPUs). Gradients are on inside, also under ``torch.no_grad()``. ``interrupt``:
    ``"auto"`` keeps what was made at a Ctrl-C in an interactive session (``interrupted=True``)
    and lets it stop a script; ``"return"`` always keeps it, ``"raise"`` never; a second
    Ctrl-C always interrupts.
    ``lr_schedule``: ``"constant"``, ``"cosine"`` or a function of the fraction done
    (:mod:`.schedule`). ``stop_at``: stop once the held-out objective (transforms the
    optimization never draws) stops rising (``"converged"``) or reaches a number
    (``result.held_out``). ``ema``: the images shown come from a moving average of the
    parameters with this decay (:mod:`.averaging`), cancelling Adam's step-to-step jitter.
    ``adam_floor``: Adam's denominator at least this multiple of its mean over each image
    (:class:`~.optimizer.FlooredAdam`): coefficients the model barely responds to (grid
    frequencies, grain) move in proportion to their gradient. ``rail_guard``: colours within
    0.05 of 0 or 1 pushed back with this multiple of the objective's mean pull on the image
    (:class:`~.stages.RailGuard`). ``polish``: that many last steps see the images untransformed,
    so the image shown is the one optimized last (stronger as shown, slightly less robust to
    transforms); 0: none. For ``ema``, ``adam_floor``,
    ``rail_guard``, 0 is off and None takes the parameterization's.
    """
    with torch.inference_mode(False), torch.enable_grad():
        plan = prepare(model, objective, param, steps=steps, size=size, batch=batch,
                       transforms=transforms, lr=lr, optimizer=optimizer, seed=seed, amp=amp,
                       redirect_relu=redirect_relu, memory_format=memory_format,
                       saliency=saliency, compile=compile, stop_early=stop_early,
                       lr_schedule=lr_schedule, stop_at=stop_at, ema=ema,
                       adam_floor=adam_floor, rail_guard=rail_guard,
                       polish=polish)
        recorder = Recorder(steps, record_every, thresholds, plan.device, plan.objective.name,
                            plan.lr, progress)
        return _run(plan, recorder, Interrupt(interrupt))


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
