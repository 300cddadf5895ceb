"""The settings check: ``sweep.json`` records the image settings a folder was swept with and
the layers and channels asked for; a resume with other settings is refused before anything
is rendered, on every rank alike."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ...core.files import write_text
from ...errors import FeatvizError
from .manifest import IMAGE_SETTINGS, _image_settings, _jsonable, _now, read_manifests
from .ranks import _from_rank0, _group_active

SETTINGS_FILE = "sweep.json"


def read_settings(out: str | os.PathLike) -> dict:
    """The contents of ``out/sweep.json`` ({} when absent or unreadable).

    Args:
        out: the sweep folder.
    """
    try:
        return json.loads((Path(out) / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _agree_settings(out: Path, settings: Mapping, channels: Mapping[str, Sequence[int]],
                    rank: int) -> None:
    """Check ``settings`` against ``out``'s and record them (see :func:`_check_settings`),
    raising the same :class:`FeatvizError` on every rank when they differ. Under ``torchrun``
    only rank 0 reads and writes sweep.json, then tells the others."""
    if rank == 0:
        error = _check_settings(out, settings, channels, write=True)
    elif not _group_active():  # ranks run one by one, by hand: each checks for itself
        error = _check_settings(out, settings, channels, write=False)
    else:
        error = None
    error = _from_rank0(error)
    if error:
        raise FeatvizError(error)


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
    else:  # a folder whose sweep.json was lost still has the settings in its manifests
        first = next(iter(read_manifests(out, warn=False)), None)
        recorded = first.get("settings") if first else None
    if recorded is not None:
        error = _changed(out, recorded, settings)
        if error:
            return error
    if write:
        _write_settings(path, old, settings, channels)
    return None


def _changed(out: Path, recorded: Mapping, settings: Mapping) -> str | None:
    """The message refusing to resume ``out`` when its ``recorded`` image settings differ from
    ``settings``, naming each change; None when they agree."""
    before, now = _image_settings(recorded), _image_settings(settings)
    diff = [k for k in IMAGE_SETTINGS if before[k] != now[k]]
    if not diff:
        return None
    changes = "; ".join(f"{k}: {before[k]!r} then, {now[k]!r} now" for k in diff)
    return (f"{out} holds a sweep made with other settings ({changes}); resume it "
            "with the same settings, or start a new sweep with another --out")


def _write_settings(path: Path, old: Mapping, settings: Mapping,
                    channels: Mapping[str, Sequence[int]]) -> None:
    """Write ``settings`` and the union of ``old``'s layers and channels with ``channels`` to
    ``path``, keeping ``old``'s creation time; through a temporary file and a rename, so a
    kill leaves the old file or the new one, never half of one."""
    merged = {layer: sorted(set(chans)) for layer, chans in old.get("layers", {}).items()}
    for layer, chans in channels.items():
        merged[layer] = sorted(set(merged.get(layer, [])) | set(chans))
    now_s = _now()
    doc = {"format": 1, "settings": _jsonable(dict(settings)), "layers": merged,
           "created": old.get("created", now_s), "updated": now_s}
    write_text(path, json.dumps(doc, indent=1, sort_keys=True))
