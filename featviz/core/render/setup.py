"""Everything a render decides before its first step: the parameterization and its seeds, the
transforms and their random streams, the loop's stages, the optimizer, and how the model runs
(memory format, autocast, compilation). The result is a :class:`Plan` the loop only reads."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import FeatvizError
from .. import param as _param
from .. import transforms as _transforms
from ..hooks import LayerTap, channels_last, frozen, hook_count
from ..model_info import (
    declared_render,
    fixed_input_size,
    image_channels,
    input_channels,
    input_hw,
    input_size,
    model_device,
    model_dtype,
)
from ..objectives import Objective, parse
from ..param import Parameterization
from ..seeds import Seed, image_seeds, stream_seeds, view_seeds
from . import convergence as _convergence
from . import options as _options
from . import schedule as _schedule
from .averaging import ParameterAverage
from .forward import Forward, amp_allowed, compile_mode, fast_forward
from .optimizer import FlooredAdam
from .stages import AlphaBlend, RailGuard, SaliencyMap, Stage

OptimizerFactory = Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]
_DECLARED = Parameterization  # what a module that declares nothing is taken to declare


@dataclass
class Plan:
    """A render, decided: what the loop runs each step and with which settings."""

    model: nn.Module
    objective: Objective
    param: nn.Module
    steps: int
    seeds: list[int]
    size: tuple[int, int]
    lr: float
    device: torch.device
    pipeline: Callable
    streams: _transforms.ImageStreams
    stages: list[Stage]
    optimizer: torch.optim.Optimizer
    channels_last: bool
    amp: bool
    redirect_steps: int
    compile_mode: str | None
    stop_early: bool
    alpha: bool = False  # RGBA images blended over backgrounds, not four bands
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    stop_rule: _convergence.StopRule | None = None
    average: ParameterAverage | None = None
    # ``polish``: from step ``polish_from`` on, the model sees ``bare``: the images as shown,
    # only fitted to the model's input size (both None without a polish)
    bare: Callable | None = None
    polish_from: int | None = None
    settings: _options.Settings | None = None  # every option's value, as resolved
    # ``views``: transformed copies of each image per step, their objectives averaged
    # (``streams`` then serves views x images, view by view)
    views: int = 1
    _copies: int = 1  # how many copies of the batch the last view() made

    @property
    def n_images(self) -> int:
        return len(self.seeds)

    def images(self) -> torch.Tensor:
        """The images as shown (snapshots, held-out checks, the result): the parameters'
        average when ``ema`` asks for one, else the current ones."""
        return self.param() if self.average is None else self.average.images()

    def view(self, img: torch.Tensor, streams: _transforms.ImageStreams | None = None,
             step: int | None = None) -> torch.Tensor:
        """What the model sees of the images: randomly transformed (from ``streams``, by
        default the render's own), in the model's memory layout; from step ``polish_from``
        on, the images untransformed."""
        polishing = self.polish_from is not None and step is not None \
            and step >= self.polish_from
        pipeline = self.bare if polishing else self.pipeline
        # the views: the render's own steps only (held-out checks see each image once)
        self._copies = self.views if streams is None and not polishing else 1
        if self._copies > 1:
            img = img.repeat(self._copies, *([1] * (img.dim() - 1)))
        x = pipeline(img, self.streams if streams is None else streams)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def evaluate(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The objective's value per image, shape [B] (an error for another shape); with
        views, the mean over each image's views."""
        values = self.objective(acts) if self._copies == 1 else self._over_views(acts)
        if values.shape != (self.n_images,):
            raise FeatvizError(f"objective {self.objective.name} returned shape "
                               f"{list(values.shape)}, expected [{self.n_images}]")
        return values

    def _over_views(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The objective of each view of the batch (activations of views x images, view by
        view; the input images are the images' own), averaged per image."""
        n, views = self.n_images, self._copies

        def view(v: int) -> dict[str, torch.Tensor]:
            return {k: a[v * n:(v + 1) * n] if a.dim() and a.shape[0] == n * views else a
                    for k, a in acts.items()}

        return torch.stack([self.objective(view(v)) for v in range(views)]).mean(dim=0)

    @contextlib.contextmanager
    def session(self) -> Iterator[Forward]:
        """The model frozen, in the layout asked for, with hooks on the objective's layers
        (all put back on exit, also on errors); yields what runs it each step."""
        layout = channels_last(self.model) if self.channels_last else contextlib.nullcontext()
        # hooks of the user's own would not fire in a traced graph: the tap runs it whole
        watched = bool(hook_count(self.model))
        channels = self.objective.channels if self.stop_early and not watched else {}
        with frozen(self.model), layout, \
                LayerTap(self.model, self.objective.layers, stop_early=self.stop_early) as tap:
            # traced in eval mode: a forward's `if self.training` branches are fixed by tracing
            fast = fast_forward(self.model, self.objective.layers, self.compile_mode, channels,
                                fold=self.stop_early and not watched)
            yield Forward(tap, fast, self.redirect_steps, self.amp, self.device,
                          model_dtype(self.model))


def _adam(trainable: list[torch.Tensor], lr: float, floor: float | None
          ) -> torch.optim.Optimizer:
    """render's own optimizer: Adam, with its denominator floored when ``floor`` is given."""
    if not floor:
        return torch.optim.Adam(trainable, lr=lr)
    return FlooredAdam(trainable, lr=lr, floor=floor)


def prepare(model: nn.Module, objective: Objective | str, param: nn.Module | str | None,
            chosen: Mapping[str, Any]) -> Plan:
    """Decide a render (see :func:`featviz.render`).

    Args:
        model: the model whose activations the objective reads.
        objective: an objective, or its string.
        param: the parameterization, its kind name, or None for the default image.
        chosen: the options the caller gave, by name (:func:`.options.gather`); the rest
            come from the parameterization's declarations and the library defaults.
    """
    objective = _objective(objective)
    _options.check_given(chosen)
    basic = {k: chosen.get(k, _options.BY_NAME[k].default) for k in ("size", "batch", "seed")}
    device = model_device(model)
    param, seeds = _parameterization(model, objective, param, **basic)
    param = param.to(device)
    img_size, rgba = _probe(param, model, objective, len(seeds))
    s = _options.resolve(chosen, param if isinstance(param, Parameterization) else _DECLARED,
                         declared_render(model), objective.pace)
    lr = float(s.lr)
    trainable = [p for p in param.parameters() if p.requires_grad]
    pipeline = _transforms.resolve(s.transforms, img_size)
    amp = amp_allowed(s.amp, device)
    opt = s.optimizer(trainable) if s.optimizer else _adam(trainable, lr, s.adam_floor)
    stop = _convergence.parse(s.stop_at)
    polish = _polish(s.polish, s.steps)
    return Plan(
        model=model, objective=objective, param=param, steps=s.steps, seeds=seeds,
        size=img_size, lr=lr, device=device,
        pipeline=fit_to_model(model, objective, pipeline, img_size, amp),
        streams=_transforms.ImageStreams(view_seeds(seeds, s.views), device), views=s.views,
        stages=_stages(seeds, img_size, device, rgba, s.saliency, s.rail_guard),
        optimizer=opt, channels_last=s.memory_format == "channels_last", amp=amp,
        redirect_steps=s.redirect_relu, compile_mode=compile_mode(s.compile),
        stop_early=s.stop_early, alpha=rgba,
        scheduler=_schedule.scheduler(opt, s.lr_schedule, s.steps),
        stop_rule=None if stop is None else _convergence.StopRule(stop, seeds, device),
        average=ParameterAverage(param, s.ema) if s.ema else None,
        bare=fit_to_model(model, objective, _transforms.Compose([]), img_size, amp)
        if polish else None,
        polish_from=s.steps - polish + 1 if polish else None, settings=s)


def _polish(polish: int, steps: int) -> int:
    """``polish`` checked: a whole number of steps from 0 to ``steps``."""
    if isinstance(polish, bool) or not isinstance(polish, int) or not 0 <= polish <= steps:
        raise FeatvizError(f"polish must be a whole number of steps from 0 to steps ({steps}): "
                         f"the last steps run without transforms; got {polish!r}")
    return polish


def fit_to_model(model: nn.Module, objective: Objective, pipeline: Callable,
                 size: tuple[int, int], amp: bool = False) -> Callable:
    """``pipeline``, ending in a fit to the size the model takes when it takes only one: the
    size it declares, else — found by a dry run of one grey image, which also turns a dtype
    the device cannot run into a clear error early — the image's own size or the model's
    ``input_size`` when the transformed size is refused and one of those is taken. ``amp``:
    the dry run under bf16 autocast, as the render runs.

    Args:
        model: The model.
        objective: The objective, whose layers the dry run reads.
        pipeline: The transforms, a callable ``f(x, generator)``.
        size: The size of the images rendered, (h, w).
        amp: Whether the dry run runs under bf16 autocast (default False).
    """
    fixed = fixed_input_size(model)
    if fixed is not None:
        return _transforms.fitted(pipeline, fixed)
    out = pipeline.out_size(size) if isinstance(pipeline, _transforms.Compose) else size
    error = _dry_run(model, objective, out, amp)
    if error is None:
        return pipeline
    for candidate in dict.fromkeys([size, input_hw(model)]):
        if candidate != out and _dry_run(model, objective, candidate, amp) is None:
            return _transforms.fitted(pipeline, candidate)
    raise FeatvizError(f"the model rejected a {out[0]}x{out[1]} input ({error}); if it takes "
                       "only one size, declare it: featviz.models.wrap(net, input_size=S, "
                       "fixed_size=True)") from None


def _dry_run(model: nn.Module, objective: Objective, size: tuple[int, int],
             amp: bool) -> str | None:
    """Run the model (stopped after the objective's layers) on one grey image of ``size``:
    None when it runs, else the reason it did not."""
    x = torch.full((1, image_channels(model), *size), 0.5, device=model_device(model),
                   dtype=model_dtype(model))
    autocast = torch.autocast(x.device.type, torch.bfloat16, enabled=amp)
    try:
        with frozen(model), LayerTap(model, objective.layers) as tap, torch.no_grad(), autocast:
            tap(x)
    except FeatvizError:
        raise
    except (RuntimeError, ValueError, AssertionError, IndexError, TypeError) as err:
        _check_dtype(err, model)
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def _check_dtype(err: Exception, model: nn.Module) -> None:
    """A clear error when the failure is the device not running the model's dtype."""
    dtype = model_dtype(model)
    if dtype != torch.float32 and "not implemented for" in str(err):
        raise FeatvizError(f"this {str(dtype).replace('torch.', '')} model cannot run on "
                           f"{model_device(model)} here ({str(err).splitlines()[0]}); convert "
                           "it with model.float() (or model.bfloat16() on a CPU)") from None


def preferred_transforms(param: nn.Module, model: nn.Module | None = None) -> Any:
    """What ``transforms="auto"`` means for ``param`` on ``model``, by render's rule: the preset
    ``param`` declares where it departs from the base class's (a CPPN's "none": its smooth
    images lose the fine detail a unit needs when they must also survive jitter), else the
    transforms the model declares (a vision transformer's course), else "standard".

    Args:
        param: The parameterization module.
        model: The model, whose declared course counts; None for none.
    """
    declaring = param if isinstance(param, Parameterization) else _DECLARED
    model_declares = declared_render(model) if model is not None else {}
    return _options.resolve({}, declaring, model_declares).transforms


def _objective(objective: Objective | str) -> Objective:
    if isinstance(objective, str):
        objective = parse(objective)
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective or a string, got {type(objective)}")
    return objective


def _parameterization(model: nn.Module, objective: Objective, param: nn.Module | str | None,
                      size, batch: int | None, seed: Seed) -> tuple[nn.Module, list[int]]:
    """The parameterization and one seed per image. Without one (or with a kind's name),
    render makes lucid's Fourier image (or that kind) from ``seed``, with the channels the
    model takes; a parameterization built from seeds brings its own, and a different
    ``seed`` for render is an error (a seed enters once)."""
    if param is None or isinstance(param, str):
        given = len(seed) if isinstance(seed, Sequence) else 0
        batch = batch or max(objective.batch_size, given, 1)
        seeds = image_seeds(seed, batch)
        # the model's own channel count; decorrelated colour only for RGB (image's default)
        return _param.make(param or "fourier", input_size(model, size), batch, seed=seeds,
                           channels=image_channels(model)), seeds
    declared = isinstance(param, Parameterization)
    own = param.seeds if declared else None
    n = param.batch if declared else _batch_of(param)
    if seed is None:
        return param, own if own is not None else image_seeds(None, n)
    seeds = image_seeds(seed, n)
    if declared and param.seed_given and own != seeds:
        raise FeatvizError(f"the parameterization was made with seeds {own[:4]}..., and render "
                           f"was given seed {seed!r}: give the seed once, to one of them")
    return param, seeds


def _batch_of(param: nn.Module) -> int:
    with torch.no_grad():
        return int(param().shape[0])


def _probe(param: nn.Module, model: nn.Module, objective: Objective, n_seeds: int
           ) -> tuple[tuple[int, int], bool]:
    """The images' size and whether they are RGBA, checked against the model, the objective
    and the number of seeds."""
    with torch.no_grad():
        probe = param()
    if probe.dim() != 4:
        raise FeatvizError(f"a parameterization must give images [B,C,H,W], this one gives "
                           f"{list(probe.shape)}")
    rgba = _check_channels(param, probe, input_channels(model))
    n_images = probe.shape[0]
    if objective.batch_size > n_images:
        raise FeatvizError(f"objective {objective.name} needs a batch of {objective.batch_size} "
                           f"images, but the parameterization makes {n_images}")
    if n_seeds != n_images:
        raise ValueError(f"{n_seeds} seeds for a batch of {n_images} images")
    return tuple(probe.shape[-2:]), rgba


def _check_channels(param: nn.Module, probe: torch.Tensor, wanted: int | None) -> bool:
    """Whether the images are RGBA, after checking their channels against what the
    parameterization declares and what the model's first convolution takes (``wanted``; None
    when unknown). A module that declares nothing is RGBA when it gives 4 channels to a model
    that does not take 4."""
    got = probe.shape[1]
    if isinstance(param, Parameterization):
        channels, alpha = param.channels, param.alpha
        if got != param.out_channels:
            raise FeatvizError(f"the parameterization declares {param.out_channels} channels "
                               f"but gives images {list(probe.shape)}")
    else:
        alpha = got == 4 and wanted in (None, 3)
        channels = 3 if alpha else got
    if alpha and wanted not in (None, 3):
        raise FeatvizError(f"alpha=True blends the image over RGB backgrounds for a 3-channel "
                           f"model, but this model's first convolution takes {wanted} "
                           f"channels; render it without alpha")
    if wanted is not None and channels != wanted:
        raise FeatvizError(f"the parameterization makes {channels}-channel images "
                           f"{list(probe.shape)}, but the model's first convolution takes "
                           f"{wanted} channels; make it with param.image(..., "
                           f"channels={wanted})")
    return alpha


def _stages(seeds: list[int], size: tuple[int, int], device: torch.device, rgba: bool,
            saliency: bool, rail_guard: float = 0.0) -> list[Stage]:
    """The loop's pluggable steps: the push off the rails on the parameterization's colours,
    alpha blending for RGBA images (backgrounds from their own per-image streams), then the
    saliency map of the images the transforms receive."""
    stages: list[Stage] = []
    guard = RailGuard(rail_guard, colours=-1 if rgba else None)
    if guard.weight:
        stages.append(guard)
    if rgba:
        streams = _transforms.ImageStreams(stream_seeds(seeds, "background"), device)
        stages.append(AlphaBlend(streams, size))
    if saliency:
        stages.append(SaliencyMap(len(seeds), size, device))
    return stages
