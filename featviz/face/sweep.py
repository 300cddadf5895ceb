"""Whole-model sweeps: render every chosen channel of chosen layers, on one process or on many
ranks started by ``torchrun``, resumable after any interruption.

The job list is layer x channel. Job ``n`` of the list belongs to rank ``n % world_size``
(round-robin, so every rank gets a fair share of every layer); a rank renders its pending jobs
of one layer together, ``batch_size`` channels per batch. Job (layer, channel) starts from seed
``seed + channel`` whatever rank, batch or run renders it, the same seed ``featviz render
--objective channel:LAYER:0-N --seed SEED`` gives channel ``c``, so a sweep image is the same
(up to float rounding) on 1 rank or 64, and after a resume.

Output folder::

    sweep.json                 the settings (a resume with other settings is refused) and the
                               layers with their channels
    manifest.rank{R}.jsonl     one JSON line per finished job, appended by rank R only
    {layer}/c{channel:04d}.png the visualization (written atomically, then its manifest line)
    {layer}/c{channel:04d}_top{k}.png   dataset patches and projections, with --images

A job is done when its manifest line (of any rank file) is present and its files exist; a
restarted sweep, with any number of ranks, skips done jobs. A corrupt or cut-off manifest
line is ignored with a warning and its job is rendered again.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import images as _images
from ..errors import ChannelError, FeatvizError, ObjectiveSyntaxError

SETTINGS_FILE = "sweep.json"
MANIFEST_GLOB = "manifest.rank*.jsonl"

#: Settings that change what an image looks like: a resumed sweep must repeat them.
IMAGE_SETTINGS = ("model", "weights", "mean", "std", "steps", "size", "lr", "param", "transforms",
                  "seed", "images", "k")


@dataclass(frozen=True)
class Job:
    """One image of a sweep: channel ``channel`` of ``layer``; ``index`` is its place in the
    full job list (it decides the rank), ``seed`` its starting noise and transforms."""

    layer: str
    channel: int
    index: int
    seed: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.layer, self.channel)


@dataclass
class SweepResult:
    """What one rank did: ``rendered`` jobs this run, ``skipped`` (already done) of its
    ``share``; ``total`` jobs in the whole list; ``interrupted`` by a signal (``signal`` is
    its number); ``seconds`` of wall time; ``records`` the manifest lines it wrote."""

    rank: int
    world_size: int
    total: int
    share: int
    rendered: int = 0
    skipped: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    signal: int | None = None
    records: list[dict] = field(default_factory=list)
    keys: list[tuple[str, int]] = field(default_factory=list)


# -- job list --------------------------------------------------------------------------------

def folder_name(layer: str) -> str:
    """The folder of ``layer``'s images: the name with anything but ``A-Za-z0-9._-`` replaced."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", layer).strip("_") or "layer"


def image_file(layer: str, channel: int) -> str:
    """Path of a job's visualization, relative to the sweep folder."""
    return f"{folder_name(layer)}/c{channel:04d}.png"


def topk_file(layer: str, channel: int, k: int) -> str:
    """Path of a job's dataset patches (``--images``), relative to the sweep folder."""
    return f"{folder_name(layer)}/c{channel:04d}_top{k}.png"


def parse_channel_spec(text: str | Sequence[int]) -> list[int] | None:
    """Read ``--channels``: ``"all"`` gives None (every channel of each layer), ``"0-63"``,
    ``"1,5,9"`` or a mix ``"0-3,8"`` a sorted list without repeats; a list of ints is taken
    as it is. A malformed string raises a :class:`FeatvizError` saying what is accepted."""
    from ..core.objectives import parse_channels

    if isinstance(text, str):
        if text.strip().lower() == "all":
            return None
        try:
            chans = parse_channels(text)
        except ObjectiveSyntaxError:
            raise FeatvizError(f"--channels takes 'all', a range like 0-63, a list like 1,5,9 "
                               f"or a mix like 0-3,8; got {text!r}") from None
    else:
        chans = [int(c) for c in text]
    if not chans:
        raise FeatvizError("--channels names no channel")
    return sorted(set(chans))


