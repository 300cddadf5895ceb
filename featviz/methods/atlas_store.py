"""Collecting a layer's activation vectors over many images, on disk, resumable: the first step
of an activation atlas (:mod:`featviz.methods.atlas`).

A store is a folder of shards, one ``shard_NNNNN.npz`` per batch of images, and a
``manifest.json`` that lists the finished shards and the images each holds. Every file is
written atomically, the shard before the manifest, so an interrupted run leaves at worst one
orphan shard that the manifest does not list: :func:`collect` run again on the same folder
overwrites it and continues with the first image not yet listed, and nothing is counted twice.
Vectors are kept as float16 (half the disk and memory of float32; the atlas averages them in
float32), with where each came from: image, position (y, x) and the image's class.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.files import write_atomic, write_text
from ..core.hooks import LayerTap, frozen, resolve_layer
from ..core.model_info import class_names, image_channels, input_size, model_device
from ..core.sizes import SizeLike
from ..errors import FeatvizError
from . import attribution as _attribution
from . import dataset as _dataset

MANIFEST = "manifest.json"
# what must match for a run to continue a store rather than mix two kinds of vectors
_SETTINGS = ("layer", "size", "positions", "seed", "attribute")


@dataclass
class ActivationStore:
    """The vectors :func:`collect` wrote to ``folder``: ``len(store)`` vectors of ``channels``
    numbers at ``layer``, read shard by shard (:meth:`shards`) or all at once
    (:meth:`vectors`, float32 [N, C]). ``images`` names every source image in order, ``labels``
    its class name ('' where none); ``attribute`` names the classes whose attribution each
    vector carries (see :func:`collect`); ``size`` is the photos' size, one side or
    [height, width]."""

    folder: Path
    manifest: dict

    @classmethod
    def open(cls, folder: str | os.PathLike) -> ActivationStore:
        """The store in ``folder``; an error when it holds none."""
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise FeatvizError(f"{folder} holds no activation store (no {MANIFEST}); make one "
                               "with featviz.atlas_store.collect")
        return cls(Path(folder), json.loads(path.read_text(encoding="utf-8")))

    layer = property(lambda self: self.manifest["layer"])
    channels = property(lambda self: self.manifest["channels"])
    images = property(lambda self: self.manifest["images"])
    labels = property(lambda self: self.manifest["labels"])
    attribute = property(lambda self: self.manifest["attribute"])
    size = property(lambda self: self.manifest["size"])
    map_shape = property(lambda self: tuple(self.manifest["map_shape"]))

    def __len__(self) -> int:
        return sum(s["count"] for s in self.manifest["shards"])

    def shards(self) -> Iterator[dict[str, np.ndarray]]:
        """Each shard's arrays in order: ``vectors`` [n, C] float16, ``image`` [n] (index into
        :attr:`images`), ``y``, ``x`` [n], ``label`` [n] (class index, -1 for none) and, where
        collected, ``attribution`` [n, len(attribute)]."""
        for shard in self.manifest["shards"]:
            with np.load(self.folder / shard["file"]) as z:
                yield {k: z[k] for k in z.files}

    def column(self, name: str) -> np.ndarray:
        """One per-vector column (``image``, ``y``, ``x``, ``label``, ``attribution``) over
        the whole store."""
        return np.concatenate([s[name] for s in self.shards()])

    def vectors(self, indices: np.ndarray | None = None) -> np.ndarray:
        """The vectors as float32 [N, C], or only rows ``indices`` (sorted or not), read shard
        by shard so that only the rows asked for are held."""
        if indices is None:
            return np.concatenate([s["vectors"].astype(np.float32) for s in self.shards()])
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.channels), dtype=np.float32)
        start = 0
        for s in self.shards():
            n = len(s["vectors"])
            hit = (indices >= start) & (indices < start + n)
            out[hit] = s["vectors"][indices[hit] - start]
            start += n
        return out

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.folder)!r}: {len(self)} vectors of "
                f"{self.channels} at {self.layer} from {len(self.images)} images)")


def _settings(layer: str, size: int | tuple[int, int], positions: str | int, seed: int,
              attribute: Sequence[int]) -> dict:
    # a rectangle as the list JSON gives back, so a resumed run compares equal
    return {"layer": layer, "size": size if isinstance(size, int) else list(size),
            "positions": positions, "seed": seed,
            "attribute": list(attribute)}


def _start(folder: Path, settings: dict) -> dict:
    """The manifest to continue: the folder's own when its settings match, else a new one."""
    path = folder / MANIFEST
    if not path.is_file():
        return {**settings, "channels": None, "map_shape": None, "images": [], "labels": [],
                "label_ids": [], "shards": [], "done": 0}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    differ = [k for k in _SETTINGS if manifest.get(k) != settings[k]]
    if differ:
        raise FeatvizError(f"{folder} holds vectors collected with other settings "
                           f"({', '.join(f'{k}={manifest.get(k)!r}' for k in differ)}); "
                           "give a new folder to collect these")
    return manifest


