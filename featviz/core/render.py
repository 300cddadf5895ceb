"""The optimization loop: make images that maximize an objective of a model's activations.

One step: ``param() -> transforms -> model (stopped after the deepest needed layer) ->
objective -> -sum().backward() -> optimizer.step()``. Everything stays on the model's device;
the loss of every step is written into a device buffer and read back only every
``record_every`` steps (for history, the progress bar and the NaN check), so the loop never
waits on the GPU in between.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import FeatvizError, NonFiniteLossError
from . import images as _images
from . import param as _param
from . import transforms as _transforms
from . import truncate as _truncate
from .backward_rules import ReluBackwardRule
from .hooks import INPUT, LayerTap, channels_last, frozen
from .objectives import Objective
from .param import alpha as _alpha


@dataclass
class RenderResult:
    """What a render made.

    ``images``: the final batch [B,3,H,W] in [0, 1] on the CPU ([B,4,H,W] RGBA for a
    parameterization with alpha); ``snapshots``: step -> images
    at each threshold; ``history``: objective per image [T,B] at ``history_steps``;
    ``seconds``: wall time of the loop; ``seeds``: one per image, repeats the run;
    ``interrupted``: True when Ctrl-C stopped it early (``steps_done`` tells how far it got);
    ``history_times``: seconds since the start at each recorded step (the device is in sync
    there), for step timings; ``transparency``: for parameterizations that ask for it (MACO),
    the accumulated |dL/dx| over the optimization per pixel [B,1,H,W], scaled to [0, 1] per
    image: where the image mattered to the objective.
    """

    images: torch.Tensor
    snapshots: dict[int, torch.Tensor]
    history: torch.Tensor
    history_steps: list[int]
    labels: list[str]
    seconds: float
    seeds: list[int]
    steps_done: int
    interrupted: bool = False
    history_times: list[float] = field(default_factory=list)
    transparency: torch.Tensor | None = None

    def ms_per_step(self, after: int = 0) -> float:
        """Mean milliseconds per step between the first recorded step past ``after`` and the
        last one (skip warm-up steps with ``after``); NaN when too few steps were recorded."""
        marks = [(s, t) for s, t in zip(self.history_steps, self.history_times, strict=True)
                 if s > after]
        if len(marks) < 2:
            return float("nan")
        (s0, t0), (s1, t1) = marks[0], marks[-1]
        return 1000 * (t1 - t0) / (s1 - s0)

    @property
    def seed(self) -> int:
        """The first image's seed (image ``i`` used ``seed + i`` when one number was given)."""
        return self.seeds[0]

    @property
    def values(self) -> torch.Tensor:
        """The objective per image at the last recorded step, shape [B]."""
        return self.history[-1] if len(self.history) else torch.empty(0)

    def save(self, path: str | os.PathLike, labels: bool = False,
             ncol: int | None = None) -> Path:
        """Write the final image, or a grid of the batch, to ``path`` (PNG by its suffix)."""
        return _images.save(self.images, path, self.labels if labels else None, ncol)

    def save_each(self, folder: str | os.PathLike,
                  names: Sequence[str] | None = None) -> list[Path]:
        """Write one PNG per image of the batch into ``folder`` (named ``names[i]`` or by
        index) and return the paths."""
        folder = Path(folder)
        names = names or [f"{i:03d}" for i in range(len(self.images))]
        pairs = zip(self.images, names, strict=True)
        return [_images.save(img, folder / f"{name}.png") for img, name in pairs]

    def with_transparency(self) -> torch.Tensor:
        """The images with :attr:`transparency` as their alpha channel, [B,4,H,W] (the MACO
        paper's way of showing them); save with :func:`featviz.images.save` as RGBA PNG."""
        if self.transparency is None:
            raise FeatvizError("this render kept no transparency map; use param.maco(...) or "
                               "render(..., transparency=True)")
        return torch.cat([self.images[:, :3], self.transparency], dim=1)

    def save_gif(self, path: str | os.PathLike, seconds_per_frame: float = 0.2) -> Path:
        """Write the snapshots and the final images as an animated GIF."""
        frames = [self.snapshots[s] for s in sorted(self.snapshots)]
        if not frames or not torch.equal(frames[-1], self.images):
            frames.append(self.images)
        return _images.save_gif(frames, path, seconds_per_frame)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _new_seed() -> int:
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


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
    optimizer: Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer] | None = None,
    thresholds: Iterable[int] = (),
    seed: int | Sequence[int] | None = None,
    progress: bool = True,
    amp: bool = False,
    redirect_relu: int = 16,
    record_every: int = 16,
    stop_early: bool = True,
    memory_format: str = "contiguous",
    transparency: bool | None = None,
    compile: bool | str = False,
) -> RenderResult:
    """Optimize images so that ``objective`` on ``model``'s activations is as high as possible.

    ``param`` defaults to ``param.image(size, batch)`` (Fourier, decorrelated colour) created on
    the model's device; ``size`` defaults to the model's ``input_size`` (else 224) and
    ``batch`` to what the objective drives. ``transforms`` is a preset (``"auto"``: ``"standard"``,
    or the parameterization's own, ``"none"`` for a CPPN; ``"standard"``, ``"distill"``,
    ``"none"``), a list or a callable. Adam with ``lr`` (default: the
    parameterization's ``lr`` attribute, else 0.05) unless ``optimizer`` builds another from
    the parameters. An RGBA parameterization (``param.image(..., alpha=True)``) is blended over
    a new random smooth background each step and its objective scaled by (1 - mean alpha).
    ``transparency`` (default: what the parameterization asks for, True for MACO) accumulates
    |dL/dx| into ``result.transparency``. ``thresholds`` keep snapshots; ``seed`` repeats a run
    exactly on the CPU: image ``i`` draws its start and its transforms from seed ``seed + i``
    alone (or from ``seed[i]`` given a list), so batching never changes an image; ``amp`` runs the
    model under bf16 autocast (CUDA, or CPUs with bf16 units); ``redirect_relu`` steps use
    lucid's redirected ReLU gradient so dead units still get a signal;
    ``memory_format="channels_last"`` runs the model in channels-last order (faster
    convolutions on recent GPUs; the model's own tensors are put back afterwards).
    ``compile`` (True, or a ``torch.compile`` mode such as ``"reduce-overhead"``, which adds
    CUDA graphs) runs the steps after the redirected ones through a compiled copy of the model
    cut after the objective's deepest layer (traced with ``torch.fx``; a model that cannot be
    traced renders eagerly, with a warning; the cut graph always stops early); it is compiled
    once per model, layers and mode in a process, which pays on GPUs over many steps, and
    costs more than it saves on most CPUs.
    Ctrl-C returns what was made so far, with ``interrupted=True``.
    """
    from .objectives import parse

    if isinstance(objective, str):
        objective = parse(objective)
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective or a string, got {type(objective)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    device = model_device(model)
    seed = _new_seed() if seed is None else seed
    if param is None:
        size = size or getattr(model, "input_size", 224)
        given = len(seed) if isinstance(seed, Sequence) else 0
        batch = batch or max(objective.batch_size, given, 1)
        seeds = _image_seeds(seed, batch)
        param = _param.image(size, batch,
                             generator=[torch.Generator().manual_seed(s) for s in seeds])
    param = param.to(device)
    with torch.no_grad():
        probe = param()
    n_images, img_size = probe.shape[0], tuple(probe.shape[-2:])
    rgba = _check_channels(probe, model)
    if lr is None:
        lr = float(getattr(param, "lr", 0.05))
    if transparency is None:
        transparency = bool(getattr(param, "transparency", False))
    if objective.batch_size > n_images:
        raise FeatvizError(f"objective {objective.name} needs a batch of {objective.batch_size} "
                           f"images, but the parameterization makes {n_images}")
    if isinstance(transforms, str) and transforms == "auto":
        transforms = preferred_transforms(param)
    pipeline = _transforms.resolve(transforms, img_size)
    seeds = _image_seeds(seed, n_images)
    gen = _transforms.ImageStreams(seeds, device)
    # backgrounds draw from streams of their own, so alpha leaves the transforms' draws alone
    backgrounds = _transforms.ImageStreams([s + 7919 for s in seeds], device) if rgba else None
    saliency = torch.zeros(n_images, 1, *img_size, device=device) if transparency else None
    params = [p for p in param.parameters() if p.requires_grad]
    opt = optimizer(params) if optimizer else torch.optim.Adam(params, lr=lr)
    if memory_format not in ("contiguous", "channels_last"):
        raise ValueError(f"memory_format must be 'contiguous' or 'channels_last', "
                         f"got {memory_format!r}")
    nhwc = memory_format == "channels_last"
    compile_mode = _compile_mode(compile)
    fast = None
    use_amp = amp and device.type in ("cuda", "cpu")
    if amp and not use_amp:
        import warnings

        warnings.warn(f"amp=True needs a CUDA or CPU model, not {device.type}; rendering in "
                      "float32", stacklevel=2)
    thresholds = sorted({int(t) for t in thresholds if 0 < int(t) <= steps})
    record = set(range(record_every, steps + 1, record_every)) | set(thresholds) | {steps}
    losses = torch.zeros(max(steps, 1), device=device)
    history: list[torch.Tensor] = []
    history_steps: list[int] = []
    history_times: list[float] = []
    snapshots: dict[int, torch.Tensor] = {}
    checked = 0
    step = 0
    interrupted = False
    bar = _progress(steps, progress, objective.name)
    start = time.perf_counter()

    def check_finite(upto: int) -> None:
        nonlocal checked
        window = losses[checked:upto]
        bad = (~torch.isfinite(window)).nonzero()
        if len(bad):
            at = checked + int(bad[0]) + 1
            raise NonFiniteLossError(
                f"the loss became {float(losses[at - 1])} at step {at} of {objective.name}; "
                f"lower the learning rate (lr={lr}) or check the objective and the model"
            )
        checked = upto

    try:
        layout = channels_last(model) if nhwc else contextlib.nullcontext()
        with frozen(model), layout, LayerTap(model, objective.layers, stop_early=stop_early) as tap:
            # traced in eval mode: a forward's `if self.training` branches are fixed by tracing
            fast = _fast_forward(model, objective.layers, compile_mode)
            for step in range(1, steps + 1):
                opt.zero_grad(set_to_none=True)
                img = param()
                if rgba:
                    weight = _alpha.opacity_weight(img)
                    img = _alpha.blend(img, _alpha.random_background(backgrounds, img_size))
                if saliency is not None:
                    img.retain_grad()
                x = pipeline(img, gen)
                if nhwc:
                    x = x.contiguous(memory_format=torch.channels_last)
                rule = ReluBackwardRule("redirect") if step <= redirect_relu else None
                with rule or contextlib.nullcontext(), _autocast(use_amp, device):
                    if fast is not None and rule is None:
                        tap.remove()  # its hooks would fire inside the compiled graph
                        acts = fast(x)
                    else:
                        acts = tap(x)
                if use_amp:
                    acts = {k: v.float() for k, v in acts.items()}
                acts[INPUT] = img
                values = objective(acts)
                if values.shape != (n_images,):
                    raise FeatvizError(f"objective {objective.name} returned shape "
                                       f"{list(values.shape)}, expected [{n_images}]")
                if rgba:
                    values = values * weight
                loss = -values.sum()
                loss.backward()
                if saliency is not None:
                    saliency += img.grad.detach().abs().mean(dim=1, keepdim=True)
                opt.step()
                losses[step - 1] = loss.detach()
                if step in thresholds:
                    with torch.no_grad():
                        snapshots[step] = param().detach().cpu()
                if step in record:
                    history.append(values.detach().float())
                    history_steps.append(step)
                    check_finite(step)  # reads the device: in sync from here
                    history_times.append(time.perf_counter() - start)
                    if bar is not None:
                        bar.update(step - bar.n)
                        bar.set_postfix(objective=f"{float(values.mean()):.4g}")
    except KeyboardInterrupt:
        interrupted = True
        step = max(step - 1, 0)
    finally:
        if bar is not None:
            bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        final = param().detach().float().cpu()
    labels = [objective.label(i) for i in range(n_images)]
    hist = torch.stack(history).cpu() if history else torch.empty(0, n_images)
    if saliency is not None:
        peak = saliency.flatten(1).amax(dim=1).clamp_min(1e-20).view(-1, 1, 1, 1)
        saliency = (saliency / peak).cpu()
    return RenderResult(final, snapshots, hist, history_steps, labels, seconds, seeds, step,
                        interrupted, history_times, saliency)


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
            import warnings

            warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); rendering "
                          "without it", stacklevel=3)
            self.run = _truncate.Truncated(self.run.graph_module, self.run.names)
            acts = self.run(x)
        self.checked = True
        return acts


