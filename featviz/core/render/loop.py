"""The render loop, step by step as the data flows:

    param() -> stages (alpha, saliency) -> transforms -> model (tap) -> objective
            -> stages (weights) -> loss = -sum -> backward -> optimizer step (its rate on
            the schedule) -> the parameters' average (``ema``) -> recorder -> the stop
            rule, at its check steps (``stop_at``)

Everything stays on the model's device; the recorder reads values back only at recorded
steps."""

from __future__ import annotations

from ..hooks import INPUT
from .forward import Forward
from .interrupt import Interrupt
from .recorder import Recorder
from .setup import Plan


def optimize(plan: Plan, forward: Forward, recorder: Recorder, interrupt: Interrupt) -> None:
    """Run the plan's steps until done or until a Ctrl-C asks to stop (``recorder.done``
    counts the steps finished).

    Args:
        plan: The render's plan: parameterization, optimizer, stages, schedule, stop rule.
        forward: Runs the model on a batch of images, returning activations by layer.
        recorder: Records each step's loss and values, and counts the steps done.
        interrupt: Tells when a Ctrl-C asked the render to stop.
    """
    for step in range(1, plan.steps + 1):
        if interrupt.requested:
            return
        plan.optimizer.zero_grad(set_to_none=True)
        img = plan.param()
        for stage in plan.stages:
            img = stage.images(img)
        acts = forward(plan.view(img, step=step), step)
        acts[INPUT] = img
        values = plan.evaluate(acts)
        for stage in plan.stages:
            values = stage.values(values)
        loss = -values.sum()
        loss.backward()
        for stage in plan.stages:
            stage.after_backward()
        plan.optimizer.step()
        if plan.scheduler is not None:
            plan.scheduler.step()
        if plan.average is not None:
            plan.average.update()
        recorder.step(step, loss, values, plan.images)
        if plan.stop_rule is not None and plan.stop_rule.due(step) \
                and plan.stop_rule.should_stop(plan, forward, step):
            recorder.finish(step, values)
            return