def channel_counts(model: nn.Module, layers: Sequence[str], size: int) -> dict[str, int]:
    """Run one grey image through ``model`` and return the channel count of each layer
    (dimension 1 of conv maps and vectors, the last one of token sequences). An unknown layer
    raises an error listing the closest names."""
    from ..core.hooks import LayerTap, frozen
    from ..core.objectives import _channels_of
    from ..core.render import model_device

    x = torch.full((1, 3, size, size), 0.5, device=model_device(model))
    with frozen(model), LayerTap(model, layers, stop_early=False) as tap, torch.no_grad():
        acts = tap(x)
    missing = [name for name in layers if name not in acts]
    if missing:
        raise FeatvizError(f"layer {missing[0]!r} does not run in the model's forward pass")
    return {name: _channels_of(name, acts[name]) for name in layers}


def job_list(channels: Mapping[str, Sequence[int]], seed: int = 0) -> list[Job]:
    """The full job list: layers in the given order, channels ascending; job (layer, c) gets
    seed ``seed + c`` (see the module docstring for why)."""
    jobs: list[Job] = []
    for layer, chans in channels.items():
        start = len(jobs)
        jobs.extend(Job(layer, c, start + i, seed + c) for i, c in enumerate(chans))
    return jobs


def shard(jobs: Sequence[Job], rank: int, world_size: int) -> list[Job]:
    """Rank ``rank``'s share: the jobs whose index is ``rank`` modulo ``world_size``. It
    depends on the full list only, never on what is done, so ranks that read the manifests
    at slightly different moments still never share a job."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return [j for j in jobs if j.index % world_size == rank]


def batches(jobs: Sequence[Job], batch_size: int) -> Iterator[list[Job]]:
    """Consecutive runs of at most ``batch_size`` jobs of the same layer."""
    chunk: list[Job] = []
    for job in jobs:
        if chunk and (len(chunk) == batch_size or job.layer != chunk[0].layer):
            yield chunk
            chunk = []
        chunk.append(job)
    if chunk:
        yield chunk


# -- manifests -------------------------------------------------------------------------------

def manifest_files(out: str | os.PathLike) -> list[Path]:
    """Every rank's manifest in ``out``, sorted by name."""
    return sorted(Path(out).glob(MANIFEST_GLOB))


def read_manifests(out: str | os.PathLike, warn: bool = True) -> list[dict]:
    """All valid records of every manifest in ``out``, in file and line order. A line that is
    not a JSON object with ``layer`` (str), ``channel`` (int) and ``file`` (str) is skipped,
    with a warning naming the file and line when ``warn``."""
    records = []
    for path in manifest_files(out):
        with open(path, "rb") as f:
            raw = f.read()
        for n, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                ok = (isinstance(rec, dict) and isinstance(rec.get("layer"), str)
                      and isinstance(rec.get("channel"), int)
                      and isinstance(rec.get("file"), str))
            except (ValueError, UnicodeDecodeError):
                ok = False
            if not ok:
                if warn:
                    warnings.warn(f"{path} line {n} is not a complete manifest record; "
                                  "ignored (its job will be rendered again)", stacklevel=2)
                continue
            records.append(rec)
    return records


def _files_exist(out: Path, rec: Mapping) -> bool:
    names = [rec["file"]]
    if isinstance(rec.get("topk"), dict):
        names.append(rec["topk"].get("file", ""))
    for name in names:
        p = out / name
        if not name or not p.is_file() or p.stat().st_size == 0:
            return False
    return True


