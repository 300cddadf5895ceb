"""The optimization loop: make images that maximize an objective of a model's activations.

:func:`render` decides everything up front (:mod:`.setup`: a :class:`~.setup.Plan`), then runs
the loop (:mod:`.loop`), whose steps read like the data flow: ``param() -> stages ->
transforms -> model (stopped after the deepest needed layer) -> objective -> -sum().backward()
-> optimizer.step()``. Alpha blending and the saliency map are pluggable stages
(:mod:`.stages`); history, snapshots and progress live in :mod:`.recorder`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ..model_info import model_device
from ..objectives import Objective
from ..seeds import Seed
from .loop import optimize
from .recorder import Recorder
from .result import RenderResult
from .setup import OptimizerFactory, Plan, preferred_transforms, prepare
from .stages import SaliencyMap

__all__ = ["render", "RenderResult", "Plan", "prepare", "preferred_transforms",
           "model_device"]


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
) -> RenderResult:
    """Optimize images so that ``objective`` on ``model``'s activations is as high as possible.

    ``param`` defaults to ``param.image(size, batch, seed=seed)`` (Fourier, decorrelated colour)
    on the model's device; ``size`` defaults to the model's ``input_size`` (else 224) and
    ``batch`` to what the objective drives. A :class:`~featviz.param.Parameterization` declares
    the defaults render uses: its learning rate (``lr``), its transforms (``transforms="auto"``:
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
    Ctrl-C returns what was made so far, with ``interrupted=True``.
    """
    plan = prepare(model, objective, param, steps=steps, size=size, batch=batch,
                   transforms=transforms, lr=lr, optimizer=optimizer, seed=seed, amp=amp,
                   redirect_relu=redirect_relu, memory_format=memory_format,
                   saliency=saliency, compile=compile, stop_early=stop_early)
    recorder = Recorder(steps, record_every, thresholds, plan.device, plan.objective.name,
                        plan.lr, progress)
    interrupted = False
    try:
        with plan.session() as forward:
            optimize(plan, forward, recorder)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        recorder.close()
    return _result(plan, recorder, interrupted)


def _result(plan: Plan, recorder: Recorder, interrupted: bool) -> RenderResult:
    """What the loop made, gathered on the CPU (the device synchronized first)."""
    if plan.device.type == "cuda":
        torch.cuda.synchronize(plan.device)
    seconds = time.perf_counter() - recorder.start
    with torch.no_grad():
        final = plan.param().detach().float().cpu()
    saliency = next((s.result() for s in plan.stages if isinstance(s, SaliencyMap)), None)
    return RenderResult(
        images=final, snapshots=recorder.snapshots,
        history=recorder.history_tensor(plan.n_images), history_steps=recorder.steps_recorded,
        labels=[plan.objective.label(i) for i in range(plan.n_images)], seconds=seconds,
        seeds=plan.seeds, steps_done=recorder.done, interrupted=interrupted,
        history_times=recorder.times, saliency=saliency)