def _compile_mode(compile: bool | str | None) -> str | None:
    """The torch.compile mode ``compile`` asks for, or None; an error for an unknown mode."""
    if compile is False or compile is None:
        return None
    mode = "default" if compile is True else compile
    if mode not in _truncate.COMPILE_MODES:
        raise ValueError(f"compile must be True, False or a torch.compile mode "
                         f"({', '.join(_truncate.COMPILE_MODES)}), got {compile!r}")
    return mode


def _fast_forward(model: nn.Module, layers: Sequence[str], mode: str | None):
    """What runs the model in the steps without a backward rule: None (the hook-based tap),
    or, with a compile mode, the compiled truncated model."""
    if mode is None:
        return None
    try:
        return _FastForward(_truncate.compiled(model, layers, mode))
    except _truncate.TruncationError as err:
        import warnings

        warnings.warn(f"compile=True needs a model torch.fx can trace; rendering without it "
                      f"({err})", stacklevel=4)
        return None


def preferred_transforms(param: nn.Module) -> str:
    """The transforms preset ``transforms="auto"`` means for ``param``: its own ``transforms``
    attribute (a CPPN's "none": its smooth images lose the fine detail a unit needs when they
    must also survive jitter), else "standard"."""
    return str(getattr(param, "transforms", "standard"))


