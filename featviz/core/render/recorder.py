"""What the render loop keeps along the way: the objective every few steps, snapshots at
thresholds, the progress bar, and the check that the loss stayed finite.

Each step's loss goes into a small device buffer; it is read back only at recorded steps, so
the loop never waits on the GPU in between. Nothing here grows with the number of steps
asked for: the buffer holds one recording interval, the records only what was recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch

from ...errors import NonFiniteLossError


class Recorder:
    """Keeps the history, snapshots and progress of one render of ``steps`` steps."""

    def __init__(self, steps: int, record_every: int, thresholds: Iterable[int],
                 device: torch.device, name: str, lr: float, progress: bool):
        if record_every < 1:
            raise ValueError(f"record_every must be at least 1, got {record_every}")
        self.steps, self.every, self.name, self.lr = steps, record_every, name, lr
        self.thresholds = sorted({int(t) for t in thresholds if 0 < int(t) <= steps})
        # records come at least every `record_every` steps and at the last: a window that long
        # holds every loss not yet checked
        self.losses = torch.zeros(max(1, min(record_every, steps)), device=device)
        self.checked = 0  # the last step whose loss was checked
        self.history: list[torch.Tensor] = []
        self.steps_recorded: list[int] = []
        self.times: list[float] = []
        self.snapshots: dict[int, torch.Tensor] = {}
        self.done = 0  # steps finished
        self.bar = _progress(steps, progress, name)
        self.start = time.perf_counter()

    def step(self, step: int, loss: torch.Tensor, values: torch.Tensor,
             images: Callable[[], torch.Tensor]) -> None:
        """After step ``step``: keep its loss, a snapshot (``images()``) at a threshold, and
        the values per image at a recorded step."""
        self.losses[step - self.checked - 1] = loss.detach()
        if step in self.thresholds:
            with torch.no_grad():
                self.snapshots[step] = images().detach().cpu()
        if step % self.every == 0 or step == self.steps or step in self.thresholds:
            self._record(step, values)
        self.done = step

    def finish(self, step: int, values: torch.Tensor) -> None:
        """The render stops after ``step`` (a stop rule was met): record it if it was not."""
        if not self.steps_recorded or self.steps_recorded[-1] != step:
            self._record(step, values)

    def _record(self, step: int, values: torch.Tensor) -> None:
        self.history.append(values.detach().float())
        self.steps_recorded.append(step)
        self._check_finite(step)  # reads the device: in sync from here
        self.times.append(time.perf_counter() - self.start)
        if self.bar is not None:
            # postfix first and without its own refresh: update() redraws at most every
            # `mininterval`, where a refreshing set_postfix would draw on every record
            self.bar.set_postfix(objective=f"{float(values.detach().mean()):.4g}",
                                 refresh=False)
            self.bar.update(step - self.bar.n)

    def _check_finite(self, upto: int) -> None:
        window = self.losses[:upto - self.checked]
        bad = (~torch.isfinite(window)).nonzero()
        if len(bad):
            at = self.checked + int(bad[0]) + 1
            raise NonFiniteLossError(
                f"the loss became {float(window[at - self.checked - 1])} at step {at} of "
                f"{self.name}; lower the learning rate (lr={self.lr}) or check the objective "
                "and the model")
        self.checked = upto

    def close(self) -> None:
        """Close the progress bar."""
        if self.bar is not None:
            self.bar.close()

    def history_tensor(self, n_images: int) -> torch.Tensor:
        """The recorded values, [T, B] on the CPU."""
        return torch.stack(self.history).cpu() if self.history else torch.empty(0, n_images)


#: seconds between two redraws of the progress bar: in a notebook each redraw is a message to
#: the browser (and, without widgets, a line of the cell's saved output)
BAR_INTERVAL = 0.5


def _progress(steps: int, enabled: bool, name: str):
    """The render's progress bar, or None: tqdm.auto's, a widget in a notebook (text where
    ipywidgets is missing) and text in a terminal; ``leave=False`` removes it when the
    render ends, so a cell of many renders (sweeps, inversions of many layers) keeps no bars."""
    if not enabled or steps == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=name[:40], unit="step", leave=False, mininterval=BAR_INTERVAL)
