"""The path check of a sweep's pictures: every finished unit's feature visualization compared,
layer by layer, with its top photos (Geirhos et al. 2023's sanity check, see
:mod:`featviz.methods.trust.paths`), recorded in the sweep folder as ``paths.json`` so that
the gallery, and a microscope site built on the sweep, show each unit's number beside its
picture. Resumable: units already in the file are not checked again."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import images as _images
from ..core.files import write_text
from ..errors import FeatvizError
from ..methods.trust import path_similarity
from .sweep import collect, unit_layer

#: The file of a sweep folder the path checks are kept in.
PATHS_FILE = "paths.json"

#: What a reader is told the number means (the pages' tooltip and legend).
MEANING = ("path similarity: the visualization's mean Spearman correlation with the unit's top "
           "photos over the layers before the unit's, of which channels carry the unit's "
           "activation (attribution profiles); the top photos' own among themselves and random "
           "photos' are the references")


def read(folder: str | os.PathLike) -> dict[str, dict]:
    """The path checks recorded in a sweep folder, ``{"layer:channel": check}`` ({} when
    there are none); a file that cannot be read counts as none.

    Args:
        folder: The sweep folder.
    """
    try:
        return dict(json.loads((Path(folder) / PATHS_FILE).read_text()).get("units", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def caption(check: Mapping[str, Any] | None) -> str | None:
    """The line shown under a picture: ``path 0.25 · top photos 0.51 · random 0.50``, or
    None without a check.

    Args:
        check: A unit's recorded check (its ``summary`` is read).
    """
    if not check:
        return None
    s = check.get("summary", {})
    vals = [s.get(k) for k in ("similarity", "natural", "chance")]
    if any(not isinstance(v, (int, float)) or math.isnan(v) for v in vals):
        return None
    return f"path {vals[0]:.2f} · top photos {vals[1]:.2f} · random {vals[2]:.2f}"


def check_sweep(model: nn.Module, folder: str | os.PathLike, photos: Any, *, k: int = 10,
                randoms: int = 20, seed: int = 0, batch_size: int = 32,
                labels: str | None = None, measure: str = "attribution", chunk: int = 128,
                progress: bool = False,
                log: Callable[[str], None] | None = None) -> Path:
    """Check every finished unit of the sweep in ``folder`` not checked yet and record it in
    ``folder/paths.json`` (after each ``chunk`` of units: an interrupted run keeps them).

    Args:
        model: The network the sweep rendered.
        folder: The sweep folder.
        photos: The photos to compare with (a folder; its ``labels.tsv`` names classes).
        k: Top photos per unit.
        randoms: Photos in the random sample.
        seed: The random sample's seed.
        batch_size: Photos per forward pass.
        labels: A labels file for ``photos`` without ``labels.tsv``.
        measure: ``"attribution"`` (default) or ``"activation"``: see
            :func:`featviz.methods.trust.path_similarity`.
        chunk: Units checked per pass over the photos (memory grows with it).
        progress: Show progress bars.
        log: Where progress lines go (default: printed).
    """
    log = log or (lambda msg: print(msg, flush=True))
    folder = Path(folder)
    settings = {"photos": str(photos), "k": k, "randoms": randoms, "seed": seed,
                "measure": measure}
    done = _agree(folder, settings)
    todo = [r for recs in collect(folder).values() for r in recs
            if f"{r['layer']}:{r['channel']}" not in done]
    for i in range(0, len(todo), chunk):
        part = todo[i:i + chunk]
        units = [(unit_layer(model, r["layer"]), r["channel"]) for r in part]
        images = [_images.load(folder / r["file"])[0] for r in part]
        found = path_similarity(model, units, images, photos, k=k, randoms=randoms, seed=seed,
                                batch_size=batch_size, labels=labels, measure=measure,
                                progress=progress)
        for rec, res in zip(part, found, strict=True):
            done[f"{rec['layer']}:{rec['channel']}"] = res.to_dict()
        _write(folder, settings, done)
        log(f"path check: {min(i + chunk, len(todo))} of {len(todo)} units")
    return folder / PATHS_FILE


def _agree(folder: Path, settings: Mapping[str, Any]) -> dict[str, dict]:
    """The units already checked with these settings; checks made with others are refused
    (one file never mixes two settings)."""
    path = folder / PATHS_FILE
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if old.get("settings") != dict(settings):
        raise FeatvizError(f"{path} was made with {old.get('settings')}, not {dict(settings)}; "
                           "use the same values, or delete the file to check again")
    return dict(old.get("units", {}))


def _write(folder: Path, settings: Mapping[str, Any], units: Mapping[str, dict]) -> None:
    data = _plain({"settings": dict(settings), "units": dict(units)})
    write_text(folder / PATHS_FILE, json.dumps(data, indent=1, allow_nan=False))


def _plain(v: Any) -> Any:
    """``v`` with NaN as null (JSON has no NaN) and tensors as lists."""
    if isinstance(v, torch.Tensor):
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def units_of(checks: Mapping[str, dict], layer: str) -> dict[int, dict]:
    """A layer's checks by channel.

    Args:
        checks: What :func:`read` gives.
        layer: The sweep layer.
    """
    out = {}
    for key, check in checks.items():
        name, _, channel = key.rpartition(":")
        if name == layer and channel.isdigit():
            out[int(channel)] = check
    return out


__all__: Sequence[str] = ["PATHS_FILE", "MEANING", "read", "caption", "check_sweep", "units_of"]