def _check_channels(probe: torch.Tensor, model: nn.Module) -> bool:
    """True for RGBA images; an error for channel counts other than 3 or 4, or for RGBA with a
    model whose first convolution does not take 3 channels."""
    channels = probe.shape[1] if probe.dim() == 4 else -1
    if channels not in (3, 4):
        raise FeatvizError(f"a parameterization must give [B,3,H,W] (RGB) or [B,4,H,W] (RGBA) "
                           f"images, this one gives {list(probe.shape)}")
    if channels == 4:
        wanted = _alpha.input_channels(model)
        if wanted is not None and wanted != 3:
            raise FeatvizError(f"alpha=True blends the image over RGB backgrounds for a 3-channel "
                               f"model, but this model's first convolution takes {wanted} "
                               f"channels; render it without alpha")
    return channels == 4


def _image_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """One seed per image: ``seed + i``, or the list given (which must have ``n`` entries)."""
    if isinstance(seed, Sequence):
        if len(seed) != n:
            raise ValueError(f"{len(seed)} seeds for a batch of {n} images")
        return [int(s) for s in seed]
    return [int(seed) + i for i in range(n)]


def _autocast(enabled: bool, device: torch.device):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _progress(steps: int, enabled: bool, name: str):
    if not enabled or steps == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=name[:40], unit="step", leave=False)