class _Offset:
    """An indexable dataset from item ``start`` on (its ``classes`` kept for labels)."""

    def __init__(self, data, start: int):
        self.data, self.start = data, start
        self.classes = getattr(data, "classes", None)

    def __len__(self) -> int:
        return max(0, len(self.data) - self.start)

    def __getitem__(self, i: int):
        return self.data[self.start + i]


def _remaining(source: _dataset.Source, done: int):
    """``source`` without its first ``done`` images, skipped without reading them where the
    source allows it (a folder, a labelled folder, a dataset); a plain iterator is read on."""
    source = _dataset.labelled(source)
    if isinstance(source, _dataset.LabelledFolder):
        rest = source.subset()
        rest.files = rest.files[done:]
        return rest
    if isinstance(source, (str, os.PathLike)):
        from ..core import images as _images
        return [str(p) for p in _images.list_images(source)][done:]
    if _dataset._indexable(source):
        return _Offset(source, done)
    return itertools.islice(iter(source), done, None)


def _positions(h: int, w: int, positions: str | int, seed: int, image: int) -> np.ndarray:
    """Flat positions [k] of one image's map kept: all, or ``positions`` drawn without
    replacement from a generator seeded by (seed, image), so that a resumed run draws the
    same ones."""
    if positions == "all" or positions >= h * w:
        return np.arange(h * w)
    rng = np.random.default_rng([seed, image])
    return np.sort(rng.choice(h * w, size=positions, replace=False))


