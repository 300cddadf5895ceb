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
) -> RenderResult:
    """Optimize images so that ``objective`` on ``model``'s activations is as high as possible.

    ``param`` defaults to ``param.image(size, batch, seed=seed, channels=C)`` (Fourier, C the
    channels the model takes, colour decorrelated when they are RGB) on the model's device;
    ``size`` defaults to the model's ``input_size`` (else 224) and ``batch`` to what the
    objective drives. A :class:`~featviz.param.Parameterization` declares the defaults render
    uses: its learning rate (``lr``), its transforms (``transforms="auto"``:
    ``"standard"``, or ``"none"`` for a CPPN; also ``"distill"``, ``"none"``, a list or a
    callable), whether it wants the ``saliency`` map (|dL/dx| accumulated into
    ``result.saliency``; MACO does), and its seeds. ``optimizer`` builds another optimizer than
    Adam from the parameters. RGBA images are blended over a new random smooth background each
    step and their objective scaled by (1 - mean alpha). ``seed`` repeats a run exactly on the
    CPU: image ``i`` draws its start and its transforms from seed ``seed + i`` alone (or
    ``seed[i]`` given a list), so batching never changes an image; give it here or to the
    parameterization, once. ``thresholds`` keep snapshots; ``amp`` runs the model under bf16
    autocast (CUDA, or CPUs); ``redirect_relu`` steps use lucid's redirected ReLU gradient so
    dead units still get a signal; ``memory_format="channels_last"`` runs the model in NHWC
    order (its own tensors are put back afterwards); ``compile`` (True, or a ``torch.compile``
    mode such as ``"reduce-overhead"``) runs the steps after the redirected ones through a
    compiled copy of the model cut after the objective's deepest layer, compiled once per
    model, layers and mode in a process (pays on GPUs over many steps, costs on most CPUs).
    Gradients are on inside, also when called under ``torch.no_grad()`` or
    ``torch.inference_mode()``. ``interrupt``: ``"auto"`` returns what was made so far at the
    first Ctrl-C (``interrupted=True``) in an interactive session and lets Ctrl-C stop a script
    or a test run; ``"return"`` always keeps it, ``"raise"`` never; a second Ctrl-C always
    interrupts. ``lr_schedule``: the rate over the steps, ``"constant"`` or ``"cosine"`` (see
    :mod:`featviz.core.render.schedule`) or a function of the fraction done; None takes the
    parameterization's. ``stop_at``: end before ``steps`` once the held-out objective (fixed
    transforms the optimization never draws) has stopped rising (``"converged"``) or reached a
    number for every image; ``result.held_out`` keeps what those checks measured. ``ema``: the
    images shown (snapshots, held-out checks, the result) come from an exponential moving
    average of the parameters with this decay, which cancels Adam's step-to-step jitter (see
    :mod:`featviz.core.render.averaging`); 0 shows the last step's, None takes the
    parameterization's. ``adam_floor``: Adam's denominator is at least this multiple of its
    mean over each image's coefficients (:class:`~featviz.core.render.optimizer.FlooredAdam`),
    so coefficients the model barely responds to (grid frequencies, grain) move in proportion
    to their gradient instead of as far as the motif's; 0: plain Adam; None takes the
    parameterization's (``p.adam_floor``: 0 for all of featviz's). ``rail_guard``: colours
    within 0.05 of 0 or 1 pushed back with this multiple of the objective's mean pull on the
    image (:class:`~featviz.core.render.stages.RailGuard`): no flat black, white or pure-colour
    areas at any objective scale; 0: none; None: the parameterization's (0 for featviz's).
    """
    with torch.inference_mode(False), torch.enable_grad():
        plan = prepare(model, objective, param, steps=steps, size=size, batch=batch,
                       transforms=transforms, lr=lr, optimizer=optimizer, seed=seed, amp=amp,
                       redirect_relu=redirect_relu, memory_format=memory_format,
                       saliency=saliency, compile=compile, stop_early=stop_early,
                       lr_schedule=lr_schedule, stop_at=stop_at, ema=ema,
                       adam_floor=adam_floor, rail_guard=rail_guard)
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
