"""Argument types of the ``featviz`` command, for argparse's ``type=``.

Each turns one option's text into its value, or raises :class:`argparse.ArgumentTypeError`
with a message that names the bad value and what would be right. They run while the command
line is parsed, so a mistake is reported (one line, exit status 2) before a model loads or a
render starts. Outputs are checked there too: the suffix names a format that can be written,
the path is a regular file or can become one, and its folder takes a new file.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..core.files import output_path
from ..core.images import image_format
from ..errors import FeatvizError
from .devices import available_devices, present

#: The largest ``--steps`` (and ``--samples``): far past any useful render, and small enough
#: that a typo such as ``--steps 100000000000`` is caught instead of running for years.
MAX_STEPS = 1_000_000
#: Image sizes in pixels: below 16 most networks' deeper layers have no spatial extent left;
#: above 8192 one Fourier image alone takes gigabytes.
MIN_SIZE, MAX_SIZE = 16, 8192
#: Seeds are signed 64-bit numbers (what torch's generators take), with room left above for
#: ``seed + image`` and the per-use stream offsets.
MAX_SEED = 2**63 - 1


def whole_number(low: int, high: int | None = None, unit: str = "") -> Callable[[str], int]:
    """An argument type for a whole number from ``low`` to ``high`` (no upper limit when None);
    ``unit`` (e.g. ``"pixels"``) is named in the message.

    Args:
        low: the smallest value accepted.
        high: the largest value accepted; None for no upper limit.
        unit: a unit named in the error message; empty for none.
    """
    span = f"from {low} to {high}" if high is not None else f"at least {low}"
    span += f" {unit}" if unit else ""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number {span}, "
                                             f"got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
        return value

    convert.__name__ = "whole number"  # argparse names the type by it in its own messages
    return convert


steps = whole_number(0, MAX_STEPS)
positive = whole_number(1)
index = whole_number(0)
side = whole_number(MIN_SIZE, MAX_SIZE, "pixels")
samples = whole_number(1, MAX_STEPS)
seed = whole_number(0, MAX_SEED)


def size(text: str) -> int | tuple[int, int]:
    """An image size: one side (``224``, a square) or ``HxW``, height x width (``224x320``:
    224 high, 320 wide), each side from MIN_SIZE to MAX_SIZE pixels. A single number is read
    (and refused) as :data:`side` reads it; ``HxH`` comes back as its side, so both spellings
    of a square run and record alike.

    Args:
        text: the option's text.
    """
    if "x" not in text.lower():
        return side(text)
    height, _, width = text.lower().partition("x")
    try:
        h, w = side(height.strip()), side(width.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be one side or HxW (height x width, e.g. 224x320), each a whole number "
            f"from {MIN_SIZE} to {MAX_SIZE} pixels; got {text!r}") from None
    return h if h == w else (h, w)


def _number(text: str, ok: Callable[[float], bool], rule: str) -> float:
    """``text`` as a finite float that passes ``ok``; else an argparse error saying ``rule``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above zero, such as a learning rate.

    Args:
        text: the command-line text: a number above zero.
    """
    return _number(text, lambda v: v > 0, "a finite number above 0 (e.g. 0.05)")


def non_negative_float(text: str) -> float:
    """A finite number of at least zero, such as a floor that 0 turns off.

    Args:
        text: the command-line text: a number of at least zero.
    """
    return _number(text, lambda v: v >= 0, "a finite number of at least 0 (e.g. 1)")


def finite_float(text: str) -> float:
    """Any finite number, such as an objective value to reach.

    Args:
        text: the command-line text: a finite number.
    """
    return _number(text, lambda v: True, "a finite number (e.g. 250)")


def _per_channel(text: str, positive_only: bool) -> tuple[float, ...]:
    """Finite numbers separated by commas, one for all channels or one per input channel
    (3 for RGB, 1 for grayscale, N bands), above zero when ``positive_only``. Whether the
    count fits the model is checked when the model is loaded."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"must be numbers separated by commas, one per input "
                                         f"channel (e.g. 0.5,0.5,0.5) or one for all, got "
                                         f"{text!r}")
    if not all(math.isfinite(v) and (v > 0 or not positive_only) for v in values):
        kind = "finite numbers above 0" if positive_only else "finite numbers"
        raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}")
    return values


