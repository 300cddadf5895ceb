"""Writing output files safely: every featviz writer goes through :func:`write_atomic`.

A file is written to a temporary file beside its target and renamed onto it, so a crash or a
kill never leaves half a file. Only regular files are replaced: a symlink is followed (its
target is replaced, the link stays), and a device node, FIFO, socket or folder at the path is
refused with a message, never turned into a regular file. A new file gets the mode a plain
``open()`` gives (0666 less the umask: 0644 under the usual 022), a replaced file keeps its own,
and folders are made with plain ``mkdir`` modes, so pages and images copied to a web server or a
shared folder stay readable there.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FeatvizError

if TYPE_CHECKING:
    import torch

_KINDS = [(stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket")]


def output_path(path: str | os.PathLike) -> Path:
    """Where writing ``path`` really lands (a symlink's final target), after checking that it
    can: an error naming ``path`` when it is not a regular file, or when its folder cannot be
    made (a file in the way, no permission).

    Args:
        path: The file to write (may be a symlink); its folder is made if missing.
    """
    path = Path(path)
    target = Path(os.path.realpath(path))
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        raise FeatvizError(f"cannot write {path}: a file stands where its folder should be "
                           f"({_first_file(target.parent)})") from None
    except OSError as err:
        raise FeatvizError(f"cannot write {path}: {err.strerror}") from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise FeatvizError(f"cannot write {path}: it is {kind}; featviz writes only regular "
                           "files, give a file path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FeatvizError(f"cannot write {path}: a file stands where its folder should be "
                           f"({_first_file(target.parent)})") from None
    except OSError as err:
        raise FeatvizError(f"cannot write {path}: cannot make its folder {target.parent} "
                           f"({err.strerror})") from None
    return target


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``'s real target, then rename
    it onto the target (see :func:`output_path`); returns ``path``. OS errors become a
    :class:`~featviz.errors.FeatvizError` naming ``path``.

    The file that lands has the mode a plain ``open()`` would give it (0666 less the umask),
    or, when it replaces a file, that file's mode.

    Args:
        path: the file to write (a symlink is followed).
        write: fills the temporary file whose path it is given.
    """
    target = output_path(path)
    try:
        old_mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        old_mode = None
    except OSError as err:
        raise FeatvizError(f"cannot write {path}: {err.strerror}") from None
    try:
        tmp = _new_file(target)
    except OSError as err:
        raise FeatvizError(f"cannot write {path}: {err.strerror} in {target.parent}") from None
    try:
        write(tmp)
        if old_mode is not None:
            os.chmod(tmp, old_mode)
        os.replace(tmp, target)
    except OSError as err:
        raise FeatvizError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return Path(path)


def _new_file(target: Path) -> Path:
    """A new empty file beside ``target`` with an unused name, ``.NAME.XXXXXXXX.tmp``.

    Made with ``os.open(..., 0o666)`` rather than :func:`tempfile.mkstemp`: mkstemp makes
    every file 0600 whatever the umask, and the rename would carry that mode to the target;
    here the kernel applies the umask (and a folder's default ACL) as for ``open()``.
    ``O_EXCL`` keeps mkstemp's safety: an existing file or symlink is never opened.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:  # another writer's temporary file: draw another name
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(target.parent))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: The file to write; replaced whole, never left half-written.
        text: What to write, encoded as UTF-8.
    """
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _first_file(folder: Path) -> Path:
    """The first part of ``folder`` that exists and is not a folder."""
    for part in [*reversed(folder.parents), folder]:
        if part.exists() and not part.is_dir():
            return part
    return folder


def read_tensor(path: str | os.PathLike, what: str) -> torch.Tensor:
    """A float32 tensor saved with ``torch.save`` (.pt, .pth) or ``numpy.save`` (.npy); an
    error naming ``what`` and the path when it is missing, unreadable or not a tensor.

    Args:
        path: A ``.pt``/``.pth`` file (``torch.save``) or ``.npy`` file (``numpy.save``).
        what: What the tensor is for (e.g. ``"direction"``), named in errors.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FeatvizError(f"{what} file not found: {path}")
    try:
        if path.suffix.lower() == ".npy":
            import numpy as np

            return torch.from_numpy(np.load(path)).float()
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means the same to the user
        raise FeatvizError(f"cannot read {what} file {path}: {err}") from err
    if not torch.is_tensor(value):
        raise FeatvizError(f"{path} holds a {type(value).__name__}, not a tensor {what}")
    return value.float()


def safe_name(text: str) -> str:
    """``text`` as a file name part: each run of characters other than ``A-Za-z0-9._-``
    becomes one ``_``, with none at either end (empty when nothing safe is left).

    Args:
        text: Any text, e.g. a layer's name.
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def folder_name(layer: str) -> str:
    """The folder of ``layer``'s channel images: the name with anything but ``A-Za-z0-9._-``
    replaced (:func:`safe_name`), ``layer`` when nothing is left.

    Args:
        layer: The layer's name, as the objective gives it.
    """
    return safe_name(layer) or "layer"


def image_file(layer: str, channel: int) -> str:
    """Where a channel's visualization lies, relative to a sweep's folder (or any folder of
    channel renders, as the semantic dictionary keeps them).

    Args:
        layer: The layer's name; its folder is :func:`folder_name`.
        channel: The channel's index, written with four digits (``c0007.png``).
    """
    return f"{folder_name(layer)}/c{channel:04d}.png"