def done_jobs(out: str | os.PathLike, settings: Mapping | None = None,
              warn: bool = True) -> dict[tuple[str, int], dict]:
    """(layer, channel) -> record for every job that is done in ``out``: its manifest line is
    valid, its files exist and (given ``settings``) it was made with those image settings."""
    out = Path(out)
    done = {}
    for rec in read_manifests(out, warn):
        if settings is not None and _image_settings(rec.get("settings", {})) != \
                _image_settings(settings):
            continue
        if _files_exist(out, rec):
            done[(rec["layer"], rec["channel"])] = rec
    return done


class Manifest:
    """Rank ``rank``'s manifest: append-only, one JSON line per job, flushed and fsynced so a
    kill loses at most the line being written. An exclusive lock on the file refuses a second
    sweep writing as the same rank into the same folder at the same time."""

    def __init__(self, out: str | os.PathLike, rank: int):
        self.path = Path(out) / f"manifest.rank{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab+")  # noqa: SIM115 (held open for the whole sweep)
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._f.close()
            raise FeatvizError(f"another featviz sweep is writing {self.path}; wait for it or "
                               "use another --out") from None
        # a line cut off by a kill: end it, so the next record starts on a line of its own
        if self._f.seek(0, os.SEEK_END) > 0:
            self._f.seek(-1, os.SEEK_END)
            if self._f.read(1) != b"\n":
                self._f.write(b"\n")
                self._sync()

    def append(self, record: Mapping) -> None:
        """Write one record as one line and make it durable."""
        self._f.write(json.dumps(record, sort_keys=True).encode() + b"\n")
        self._sync()

    def _sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        """Release the lock and close the file."""
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- settings --------------------------------------------------------------------------------

def _image_settings(settings: Mapping) -> dict:
    return {k: _jsonable(settings.get(k)) for k in IMAGE_SETTINGS}


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v))  # tuples -> lists, so read-back values compare equal


def _check_settings(out: Path, settings: Mapping, channels: Mapping[str, Sequence[int]],
                    write: bool) -> str | None:
    """Compare ``settings`` with those recorded in ``out``; on a match (or a new folder) and
    ``write``, record them with the union of the layers and channels. Returns an error
    message instead of raising, so rank 0 can hand it to every rank."""
    path = out / SETTINGS_FILE
    old: dict = {}
    recorded = None
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            recorded = old["settings"]
        except (ValueError, KeyError, TypeError):
            return f"{path} is not a featviz sweep settings file; use another --out"
    else:
        first = next(iter(read_manifests(out, warn=False)), None)
        recorded = first.get("settings") if first else None
    if recorded is not None:
        before, now = _image_settings(recorded), _image_settings(settings)
        diff = [k for k in IMAGE_SETTINGS if before[k] != now[k]]
        if diff:
            changes = "; ".join(f"{k}: {before[k]!r} then, {now[k]!r} now" for k in diff)
            return (f"{out} holds a sweep made with other settings ({changes}); resume it "
                    "with the same settings, or start a new sweep with another --out")
    if write:
        merged = {layer: sorted(set(chans)) for layer, chans in old.get("layers", {}).items()}
        for layer, chans in channels.items():
            merged[layer] = sorted(set(merged.get(layer, [])) | set(chans))
        now_s = _now()
        doc = {"format": 1, "settings": _jsonable(dict(settings)), "layers": merged,
               "created": old.get("created", now_s), "updated": now_s}
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, path)
    return None


