"""A model cut after the layers an objective reads, as one traced graph that torch.compile takes.

:class:`~featviz.hooks.LayerTap` stops a forward pass by raising from a hook, which works on any
model but is opaque to ``torch.compile``. Here the model is traced with ``torch.fx`` (the named
layers kept as single calls), every node after the deepest of them is dropped, and the graph
returns their outputs: the same computation as the tap, as plain code a compiler can fuse and
CUDA graphs can replay. Models whose ``forward`` branches on tensor values cannot be traced;
:func:`truncate` then raises :class:`TruncationError` with the tracer's reason.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import fx, nn

from ..errors import FeatvizError
from . import fold as _fold
from . import layouts as _layouts
from . import prune as _prune
from .hooks import OUTPUT, PSEUDO_LAYERS, resolve_layer

#: ``torch.compile`` modes render's ``compile=`` accepts (True means "default").
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class TruncationError(FeatvizError):
    """The model could not be traced into a truncated graph (``forward`` is not traceable)."""


class _KeepLayers(fx.Tracer):
    """Trace through everything except the wanted layers (and torch's own leaf modules);
    the modules in ``through`` are traced into too, and the node each call of one returns is
    kept in ``returned``."""

    def __init__(self, keep: set[int], through: set[int] = frozenset()):
        super().__init__()
        self.keep, self.through = keep, through
        self.returned: dict[int, fx.Node] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if id(m) in self.through:
            return False
        return id(m) in self.keep or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        if id(m) in self.through and isinstance(out, fx.Proxy):
            self.returned[id(m)] = out.node  # the last call wins, as for the kept layers
        return out


class Truncated:
    """``model`` up to its deepest wanted layer; calling it returns ``{name: activation}``.

    Shares the model's parameters and buffers (no copy), so freezing, ``channels_last`` and
    weight changes made to the model apply here too. ``graph_module`` is the traced graph, the
    part to hand to ``torch.compile``; ``run`` is what a call executes (the graph, or its
    compiled form).
    """

    def __init__(self, graph_module: fx.GraphModule, names: list[str],
                 pruned: tuple[str, ...] = (), folded: tuple[str, ...] = ()):
        self.graph_module = graph_module
        self.names = names
        self.pruned = pruned  # the layers whose unread branches were left out (see truncate)
        self.folded = folded  # the convolutions rewritten by featviz.core.fold
        self.run: Callable[[torch.Tensor], tuple] = graph_module

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = self.run(x)
        acts = {}
        for name, out in zip(self.names, outs, strict=True):
            if not isinstance(out, torch.Tensor):
                what = "the model" if name == OUTPUT else f"layer {name!r}"
                raise FeatvizError(f"{what} returns {type(out).__name__}, not a tensor; pick a "
                                   "layer whose output is a tensor (one of its submodules)")
            acts[name] = out
        return acts

    def compiled(self, mode: str = "default") -> Truncated:
        """A copy whose graph runs through ``torch.compile(mode=mode)`` (compiled on first use)."""
        twin = Truncated(self.graph_module, self.names, self.pruned, self.folded)
        twin.run = torch.compile(self.graph_module, mode=mode, dynamic=False)
        return twin


def truncate(model: nn.Module, layers: Iterable[str],
             channels: Mapping[str, frozenset[int]] | None = None,
             probe: torch.Tensor | None = None, fold: bool = False) -> Truncated:
    """Trace ``model`` and cut it after the deepest of ``layers`` (names as
    :func:`~featviz.hooks.resolve_layer` takes them; :data:`~featviz.hooks.OUTPUT` keeps the
    whole model). Each layer's last call in the forward pass is the one returned, and outputs
    that later in-place operations would overwrite are cloned, as :class:`LayerTap` does.
    With ``channels`` (``{layer: channels read}``, as :attr:`Objective.channels`) and a
    ``probe`` (one image the model takes), branches of a channel concatenation that feed none
    of those channels are left out (:mod:`featviz.core.prune`; those channels then read 0).
    With ``fold``, the layers are traced into where they can be, frozen batch norms go into
    the convolutions before them and stem convolutions get their input gradient by phases
    (:mod:`featviz.core.fold`; the same values up to float rounding; not for a graph to
    compile, whose compiler fuses on its own). Raises :class:`TruncationError` when
    ``torch.fx`` cannot trace the model.

    Args:
        model: The model to trace.
        layers: The layers whose outputs the cut graph returns.
        channels: The channels read, by layer name; None: prune nothing.
        probe: One image the model takes; None: prune nothing.
        fold: Whether to fold batch norms and route stems (default False).
    """
    names = [n for n in dict.fromkeys(layers) if n not in PSEUDO_LAYERS or n == OUTPUT]
    modules = {n: resolve_layer(model, n) for n in names if n != OUTPUT}
    channels = dict(channels or {}) if probe is not None else {}
    through = {id(m) for n, m in modules.items() if n in channels and _prune.returns_concat(m)}
    # a layer kept whole keeps its convolutions from the fold: trace into the layers (a
    # deep block is much of the graph), or keep them whole where that fails
    opened = through | {id(m) for m in modules.values() if _openable(m)} if fold else through
    try:
        graph, found = _trace(model, modules, opened)
    except TruncationError:
        if opened == through:
            raise
        graph, found = _trace(model, modules, through)
    _cut(graph, names, found)
    gm = fx.GraphModule(model, graph)
    pruned = ()
    if channels:
        pruned = _prune.prune(gm, {n: found[n] for n in modules}, channels, probe,
                              _layouts.declared(model))
    folded = _fold.fold(gm) if fold else ()  # after pruning, which reads the batch norms
    return Truncated(gm, names, pruned, folded)


def _openable(module: nn.Module) -> bool:
    """Whether the tracer may go into ``module``: not one of torch's own leaf layers, and no
    hook waits on its call."""
    return not fx.Tracer().is_leaf_module(module, "") and not _fold.watched(module)


def _trace(model: nn.Module, modules: dict[str, nn.Module], through: set[int]
           ) -> tuple[fx.Graph, dict[str, fx.Node]]:
    """The traced graph, the wanted layers kept as calls except those ``through`` (traced
    into), and each layer's node."""
    tracer = _KeepLayers({id(m) for m in modules.values()}, through)
    # a kept layer carries a hook while traced, as under a tap: a model that goes past modules
    # nobody watches (InceptionV1's units fold a bias into the convolution) calls it then
    marks = [m.register_forward_hook(_unwatched) for m in modules.values()]
    try:
        graph = tracer.trace(model)
    except Exception as err:  # the tracer raises many types; all mean "not traceable"
        raise TruncationError(f"torch.fx cannot trace {type(model).__name__}: "
                              f"{type(err).__name__}: {err}") from err
    finally:
        for mark in marks:
            mark.remove()
    return graph, _layer_nodes(model, graph, modules, tracer.returned)


def _unwatched(module: nn.Module, args, out) -> None:
    """A forward hook that does nothing (tracing calls no hooks): the mark of a kept layer."""


def _layer_nodes(model: nn.Module, graph: fx.Graph, modules: dict[str, nn.Module],
                 returned: dict[int, fx.Node]) -> dict[str, fx.Node]:
    """The node of each layer's last call: a call of the module, or what a module traced into
    returned."""
    found: dict[str, fx.Node] = {}
    for node in graph.nodes:  # the last call of a layer wins, as in LayerTap
        if node.op == "call_module":
            sub = model.get_submodule(node.target)
            for name, module in modules.items():
                if sub is module:
                    found[name] = node
    for name, module in modules.items():
        if id(module) in returned:
            found[name] = returned[id(module)]
    missing = [n for n in modules if n not in found]
    if missing:
        raise TruncationError(f"layer {missing[0]!r} is not called as a module in the traced "
                              "forward pass (unused, or inside a module the tracer keeps whole)")
    return found


def _cut(graph: fx.Graph, names: list[str], found: dict[str, fx.Node]) -> None:
    """Drop everything after the deepest wanted node and return the wanted nodes (adds the
    model's output to ``found`` under OUTPUT when asked)."""
    nodes = list(graph.nodes)
    output = next(n for n in nodes if n.op == "output")
    if OUTPUT in names:
        found[OUTPUT] = output.args[0]
        last = len(nodes) - 1
    else:
        last = max(nodes.index(n) for n in found.values())
    graph.erase_node(output)
    for node in reversed(nodes[last + 1:-1]):  # everything past the deepest layer goes
        graph.erase_node(node)
    results = []
    for name in names:
        node = found[name]
        # a later in-place op (ReLU(inplace=True)) would overwrite this output: keep a copy
        if isinstance(node, fx.Node) and node.users:
            with graph.inserting_after(node):
                node = graph.call_method("clone", (node,))
        results.append(node)
    graph.output(tuple(results))
    graph.lint()


# truncations per model, so that renders of one layer (a sweep's batches) trace and compile once
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()
_KEEP = 4  # graphs kept per model


def cached(model: nn.Module, layers: Iterable[str], mode: str | None = "default",
           channels: Mapping[str, frozenset[int]] | None = None,
           probe: torch.Tensor | None = None, fold: bool = False) -> Truncated:
    """:func:`truncate` (pruned as it says, with ``channels`` and ``probe``; folded with
    ``fold``), then ``torch.compile`` in ``mode`` (None: run the graph as it is), cached per
    model, layers, channels, fold and mode: a second render of the same layers reuses the
    graph instead of tracing and compiling again.

    Args:
        model: The model to trace.
        layers: The layers whose outputs the cut graph returns.
        mode: The torch.compile mode (default ``"default"``); None: no compile.
        channels: The channels read, by layer name; None: prune nothing.
        probe: One image the model takes; None: prune nothing.
        fold: Whether to fold batch norms and route stems (:func:`truncate`; default False).
    """
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    names = tuple(dict.fromkeys(layers))
    read = tuple(sorted((k, tuple(sorted(v))) for k, v in (channels or {}).items()))
    shape = None if probe is None else (tuple(probe.shape[1:]), probe.dtype)
    # a module or parameter swapped into the model since (a new head, a replaced block, new
    # weights) means a new trace
    structure = tuple(id(t) for t in (*model.modules(), *model.parameters(), *model.buffers()))
    per_model = _CACHE.setdefault(model, {})
    # what may be folded depends on training modes, requires_grad and hooks too
    folding = _fold.fold_state(model) if fold else None
    key = (names, mode, read, shape, structure, folding)
    if key not in per_model:
        while len(per_model) >= _KEEP:  # the oldest goes: compiled graphs hold memory
            del per_model[next(iter(per_model))]
        made = truncate(model, names, channels, probe, fold)
        per_model[key] = made if mode is None else made.compiled(mode)
    return per_model[key]


def compiled(model: nn.Module, layers: Iterable[str], mode: str = "default") -> Truncated:
    """:func:`truncate` then ``torch.compile``, cached per model, layers and mode: a second
    render of the same layers reuses the compiled graph instead of compiling again.

    Args:
        model: The model to trace.
        layers: The layers whose outputs the cut graph returns.
        mode: The torch.compile mode (default ``"default"``).
    """
    return cached(model, layers, mode)
