"""Error types of featviz, the helper that suggests the names a user probably meant, and the
check of a setting that must be a number >= 0."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any


class FeatvizError(Exception):
    """Base class of the errors featviz raises for bad input."""


class UnknownNameError(FeatvizError, KeyError):
    """A model, layer or alias name that does not exist."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class ChannelError(FeatvizError, IndexError):
    """A channel or position outside the valid range of a layer."""


class ObjectiveSyntaxError(FeatvizError, ValueError):
    """An objective string that does not follow the grammar."""


class MismatchError(FeatvizError, ValueError):
    """A value that does not fit the model it is used with (e.g. normalization statistics of
    another channel count)."""


class WeightsError(FeatvizError, RuntimeError):
    """Weights that cannot be found, downloaded or loaded into the architecture."""


class NonFiniteLossError(FeatvizError, FloatingPointError):
    """The loss became NaN or infinite during an optimization."""


class SizeError(FeatvizError, ValueError):
    """An image size that is neither one side nor (height, width), or a rectangle given to a
    method that takes squares only."""


def closest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` of ``candidates`` that look most like ``name``.

    Uses difflib's ratio first; when nothing is close enough it falls back to the candidates
    that share the longest prefix, so a user always gets some real names to look at.

    Args:
        name: The name that was not found.
        candidates: The real names.
        n: At most this many are returned (default 5).
    """
    candidates = list(candidates)
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if found:
        return found

    def shared_prefix(c: str) -> int:
        k = 0
        while k < min(len(c), len(name)) and c[k] == name[k]:
            k += 1
        return k

    return sorted(candidates, key=lambda c: (-shared_prefix(c), len(c)))[:n]


def unknown(kind: str, name: str, candidates: Iterable[str], hint: str = "") -> UnknownNameError:
    """Build the error for an unknown ``kind`` (``"layer"``, ``"model"``...) named ``name``.

    Args:
        kind: What was named, e.g. ``"layer"``.
        name: The name that was not found.
        candidates: The real names; the closest are suggested.
        hint: Added to the message in parentheses when not empty (default none).
    """
    near = closest(name, candidates)
    msg = f"unknown {kind} {name!r}"
    if near:
        msg += "; closest: " + ", ".join(repr(c) for c in near)
    if hint:
        msg += f" ({hint})"
    return UnknownNameError(msg)


def non_negative(name: str, value: Any, meaning: str) -> float:
    """``value`` as a float when it is a finite number >= 0 (not a bool), else an error naming
    the setting, what it means and the bad value.

    Args:
        name: The setting's name.
        value: The value given.
        meaning: What the setting means, for the error.
    """
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if not ok or not math.isfinite(value) or value < 0:
        raise FeatvizError(f"{name} must be a number >= 0 ({meaning}), got {value!r}")
    return float(value)
