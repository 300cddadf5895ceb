"""Images from datasets: streaming sources and running top-k activations.

A source is a folder of image files, any iterable of images (tensors, PIL images or paths) or
an indexable dataset such as a torchvision one (items ``(image, label)``). Sources are read in
batches and never held in memory whole, so a folder of thousands of images streams. A folder
with a ``labels.tsv`` (or a :class:`LabelledFolder`) also tells the class of each photo.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core import images as _images
from ..core.sizes import SizeLike, hw
from ..errors import ChannelError, FeatvizError

Source = str | os.PathLike | Iterable


# PIL's luminance weights (ITU-R 601), as images.load(..., channels=1) reads files
LUMA = (0.299, 0.587, 0.114)


def _pil_to_tensor(im: Image.Image, size: SizeLike, fit: str, channels: int = 3) -> torch.Tensor:
    im = _images.to_rgb(im) if channels != 1 else _images.to_rgb(im).convert("L")
    arr = np.asarray(_images._fit(im, size, fit), dtype=np.float32) / 255.0
    arr = arr[..., None] if arr.ndim == 2 else arr
    return _as_channels(torch.from_numpy(arr.copy()).permute(2, 0, 1), channels, "a PIL image")


def _as_channels(t: torch.Tensor, channels: int, where: str) -> torch.Tensor:
    """``t`` [C,H,W] with the ``channels`` the model takes: as it is when they match;
    grayscale repeated to RGB and RGBA cut to RGB for an RGB model; RGB(A) to luminance for a
    grayscale one; anything else is an error that names both counts."""
    c = t.shape[0]
    if c == channels:
        return t
    if channels == 3 and c in (1, 4):
        return t[:3] if c == 4 else t.expand(3, -1, -1)
    if channels == 1 and c in (3, 4):
        return torch.einsum("c,chw->hw", torch.tensor(LUMA, dtype=t.dtype), t[:3])[None]
    raise FeatvizError(f"{where}: a {c}-channel image for a model that takes {channels} "
                       f"channels")


def _tensor_image(t: torch.Tensor, size: SizeLike, where: str, channels: int = 3) -> torch.Tensor:
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise FeatvizError(f"{where}: expected an image tensor [C,H,W], got {list(t.shape)}")
    t = t.float() / 255.0 if not t.is_floating_point() else t.float()
    t = _as_channels(t, channels, where)
    rows, cols = hw(size)
    # scaled until it covers the size (aspect kept), then the centre cut out
    s = max(rows / t.shape[1], cols / t.shape[2])
    h, w = max(rows, round(t.shape[1] * s)), max(cols, round(t.shape[2] * s))
    t = F.interpolate(t[None], (h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (h - rows) // 2, (w - cols) // 2
    return t[:, top:top + rows, left:left + cols].clamp(0, 1)


def iter_images(source: Source, size: SizeLike, fit: str = "crop",
                channels: int = 3) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, image [C,H,W] in [0, 1])`` from a folder, an iterable or a dataset,
    with the ``channels`` the model takes, each scaled to cover ``size`` (one side or
    (height, width)) and centre-cropped to it (``fit="crop"``) or stretched (``"resize"``).

    For an RGB model greyscale images are repeated to RGB, RGBA is blended over white, 16-bit
    images are scaled to [0, 1] (see :func:`featviz.images.to_rgb`); for a grayscale one they
    are read as luminance; tensors of other band counts must have the model's. An unreadable
    file raises an error naming it. A folder with a ``labels.tsv`` yields the files it lists.

    Args:
        source: a folder, an iterable or a dataset of images.
        size: one side or (height, width).
        fit: ``"crop"`` (default) or ``"resize"``.
        channels: the number of channels the model takes (default 3).
    """
    for name, _, img in iter_labelled(source, size, fit, channels):
        yield name, img


def iter_labelled(source: Source, size: SizeLike, fit: str = "crop", channels: int = 3
                  ) -> Iterator[tuple[str, Label | None, torch.Tensor]]:
    """:func:`iter_images` with the class of each image: ``(name, label or None, image)``,
    labels from a labelled folder or from a dataset's ``(image, class index)`` items.

    Args:
        source: a labelled folder, a folder, an iterable or a dataset.
        size: one side or (height, width).
        fit: ``"crop"`` (default) or ``"resize"``.
        channels: the number of channels the model takes (default 3).
    """
    source = labelled(source)
    if isinstance(source, (str, os.PathLike)):
        paths = _images.list_images(source)
        if not paths:
            raise FeatvizError(f"no image files in {source} (looked for "
                               f"{', '.join(_images.IMAGE_SUFFIXES)})")
        for p in paths:
            yield str(p), None, _images.load(p, size=size, fit=fit, channels=channels)[0]
        return
    items = (source[i] for i in range(len(source))) if _indexable(source) else iter(source)
    for i, item in enumerate(items):
        image = item[0] if isinstance(item, tuple) else item  # (image, label), as torchvision
        name = str(image) if isinstance(image, (str, os.PathLike)) else f"#{i}"
        yield name, _label_of(source, item, name), _to_image(image, i, size, fit, channels)


