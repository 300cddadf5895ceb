"""Reading a sweep folder back: its finished jobs by layer (:func:`collect`, what the gallery
pages are made of) and its notebook view (:class:`SweepFolder`, also the second half of what
a :class:`~featviz.face.sweep.SweepResult` shows)."""

from __future__ import annotations

import html as _html
import os
import warnings
from pathlib import Path

from ...core import images as _images
from ...core import notebook as _nb
from ...errors import FeatvizError
from .manifest import manifest_files, read_manifests
from .settings import read_settings

_SWEEP_LAYERS = 8  # layers a sweep view shows
_SWEEP_CHANNELS = 32  # channels per layer it shows


def collect(folder: str | os.PathLike) -> dict[str, list[dict]]:
    """The finished jobs of a sweep folder by layer (layers in sweep order, channels
    ascending): records whose image file exists; of several records of one job, the last.
    A folder without a manifest raises an error that says what was expected.

    Args:
        folder: the sweep folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FeatvizError(f"sweep folder not found: {folder}")
    if not manifest_files(folder):
        raise FeatvizError(f"{folder} holds no sweep manifest (expected manifest.rank*.jsonl, "
                           f"written by `featviz sweep --out {folder}`)")
    latest: dict[tuple[str, int], dict] = {}
    for rec in read_manifests(folder):
        if (folder / rec["file"]).is_file():
            latest[(rec["layer"], rec["channel"])] = rec
        else:
            warnings.warn(f"{folder / rec['file']} is missing; channel {rec['channel']} of "
                          f"{rec['layer']} left out", stacklevel=2)
    order = list(read_settings(folder).get("layers", {}))
    by_layer: dict[str, list[dict]] = {layer: [] for layer in order}
    for (layer, _), rec in sorted(latest.items(), key=lambda kv: kv[0][1]):
        by_layer.setdefault(layer, []).append(rec)
    return {layer: recs for layer, recs in by_layer.items() if recs}


class SweepFolder:
    """A sweep folder (``featviz sweep --out FOLDER`` or :func:`featviz.sweep.sweep`) as a
    notebook shows it: its settings, then per layer (at most 8) a labelled grid of its
    finished channels' images (at most 32), the objective under each. For the full set with
    the dataset patches, write the gallery: ``featviz gallery FOLDER``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"SweepFolder({str(self.folder)!r})"

    def _repr_html_(self) -> str:
        page = _nb.Budget()
        try:
            by_layer = collect(self.folder)
        except FeatvizError as err:
            return f"<p>{_html.escape(str(err))}</p>"
        settings = read_settings(self.folder)
        keys = ("model", "steps", "size", "param", "seed")
        page.text("<p>" + _html.escape(" · ".join(f"{k} {settings[k]}" for k in keys
                                                   if settings.get(k) is not None)) + "</p>")
        for layer, recs in list(by_layer.items())[:_SWEEP_LAYERS]:
            shown = recs[:_SWEEP_CHANNELS]
            tiles = [_images.load(self.folder / r["file"], size=96)[0] for r in shown]
            labels = [f"{r['channel']}: {r.get('value', float('nan')):.3g}" for r in shown]
            more = f" ({len(shown)} of {len(recs)})" if len(recs) > len(shown) else ""
            page.text(f"<p><b>{_html.escape(layer)}</b>{more}</p>")
            page.image(_images.grid(tiles, labels, ncol=8), layer)
        if len(by_layer) > _SWEEP_LAYERS:
            page.text(f"<p>{_SWEEP_LAYERS} of {len(by_layer)} layers shown</p>")
        page.text(f"<p>all of it: <code>featviz gallery {_html.escape(str(self.folder))}"
                  "</code></p>")
        return page.html(f"sweep {self.folder.name}")