def read_settings(out: str | os.PathLike) -> dict:
    """The contents of ``out/sweep.json`` ({} when absent or unreadable)."""
    try:
        return json.loads((Path(out) / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# -- distributed -----------------------------------------------------------------------------

def distributed_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from the environment ``torchrun`` sets, or None when
    the process was not started by a launcher."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise FeatvizError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers") from None
    return rank, world, local


@contextlib.contextmanager
def distributed(device: str | None = None) -> Iterator[tuple[int, int, str]]:
    """Join the ``torchrun`` process group when there is one and yield (rank, world size,
    device); without a launcher yield (0, 1, device) and start nothing. The device is
    ``cuda:LOCAL_RANK`` when ``device`` is None or ``"cuda"`` and CUDA is there, with the NCCL
    backend; otherwise gloo on the CPU. The group is destroyed on exit."""
    import torch.distributed as dist

    env = distributed_env()
    cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if env is None:
        yield 0, 1, device or ("cuda" if cuda else "cpu")
        return
    if not dist.is_available():
        raise FeatvizError("this PyTorch build has no torch.distributed; run without torchrun")
    rank, world, local = env
    if cuda:
        device = device if device and ":" in str(device) else f"cuda:{local}"
        torch.cuda.set_device(torch.device(device))
    else:
        device = device or "cpu"
    # a rank may wait at the final gather for hours while others finish their share
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(days=7))
    try:
        yield rank, world, device
    finally:
        dist.destroy_process_group()