def _to_image(item: object, i: int, size: SizeLike, fit: str, channels: int) -> torch.Tensor:
    """Item ``i`` of a source (a path, a PIL image or a tensor) as an image of ``size``."""
    if isinstance(item, (str, os.PathLike)):
        return _images.load(item, size=size, fit=fit, channels=channels)[0]
    if isinstance(item, Image.Image):
        return _pil_to_tensor(item, size, fit, channels)
    if torch.is_tensor(item):
        return _tensor_image(item, size, f"item {i}", channels)
    raise FeatvizError(f"item {i} of the image source is a {type(item).__name__}; "
                       "expected a tensor, a PIL image or a file path")


def _indexable(source) -> bool:
    return hasattr(source, "__getitem__") and hasattr(source, "__len__")


def spatial_activation(layer: str, act: torch.Tensor, channel: int) -> torch.Tensor:
    """The [B,H,W] map of ``channel``, with clear errors for flat layers and bad channels.

    Args:
        layer: the layer's name, for the errors.
        act: the layer's activation, [B, C, H, W].
        channel: the channel's index.
    """
    if act.dim() != 4:
        raise FeatvizError(f"layer {layer!r} has no spatial maps (output {list(act.shape)}); "
                           "pick a convolutional layer")
    if not 0 <= channel < act.shape[1]:
        raise ChannelError(f"channel {channel} is out of range for layer {layer!r}, which has "
                           f"{act.shape[1]} channels (valid: 0-{act.shape[1] - 1})")
    return act[:, channel]


def iter_batches(source: Source, size: SizeLike, batch_size: int, fit: str = "crop",
                 channels: int = 3) -> Iterator[tuple[list[str], torch.Tensor]]:
    """Group :func:`iter_images` into batches ``(names, [B,C,H,W])``.

    Args:
        source: a folder, an iterable or a dataset of images.
        size: one side or (height, width).
        batch_size: images per batch (the last may have fewer).
        fit: ``"crop"`` (default) or ``"resize"``.
        channels: the number of channels the model takes (default 3).
    """
    for names, _, batch in iter_labelled_batches(source, size, batch_size, fit, channels):
        yield names, batch


def iter_labelled_batches(source: Source, size: SizeLike, batch_size: int, fit: str = "crop",
                          channels: int = 3
                          ) -> Iterator[tuple[list[str], list[Label | None], torch.Tensor]]:
    """Group :func:`iter_labelled` into batches ``(names, labels, [B,C,H,W])``; no more
    than one batch of images is read ahead of the consumer.

    Args:
        source: a labelled folder, a folder, an iterable or a dataset.
        size: one side or (height, width).
        batch_size: images per batch (the last may have fewer).
        fit: ``"crop"`` (default) or ``"resize"``.
        channels: the number of channels the model takes (default 3).
    """
    names: list[str] = []
    labels: list[Label | None] = []
    tiles: list[torch.Tensor] = []
    count = 0
    for name, label, img in iter_labelled(source, size, fit, channels):
        names.append(name)
        labels.append(label)
        tiles.append(img)
        count += 1
        if len(tiles) == batch_size:
            yield names, labels, torch.stack(tiles)
            names, labels, tiles = [], [], []
    if tiles:
        yield names, labels, torch.stack(tiles)
    if count == 0:
        raise FeatvizError("the image source is empty")