def model_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` for a timm or Hugging Face builder, e.g. ``in_chans=1`` or
    ``img_size=64``: the value is read as a whole number, a number, true/false or none where it
    is one, else kept as text.

    Args:
        text: the command-line text: ``KEY=VALUE``.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE with a Python name as KEY (e.g. "
                                         f"in_chans=1), got {text!r}")
    words = {"true": True, "false": False, "none": None}
    value: object = words.get(raw.strip().lower(), raw)
    for kind in (int, float):
        if value is raw:
            with contextlib.suppress(ValueError):
                value = kind(raw)
    return key.strip(), value


def mean(text: str) -> tuple[float, ...]:
    """The input normalization mean: one finite number per input channel (or one for all),
    e.g. ``0.5,0.5,0.5``.

    Args:
        text: the command-line text: one or more numbers separated by commas.
    """
    return _per_channel(text, positive_only=False)


def std(text: str) -> tuple[float, ...]:
    """The input normalization std: one number above zero per input channel (or one for all;
    the input is divided by them).

    Args:
        text: the command-line text: one or more numbers above zero separated by commas.
    """
    return _per_channel(text, positive_only=True)


def step_list(text: str) -> list[int]:
    """Step numbers separated by commas, e.g. ``32,128,512``, each from 0 to MAX_STEPS.

    Args:
        text: the command-line text: step numbers separated by commas.
    """
    convert = whole_number(0, MAX_STEPS)
    try:
        return [convert(v) for v in text.split(",") if v]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be step numbers from 0 to {MAX_STEPS} "
                                         f"separated by commas, e.g. 32,128,512; "
                                         f"got {text!r}") from None


def position(text: str) -> tuple[int, int]:
    """A position ``Y,X`` in a layer's map: two whole numbers from 0.

    Args:
        text: the command-line text: ``Y,X``.
    """
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"must be Y,X: two whole numbers from 0, e.g. 3,4; "
                                         f"got {text!r}")
    return int(parts[0]), int(parts[1])


def channel_list(text: str) -> list[int]:
    """Channels as ``12``, ``0-63``, ``1,5,9`` or a mix such as ``0-3,8``.

    Args:
        text: the command-line text: a channel list such as ``0-3,8``.
    """
    from ..core.objectives import parse_channels

    try:
        return parse_channels(text)
    except FeatvizError:  # its message is about objective strings, of which this is none
        raise argparse.ArgumentTypeError(f"must be channels such as 12, 0-7, 1,5,9 or 0-3,8; "
                                         f"got {text!r}") from None


def layer_list(text: str) -> list[str]:
    """Comma-separated layer names, blanks dropped; at least one.

    Args:
        text: the command-line text: layer names separated by commas.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"names no layer: {text!r} (give layer names "
                                         "separated by commas, e.g. features.2,features.7; "
                                         "`featviz layers --model NAME` lists them)")
    return names


def device(text: str) -> str:
    """A torch device this machine has: ``cpu``, ``cuda``, ``cuda:1``, ``mps``...

    Args:
        text: the command-line text: a device name such as ``cuda:1``.
    """
    import torch

    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"names an unknown device {text!r}; this machine "
                                         f"has: {', '.join(available_devices())}") from None
    if dev.type != "cpu" and not present(dev):
        raise argparse.ArgumentTypeError(f"names {text!r}, a device this machine does not "
                                         f"have; it has: {', '.join(available_devices())}")
    return text


def existing_file(text: str) -> str:
    """A path to an existing file (an input such as an image).

    Args:
        text: the command-line text: a file path.
    """
    if not Path(text).is_file():
        what = "a folder" if Path(text).is_dir() else "not found"
        raise argparse.ArgumentTypeError(f"must be an existing file, got {text!r} ({what})")
    return text


def _checked(text: str, *checks: Callable[[str], object]) -> str:
    """``text`` after ``checks``, whose FeatvizError becomes an argument error."""
    try:
        for check in checks:
            check(text)
    except FeatvizError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def writable(path: str | os.PathLike) -> Path:
    """Check that ``path`` can be written: a regular file or none yet (a symlink counts as
    its target), in a folder that exists or can be made and takes a new file (tried with a
    temporary file, the only check that holds for read-only mounts, ``/proc`` and the like).
    Returns where the file will land; a FeatvizError naming ``path`` otherwise.

    Args:
        path: the file path to check.
    """
    target = output_path(path)
    try:
        with tempfile.TemporaryFile(dir=target.parent):
            pass
    except OSError as err:
        raise FeatvizError(f"cannot write {path}: {err.strerror} in {target.parent}") from None
    return target


def _suffixed(text: str, what: str, examples: str) -> str:
    """``text`` when it ends in a suffix; else an argument error naming it and suggesting
    ``text.png``: a name without one would be written as a PNG that no viewer, browser or
    file manager recognizes as an image. A folder is left to :func:`writable`, whose message
    (it is a folder, give a file path) says more."""
    if not Path(text).suffix and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"needs a suffix such as {examples} that names the "
                                         f"{what} format, got {text!r}: write {text}.png")
    return text


def image_out(text: str) -> str:
    """An image file to write: a suffix PIL can write (.png, .jpg, ...), at a path that can be
    written. A name without a suffix is refused, with ``NAME.png`` suggested.

    Args:
        text: the option's text.
    """
    return _checked(_suffixed(text, "image", ".png or .jpg"), image_format, writable)


def sheet_out(text: str) -> str:
    """``featviz render --out``: what :func:`image_out` takes, and also a name without a
    suffix, which the command refuses itself once it knows how many images there are (with
    several, ``NAME.png`` is the contact sheet and the images go into the folder ``NAME/``).

    Args:
        text: the option's text.
    """
    return _checked(text, image_format, writable)


def gif_out(text: str) -> str:
    """An animated GIF to write: a ``.gif`` path that can be written.

    Args:
        text: the command-line text: a ``.gif`` path.
    """
    if Path(text).suffix.lower() != ".gif":
        raise argparse.ArgumentTypeError(f"must be a .gif file, got {text!r}")
    return _checked(text, writable)


def plot_out(text: str) -> str:
    """A figure to write with matplotlib: a suffix it can write (.png, .pdf, .svg, ...), at a
    path that can be written. A name without a suffix is refused, with ``NAME.png`` suggested.

    Args:
        text: the option's text.
    """
    suffix = Path(_suffixed(text, "figure", ".png or .pdf")).suffix.lower().lstrip(".")
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:  # the plot itself says how to install matplotlib
        formats = None
    else:
        formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if suffix and formats is not None and suffix not in formats:
        raise argparse.ArgumentTypeError(f"cannot write {text}: '.{suffix}' is not a figure "
                                         f"format; use one of .{', .'.join(formats)}")
    return _checked(text, writable)


def file_out(text: str) -> str:
    """A file to write (an HTML page): a path that can be written.

    Args:
        text: the command-line text: a file path.
    """
    return _checked(text, writable)


def folder_out(text: str) -> str:
    """A folder to write into (made when missing): an error when a file stands there or the
    folder takes no new file.

    Args:
        text: the command-line text: a folder path.
    """
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"must be a folder, got {text!r}, a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot write into {text}: {err.strerror}") from None
    return text


def positions(text: str) -> str | int:
    """Positions of each image's map to keep: ``all`` or a whole number >= 1 (random ones).

    Args:
        text: the command-line text: ``all`` or a whole number.
    """
    if text == "all":
        return text
    return whole_number(1)(text)


def existing_folder(text: str) -> str:
    """A path to an existing folder (of images).

    Args:
        text: the command-line text: a folder path.
    """
    if not Path(text).is_dir():
        what = "a file" if Path(text).is_file() else "not found"
        raise argparse.ArgumentTypeError(f"must be an existing folder, got {text!r} ({what})")
    return text
