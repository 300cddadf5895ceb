"""Direction files: a vector of one weight per channel, saved with torch.save or numpy.save."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import numpy as np
import torch

from ...errors import FeatvizError

_VECTOR_FILE = ("a 1-D tensor of one weight per channel, saved with torch.save(v, 'v.pt') or "
                "numpy.save('v.npy', v)")


def load_vector(path: str | os.PathLike) -> torch.Tensor:
    """Read a direction vector: a 1-D tensor saved with ``torch.save`` or an array saved with
    ``numpy.save`` (told apart by content, not by suffix), as float32. Anything else — a
    missing file, a text file, a dict, a 2-D tensor — raises a :class:`FeatvizError` naming
    the path and what the file should hold.

    Args:
        path: the file.
    """
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "not found"
        raise FeatvizError(f"direction vector file {state}: {path} (it should hold "
                           f"{_VECTOR_FILE})")
    try:
        value = _read_array(path)
    except Exception:  # noqa: BLE001 - any reader failure means the same to the user
        raise FeatvizError(f"cannot read direction vector file {path}: {_not_an_array(path)}"
                           f"; it should hold {_VECTOR_FILE}") from None
    return _as_vector(path, value)


def _read_array(path: Path):
    with path.open("rb") as f:
        numpy_file = f.read(6) == b"\x93NUMPY"  # numpy.save's magic string
    if numpy_file:
        return np.load(path, allow_pickle=False)
    return torch.load(path, map_location="cpu", weights_only=True)


def _not_an_array(path: Path) -> str:
    """Why ``path`` could not be read, in the user's terms rather than the unpickler's."""
    with path.open("rb") as f:
        head = f.read(200)
    if not head:
        return "it is empty"
    try:  # an incremental decoder does not fail on a character cut at byte 200
        text = codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text or not text.strip():
        return "it is neither a torch.save nor a numpy.save file"
    first = text.strip().splitlines()[0]
    return (f"it is a text file (it starts {first[:40]!r}); write the numbers with "
            "torch.save(torch.tensor([...]), 'v.pt') instead")


def _as_vector(path: Path, value) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not torch.is_tensor(value):
        raise FeatvizError(f"direction vector file {path} holds a {type(value).__name__}, not a "
                           f"tensor; it should hold {_VECTOR_FILE}")
    numeric = value.is_floating_point() or value.dtype in _INTEGER_DTYPES
    if value.squeeze().dim() > 1 or value.numel() == 0 or not numeric:
        raise FeatvizError(f"direction vector file {path} holds a {value.dtype} tensor of shape "
                           f"{list(value.shape)}; it should hold {_VECTOR_FILE}")
    value = value.float().flatten()
    if not torch.isfinite(value).all():
        raise FeatvizError(f"direction vector file {path} holds NaN or infinite weights")
    return value


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