def _activations(model: nn.Module, tap: LayerTap | None, layer: str, batch: torch.Tensor,
                 classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    if classes:
        act, attr = _attribution.class_position_maps(model, layer, batch, classes)
        return act.float().cpu(), attr.float().cpu()
    with torch.no_grad():
        act = tap(batch)[layer]  # a token sequence comes as its patch grid, class token apart
    if act.dim() != 4:
        raise FeatvizError(f"layer {layer!r} has no spatial positions (its output is "
                           f"{list(act.shape)}); a store collects the vectors of a map "
                           "[B, C, H, W] or of a transformer's patch tokens [B, T, C]")
    return act.float().cpu(), None


def _shard(act: torch.Tensor, attr: torch.Tensor | None, first: int, labels: list[int],
           positions: str | int, seed: int) -> dict[str, np.ndarray]:
    """One batch's kept vectors and where they come from, as a shard's arrays."""
    b, c, h, w = act.shape
    flat = act.permute(0, 2, 3, 1).reshape(b, h * w, c)
    parts: dict[str, list] = {k: [] for k in ("vectors", "image", "y", "x", "label",
                                              "attribution")}
    for i in range(b):
        keep = _positions(h, w, positions, seed, first + i)
        parts["vectors"].append(flat[i, keep].numpy().astype(np.float16))
        parts["image"].append(np.full(len(keep), first + i, dtype=np.int32))
        parts["y"].append((keep // w).astype(np.int16))
        parts["x"].append((keep % w).astype(np.int16))
        parts["label"].append(np.full(len(keep), labels[i], dtype=np.int32))
        if attr is not None:
            parts["attribution"].append(attr[i].reshape(attr.shape[1], -1)[:, keep].T.numpy())
    return {k: np.concatenate(v) for k, v in parts.items() if v}


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to a bare name
            np.savez(f, **arrays)
    write_atomic(path, write)


def collect(model: nn.Module, source: _dataset.Source, layer: str,
            folder: str | os.PathLike, *, size: SizeLike | None = None, batch_size: int = 32,
            positions: str | int = "all", seed: int = 0,
            attribute: Sequence[int | str] = (), progress: bool = True,
            stop_after: int | None = None) -> ActivationStore:
    """Stream ``source`` (a folder, a labelled folder, an iterable or a dataset of images)
    through ``model`` ``batch_size`` images at a time and write the activation vectors of
    ``layer`` into ``folder``: at every position (``positions="all"``) or at ``positions``
    random ones per image (seeded by ``seed`` and the image's number), float16, with image,
    position and class; each photo is scaled to cover ``size`` (one side or (height, width);
    default the model's input size) and centre-cropped to it. A transformer block's tokens
    [B, T, C] are laid out as their patch grid (the layouts of :mod:`featviz.core.layouts`,
    declared or recognized), the class token and other leading tokens left out, so ``y``,
    ``x`` are patch rows and columns. The layer tap stops each pass
    after ``layer``; with ``attribute`` (class indices or names of the model's classes) the
    whole model runs and each vector also gets its attribution to each of those classes
    (gradient × activation summed over channels, the linear approximation the article uses),
    which class atlases select on.
    Only one batch is held in memory. Run again on the same folder it continues where the
    last run stopped (an interrupted run included) without duplicates; ``stop_after`` ends
    the run after that many batches (for tests and timing).

    Args:
        model: the network to run.
        source: a folder, a labelled folder, an iterable or a dataset of images.
        layer: the layer whose activation vectors are kept.
        folder: where the store is written (and continued).
        size: one side or (height, width); None for the model's input size.
        batch_size: images per pass (default 32).
        positions: ``"all"``, or how many random positions per image.
        seed: the random seed of the positions.
        attribute: classes (indices or names) to attribute each vector to; empty for none.
        progress: show a progress bar.
        stop_after: end after this many batches; None runs to the end.
    """
    from .. import models as _models

    resolve_layer(model, layer)  # an unknown layer: an error naming the closest ones
    if not (positions == "all" or (isinstance(positions, int) and positions >= 1)):
        raise FeatvizError(f"positions must be 'all' or a whole number >= 1, got {positions!r}")
    folder = Path(folder)
    size = input_size(model, size)
    classes = [_models.class_index(model, c) for c in attribute]
    manifest = _start(folder, _settings(layer, size, positions, seed, classes))
    names = class_names(model)
    manifest["attribute_names"] = [names[c] if names else str(c) for c in classes]
    stream = _dataset.iter_labelled_batches(_remaining(source, manifest["done"]), size,
                                            batch_size, channels=image_channels(model))
    bar = _progress(progress, manifest["done"], source)
    tap = contextlib.nullcontext() if classes else LayerTap(model, [layer])
    with frozen(model), tap:
        for n, (names, labels, batch) in enumerate(_guard(stream, manifest["done"])):
            if stop_after is not None and n >= stop_after:
                break
            act, attr = _activations(model, tap, layer, batch.to(model_device(model)),
                                     classes)
            _write_batch(folder, manifest, names, labels, act, attr)
            bar.update(len(names))
    bar.close()
    return ActivationStore(folder, manifest)


def _guard(stream, done: int):
    """The stream of batches; an empty rest of a finished store is no error."""
    try:
        yield from stream
    except FeatvizError as err:
        if done == 0 or "is empty" not in str(err):
            raise


def _progress(progress: bool, done: int, source):
    from tqdm.auto import tqdm
    source = _dataset.labelled(source)
    sized = hasattr(source, "__len__") and not isinstance(source, (str, os.PathLike))
    total = len(source) if sized else None
    return tqdm(total=total, initial=done, disable=not progress, unit="img",
                desc="collect")


def _write_batch(folder: Path, manifest: dict, names: list[str], labels: list,
                 act: torch.Tensor, attr: torch.Tensor | None) -> None:
    """Write one batch's shard, then the manifest that lists it (both atomically)."""
    first = manifest["done"]
    ids = [lb.index if lb is not None and lb.index is not None else -1 for lb in labels]
    arrays = _shard(act, attr, first, ids, manifest["positions"], manifest["seed"])
    name = f"shard_{len(manifest['shards']):05d}.npz"
    _save_npz(folder / name, arrays)
    manifest["channels"] = int(act.shape[1])
    manifest["map_shape"] = [int(act.shape[2]), int(act.shape[3])]
    manifest["images"] += names
    manifest["labels"] += [lb.name if lb is not None else "" for lb in labels]
    manifest["label_ids"] += ids
    manifest["shards"].append({"file": name, "count": len(arrays["vectors"]),
                               "images": len(names)})
    manifest["done"] = first + len(names)
    write_text(folder / MANIFEST, json.dumps(manifest))