def _group_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (itself without a process group)."""
    if not _group_active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(value: Any) -> list[Any]:
    if not _group_active():
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


# -- signals ---------------------------------------------------------------------------------

class _Stop:
    """SIGINT/SIGTERM handler: always remembers the signal; raises KeyboardInterrupt only
    while rendering (render() turns that into ``interrupted``), so a signal can never cut a
    file or a manifest line in half — the writes finish and the loop stops after them."""

    def __init__(self):
        self.signum: int | None = None
        self.interruptible = False
        self._old: dict[int, Any] = {}

    def __call__(self, signum, frame) -> None:
        self.signum = signum
        if self.interruptible:
            self.interruptible = False
            raise KeyboardInterrupt

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


# -- the sweep -------------------------------------------------------------------------------

def sweep(
    model: nn.Module,
    out: str | os.PathLike,
    layers: Sequence[str],
    channels: str | Sequence[int] = "all",
    *,
    steps: int = 512,
    size: int | None = None,
    batch_size: int = 16,
    lr: float | None = None,
    transforms: str = "auto",
    seed: int = 0,
    parameterization: str = "fourier",
    images: str | os.PathLike | None = None,
    k: int = 9,
    rank: int = 0,
    world_size: int = 1,
    settings: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    render_options: Mapping[str, Any] | None = None,
) -> SweepResult:
    """Render rank ``rank``'s share of every ``channels`` x ``layers`` job into ``out``.

    ``channels`` is ``"all"``, a string like ``"0-63"``/``"1,5,9"`` or a list; ``steps``,
    ``size`` (default: the model's), ``lr`` (default: the parameterization's), ``transforms``
    and ``seed`` are passed to :func:`featviz.render` (job (layer, c) uses seed ``seed + c``);
    ``parameterization`` names one of :data:`featviz.param.KINDS`; ``images`` (a folder) adds
    each channel's top-``k`` dataset patches. ``settings`` adds what describes the model
    (``model``, ``weights``, ``mean``, ``std``) to the recorded settings. Under ``torchrun``
    pass the rank and world size (see :func:`distributed`); rank 0 then checks the folder's
    settings for every rank and the ranks meet once at the end. Jobs already done are skipped;
    SIGINT/SIGTERM stops after the finished images are recorded (``interrupted``).
    ``render_options`` go to every render as they are: the speed options ``amp``,
    ``memory_format`` and ``compile`` (not recorded as image settings).
    """
    from ..core import param as _param
    from ..core.render import preferred_transforms, render

    log = log or (lambda msg: print(msg, flush=True))
    if batch_size < 1:
        raise FeatvizError(f"--batch-size must be at least 1, got {batch_size}")
    if steps < 1:
        raise FeatvizError(f"--steps must be at least 1, got {steps}")
    if k < 1:
        raise FeatvizError(f"--k must be at least 1, got {k}")
    if not layers:
        raise FeatvizError("--layers names no layer")
    layers = list(dict.fromkeys(layers))
    folders: dict[str, str] = {}
    for layer in layers:
        other = folders.setdefault(folder_name(layer), layer)
        if other != layer:
            raise FeatvizError(f"layers {other!r} and {layer!r} would share the folder "
                               f"{folder_name(layer)!r}; sweep them into different --out folders")
    if images is not None:
        _images.list_images(images)  # a missing folder fails now, not after the first layer
        if not _images.list_images(images):
            raise FeatvizError(f"no image files in {images}")
    size = int(size or getattr(model, "input_size", 224))
    probe = _param.make(parameterization, size)
    if lr is None:  # record the rate used, not "default", so a resume compares real values
        lr = float(getattr(probe, "lr", 0.05))
    if transforms == "auto":
        transforms = preferred_transforms(probe)
    wanted = parse_channel_spec(channels)
    counts = channel_counts(model, layers, size)
    per_layer: dict[str, list[int]] = {}
    for layer in layers:
        n = counts[layer]
        chans = list(range(n)) if wanted is None else wanted
        bad = [c for c in chans if c >= n]
        if bad:
            raise ChannelError(f"channel {bad[0]} is out of range for layer {layer!r}, which has "
                               f"{n} channels (valid: 0-{n - 1})")
        per_layer[layer] = chans
    jobs = job_list(per_layer, seed)
    out = Path(out)
    meta = {**dict(settings or {}), "steps": steps, "size": size, "lr": lr,
            "param": parameterization,
            "transforms": transforms, "seed": seed,
            "images": str(Path(images).resolve()) if images is not None else None,
            "k": k if images is not None else None}
    meta = _jsonable(meta)
    if rank == 0:
        error = _check_settings(out, meta, per_layer, write=True)
    elif not _group_active():  # ranks run one by one, by hand: each checks for itself
        error = _check_settings(out, meta, per_layer, write=False)
    else:
        error = None
    error = _from_rank0(error)  # only rank 0 reads and writes sweep.json under torchrun
    if error:
        raise FeatvizError(error)

    done = done_jobs(out, meta, warn=rank == 0)
    mine = shard(jobs, rank, world_size)
    pending = [j for j in mine if j.key not in done]
    result = SweepResult(rank, world_size, len(jobs), len(mine), skipped=len(mine) - len(pending),
                         keys=[j.key for j in jobs])
    who = f"[rank {rank}/{world_size}]"
    log(f"{who} {len(jobs)} jobs in all; {len(mine)} are this rank's, {result.skipped} already "
        f"done, {len(pending)} to render")
    start = time.perf_counter()
    top: dict[int, Any] = {}
    top_layer = None
    with Manifest(out, rank) as manifest, _Stop() as stop:
        for batch in batches(pending, batch_size):
            if stop.signum is not None:
                break
            layer, chans = batch[0].layer, [j.channel for j in batch]
            seeds = [j.seed for j in batch]
            try:
                stop.interruptible = True
                if images is not None and top_layer != layer:
                    top = _top_k(model, images, layer, [j.channel for j in pending
                                                        if j.layer == layer], k, size)
                    top_layer = layer
                p = _param.make(parameterization, size, len(batch),
                                generator=[torch.Generator().manual_seed(s) for s in seeds])
                res = render(model, _objective(layer, chans), p, steps=steps,
                             transforms=transforms, lr=lr, seed=seeds, progress=False,
                             **(render_options or {}))
                stop.interruptible = False
            except KeyboardInterrupt:
                stop.signum = stop.signum or signal.SIGINT
                break
            if res.interrupted:
                stop.signum = stop.signum or signal.SIGINT
                break  # a partial render is never recorded: this batch is redone next time
            values = res.values.tolist()
            for i, job in enumerate(batch):
                rec = _write_job(out, job, res.images[i], values[i], res, meta, rank, world_size,
                                 top.get(job.channel), k)
                manifest.append(rec)
                result.records.append(rec)
            result.rendered += len(batch)
            shown = ", ".join(f"{c}: {v:.3g}" for c, v in zip(chans, values, strict=True))
            log(f"{who} {layer} [{shown}] in {res.seconds:.1f} s "
                f"({result.rendered}/{len(pending)})")
    result.seconds = time.perf_counter() - start
    result.interrupted = stop.signum is not None
    result.signal = stop.signum
    if result.interrupted:
        log(f"{who} interrupted by signal {stop.signum}: {result.rendered} finished images "
            "are recorded; run the same command again to go on")
    return result


def _objective(layer: str, chans: list[int]):
    from ..core.objectives import channel

    return channel(layer, chans if len(chans) > 1 else chans[0])


def _write_job(out: Path, job: Job, img: torch.Tensor, value: float, res, meta: Mapping,
               rank: int, world_size: int, top, k: int) -> dict:
    """Write a job's files atomically and durably, and return its manifest record."""
    name = image_file(job.layer, job.channel)
    _durable(_images.save(img, out / name))
    rec = {"layer": job.layer, "channel": job.channel, "value": value, "seed": job.seed,
           "file": name, "seconds": round(res.seconds, 3), "batch": len(res.seeds),
           "steps_done": res.steps_done, "rank": rank, "world_size": world_size,
           "time": _now(), "settings": meta}
    if top is not None:
        tname = topk_file(job.layer, job.channel, k)
        _durable(_images.save(_strip(top), out / tname, ncol=len(top)))
        rec["topk"] = {"file": tname, "sources": [Path(e.source).name for e in top],
                       "values": [round(e.value, 4) for e in top]}
    return rec


