"""The on-disk format of a microscope site: where each layer's computed views lie, written
so that a kill never leaves half a file, and read back so that a broken file never stops the
pages from being written.

A site folder holds::

    microscope.json                  the model, its weights (by file name), the setting and
                                     its values, the layers in order and their shapes
    sweep/                           a featviz sweep folder: each unit's feature visualization
    data/<folder_name(layer)>/<task>.json   one file per (layer, task) of :data:`TASKS`
    data/<folder_name(layer)>/...    the images a task made (its JSON names them relative
                                     to this folder)
    index.html, <layer>/index.html, <layer>/<channel>.html   the pages (see .pages)

Every task file records how long the task took (``seconds``) and when it was written
(``written``); a task that does not apply to a layer is stored as ``{"not_applicable":
reason}``, so that it counts as done and the pages show the reason.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ...core.files import folder_name, write_text
from ...errors import FeatvizError

#: The views computed per layer, each stored as ``data/<layer>/<task>.json``.
TASKS: tuple[str, ...] = ("dreams", "caricatures", "groups", "weights", "tuning", "classes",
                          "facets", "paths")
META_FILE = "microscope.json"
SWEEP_DIR = "_sweep"
DATA_DIR = "_data"


def _now() -> str:
    """The current UTC time in ISO format, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None, so the file is strict JSON that
    any reader takes (Python's json writes ``NaN``, which most others refuse)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json(value: Any, what: str) -> str:
    """``value`` as JSON text; an error naming ``what`` when it holds something JSON has not."""
    try:
        return json.dumps(_finite(value), indent=1, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise FeatvizError(f"cannot store {what}: {err}") from None


def layer_dir(site: str | os.PathLike, layer: str) -> Path:
    """The folder of ``layer``'s task files and images: ``SITE/data/<folder_name(layer)>``.

    Args:
        site: the site folder.
        layer: the layer's name.
    """
    return Path(site) / DATA_DIR / folder_name(layer)


def task_file(site: str | os.PathLike, layer: str, task: str) -> Path:
    """The JSON file of ``task`` for ``layer``; an error naming the valid tasks when ``task``
    is not one of :data:`TASKS`.

    Args:
        site: the site folder.
        layer: the layer's name.
        task: one of :data:`TASKS`.
    """
    if task not in TASKS:
        raise FeatvizError(f"unknown microscope task {task!r}; the tasks are "
                           f"{', '.join(TASKS)}")
    return layer_dir(site, layer) / f"{task}.json"


def write_task(site: str | os.PathLike, layer: str, task: str, payload: Mapping[str, Any],
               seconds: float) -> Path:
    """Store ``payload`` as ``task``'s result for ``layer``, with ``seconds`` and the time it
    was written added; the file lands whole (written beside, then renamed) and its folders
    are made. NaN and infinite numbers are stored as null. Returns the file's path.

    Args:
        site: the site folder.
        layer: the layer's name.
        task: one of :data:`TASKS`.
        payload: the task's result (see the site's format); image paths in it are relative
            to :func:`layer_dir`.
        seconds: how long the task took.
    """
    path = task_file(site, layer, task)
    if not isinstance(payload, Mapping):
        raise FeatvizError(f"the {task} result of {layer} must be a dict, "
                           f"not a {type(payload).__name__}")
    record = {**payload, "seconds": round(float(seconds), 3), "written": _now()}
    return write_text(path, _json(record, f"the {task} result of {layer}"))


def write_not_applicable(site: str | os.PathLike, layer: str, task: str, reason: str,
                         seconds: float = 0.0) -> Path:
    """Record that ``task`` does not apply to ``layer``, with the reason the pages show; the
    task then counts as done.

    Args:
        site: the site folder.
        layer: the layer's name.
        task: one of :data:`TASKS`.
        reason: why, in words for the reader (e.g. "the layer has no spatial map").
        seconds: how long finding that out took.
    """
    return write_task(site, layer, task, {"not_applicable": str(reason)}, seconds)


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is absent, and None with a warning when it
    cannot be read or is not a JSON object (a file edited by hand, say)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        warnings.warn(f"cannot read {path} ({err}); treated as not computed yet", stacklevel=3)
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        warnings.warn(f"{path} is not valid JSON ({err}); treated as not computed yet",
                      stacklevel=3)
        return None
    if not isinstance(value, dict):
        warnings.warn(f"{path} holds a JSON {type(value).__name__}, not an object; treated as "
                      "not computed yet", stacklevel=3)
        return None
    return value


def read_task(site: str | os.PathLike, layer: str, task: str) -> dict | None:
    """``task``'s stored result for ``layer``, or None when it is not computed yet. A file
    that cannot be read or parsed is reported with a warning and counts as missing.

    Args:
        site: the site folder.
        layer: the layer's name.
        task: one of :data:`TASKS`.
    """
    return _read_json(task_file(site, layer, task))


def is_done(site: str | os.PathLike, layer: str, task: str) -> bool:
    """Whether ``task`` is stored for ``layer`` (computed, or recorded as not applicable).

    Args:
        site: the site folder.
        layer: the layer's name.
        task: one of :data:`TASKS`.
    """
    return read_task(site, layer, task) is not None


def read_layer(site: str | os.PathLike, layer: str) -> dict[str, dict]:
    """Task -> stored result for each task of ``layer`` that is done, in :data:`TASKS` order.

    Args:
        site: the site folder.
        layer: the layer's name.
    """
    found = {}
    for task in TASKS:
        payload = read_task(site, layer, task)
        if payload is not None:
            found[task] = payload
    return found


def layer_page(layer: str) -> str:
    """The URL of ``layer``'s page, relative to the site folder.

    Args:
        layer: the layer's name.
    """
    return f"{folder_name(layer)}/index.html"


def unit_page(layer: str, channel: int) -> str:
    """The stable URL of a unit's page, relative to the site folder (``mixed3b/326.html``).

    Args:
        layer: the layer's name.
        channel: the unit's channel index.
    """
    return f"{folder_name(layer)}/{int(channel)}.html"


def read_meta(site: str | os.PathLike) -> dict:
    """The contents of ``SITE/microscope.json``: {} when absent, and {} with a warning when
    it cannot be read.

    Args:
        site: the site folder.
    """
    return _read_json(Path(site) / META_FILE) or {}


def write_meta(site: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Write ``SITE/microscope.json`` atomically. A weights path is stored by its file name
    only: the site is made to be shared, the folder the weights sat in is not.

    Args:
        site: the site folder (made if missing).
        meta: the site's description (model, weights, setting, settings, layers, shapes,
            started, updated).
    """
    if not isinstance(meta, Mapping):
        raise FeatvizError(f"microscope.json must hold a dict, not a {type(meta).__name__}")
    meta = dict(meta)
    if isinstance(meta.get("weights"), str):
        meta["weights"] = file_label(meta["weights"])
    return write_text(Path(site) / META_FILE, _json(meta, META_FILE))


def file_label(text: str) -> str:
    """``text`` with any folder dropped when it is a path (``/home/x/w.pth`` -> ``w.pth``),
    as pages and the site's files show files; other text unchanged.

    Args:
        text: a value that may be a file path.
    """
    if "/" in text or "\\" in text or os.sep in text:
        return PurePosixPath(text.replace("\\", "/")).name or text
    return text


def folder_bytes(path: str | os.PathLike) -> int:
    """The total size of the regular files under ``path`` (0 when it does not exist);
    symlinks are not followed.

    Args:
        path: a folder (or a file).
    """
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:  # removed while we walked: it no longer takes room
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


__all__ = ["TASKS", "META_FILE", "layer_dir", "task_file", "write_task", "write_not_applicable",
           "read_task", "is_done", "read_layer", "layer_page", "unit_page", "read_meta",
           "write_meta", "folder_bytes", "file_label"]
