"""The store of a sweep: each job's files and its manifest line, written so that a kill at any
moment leaves only whole records, and read back to tell which jobs are done (the resume)."""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...core import images as _images
from ...core.files import image_file
from ...core.render import RenderResult
from ...errors import FeatvizError
from ...methods.deconv import outline
from .jobs import Job, topk_file

MANIFEST_GLOB = "manifest.rank*.jsonl"

#: Settings that change what an image looks like: a resumed sweep must repeat them.
IMAGE_SETTINGS = ("model", "weights", "mean", "std", "steps", "size", "lr", "param", "transforms",
                  "seed", "images", "k", "pace")
#: what a setting recorded by an earlier version that lacks it was: sweeps before the pace
#: existed (issue 44) took the careful course
RECORDED_BEFORE = {"pace": "careful"}


def _image_settings(settings: Mapping) -> dict:
    """The :data:`IMAGE_SETTINGS` of ``settings`` (None for those missing), as JSON gives them
    back, so that recorded and current settings compare equal when they are."""
    return {k: _jsonable(settings.get(k, RECORDED_BEFORE.get(k))) for k in IMAGE_SETTINGS}


def _jsonable(v: Any) -> Any:
    """``v`` after a round trip through JSON (tuples become lists, and so on)."""
    return json.loads(json.dumps(v))  # tuples -> lists, so read-back values compare equal


def _now() -> str:
    """The current UTC time in ISO format, to the second, for records and sweep.json."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# -- reading ---------------------------------------------------------------------------------

def manifest_files(out: str | os.PathLike) -> list[Path]:
    """Every rank's manifest in ``out``, sorted by name.

    Args:
        out: the sweep folder.
    """
    return sorted(Path(out).glob(MANIFEST_GLOB))


def _record(line: bytes) -> dict | None:
    """The manifest record on ``line``, or None when it is not a JSON object with ``layer``
    (str), ``channel`` (int) and ``file`` (str), as a line cut off by a kill is not."""
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    ok = (isinstance(rec, dict) and isinstance(rec.get("layer"), str)
          and isinstance(rec.get("channel"), int) and isinstance(rec.get("file"), str))
    return rec if ok else None


def read_manifests(out: str | os.PathLike, warn: bool = True) -> list[dict]:
    """All valid records of every manifest in ``out``, in file and line order. A line that is
    not a JSON object with ``layer`` (str), ``channel`` (int) and ``file`` (str) is skipped,
    with a warning naming the file and line when ``warn``.

    Args:
        out: the sweep folder.
        warn: warn about skipped lines (default True).
    """
    records = []
    for path in manifest_files(out):
        with open(path, "rb") as f:
            raw = f.read()
        for n, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip():
                continue
            rec = _record(line)
            if rec is None:
                if warn:
                    warnings.warn(f"{path} line {n} is not a complete manifest record; "
                                  "ignored (its job will be rendered again)", stacklevel=2)
                continue
            records.append(rec)
    return records


def _files_exist(out: Path, rec: Mapping) -> bool:
    """Whether every file ``rec`` names (the image, and the top-k strip if any) is in ``out``
    and not empty; a record whose files were deleted does not count as done."""
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
    valid, its files exist and (given ``settings``) it was made with those image settings.

    Args:
        out: the sweep folder.
        settings: image settings a done job must match; None accepts any.
        warn: warn about skipped manifest lines (default True).
    """
    out = Path(out)
    done = {}
    for rec in read_manifests(out, warn):
        if settings is not None and _image_settings(rec.get("settings", {})) != \
                _image_settings(settings):
            continue
        if _files_exist(out, rec):
            done[(rec["layer"], rec["channel"])] = rec
    return done


# -- writing ---------------------------------------------------------------------------------

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
        """Push what was written to the disk, past Python's and the OS's buffers."""
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


def _write_job(out: Path, job: Job, img: torch.Tensor, value: float, res: RenderResult,
               meta: Mapping, rank: int, world_size: int, top: Sequence | None, k: int) -> dict:
    """Write a job's image (and its top-``k`` strip when ``top`` holds dataset entries)
    atomically and durably, and return its manifest record, to be appended only after."""
    name = image_file(job.layer, job.channel)
    _durable(_images.save(img, out / name, alpha=False))
    rec = {"layer": job.layer, "channel": job.channel, "value": value, "seed": job.seed,
           "file": name, "seconds": round(res.seconds, 3), "batch": len(res.seeds),
           "steps_done": res.steps_done, "rank": rank, "world_size": world_size,
           "time": _now(), "settings": meta}
    if top is not None:
        tname = topk_file(job.layer, job.channel, k)
        _durable(_images.save(_strip(top), out / tname, ncol=len(top), alpha=False))
        rec["topk"] = {"file": tname, "sources": [Path(e.source).name for e in top],
                       "values": [round(e.value, 4) for e in top]}
        labels = [getattr(e, "label", None) for e in top]
        if any(lb is not None for lb in labels):  # the class of each photo, in strip order
            rec["topk"]["classes"] = [lb.name if lb else None for lb in labels]
            rec["topk"]["class_indices"] = [lb.index if lb else None for lb in labels]
    return rec


def _durable(path: Path) -> None:
    """Fsync the file at ``path``."""
    # the manifest line that follows must never point at a file still in the page cache only
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _strip(entries: Sequence, tile: int = 64) -> torch.Tensor:
    """The k patches (top row) above their projections (bottom row), ``tile`` px each; a
    token's own patch outlined in its window, as top-k shows it."""
    def scaled(t: torch.Tensor, focus: tuple[int, int, int, int] | None) -> torch.Tensor:
        return outline(F.interpolate(t[None], (tile, tile), mode="nearest")[0], focus,
                       t.shape[1:])

    return torch.stack([scaled(e.patch, getattr(e, "focus", None)) for e in entries] +
                       [scaled(e.projection, getattr(e, "focus", None)) for e in entries])
