"""featviz's cache of model weights, and downloads that land in it only whole and checked.

The cache is the folder ``$FEATVIZ_MODELS`` names, else the platform's user cache folder for
featviz (``platformdirs.user_cache_dir("featviz")``: ``~/.cache/featviz`` on Linux,
``~/Library/Caches/featviz`` on macOS). :func:`downloaded` streams a URL into a hidden
temporary file in that folder, with a progress bar, checks its SHA-1 and hands the file to the
caller; the temporary file is deleted afterwards whatever happened, so a broken-off download
leaves nothing that a later call could take for the file, and the next call starts afresh.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from ..errors import WeightsError

#: the variable that names featviz's cache folder of model weights
CACHE_ENV = "FEATVIZ_MODELS"
#: seconds one network read may wait before the download counts as broken off
TIMEOUT_S = 60
#: a temporary download untouched this long is the leftover of a killed process (a running
#: download writes to its file many times a second), so the next download removes it
STALE_S = 3600
_CHUNK = 1 << 20
_SUFFIX = ".part"


class DownloadError(WeightsError):
    """A download that could not start, broke off, or gave another file than the published
    one (its SHA-1)."""


def cache_folder(env: str = CACHE_ENV) -> Path:
    """The folder featviz keeps model weights in: the one ``$env`` names, else the
    platform's user cache folder for featviz.

    Args:
        env: the environment variable that may name the folder.
    """
    folder = os.environ.get(env)
    return Path(folder).expanduser() if folder else Path(platformdirs.user_cache_dir("featviz"))


@contextmanager
def downloaded(url: str, folder: Path, sha1: str, name: str) -> Iterator[Path]:
    """Download ``url`` into a temporary file in ``folder``, check it and yield its path; the
    file is deleted when the block ends (move what you keep out of it first, or write a
    converted copy).

    Args:
        url: where the file is (``http://``, ``https://`` or ``file://``).
        folder: the cache folder it goes to (made when missing); the temporary file lies
            beside the files the caller writes, so their final rename stays on one disk.
        sha1: the file's published SHA-1, hex.
        name: the file's name, for the progress bar and messages.

    Raises:
        WeightsError: the folder cannot be written (the message names it and
            ``$FEATVIZ_MODELS``).
        DownloadError: the URL cannot be reached, the download broke off or ended early, or
            the file's SHA-1 is not ``sha1`` (the message names the URL).
    """
    part = _part_file(folder, name)
    try:
        got, size = _fetch(url, part, name)
        if got != sha1.lower():
            raise DownloadError(f"the download of {name} from {url} ({size} bytes) has SHA-1 "
                               f"{got}, not the published {sha1.lower()}: it is damaged or "
                               "another file (deleted; nothing was kept)")
        yield part
    finally:
        part.unlink(missing_ok=True)


def _part_file(folder: Path, name: str) -> Path:
    """A fresh temporary file for the download in ``folder``: made before anything is
    downloaded, so a folder that cannot be written is said at once."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=_SUFFIX, dir=folder)
    except OSError as err:
        raise WeightsError(f"featviz cannot write to its cache folder {folder} "
                           f"({err.strerror or err}): set {CACHE_ENV} to a folder you can "
                           "write, and the weights are kept there") from None
    os.close(handle)
    _remove_stale(folder, name, keep=Path(path))
    return Path(path)


def _remove_stale(folder: Path, name: str, keep: Path) -> None:
    """Remove the temporary files of downloads of ``name`` that a killed process left."""
    now = time.time()
    for old in folder.glob(f".{name}.*{_SUFFIX}"):
        try:
            if old != keep and now - old.stat().st_mtime > STALE_S:
                old.unlink()
        except OSError:  # gone already, or not ours to remove: it does not hold us up
            pass


def _fetch(url: str, part: Path, name: str) -> tuple[str, int]:
    """Stream ``url`` into ``part`` with a progress bar; the SHA-1 (hex) and the size."""
    from tqdm.auto import tqdm  # here: only a download needs it

    digest, size, total, answered = hashlib.sha1(), 0, None, False
    request = urllib.request.Request(url, headers={"User-Agent": "featviz"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            answered, total = True, _length(response)
            with open(part, "wb") as out, tqdm(total=total, desc=f"downloading {name}",
                                               unit="B", unit_scale=True,
                                               unit_divisor=1024) as bar:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
        if not answered:
            raise DownloadError(f"cannot download {name} from {url} ({_reason(err)})") from None
        raise DownloadError(f"the download of {name} from {url} broke off after {size} bytes "
                           f"({_reason(err)}); nothing was kept") from None
    if total is not None and size != total:
        raise DownloadError(f"the download of {name} from {url} ended after {size} of {total} "
                           "bytes (the connection closed early); nothing was kept")
    return digest.hexdigest(), size


def _length(response: http.client.HTTPResponse) -> int | None:
    """The length the server announced, if any."""
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _reason(err: BaseException) -> str:
    """What went wrong, in a few words."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__
