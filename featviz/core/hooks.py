"""Temporary access to a user's model: capture named layers, stop early, freeze, and undo it all.

Everything here is a context manager that leaves the model exactly as it found it, also when an
exception flies: forward hooks are removed, training flags and ``requires_grad`` restored.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from ..errors import FeatvizError, unknown
from . import layouts as _layouts

#: Pseudo-layer: the image handed to the objective before the transforms (for regularizers).
INPUT = ":input"
#: Pseudo-layer: the model's final output (logits), for class objectives.
OUTPUT = ":output"
PSEUDO_LAYERS = (INPUT, OUTPUT)


def named_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Return the addressable layers of ``model`` by their module path.

    A model wrapper may define ``featviz_layers()`` to expose its inner network under the
    network's own paths (the wrappers of :mod:`featviz.models` do, so ``"features.14"`` works
    on a wrapped MobileNetV2); any other module is addressed by ``named_modules()``.

    Args:
        model: The network (an ``nn.Module``, possibly a featviz model wrapper).
    """
    fn = getattr(model, "featviz_layers", None)
    if callable(fn):
        return dict(fn())
    return {name: m for name, m in model.named_modules() if name}


def layer_aliases(model: nn.Module) -> dict[str, str]:
    """Return the alias -> module path table of ``model`` (empty for a plain module).

    Args:
        model: The network (an ``nn.Module``, possibly a featviz model wrapper).
    """
    return dict(getattr(model, "featviz_aliases", {}) or {})


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the module that ``name`` (a module path or an alias) denotes in ``model``.

    Raises an :class:`~featviz.errors.UnknownNameError` listing the closest real names when
    the name does not exist.

    Args:
        model: The network (an ``nn.Module``, possibly a featviz model wrapper).
        name: A module path (``"features.14"``) or one of the model's aliases.
    """
    layers = named_layers(model)
    aliases = layer_aliases(model)
    path = aliases.get(name, name)
    if path in layers:
        return layers[path]
    full = dict(model.named_modules())
    if name in full and name:
        return full[name]
    raise unknown("layer", name, list(layers) + list(aliases),
                  hint="`featviz layers --model NAME` lists every layer")


def _by_module(model: nn.Module, layers: Iterable[str]) -> list[tuple[nn.Module, list[str]]]:
    """Group ``layers`` by the module each denotes: an alias and its path are one module,
    hooked once. Raises :class:`~featviz.errors.UnknownNameError` for a name that is none."""
    groups: dict[int, tuple[nn.Module, list[str]]] = {}
    for name in dict.fromkeys(layers):
        module = resolve_layer(model, name)
        groups.setdefault(id(module), (module, []))[1].append(name)
    return list(groups.values())


@contextlib.contextmanager
def on_output(model: nn.Module, layers: Iterable[str],
              fn: Callable[[list[str], object], None]) -> Iterator[None]:
    """For the body of the ``with``, call ``fn(names, output)`` each time a module named in
    ``layers`` (paths or aliases) returns ``output``; ``names`` are all of ``layers`` that
    denote that module. ``fn`` may raise to stop the forward pass. Every hook is removed on
    exit, also when the body raises.

    The one place featviz hooks a user's layers: :class:`LayerTap`, the feature-map viewer's
    ``capture`` and :func:`featviz.models.layer_table` are built on it.

    Args:
        model: The network (an ``nn.Module``, possibly a featviz model wrapper).
        layers: Names of the layers to hook, module paths or aliases.
        fn: Called as ``fn(names, output)`` each time one of those modules returns.
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        model_lock(model).acquire()
        for module, names in _by_module(model, layers):
            _check_not_scripted(module, names[0])
            handles.append(module.register_forward_hook(
                lambda _module, _inputs, output, names=names: fn(names, output)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        model_lock(model).release()


def _check_not_scripted(module: nn.Module, name: str) -> None:
    if isinstance(module, torch.jit.ScriptModule):
        raise FeatvizError(
            f"layer {name!r} is TorchScript (the model went through torch.jit.script or "
            "trace): forward hooks do not fire inside TorchScript, so featviz cannot see its "
            "layers; pass the Python model it was made from")


class _StopForward(Exception):
    """Raised inside a hook once every needed layer has run, to skip the rest of the model."""


class LayerTap:
    """Capture the outputs of exactly the named layers, and stop the forward pass after them.

    Use as a context manager; calling the tap runs the model and returns ``{name: activation}``
    (plus :data:`OUTPUT` when asked for), every spatial activation as ``[B, C, H, W]`` whatever
    the layer's layout (NHWC maps and token grids are viewed so; a class token comes apart
    under :func:`~featviz.core.layouts.cls_key`; see :mod:`featviz.core.layouts`). Before the
    first call it runs the whole model once on one image without gradients, counting how often
    each captured module fires; every call
    then stops as soon as all of them have fired that many times, so nothing past the deepest
    needed layer runs (nor is held for a backward pass). A module that fires more than once in
    one pass (a reused module object) triggers a warning: its last output is kept.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], stop_early: bool = True):
        names = list(dict.fromkeys(layers))
        self.model = model
        self.needs_output = OUTPUT in names
        self.names = [n for n in names if n not in PSEUDO_LAYERS]
        self.stop_early = stop_early and not self.needs_output
        # Several names (an alias and its path) may point at one module: it is hooked once,
        # and counted under the first of its names.
        self._groups = [names for _, names in _by_module(model, self.names)]
        self.layouts = _layouts.declared(model)
        self._hooks: contextlib.ExitStack | None = None
        self._acts: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._expected: dict[str, int] | None = None
        self._remaining = 0
        self._stopping = False

    def __enter__(self) -> LayerTap:
        hooks = contextlib.ExitStack()
        hooks.enter_context(on_output(self.model, self.names, self._keep))
        self._hooks = hooks
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this tap registered (safe to call twice)."""
        hooks, self._hooks = self._hooks, None
        if hooks is not None:
            hooks.close()
        self._acts = {}

    def _keep(self, names: list[str], output) -> None:
        output = only_tensor(output)
        if not isinstance(output, torch.Tensor):
            raise FeatvizError(
                f"layer {names[0]!r} returns {type(output).__name__}, not a tensor; "
                "pick a layer whose output is a tensor (one of its submodules)"
            )
        key = names[0]
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        last = False
        if self._stopping and count == self._expected[key]:
            self._remaining -= 1
            last = self._remaining == 0
        # A later in-place op (ReLU(inplace=True)) would overwrite the output we keep;
        # a clone costs one copy, skipped for the output after which the pass stops.
        kept = output if last else output.clone()
        for name in names:
            self._acts[name] = kept
        if last:
            raise _StopForward

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._hooks is None and self._groups:
            raise FeatvizError("LayerTap must be used inside a `with` block")
        if self._expected is None and self.stop_early and self.names:
            self._count_firings(x)
        self._acts = {}
        self._counts = {}
        self._stopping = self.stop_early and self._expected is not None and bool(self.names)
        self._remaining = len(self._groups)
        output = None
        with contextlib.suppress(_StopForward):
            output = self.model(x)
        if self._expected is None:
            self._learn_counts()
        acts = _layouts.normalize(self._acts, self.layouts, tuple(x.shape[-2:]))
        self._acts = {}
        if self.needs_output:
            acts[OUTPUT] = _logits(output)
        return acts

    def _count_firings(self, x: torch.Tensor) -> None:
        """One full, gradient-free pass on the first image, to learn where to stop. A failure
        after every needed layer has run (a head that takes only the model's own input size,
        say) is no failure here: the taps stop before that part ever runs."""
        self._acts, self._counts, self._stopping = {}, {}, False
        try:
            with torch.no_grad():
                self.model(x[:1])
        except FeatvizError:
            raise
        except Exception:
            if any(self._counts.get(names[0], 0) == 0 for names in self._groups):
                raise
        self._learn_counts()
        self._acts = {}

    def _learn_counts(self) -> None:
        for names in self._groups:
            count = self._counts.get(names[0], 0)
            if count == 0:
                raise FeatvizError(
                    f"layer {names[0]!r} did not run in the model's forward pass; "
                    "it is defined but not used by forward()"
                )
            if count > 1:
                warnings.warn(
                    f"layer {names[0]!r} ran {count} times in one forward pass (the same module "
                    "object is used more than once); featviz uses its last output, which may "
                    "not be the one you mean",
                    stacklevel=3,
                )
        self._expected = {names[0]: self._counts[names[0]] for names in self._groups}


def only_tensor(output: object) -> object:
    """The tensor in a tuple or list whose other items are None (Hugging Face layers return
    ``(hidden_states,)`` or ``(hidden_states, None)``); any other output as it is. A tuple of
    several tensors stays one: which of them is "the" output is not ours to guess.

    Args:
        output: What a layer returned: a tensor, a tuple or list, or anything else.
    """
    if isinstance(output, (tuple, list)):
        tensors = [t for t in output if t is not None]
        if len(tensors) == 1 and isinstance(tensors[0], torch.Tensor):
            return tensors[0]
    return output


def _logits(output: object) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, or the ``.logits`` of an output
    object (Hugging Face classifiers return one)."""
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor):
        raise FeatvizError(
            f"the model returned {type(output).__name__}, not a tensor of logits; class "
            "objectives need a model whose forward returns a tensor or an object with .logits"
        )
    return logits


_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock featviz holds on ``model`` while it changes the model's state (modes, flags,
    hooks). Uses of one model from several threads therefore run one after the other, never
    interleaved; the lock is reentrant, so nested uses in one thread do not wait.

    Args:
        model: The network whose lock to return (one lock per model, made on first use).
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with ``requires_grad`` off, and restore both on exit.

    Every submodule's ``training`` flag and every parameter's ``requires_grad`` are recorded and
    put back exactly, also when the body raises. The model's lock (:func:`model_lock`) is held
    throughout: another thread's use of the same model waits until this one is done, so no
    thread ever records the state another has changed.

    Args:
        model: The network to freeze for the body of the ``with``.
    """
    with model_lock(model):
        yield from _frozen(model)


def _frozen(model: nn.Module) -> Iterator[nn.Module]:
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in grads:
            p.requires_grad_(flag)


@contextlib.contextmanager
def channels_last(model: nn.Module) -> Iterator[nn.Module]:
    """Hold ``model``'s 4-D parameters and buffers in channels-last memory order for the body
    (faster convolutions on many GPUs), then put the original tensors back exactly.

    Args:
        model: The network whose 4-D parameters and buffers to hold channels-last.
    """
    swapped: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for t in [*model.parameters(), *model.buffers()]:
            if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
                swapped.append((t, t.data))
                t.data = t.data.contiguous(memory_format=torch.channels_last)
        yield model
    finally:
        for t, original in swapped:
            t.data = original


def hook_count(model: nn.Module) -> int:
    """Count the forward, pre-forward and backward hooks left on any module of ``model``.

    Args:
        model: The network whose modules' hooks to count.
    """
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks)
        total += len(m._backward_hooks) + len(getattr(m, "_backward_pre_hooks", {}))
    return total
