"""The :class:`Objective` and its algebra, and :func:`builder`, which names what a builder makes.

An :class:`Objective` maps ``{layer name: activation}`` to one value per batch element (shape
``[B]``) and knows which layers it needs, so that only those are hooked. Objectives combine with
``+ - * /`` and scalars; ``batch=i`` makes an objective drive only image ``i`` of the batch.
A function decorated with :func:`builder` returns an unnamed objective; the decorator names it
after the function and its arguments (``channel(mixed4a, 476)``) and handles ``batch=``.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec

import torch

from ...errors import FeatvizError

Acts = Mapping[str, torch.Tensor]
P = ParamSpec("P")


class Objective:
    """A differentiable score of activations, one value per batch element.

    ``fn(acts)`` returns a tensor of shape ``[B]``; ``layers`` names the layers it reads
    (:data:`~featviz.hooks.INPUT` for the image, :data:`~featviz.hooks.OUTPUT` for the logits);
    ``batch_size`` is the smallest batch it needs (an objective with ``batch=3`` needs 4).
    ``channels`` names, for a layer it reads only some channels of, those channels (a layer
    not in it is read whole); a render may leave out what feeds only the other channels.
    ``name`` may be left empty by the body of a :func:`builder`, which names the result.
    ``pace`` is the course the objective declares for ``render(pace="auto")`` (``"fast"`` or
    ``"careful"``, see :data:`~featviz.core.render.options.PACES`; None: it declares none);
    a combination is careful where any part is.
    """

    def __init__(self, fn: Callable[[Acts], torch.Tensor], layers: Iterable[str], name: str = "",
                 batch_size: int = 0, targets: Mapping[int, str] | None = None,
                 channels: Mapping[str, Iterable[int]] | None = None, pace: str | None = None):
        self.fn = fn
        self.layers = frozenset(layers)
        self.name = name
        self.batch_size = batch_size
        # image index -> name of what drives that image alone (for labels of batched renders)
        self.targets = dict(targets or {})
        self.channels = {k: frozenset(v) for k, v in (channels or {}).items()
                         if k in self.layers}
        if pace not in (None, "fast", "careful"):
            raise FeatvizError(f"an objective's pace is 'fast', 'careful' or None, got {pace!r}")
        self.pace = pace

    def label(self, i: int) -> str:
        """A short description of what drives image ``i`` of the batch."""
        return self.targets.get(i, self.name)

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def on(self, batch: int) -> Objective:
        """This objective driving image ``batch`` of the batch alone (others get 0)."""
        if self.targets:
            raise FeatvizError(f"{self.name} already drives particular images of the batch")
        return Objective(_on_element(self.fn, batch, self.name), self.layers,
                         f"{self.name}@{batch}", batch + 1, {batch: self.name}, self.channels,
                         self.pace)

    # -- algebra -------------------------------------------------------------------------
    def _combine(self, other: Objective | float, op, symbol: str, flip: bool = False) -> Objective:
        if isinstance(other, Objective):
            a, b = (other, self) if flip else (self, other)
            targets = dict(a.targets)
            for i, name in b.targets.items():
                targets[i] = f"{targets[i]} {symbol} {name}" if i in targets else name
            return Objective(lambda acts: op(a(acts), b(acts)), a.layers | b.layers,
                             f"({a.name} {symbol} {b.name})", max(a.batch_size, b.batch_size),
                             targets, merge_channels(a, b), merge_pace(a.pace, b.pace))
        if not isinstance(other, numbers.Real):
            return NotImplemented
        c = float(other)
        if flip:
            return Objective(lambda acts: op(c, self(acts)), self.layers,
                             f"({_num(c)} {symbol} {self.name})", self.batch_size, self.targets,
                             self.channels, self.pace)
        return Objective(lambda acts: op(self(acts), c), self.layers,
                         f"({self.name} {symbol} {_num(c)})", self.batch_size, self.targets,
                         self.channels, self.pace)

    def __add__(self, other):
        return self._combine(other, lambda a, b: a + b, "+")

    def __radd__(self, other):
        if isinstance(other, numbers.Real) and other == 0:  # lets sum([...]) work
            return self
        return self._combine(other, lambda a, b: a + b, "+", flip=True)

    def __sub__(self, other):
        return self._combine(other, lambda a, b: a - b, "-")

    def __rsub__(self, other):
        return self._combine(other, lambda a, b: a - b, "-", flip=True)

    def __mul__(self, other):
        return self._combine(other, lambda a, b: a * b, "*")

    def __rmul__(self, other):
        return self._combine(other, lambda a, b: a * b, "*", flip=True)

    def __truediv__(self, other):
        if isinstance(other, numbers.Real) and other == 0:
            raise ZeroDivisionError(f"dividing objective {self.name} by zero")
        return self._combine(other, lambda a, b: a / b, "/")

    def __neg__(self):
        return Objective(lambda acts: -self(acts), self.layers, f"-{self.name}", self.batch_size,
                         self.targets, self.channels, self.pace)

    @staticmethod
    def sum(objectives: Iterable[Objective]) -> Objective:
        """Add a list of objectives (each may drive its own batch element)."""
        objectives = list(objectives)
        if not objectives:
            raise ValueError("Objective.sum needs at least one objective")
        total = objectives[0]
        for o in objectives[1:]:
            total = total + o
        return total


def merge_channels(a: Objective, b: Objective) -> dict[str, frozenset[int]]:
    """The channels two objectives read together: per layer the union, where both read only
    some; a layer either reads whole is read whole.

    Args:
        a: One objective.
        b: The other objective.
    """
    merged = {}
    for layer in a.layers | b.layers:
        parts = [o.channels.get(layer) for o in (a, b) if layer in o.layers]
        if all(p is not None for p in parts):
            merged[layer] = frozenset().union(*parts)
    return merged


def _num(c: float) -> str:
    return f"{c:g}"


def _on_element(obj_fn: Callable[[Acts], torch.Tensor], batch: int | None, name: str):
    """Evaluate ``obj_fn`` on batch element ``batch`` only; other elements get 0."""
    if batch is None:
        return obj_fn
    if not isinstance(batch, int) or batch < 0:
        raise ValueError(f"batch must be a non-negative image index, got {batch!r}")

    def fn(acts: Acts) -> torch.Tensor:
        size = _batch_size(acts)
        if batch >= size:
            raise FeatvizError(f"objective {name} drives image {batch} of the batch, but the "
                               f"batch has {size} images (valid: 0-{size - 1})")
        value = obj_fn({k: v[batch:batch + 1] for k, v in acts.items()})
        mask = torch.zeros(size, device=value.device, dtype=value.dtype)
        mask[batch] = 1
        return mask * value

    return fn


def merge_pace(a: str | None, b: str | None) -> str | None:
    """The pace two combined objectives declare: careful where either is (a part that needs
    the careful course still needs it in a sum), else what either declares.

    Args:
        a: one part's pace, or None.
        b: the other's, or None.
    """
    if "careful" in (a, b):
        return "careful"
    return a or b


def _batch_size(acts: Acts) -> int:
    return next(iter(acts.values())).shape[0]


def _on_one(o: Objective, batch: int) -> Objective:
    """``o`` driving image ``batch`` alone, labelled ``name@batch`` (a builder's ``batch=``)."""
    label = f"{o.name}@{batch}"
    return Objective(_on_element(o.fn, batch, label), o.layers, label, batch + 1, {batch: o.name},
                     o.channels, o.pace)


def _mean_rest(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).mean(dim=1)


# -- builders: display names from the definition -------------------------------------
def show_value(value: Any) -> str:
    """How an argument reads in a display name: an objective by its name, a whole number as
    one, other numbers as ``%g``, anything else as ``str``.

    Args:
        value: the argument as the caller gave it.
    """
    if isinstance(value, Objective):
        return value.name
    if torch.is_tensor(value) and value.numel() == 1:  # a 0-d index reads as its number
        value = value.item()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return _num(float(value))
    return str(value)


class _Naming:
    """The display name of a builder's call: ``kind(arguments)``, see :func:`builder`."""

    def __init__(self, kind: str, signature: inspect.Signature, bare: Iterable[str],
                 show: Mapping[str, Callable[[Any], str] | None]):
        self.kind, self.signature, self.bare = kind, signature, frozenset(bare)
        self.show = {p: show.get(p, show_value) for p in signature.parameters if p != "batch"}

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    def name(self, arguments: Mapping[str, Any]) -> str:
        params = [p for p in self.signature.parameters.values() if self.show.get(p.name)]
        # arguments that default to None (a position x, y) show all together once one is given
        optional = [p for p in params if p.default is None and p.name not in self.bare]
        together = any(arguments[p.name] is not None for p in optional)
        parts = []
        for p in params:
            value, text = arguments[p.name], self.show[p.name]
            if p.default is p.empty or p.name in self.bare:
                if value is not None:
                    parts.append(text(value))
            elif (together if p.default is None else value != p.default):
                parts.append(f"{p.name}={text(value)}")
        return f"{self.kind}({', '.join(parts)})"


def builder(kind: str | None = None, *, bare: Iterable[str] = (),
            show: Mapping[str, Callable[[Any], str] | None] | None = None
            ) -> Callable[[Callable[P, Objective]], Callable[P, Objective]]:
    """Decorate a function whose body returns an unnamed :class:`Objective`: each call's result
    is named ``kind(arguments)`` from the call (lucid's ``wrap_objective`` idea) and, where the
    function takes ``batch``, drives image ``batch`` alone when it is given (named ``...@batch``).

    Arguments without a default show as their value (``channel(mixed4a, 476)``); those with a
    default as ``name=value`` where not the default (``cossim_pow=2``), those defaulting to
    None all together once any is given (``x=3, y=None``). ``batch`` never shows. A body that
    returns a named objective (it delegated to another builder) is returned as it is. The
    decorated function gains ``display(*args, **kwargs)``, the name a call would get, for
    labels of the images of a batch.

    Args:
        kind: the name's head; the function's name by default.
        bare: arguments with a default that show as a plain value unless None
            (``l1(0.5)``, ``blur()``).
        show: per argument, how its value reads (default :func:`show_value`); None leaves the
            argument out of the name.
    """

    def wrap(fn: Callable[P, Objective]) -> Callable[P, Objective]:
        naming = _Naming(kind or fn.__name__, inspect.signature(fn), bare, dict(show or {}))

        @functools.wraps(fn)
        def built(*args: P.args, **kwargs: P.kwargs) -> Objective:
            made = fn(*args, **kwargs)
            if made.name:
                return made
            arguments = naming.bind(args, kwargs)
            o = Objective(made.fn, made.layers, naming.name(arguments), made.batch_size,
                          made.targets, made.channels, made.pace)
            batch = arguments.get("batch")
            return o if batch is None else _on_one(o, batch)

        built.display = lambda *a, **k: naming.name(naming.bind(a, k))  # type: ignore[attr-defined]
        built.kind = naming.kind  # type: ignore[attr-defined]
        return built

    return wrap
