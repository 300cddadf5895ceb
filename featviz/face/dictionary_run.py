"""A layer's dictionary from photos to page, in two resumable steps, as ``featviz dictionary
train`` and ``featviz dictionary show`` run them (and ``examples/dictionary.py``).

:func:`train_layer` fills ``OUT/store`` with the layer's activation vectors
(:func:`featviz.methods.atlas_store.collect`), trains the dictionary in ``OUT/sae``
(:func:`featviz.methods.dictionary.train`, or scikit-learn's for ``classic=``), measures it
(held-out FVU, L0, dead features; top-1 on the photos with the layer spliced) and writes
``OUT/measures.json``. :func:`show_layer` searches every feature's and neuron's top patches in
the store, scores how single-minded each is, renders the most and least single-minded of each
kind (and any asked for) and writes ``OUT/page/index.html``, ``OUT/sheet.png`` and
``OUT/units.json``. Each step keeps what it made: run again, it goes on where it stopped.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.files import write_text
from ..core.images import list_images
from ..errors import FeatvizError
from ..methods import atlas_store
from ..methods import dataset as _dataset
from ..methods import dictionary as _dict
from ..methods.circuits import RenderCache
from . import dictionary_page

STORE, SAE, PAGE, MEASURES, UNITS, SHEET = ("store", "sae", "page", "measures.json",
                                            "units.json", "sheet.png")


def photos(images: str | os.PathLike, limit: int | None = None) -> _dataset.Source:
    """The photos of ``images`` (a labelled folder keeps its labels), or ``limit`` of them
    spread evenly through the folder, so a quick run still sees many classes.

    Args:
        images: a folder of photos (with ``labels.tsv`` for the classes).
        limit: how many photos to keep; None for all.
    """
    source = _dataset.labelled(images)
    if limit is None:
        return source
    if limit < 1:
        raise FeatvizError(f"limit must be at least 1 photo, got {limit}")
    if isinstance(source, _dataset.LabelledFolder):
        return source.spread(limit)
    found = list_images(images)
    return [str(found[i * len(found) // limit]) for i in range(min(limit, len(found)))]


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MB (0 where the OS does not say)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def train_layer(model: nn.Module, layer: str, images: str | os.PathLike, out: str | os.PathLike,
                *, limit: int | None = None, size: int | None = None,
                positions: str | int = "all", classic: str | None = None,
                splice: bool = True, progress: bool = True,
                log: Callable[[str], None] = print, **training: Any) -> dict:
    """Collect ``layer``'s vectors over the photos, train a dictionary on them, measure it and
    write ``OUT/measures.json``; the measures as a dict.

    Args:
        model: the network.
        layer: the layer whose activation vectors the dictionary describes.
        images: the photo folder (``labels.tsv`` gives the splice's top-1).
        out: the run's folder (store, dictionary, measures).
        limit: use only this many photos (spread through the folder); None for all.
        size: the photos' side; None for the model's input size.
        positions: ``"all"`` positions of each photo, or this many random ones.
        classic: ``"nmf"`` or ``"dictionary"`` for scikit-learn's instead of a TopK SAE.
        splice: measure the model's top-1 with the layer replaced by its reconstruction.
        progress: show progress bars.
        log: where progress lines go.
        **training: the settings of :func:`featviz.methods.dictionary.train` (``n_features``,
            ``k``, ``epochs``, ``batch_size``, ``lr``, ``seed``, ...).
    """
    out, start = Path(out), time.perf_counter()
    source = photos(images, limit)
    store = atlas_store.collect(model, source, layer, out / STORE, size=size,
                                positions=positions, progress=progress)
    collected = time.perf_counter() - start
    log(f"{len(store)} vectors of {store.channels} at {layer} from {len(store.images)} photos")
    sae, trained = _fit(store, out / SAE, classic, progress, training)
    before = _measured(out, trained, splice)
    if before is not None:  # a finished run: its measures stand
        log(f"measured before: {out / MEASURES}")
        return before
    measures = {"layer": layer, "photos": len(store.images), "vectors": len(store),
                "channels": store.channels, "features": sae.n_features, "k": sae.k,
                "kind": classic or "topk", "collect_s": round(collected, 1),
                **trained, **_quality(sae, store)}
    if splice:
        measures.update(_splice(model, layer, sae, source, size, progress))
    measures.update(seconds=round(time.perf_counter() - start, 1),
                    peak_memory_mb=round(peak_memory_mb()))
    write_text(out / MEASURES, json.dumps(measures, indent=1))
    log(f"wrote {out / MEASURES}")
    return measures


def _fit(store: atlas_store.ActivationStore, folder: Path, classic: str | None, progress: bool,
         training: dict) -> tuple[_dict.SparseAutoencoder, dict]:
    """The trained dictionary and what to record of its training."""
    start = time.perf_counter()
    if classic is None:
        result = _dict.train(store, folder, progress=progress, **training)
        return result.sae, {"train_s": round(result.seconds, 1), "settings": result.settings}
    n = training.get("n_features") or 8 * store.channels
    path = folder / "sae.pt"
    if path.is_file():
        return _dict.SparseAutoencoder.load(path), {}
    sae = _dict.fit_classic(store, n, method=classic, k=training.get("k", 32),
                            seed=training.get("seed", 0))
    sae.save(path)
    return sae, {"train_s": round(time.perf_counter() - start, 1)}


def _measured(out: Path, trained: dict, splice: bool) -> dict | None:
    """The measures a previous run wrote for this very dictionary, or None."""
    path = out / MEASURES
    if not path.is_file():
        return None
    before = json.loads(path.read_text(encoding="utf-8"))
    now = json.loads(json.dumps(trained.get("settings", before.get("settings"))))
    same = before.get("settings") == now
    return before if same and (not splice or "top1" in before or "splice" in before) else None


def _quality(sae: _dict.SparseAutoencoder, store: atlas_store.ActivationStore) -> dict:
    m = _dict.measure(sae, store)
    return {"fvu": round(m.fvu, 4), "l0": round(m.l0, 2), "dead": m.dead,
            "dead_share": round(m.dead_fraction, 4), "held_out_vectors": m.vectors}


def _splice(model: nn.Module, layer: str, sae: _dict.SparseAutoencoder,
            source: _dataset.Source, size: int | None, progress: bool) -> dict:
    if not isinstance(source, _dataset.LabelledFolder):
        return {"splice": "no labels.tsv in the photo folder: top-1 not measured"}
    acc = _dict.splice_accuracy(model, layer, sae, source, size=size, progress=progress)
    return {"top1": round(acc.accuracy, 4), "top1_spliced": round(acc.spliced_accuracy, 4),
            "same_top1": round(acc.agreement, 4), "kl": round(acc.kl, 4)}


def show_layer(model: nn.Module, out: str | os.PathLike, images: str | os.PathLike,
               *, sae: _dict.SparseAutoencoder | None = None, layer: str | None = None,
               limit: int | None = None, shown: int = 6,
               features: Sequence[int] = (), neurons: Sequence[int] = (), k: int = 9,
               steps: int = 128, render_size: int = 128, judge: str | None = None,
               log: Callable[[str], None] = print) -> dict:
    """Search, score, render and write the page of a trained run folder ``out``; the
    per-unit results (also in ``OUT/units.json``).

    Args:
        model: the network the dictionary was trained on.
        out: the folder :func:`train_layer` wrote (its ``store`` and ``sae``).
        images: the photo folder the store was collected from (for the patches).
        sae: a dictionary to show instead of ``OUT/sae/sae.pt`` (one trained elsewhere).
        layer: the layer ``sae`` reads, to collect ``OUT/store`` where there is none yet
            (default: the layer ``sae`` records).
        limit: then collect only this many photos, spread through the folder.
        shown: how many of the most and of the least single-minded units of each kind.
        features: features to show besides those.
        neurons: neurons to show besides those.
        k: top patches per unit.
        steps: render steps of each unit's feature visualization.
        render_size: the renders' side.
        judge: the layer whose embedding of the patches judges single-mindedness; None for
            the model's last spatial layer.
        log: where progress lines go.
    """
    out = Path(out)
    sae = sae if sae is not None else _dict.SparseAutoencoder.load(out / SAE / "sae.pt")
    store = _store_for(model, out, images, sae, layer, limit)
    start = time.perf_counter()
    found = _dict.feature_examples(store, sae, k=k)
    log(f"searched {sae.n_features} features and {store.channels} neurons "
        f"({time.perf_counter() - start:.0f} s)")
    scores = _dict.single_mindedness(model, found, images, judge=judge)
    picked = _dict.pick_units(scores, shown)
    chosen = {"features": _merge(picked["features"], features),
              "neurons": _merge(picked["neurons"], neurons)}
    cards = _cards(model, store, sae, found, scores, chosen, images,
                   RenderCache(steps=steps, size=render_size, folder=out / "renders"))
    measures = _read_measures(out)
    dictionary_page.write(out / PAGE, store.layer, cards["features"], cards["neurons"],
                          measures, title=f"{store.layer}: {sae.n_features} dictionary "
                                          f"features beside {store.channels} neurons")
    dictionary_page.sheet_png(out / SHEET, cards)
    units = _units_json(found, scores, chosen)
    write_text(out / UNITS, json.dumps(units, indent=1))
    log(f"wrote {out / PAGE / 'index.html'} and {out / SHEET}")
    return units


def _store_for(model: nn.Module, out: Path, images: str | os.PathLike,
               sae: _dict.SparseAutoencoder, layer: str | None,
               limit: int | None) -> atlas_store.ActivationStore:
    """The run's store; collected first for a dictionary brought from elsewhere."""
    layer = layer or sae.layer
    if (out / STORE / atlas_store.MANIFEST).is_file() or not layer:
        return atlas_store.ActivationStore.open(out / STORE)
    return atlas_store.collect(model, photos(images, limit), layer, out / STORE)


def _merge(picked: dict[str, list[int]], extra: Sequence[int]) -> list[int]:
    """The most, then the least single-minded, then the units asked for, each once."""
    return list(dict.fromkeys([*picked["most"], *picked["least"], *extra]))


def _cards(model: nn.Module, store: atlas_store.ActivationStore, sae: _dict.SparseAutoencoder,
           found: _dict.DictionaryExamples, scores: _dict.MindedScores,
           chosen: dict[str, list[int]], images: str | os.PathLike,
           cache: RenderCache) -> dict[str, list]:
    """Render every chosen unit in one batch and make their cards."""
    layer = store.layer
    vectors = _dict.feature_directions(sae, chosen["features"]) if chosen["features"] else []
    units = [(layer, v) for v in vectors] + [(layer, c) for c in chosen["neurons"]]
    renders = cache.get(model, units) if units else []
    cut = len(chosen["features"])
    cards = {}
    for kind, part, made in (("features", found.features, renders[:cut]),
                             ("neurons", found.neurons, renders[cut:])):
        patches = _dict.example_patches(model, part, images, units=chosen[kind])
        cards[kind] = dictionary_page.unit_cards(
            part, chosen[kind], patches=patches, renders=dict(zip(chosen[kind], made, strict=True)),
            scores=getattr(scores, kind))
    return cards


def _read_measures(out: Path) -> dict | None:
    path = out / MEASURES
    if not path.is_file():
        return None
    keep = ("photos", "vectors", "features", "k", "fvu", "l0", "dead_share", "top1",
            "top1_spliced", "same_top1", "train_s")
    return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if k in keep}


def _units_json(found: _dict.DictionaryExamples, scores: _dict.MindedScores,
                chosen: dict[str, list[int]]) -> dict:
    """Every unit's score and firing rate, the summaries, and which units were shown."""
    out: dict = {"method": scores.method, "shown": chosen}
    for kind in ("features", "neurons"):
        minded, part = getattr(scores, kind), getattr(found, kind)
        scored = zip(minded.units, minded.scores, strict=True)
        out[kind] = {"summary": {k: v if k == "n" else _num(v)
                                 for k, v in minded.summary().items()},
                     "score": {int(u): _num(s) for u, s in scored},
                     "firing_rate": {int(u): _num(r) for u, r in part.firing_rate.items()}}
    return out


def _num(value: float | torch.Tensor) -> float | None:
    """A number for JSON: four significant digits (a rare feature's firing rate is tiny),
    None for NaN."""
    value = float(value)
    return None if value != value else float(f"{value:.4g}")