class RunningTopK:
    """The ``k`` largest values per channel seen so far, with the image and position of each.

    ``update`` takes one batch's per-image maxima; memory stays at ``k`` entries per channel.
    """

    def __init__(self, n_channels: int, k: int):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self.values = torch.full((n_channels, 0), float("-inf"))
        self.image_ids = torch.zeros((n_channels, 0), dtype=torch.long)
        self.positions = torch.zeros((n_channels, 0, 2), dtype=torch.long)

    def update(self, values: torch.Tensor, image_ids: torch.Tensor,
               positions: torch.Tensor) -> None:
        """``values`` [B, n], ``image_ids`` [B], ``positions`` [B, n, 2] (y, x)."""
        vals = torch.cat([self.values, values.T.float().cpu()], dim=1)
        ids = torch.cat([self.image_ids, image_ids.cpu()[None].expand(vals.shape[0], -1)], dim=1)
        pos = torch.cat([self.positions, positions.transpose(0, 1).cpu()], dim=1)
        keep = vals.topk(min(self.k, vals.shape[1]), dim=1).indices
        self.values = vals.gather(1, keep)
        self.image_ids = ids.gather(1, keep)
        self.positions = pos.gather(1, keep[..., None].expand(-1, -1, 2))

    def ids_in_use(self) -> set[int]:
        return set(self.image_ids.flatten().tolist())


# -- labelled folders ------------------------------------------------------------------------

#: The file a folder's class labels are read from when it holds one.
LABELS_FILE = "labels.tsv"


@dataclass(frozen=True)
class Label:
    """The class of a photo: its ``index`` (None where the labels give none) and ``name``."""

    index: int | None
    name: str

    @property
    def short(self) -> str:
        """The first of the name's comma-separated synonyms ("tench" of "tench, Tinca tinca")."""
        return self.name.split(",")[0].strip()

    def matches(self, cls: int | str) -> bool:
        """Whether ``cls`` names this class: its index, its whole name or one of its synonyms."""
        if isinstance(cls, int):
            return self.index == cls
        synonyms = {s.strip().lower() for s in self.name.split(",")}
        return cls.strip().lower() in synonyms | {self.name.lower()}


def _header(path: Path, line: str) -> tuple[int, int | None, int | None]:
    """Column numbers of ``file``, ``class_index`` and ``class_name`` in the header ``line``."""
    cols = [c.strip() for c in line.rstrip("\r\n").split("\t")]
    if "file" not in cols or not ({"class_index", "class_name"} & set(cols)):
        raise FeatvizError(f"{path} line 1: bad header {cols!r}; expected tab-separated "
                           "columns 'file' and 'class_name' and/or 'class_index'")
    index = cols.index("class_index") if "class_index" in cols else None
    name = cols.index("class_name") if "class_name" in cols else None
    return cols.index("file"), index, name


def _row(path: Path, n: int, line: str, cols: tuple[int, int | None, int | None],
         folder: Path) -> tuple[str, Label]:
    """The (file name, label) of data line ``n`` of ``path``; an error names the file and line."""
    fields = line.rstrip("\r\n").split("\t")
    fcol, icol, ncol = cols
    if len(fields) <= max(c for c in cols if c is not None):
        raise FeatvizError(f"{path} line {n}: {len(fields)} tab-separated fields, too few for "
                           "the header's columns")
    name = fields[fcol].strip()
    index = None
    if icol is not None:
        try:
            index = int(fields[icol])
        except ValueError:
            raise FeatvizError(f"{path} line {n}: class_index {fields[icol]!r} is not an "
                               "integer") from None
    if not (folder / name).is_file():
        raise FeatvizError(f"{path} line {n}: {name!r} is not a file in {folder}")
    return name, Label(index, fields[ncol].strip() if ncol is not None else str(index))


def read_labels(path: str | os.PathLike, folder: str | os.PathLike | None = None
                ) -> dict[str, Label]:
    """File name -> :class:`Label` from a tab-separated labels file like ImageNet samples'.

    The header names a ``file`` column and ``class_name`` and/or ``class_index`` (others are
    ignored); each file must exist in ``folder`` (default: the labels file's folder). A bad
    header, a short line, a non-integer index, a repeated or missing file raises a
    :class:`FeatvizError` naming the labels file and the line.

    Args:
        path: the labels file.
        folder: where the files are; None for the labels file's folder.
    """
    path = Path(path)
    folder = Path(folder) if folder is not None else path.parent
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FeatvizError(f"cannot read labels file {path}: {e}") from None
    if not lines:
        raise FeatvizError(f"{path} line 1: empty labels file (expected a header)")
    cols = _header(path, lines[0])
    labels: dict[str, Label] = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, label = _row(path, n, line, cols, folder)
        if name in labels:
            raise FeatvizError(f"{path} line {n}: {name!r} is listed twice")
        labels[name] = label
    if not labels:
        raise FeatvizError(f"{path}: no files listed under the header")
    return labels


