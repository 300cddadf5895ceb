"""Leave out the branches of a channel concatenation that feed no channel an objective reads.

An Inception block's output is its branches stacked along the channels (``torch.cat``), then a
ReLU. A channel objective reads one channel, which one branch made; the other branches' forward
and backward passes are spent on channels nobody reads (their gradient is exactly zero). In a
traced graph (:mod:`featviz.core.truncate`) those branches are swapped for zeros of their
shape and dropped: the channels read, the gradient to the input and so the rendered image are
the same to the bit, for a fraction of the block's cost. Only a concatenation along the
channels that reaches the layer's output through per-channel operations (activations,
batch norm, scaling by a number) is touched; anything else stays as it is.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .hooks import resolve_layer
from .layouts import layout_of

# operations that treat every channel on its own (so channel c of the output needs only
# channel c of the input)
CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
    nn.Identity, nn.Dropout, nn.Dropout2d, nn.modules.batchnorm._BatchNorm,
)
CHANNELWISE_FUNCTIONS = {
    torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.softplus, torch.sigmoid, torch.tanh, F.dropout,
    operator.add, operator.sub, operator.mul, operator.truediv,  # with a number
}
CHANNELWISE_METHODS = {"relu", "sigmoid", "tanh", "clone", "contiguous", "float"}
CONCATS = {torch.cat, torch.concat, torch.concatenate}


def zeros_beside(template: torch.Tensor, channels: int) -> torch.Tensor:
    """Zeros with ``template``'s shape but ``channels`` channels (axis 1), in its dtype, device
    and memory layout: what stands in for a branch whose channels nobody reads.

    Args:
        template: A tensor whose batch, spatial sides, dtype, device and layout to copy.
        channels: How many channels the zeros have.
    """
    shape = (template.shape[0], channels, *template.shape[2:])
    nhwc = template.dim() == 4 and not template.is_contiguous() \
        and template.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if nhwc else torch.contiguous_format
    return torch.zeros(shape, dtype=template.dtype, device=template.device
                       ).contiguous(memory_format=layout)


def _channelwise_input(node: fx.Node, module_of: Callable[[str], nn.Module]) -> fx.Node | None:
    """The one tensor ``node`` computes from channel by channel, or None."""
    if len(node.all_input_nodes) != 1:
        return None
    if node.op == "call_module":
        ok = isinstance(module_of(node.target), CHANNELWISE_MODULES)
    elif node.op == "call_function":
        ok = node.target in CHANNELWISE_FUNCTIONS
    else:
        ok = node.op == "call_method" and node.target in CHANNELWISE_METHODS
    return node.all_input_nodes[0] if ok else None


def concat_behind(node: fx.Node, module_of: Callable[[str], nn.Module]) -> fx.Node | None:
    """The ``torch.cat`` that ``node`` is, or reaches through per-channel operations that
    nothing else reads, or None.

    Args:
        node: The graph node to start from (a layer's output).
        module_of: Gives the module a ``call_module`` node's target names.
    """
    while node.op != "call_function" or node.target not in CONCATS:
        source = _channelwise_input(node, module_of)
        if source is None or len(source.users) != 1:
            return None
        node = source
    return node


def returns_concat(module: nn.Module) -> bool:
    """Whether ``module`` (a layer of the user's own code) returns a concatenation through
    per-channel operations: a cheap look at the layer alone, before the whole model is traced
    into for :func:`prune`.

    Args:
        module: The layer to look at.
    """
    if type(module).__module__.startswith("torch.nn"):
        return False  # torch's own layers, kept whole by the tracer
    try:
        graph = fx.Tracer().trace(module)
    except Exception:  # untraceable: the tap runs it as it is
        return False
    returned = next(n for n in graph.nodes if n.op == "output").args[0]
    return isinstance(returned, fx.Node) and \
        concat_behind(returned, module.get_submodule) is not None


def _read_only_as_output(node: fx.Node) -> bool:
    """Whether the graph hands ``node`` out (directly or as a copy) and computes nothing else
    from it: a layer deeper in the graph would need all of its channels."""
    for user in node.users:
        if user.op == "output":
            continue
        if not (user.op == "call_method" and user.target == "clone"
                and all(u.op == "output" for u in user.users)):
            return False
    return True


def _concat_parts(cat: fx.Node) -> tuple[list[fx.Node], int] | None:
    tensors = cat.args[0] if cat.args else cat.kwargs.get("tensors")
    dim = cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int) or \
            not all(isinstance(t, fx.Node) and "tensor_meta" in t.meta for t in tensors):
        return None
    return list(tensors), dim


def _drop_unused(graph: fx.Graph, nodes: Iterable[fx.Node]) -> None:
    """Erase ``nodes`` and what only they used, up the graph (inputs stay)."""
    stack, erased = list(nodes), set()
    while stack:
        node = stack.pop()
        if node in erased or node.users or node.op in ("placeholder", "output"):
            continue
        inputs = node.all_input_nodes
        graph.erase_node(node)
        erased.add(node)
        stack.extend(inputs)


def _swap_unread(graph: fx.Graph, cat: fx.Node, wanted: frozenset[int]) -> bool:
    """Put zeros in place of the parts of ``cat`` that hold none of the ``wanted`` channels;
    whether any part was swapped."""
    parts = _concat_parts(cat)
    if parts is None:
        return False
    tensors, dim = parts
    shapes = [t.meta["tensor_meta"].shape for t in tensors]
    if dim % len(shapes[0]) != 1:
        return False
    sizes = [s[1] for s in shapes]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    if not wanted or min(wanted) < 0 or max(wanted) >= sum(sizes):
        return False  # out of range: the objective's own check names the valid channels
    keep = [any(a <= c < a + n for c in wanted) for a, n in zip(starts, sizes, strict=True)]
    if all(keep):
        return False
    template = tensors[keep.index(True)]
    with graph.inserting_before(cat):
        new = [t if k else graph.call_function(zeros_beside, (template, n))
               for t, n, k in zip(tensors, sizes, keep, strict=True)]
    if cat.args:
        cat.args = (new, *cat.args[1:])
    else:
        cat.kwargs = {**cat.kwargs, "tensors": new}
    _drop_unused(graph, [t for t, k in zip(tensors, keep, strict=True) if not k])
    return True


def prune(gm: fx.GraphModule, outputs: Mapping[str, fx.Node],
          channels: Mapping[str, frozenset[int]], probe: torch.Tensor,
          layouts: Mapping[str, str]) -> tuple[str, ...]:
    """In ``gm`` (a truncated model whose layer outputs are ``outputs``), leave out the
    branches no read channel comes from: for each layer with ``channels`` whose map is
    channels-first (``layouts``: the model's declared layouts) and is handed out only.
    ``probe`` (one image the model takes) gives the shapes. Returns the layers pruned.

    Args:
        gm: The truncated model; its graph is changed in place.
        outputs: Each layer's output node, by layer name.
        channels: The channels read, by layer name; only these layers are pruned.
        probe: One image the model takes, run once to learn the shapes.
        layouts: The model's declared layouts (:func:`featviz.core.layouts.declared`).
    """
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(probe)
    except Exception:  # the tap will meet the same failure and name it
        return ()
    image = tuple(probe.shape[-2:])
    names_of: dict[fx.Node, list[str]] = {}  # an alias and its path: one node
    for name, node in outputs.items():
        names_of.setdefault(node, []).append(name)
    done = []
    for node, names in names_of.items():
        meta = node.meta.get("tensor_meta")
        if any(n not in channels for n in names) or meta is None or \
                not _read_only_as_output(node):
            continue
        shape = torch.empty(meta.shape, device="meta")
        if layout_of(names[0], shape, layouts, image) not in ("nchw", "vector"):
            continue
        wanted = frozenset().union(*(channels[n] for n in names))
        cat = concat_behind(node, gm.get_submodule)
        if cat is not None and _swap_unread(gm.graph, cat, wanted):
            done.extend(names)
    if done:
        gm.graph.lint()
        gm.recompile()
    return tuple(done)


def might_prune(model: nn.Module, channels: Mapping[str, frozenset[int]]) -> bool:
    """Whether a layer read in part (``channels``) is, or sits right behind, a channel
    concatenation: worth tracing ``model`` for :func:`prune`.

    Args:
        model: The model.
        channels: The channels read, by layer name (layers read whole are absent).
    """
    for name in channels:
        module = resolve_layer(model, name)
        if isinstance(module, CHANNELWISE_MODULES) or returns_concat(module):
            return True
    return False
