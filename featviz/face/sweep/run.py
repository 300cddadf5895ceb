"""Running a sweep: :func:`sweep` checks the arguments, plans this rank's share, agrees on the
settings with the other ranks and renders the pending jobs batch by batch, recording each
finished batch before the next one starts."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ...core import images as _images
from ...core import model_info
from ...core import notebook as _nb
from ...core import param as _param
from ...core import render as _render
from ...core.render import options as _options
from ...core.sizes import SizeLike
from ...errors import FeatvizError
from ...methods.dataset import labelled
from ...methods.deconv import top_k
from .jobs import (
    Job,
    _layer_channels,
    _unique_layers,
    batches,
    job_list,
    job_objective,
    shard,
    unit_layer,
)
from .manifest import Manifest, _jsonable, _write_job, done_jobs
from .settings import _agree_settings
from .view import SweepFolder


@dataclass
class SweepResult:
    """What one rank did: ``rendered`` jobs this run, ``skipped`` (already done) of its
    ``share``; ``total`` jobs in the whole list; ``interrupted`` by a signal (``signal`` is
    its number); ``seconds`` of wall time; ``records`` the manifest lines it wrote;
    ``folder`` the sweep's folder."""

    rank: int
    world_size: int
    total: int
    share: int
    rendered: int = 0
    skipped: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    signal: int | None = None
    records: list[dict] = field(default_factory=list, repr=False)
    keys: list[tuple[str, int]] = field(default_factory=list, repr=False)
    folder: Path | None = None  # the sweep's output folder, for its notebook view

    def _repr_html_(self) -> str:
        """This rank's counts and time, then the folder's images (:class:`.view.SweepFolder`)
        when it knows its folder (Jupyter; see featviz.display)."""
        state = f"interrupted by signal {self.signal}" if self.interrupted else "finished"
        counts = _nb.table(["rank", "jobs in all", "this rank's", "rendered", "already done",
                            "seconds", "state"],
                           [(f"{self.rank}/{self.world_size}", self.total, self.share,
                             self.rendered, self.skipped, f"{self.seconds:.1f}", state)])
        if self.folder is None or not any(Path(self.folder).glob("manifest.rank*.jsonl")):
            return counts
        return counts + SweepFolder(self.folder)._repr_html_()


@dataclass(frozen=True)
class _Recipe:
    """How every image of a sweep is made: :func:`sweep`'s arguments with the defaults
    resolved by :func:`_recipe`, so that the recorded settings hold the values used."""

    param: str
    size: int | tuple[int, int]  # one side, or (height, width) of a rectangle
    steps: int
    lr: float
    transforms: Any  # a preset's name, or the list the model's course gives
    seed: int
    images: str | os.PathLike | None
    k: int
    render_options: Mapping[str, Any]
    labels: str | os.PathLike | None = None

    def settings(self, extra: Mapping[str, Any] | None) -> dict:
        """The settings recorded with the sweep and each image: ``extra`` (what describes the
        model) and this recipe's image settings, as JSON gives them back. Of the other render
        options, those that change the images and differ from the default are recorded (so a
        folder made before they existed resumes as it was); the speed options are not."""
        images = self.images
        changing = {n: v for n, v in self.render_options.items()
                    if _options.BY_NAME[n].group in ("course", "robustness")
                    and v != _options.BY_NAME[n].default}
        return _jsonable({**dict(extra or {}), **changing, "steps": self.steps,
                          "size": self.size,
                          "lr": self.lr, "param": self.param,
                          "transforms": self.transforms if isinstance(self.transforms, str)
                          else repr(list(self.transforms)),
                          "seed": self.seed,
                          "images": str(Path(images).resolve()) if images is not None else None,
                          "k": self.k if images is not None else None,
                          **({"labels": str(Path(self.labels).resolve())}
                             if self.labels is not None else {})})


