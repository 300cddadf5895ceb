"""Image sizes: one side (a square image) or ``(height, width)``.

Every ``size=`` of featviz takes both forms (lucid renders any width x height). This is the one
place that reads them, so that each room accepts the same spellings and refuses the same
mistakes with the same words. Height comes first, as in a tensor's ``[..., H, W]``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from ..errors import SizeError

#: A size as a user gives it: one side in pixels, or (height, width).
SizeLike = int | Sequence[int]


def _whole(value: object, size: object) -> int:
    """``value`` as an int (numpy and 0-d tensor integers included; no bools, no floats)."""
    if isinstance(value, bool):
        raise SizeError(f"an image size is a whole number of pixels or (height, width), "
                        f"got {size!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise SizeError(f"an image size is a whole number of pixels or (height, width), "
                        f"got {size!r}") from None


def hw(size: SizeLike) -> tuple[int, int]:
    """The (height, width) of ``size``.

    Args:
        size: one side (a square) or a pair (height, width): a tuple, list or torch.Size.
    """
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence):
        side = _whole(size, size)
        return side, side
    if len(size) != 2:
        raise SizeError(f"an image size is one side or (height, width), got {size!r} "
                        f"({len(size)} numbers)")
    return _whole(size[0], size), _whole(size[1], size)


def compact(size: SizeLike) -> int | tuple[int, int]:
    """``size`` in its shortest form: the side of a square, (height, width) of a rectangle, so
    that ``(224, 224)`` and ``224`` take the same path and are recorded alike.

    Args:
        size: one side or (height, width).
    """
    h, w = hw(size)
    return h if h == w else (h, w)


def is_square(size: SizeLike) -> bool:
    """Whether ``size`` describes a square image.

    Args:
        size: one side or (height, width).
    """
    h, w = hw(size)
    return h == w


def text(size: SizeLike) -> str:
    """``size`` as people write it: ``"48x80"`` (height x width), ``"224x224"`` for a side.

    Args:
        size: one side or (height, width).
    """
    h, w = hw(size)
    return f"{h}x{w}"


def side(size: SizeLike, method: str, why: str = "") -> int:
    """The side of a square ``size``; a rectangle is a :class:`~featviz.errors.SizeError`
    naming ``method`` and what it takes.

    Args:
        size: one side or (height, width).
        method: the function or command that needs a square, as the user calls it.
        why: the reason it needs one, said after the refusal (optional).
    """
    h, w = hw(size)
    if h != w:
        reason = f" ({why})" if why else ""
        raise SizeError(f"{method} takes square images only{reason}: give size as one side "
                        f"in pixels, not {h}x{w} (height x width)")
    return h