class LabelledFolder:
    """A folder of photos with the class of each, from its ``labels.tsv`` or ``labels``.

    Iterating gives the paths of the labelled files (in the labels file's order), as a plain
    source does, so it streams like a folder; :meth:`label` gives a file's class. ``classes``
    (indices or names, a name matching its full text or any comma-separated synonym) and/or
    ``where`` (a predicate on :class:`Label`) keep only some classes.
    """

    def __init__(self, folder: str | os.PathLike, labels: str | os.PathLike | None = None,
                 classes: Iterable[int | str] | None = None,
                 where: Callable[[Label], bool] | None = None):
        self.folder = Path(folder)
        self.labels_file = Path(labels) if labels is not None else self.folder / LABELS_FILE
        if not self.labels_file.is_file():
            raise FeatvizError(f"no labels file {self.labels_file} (a tab-separated file with "
                               "columns file and class_name/class_index)")
        self.labels = read_labels(self.labels_file, self.folder)
        self.files = list(self.labels)
        unlisted = [p.name for p in _images.list_images(self.folder) if p.name not in self.labels]
        if unlisted:  # said once, so that a photo missing from the labels is not lost unseen
            warnings.warn(f"{len(unlisted)} image files in {self.folder} are not in "
                          f"{self.labels_file} and are left out (e.g. {unlisted[0]})",
                          stacklevel=2)
        if classes is not None or where is not None:
            self.files = _filtered(self.labels, classes, where, self.labels_file)

    def subset(self, classes: Iterable[int | str] | None = None,
               where: Callable[[Label], bool] | None = None) -> LabelledFolder:
        """The same folder keeping only ``classes`` and/or the labels ``where`` accepts."""
        out = object.__new__(LabelledFolder)
        out.folder, out.labels_file, out.labels = self.folder, self.labels_file, self.labels
        kept = set(_filtered(self.labels, classes, where, self.labels_file))
        out.files = [f for f in self.files if f in kept]
        return out

    def spread(self, n: int) -> LabelledFolder:
        """``n`` of the photos (all when there are fewer), evenly spaced through the list, so
        that a sample of a folder sorted by class still holds many classes.

        Args:
            n: how many photos to keep.
        """
        out = object.__new__(LabelledFolder)
        out.folder, out.labels_file, out.labels = self.folder, self.labels_file, self.labels
        count = len(self.files)
        out.files = [self.files[i * count // n] for i in range(min(n, count))]
        return out

    def label(self, name: str | os.PathLike) -> Label | None:
        """The class of file ``name`` (a path in the folder or its bare name), or None."""
        return self.labels.get(Path(name).name)

    def __iter__(self) -> Iterator[str]:
        return (str(self.folder / f) for f in self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"LabelledFolder({str(self.folder)!r}, {len(self)} photos)"


def _filtered(labels: dict[str, Label], classes: Iterable[int | str] | None,
              where: Callable[[Label], bool] | None, path: Path) -> list[str]:
    """The files of ``labels`` whose class is one of ``classes`` and passes ``where``; a class
    that names no label raises, so a typo does not silently empty the source."""
    wanted = list(classes) if classes is not None else None
    if wanted is not None:
        unknown = [c for c in wanted if not any(lb.matches(c) for lb in labels.values())]
        if unknown:
            raise FeatvizError(f"classes {unknown!r} name no photo in {path}")
    return [f for f, lb in labels.items()
            if (wanted is None or any(lb.matches(c) for c in wanted))
            and (where is None or where(lb))]


def labelled(source: Source, labels: str | os.PathLike | None = None) -> Source:
    """``source`` as a :class:`LabelledFolder` when it is a folder with a ``labels.tsv`` (or
    ``labels`` names a labels file); otherwise ``source`` unchanged.

    Args:
        source: a folder, an iterable or a dataset of images.
        labels: a labels file; None looks for ``labels.tsv`` in the folder.
    """
    if isinstance(source, (str, os.PathLike)):
        if labels is not None or (Path(source) / LABELS_FILE).is_file():
            return LabelledFolder(source, labels)
    elif labels is not None:
        raise FeatvizError("a labels file goes with a folder of photos, not with "
                           f"a {type(source).__name__}")
    return source


def _label_of(source: Source, item: object, name: str) -> Label | None:
    """The class of an item: from a labelled folder, or a torchvision-style ``(image, int)``
    item (named from the dataset's ``classes`` where it has them)."""
    if isinstance(source, LabelledFolder):
        return source.label(name)
    if isinstance(item, tuple) and len(item) > 1 and isinstance(item[1], int):
        names = getattr(source, "classes", None)
        idx = item[1]
        shown = str(names[idx]) if names is not None and 0 <= idx < len(names) else str(idx)
        return Label(idx, shown)
    return None