def sweep(
    model: nn.Module,
    out: str | os.PathLike,
    layers: Sequence[str],
    channels: str | Sequence[int] = "all",
    *,
    param: str = "fourier",
    steps: int = 512,
    size: SizeLike | None = None,
    batch: int = 16,
    seed: int = 0,
    lr: float | None = None,
    images: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    k: int = 9,
    rank: int = 0,
    world_size: int = 1,
    settings: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> SweepResult:
    """Render rank ``rank``'s share of every ``channels`` x ``layers`` job into ``out``.

    Jobs already done are skipped; SIGINT/SIGTERM stops after the finished images are
    recorded (``interrupted``). Under ``torchrun`` pass the rank and world size (see
    :func:`distributed`); rank 0 then checks the folder's settings for every rank and the
    ranks meet once at the end. The render options have :func:`featviz.render`'s names.

    Args:
        model: the model whose channels are rendered.
        out: the sweep folder (created; reused to resume).
        layers: the layers whose channels are rendered.
        channels: ``"all"``, a string like ``"0-63"``/``"1,5,9"``, or a list.
        param: the parameterization of every image, one of :data:`featviz.param.KINDS`.
        steps: optimization steps of each image.
        size: one side or (height, width), recorded as a number or [height, width];
            default: the model's input size.
        batch: channels of one layer rendered together.
        seed: job (layer, c) starts from seed ``seed + c``, on any rank.
        lr: Adam's learning rate; default (and recorded): the parameterization's.
        images: a folder of photos: also keep each channel's top-``k`` dataset patches, with
            the class of each photo where the folder holds a ``labels.tsv``.
        labels: a labels file for ``images`` instead of its ``labels.tsv``.
        k: patches per channel with ``images``.
        rank: this process's rank.
        world_size: how many ranks share the jobs.
        settings: what describes the model (``model``, ``weights``, ``mean``, ``std``), added
            to the recorded settings.
        log: where progress lines go (default: printed).
        **options: any other option of :func:`featviz.render` (``transforms``, ``ema``,
            ``polish``, ``memory_format``, ...; also as groups, ``course={...}``). Those that
            change the images are recorded with them; the speed options are not.
    """
    log = log or (lambda msg: print(msg, flush=True))
    batch, param, options = _old_spellings(batch, param, options)
    layers = _check_arguments(batch, steps, k, layers, images, labels)
    recipe = _recipe(model, param, size=size, steps=steps, lr=lr, seed=seed, images=images,
                     k=k, options=options, labels=labels)
    per_layer = _layer_channels(model, layers, channels, recipe.size)
    out, meta = Path(out), recipe.settings(settings)
    _agree_settings(out, meta, per_layer, rank)
    result, pending = _share(out, job_list(per_layer, seed), meta, rank, world_size)
    log(f"{_who(result)} {result.total} jobs in all; {result.share} are this rank's, "
        f"{result.skipped} already done, {len(pending)} to render")
    start = time.perf_counter()
    with Manifest(out, rank) as manifest, _Stop() as stop:
        _run_batches(model, out, pending, batch, recipe, meta, manifest, stop, result, log)
    _finish(result, stop.signum, time.perf_counter() - start, log)
    return result


# the names sweep had before it took render's: still read, with a warning
_OLD = {"batch_size": "batch", "parameterization": "param", "render_options": "**options"}
# a sweep runs each render itself: these are its own to set
_SWEEPS_OWN = ("progress", "interrupt", "thresholds")


def _old_spellings(batch: int, param: str, options: dict) -> tuple[int, str, dict]:
    """``batch``, ``param`` and the render options, with the old keywords ``batch_size``,
    ``parameterization`` and ``render_options`` read into them (a DeprecationWarning each);
    the options are gathered and checked as render's, less those a sweep sets itself."""
    for old, new in _OLD.items():
        if old in options:
            warnings.warn(f"sweep({old}=...) is now sweep({new}=...), as in render",
                          DeprecationWarning, stacklevel=3)
    batch = options.pop("batch_size", batch)
    param = options.pop("parameterization", param)
    options = {**(options.pop("render_options", None) or {}), **options}
    groups = {g: options.pop(g) for g in list(options) if g in _options.GROUPS}
    chosen = _options.gather(options, groups, where="sweep()")
    own = [name for name in chosen if name in _SWEEPS_OWN]
    if own:
        raise FeatvizError(f"sweep sets {', '.join(own)} of each render itself; leave "
                           f"{'it' if len(own) == 1 else 'them'} out")
    _options.check_given(chosen)
    return batch, param, chosen


def _check_arguments(batch_size: int, steps: int, k: int, layers: Sequence[str],
                     images: str | os.PathLike | None,
                     labels: str | os.PathLike | None = None) -> list[str]:
    """Raise a :class:`FeatvizError` for an argument no sweep can run with, before the model
    runs once; return ``layers`` without repeats (see :func:`_unique_layers`)."""
    if batch_size < 1:
        raise FeatvizError(f"--batch-size must be at least 1, got {batch_size}")
    if steps < 1:
        raise FeatvizError(f"--steps must be at least 1, got {steps}")
    if k < 1:
        raise FeatvizError(f"--k must be at least 1, got {k}")
    layers = _unique_layers(layers)
    # a missing or empty image folder fails now, not after the first layer is rendered
    if images is not None and not _images.list_images(images):
        raise FeatvizError(f"no image files in {images}")
    if images is not None:
        labelled(images, labels)  # and a bad labels file, naming its line
    elif labels is not None:
        raise FeatvizError("--labels goes with --images")
    return layers


def _recipe(model: nn.Module, param: str, *, size: SizeLike | None, steps: int,
            lr: float | None, seed: int, images: str | os.PathLike | None, k: int,
            options: Mapping[str, Any], labels: str | os.PathLike | None = None) -> _Recipe:
    """The recipe of a sweep, with ``size`` defaulting to the model's input size, ``lr`` to the
    parameterization's own rate and ``transforms="auto"`` to its preferred preset. An unknown
    parameterization raises here, before the model runs."""
    size = model_info.input_size(model, size)
    probe = _param.make(param, size, channels=model_info.image_channels(model))
    # record the pace and rate used, not "auto", so a resume compares real values
    given = _options.gather({n: v for n, v in options.items() if n not in _options.GROUPS},
                            {g: options[g] for g in _options.GROUPS if g in options}, "sweep()")
    course = _options.resolve({**given, **({"lr": lr} if lr is not None else {})}, probe,
                              model_info.declared_render(model))
    lr = float(course.lr)
    transforms = options.get("transforms", "auto")
    if transforms == "auto":
        transforms = _render.preferred_transforms(probe, model)
    rest = {n: v for n, v in options.items() if n != "transforms"}
    if "pace" not in given:
        rest["pace"] = course.pace
    return _Recipe(param, size, steps, lr, transforms, seed, images, k, rest, labels)


def _share(out: Path, jobs: Sequence[Job], meta: Mapping, rank: int,
           world_size: int) -> tuple[SweepResult, list[Job]]:
    """This rank's result so far (its share counted, the jobs done in ``out`` with ``meta``'s
    image settings skipped) and its pending jobs, in job-list order."""
    done = done_jobs(out, meta, warn=rank == 0)  # one warning per bad line, not one per rank
    mine = shard(jobs, rank, world_size)
    pending = [j for j in mine if j.key not in done]
    result = SweepResult(rank, world_size, len(jobs), len(mine), skipped=len(mine) - len(pending),
                         keys=[j.key for j in jobs], folder=out)
    return result, pending


def _who(result: SweepResult) -> str:
    """The prefix of this rank's log lines, ``[rank R/W]``."""
    return f"[rank {result.rank}/{result.world_size}]"


def _run_batches(model: nn.Module, out: Path, pending: Sequence[Job], batch_size: int,
                 recipe: _Recipe, meta: Mapping, manifest: Manifest, stop: _Stop,
                 result: SweepResult, log: Callable[[str], None]) -> None:
    """Render ``pending`` batch by batch (with each layer's top-k patches first when the
    recipe has images), recording and logging each finished batch. Stops before the next
    batch once ``stop`` has seen a signal, and at once when a render is interrupted."""
    top: dict[int, Any] = {}
    top_layer = None
    for batch in batches(pending, batch_size):
        if stop.signum is not None:
            break
        layer = batch[0].layer
        try:
            stop.interruptible = True
            if recipe.images is not None and top_layer != layer:
                top = _top_k(model, recipe, layer, [j.channel for j in pending if j.layer == layer])
                top_layer = layer
            res = _render_batch(model, batch, recipe)
            stop.interruptible = False
        except KeyboardInterrupt:
            res = None
        if res is None or res.interrupted:
            stop.signum = stop.signum or signal.SIGINT
            break  # a partial render is never recorded: this batch is redone next time
        values = _record_batch(out, batch, res, meta, manifest, result, top, recipe.k)
        shown = ", ".join(f"{j.channel}: {v:.3g}" for j, v in zip(batch, values, strict=True))
        log(f"{_who(result)} {layer} [{shown}] in {res.seconds:.1f} s "
            f"({result.rendered}/{len(pending)})")


def _render_batch(model: nn.Module, batch: Sequence[Job], recipe: _Recipe) -> _render.RenderResult:
    """Render one batch of jobs of one layer together, each image drawn from its job's seed
    alone (given once, to the parameterization)."""
    layer, chans, seeds = batch[0].layer, [j.channel for j in batch], [j.seed for j in batch]
    p = _param.make(recipe.param, recipe.size, len(batch), seed=seeds,
                    channels=model_info.image_channels(model))
    # _render.render, not an imported name: looked up at each call, so a wrapped render counts
    return _render.render(model, job_objective(layer, chans), p,
                          steps=recipe.steps, transforms=recipe.transforms, lr=recipe.lr,
                          progress=False, interrupt="raise", **recipe.render_options)


def _record_batch(out: Path, batch: Sequence[Job], res: _render.RenderResult, meta: Mapping,
                  manifest: Manifest, result: SweepResult, top: Mapping[int, Any],
                  k: int) -> list[float]:
    """Write each job's files, then its manifest line, and count the batch in ``result``;
    return the objective value of each image."""
    values = res.values.tolist()
    for i, job in enumerate(batch):
        rec = _write_job(out, job, res.shown()[i], values[i], res, meta, result.rank,
                         result.world_size, top.get(job.channel), k)
        manifest.append(rec)
        result.records.append(rec)
    result.rendered += len(batch)
    return values


def _top_k(model: nn.Module, recipe: _Recipe, layer: str, chans: list[int]) -> dict[int, list]:
    """Channel -> the top-``k`` dataset entries (patch, projection, source) of ``chans`` of
    ``layer`` over the recipe's image folder: one pass over the images for the whole layer."""
    return dict(top_k(model, recipe.images, unit_layer(model, layer), chans, recipe.k,
                      size=recipe.size, labels=recipe.labels).entries)


def _finish(result: SweepResult, signum: int | None, seconds: float,
            log: Callable[[str], None]) -> None:
    """Fill in ``result``'s wall time and interruption, and tell how to go on after one."""
    result.seconds = seconds
    result.interrupted = signum is not None
    result.signal = signum
    if result.interrupted:
        log(f"{_who(result)} interrupted by signal {signum}: {result.rendered} finished images "
            "are recorded; run the same command again to go on")


class _Stop:
    """SIGINT/SIGTERM handler: always remembers the signal; raises KeyboardInterrupt only
    while rendering (render() turns that into ``interrupted``), so a signal can never cut a
    file or a manifest line in half — the writes finish and the loop stops after them."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.interruptible = False
        self._old: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if self.interruptible:
            self.interruptible = False
            raise KeyboardInterrupt

    def __enter__(self) -> _Stop:
        # signal handlers can only be set from the main thread; elsewhere signals are not ours
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