def _durable(path: Path) -> None:
    # the manifest line that follows must never point at a file still in the page cache only
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _top_k(model, folder, layer: str, chans: list[int], k: int, size: int) -> dict[int, list]:
    from ..methods.deconv import top_k

    return dict(top_k(model, folder, layer, chans, k, size=size).entries)


def _strip(entries, tile: int = 64) -> torch.Tensor:
    """The k patches (top row) above their projections (bottom row), ``tile`` px each."""
    def scaled(t):
        return F.interpolate(t[None], (tile, tile), mode="nearest")[0]

    return torch.stack([scaled(e.patch) for e in entries] +
                       [scaled(e.projection) for e in entries])


def summary(results: Sequence[SweepResult], out: str | os.PathLike,
            keys: Sequence[tuple[str, int]] | None = None) -> str:
    """One paragraph about a finished (or interrupted) run of all ranks: jobs of the job list
    (``keys``, default: the first result's) done in ``out``, rendered and skipped this run,
    channels per minute of rendering."""
    keys = keys or results[0].keys
    total = results[0].total
    done = len(set(done_jobs(out, warn=False)) & {tuple(k) for k in keys})
    rendered = sum(r.rendered for r in results)
    skipped = sum(r.skipped for r in results)
    wall = max(r.seconds for r in results)
    rate = 60 * rendered / wall if wall > 0 and rendered else 0.0
    state = "interrupted; " if any(r.interrupted for r in results) else ""
    return (f"sweep {out}: {state}{done} of {total} jobs done; this run rendered "
            f"{rendered} on {len(results)} rank(s) and skipped {skipped} already done, "
            f"{rate:.1f} channels/min ({wall:.1f} s)")


def gather_results(result: SweepResult) -> list[SweepResult]:
    """Every rank's result on every rank (the ranks meet here); just ``[result]`` without a
    process group. Do not call it on an interrupted rank: the others may never arrive."""
    slim = SweepResult(**{**result.__dict__, "records": [], "keys": []})
    return _gather(slim)


__all__ = ["Job", "SweepResult", "sweep", "job_list", "shard", "batches", "channel_counts",
           "parse_channel_spec", "read_manifests", "done_jobs", "Manifest", "distributed",
           "distributed_env", "summary", "gather_results", "read_settings", "image_file",
           "topk_file", "folder_name", "SETTINGS_FILE", "IMAGE_SETTINGS"]
