"""Fold frozen batch norms into the convolutions before them, in a traced graph.

In eval mode a batch norm is a per-channel affine map: ``(y - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``. Right after a convolution it goes into the convolution's own
weight and bias (``W * s`` and ``(b - mean) * s + beta``): one pass over the feature map
instead of two, forward and backward, for the same values up to float rounding.

In a graph traced by :mod:`featviz.core.truncate`, a convolution module whose only user is such
a batch norm is replaced, with it, by one call of :func:`conv_bn`, which reads both modules each
time it runs: their tensors are the model's own, the folded weight and bias are kept in a memo
and made again when a source tensor changed (another tensor, its version counter, its storage).
Whenever the fold would not give the modules' own result (a module in training mode, a
parameter that takes gradients, a hook waiting on either module) the two modules run as they
are. A convolution on the image with a stride of 2 or more (a network's stem), folded or not,
gets its input gradient by phases on the CPU (:mod:`featviz.core.stem_conv`).

A write through ``.data`` (``conv.weight.data[c] = 0``) bumps no version counter and goes
unseen by the memo; write under ``torch.no_grad()`` instead (``load_state_dict`` does).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules import module as _module

from . import stem_conv

# under torch.compile the modules run as they are (the compiler fuses them itself)
_compiling = getattr(torch.compiler, "is_compiling", lambda: False)


def _is_plain(module: nn.Module, kind: type[nn.Module]) -> bool:
    """Whether ``module`` computes what ``kind`` does (a subclass with its own forward, such as
    a weight-standardized convolution, may compute anything else)."""
    return isinstance(module, kind) and type(module).forward is kind.forward


def _global_hooks() -> bool:
    return bool(_module._global_forward_hooks or _module._global_forward_pre_hooks
                or _module._global_backward_hooks or _module._global_backward_pre_hooks)


def watched(module: nn.Module) -> bool:
    """Whether a hook waits on ``module``'s call (its own, or a global module hook): then it
    must be called as itself.

    Args:
        module: The module.
    """
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or _global_hooks())


def _trained(*modules: nn.Module) -> bool:
    """Whether a parameter of ``modules`` takes gradients (someone trains them)."""
    return any(p.requires_grad for m in modules for p in m.parameters(recurse=False))


def _frozen_norm(bn: nn.Module) -> bool:
    """Whether ``bn`` is a batch norm in eval mode with running statistics: a fixed affine map."""
    return (_is_plain(bn, nn.BatchNorm2d) and not bn.training
            and bn.running_mean is not None and bn.running_var is not None)


# -- what runs in the graph -----------------------------------------------------------------
# (every step calls these once per folded pair: the checks read the modules' dicts directly,
# as attribute access through nn.Module costs microseconds)
def _sources(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple:
    """conv weight, conv bias, bn weight, bn bias, running mean, running variance (or None)."""
    c, b, s = conv._parameters, bn._parameters, bn._buffers
    return (c["weight"], c.get("bias"), b.get("weight"), b.get("bias"), s.get("running_mean"),
            s.get("running_var"))


def _takes_grad(tensors: tuple) -> bool:
    return any(t is not None and t.requires_grad for t in tensors)


def _stem(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
          conv: nn.Conv2d) -> torch.Tensor:
    """``conv``'s convolution with ``weight`` and ``bias``, by phases where it pays."""
    if not _compiling() and stem_conv.applies(x, weight, conv.stride, conv.padding,
                                              conv.dilation, conv.groups):
        return stem_conv.stem_conv2d(x, weight, bias, conv.stride, conv.padding)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d,
            stem: bool = False) -> torch.Tensor:
    """``bn(conv(x))`` as one convolution with the batch norm folded in, where that is the
    modules' own result; else the two modules as they are (hooks fire, training mode
    computes batch statistics).

    Args:
        x: The convolution's input.
        conv: The convolution module.
        bn: The batch norm module right after it.
        stem: Whether the convolution's shape :func:`stem_conv.fits` (then its input
            gradient is taken by phases where :func:`stem_conv.applies`).
    """
    tensors = _sources(conv, bn)
    if (bn.training or tensors[4] is None or tensors[5] is None or x.dim() != 4
            or _takes_grad(tensors) or watched(conv) or watched(bn) or _compiling()):
        return bn(conv(x))
    weight, bias = _folded(conv, bn, tensors)
    if stem:
        return _stem(x, weight, bias, conv)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def conv_stem(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)``, its input gradient by phases where :func:`stem_conv.applies`; the module
    itself when a hook waits on it or a parameter of it takes gradients.

    Args:
        x: The convolution's input.
        conv: The convolution module.
    """
    weight, bias = conv._parameters["weight"], conv._parameters.get("bias")
    if _takes_grad((weight, bias)) or watched(conv):
        return conv(x)
    return _stem(x, weight, bias, conv)


# -- the memo of folded weights ---------------------------------------------------------------
class _Folded:
    """A folded weight and bias, with what they were made from: ``eps``, and per source tensor
    a weak reference, its version counter and its storage address (None where absent)."""

    __slots__ = ("eps", "refs", "stamps", "weight", "bias")

    def __init__(self, tensors: tuple, eps: float):
        self.eps = eps
        self.refs = tuple(None if t is None else weakref.ref(t) for t in tensors)
        self.stamps = tuple(None if t is None else (t._version, t.data_ptr()) for t in tensors)
        self.weight, self.bias = fold_weights(*tensors, eps)

    def made_from(self, tensors: tuple, eps: float) -> bool:
        """Whether ``tensors`` and ``eps`` are the ones this was made from, unchanged since."""
        if eps != self.eps:
            return False
        for ref, stamp, t in zip(self.refs, self.stamps, tensors, strict=True):
            if t is None:
                if ref is not None:
                    return False
            elif ref is None or ref() is not t or stamp != (t._version, t.data_ptr()):
                return False
        return True


# by ids of the convolution and the batch norm (an entry goes with the convolution; one whose
# batch norm went first is made again, as its tensors are others)
_MEMO: dict[tuple[int, int], _Folded] = {}


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d, tensors: tuple
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The folded weight and bias, from the memo while their sources are unchanged."""
    key = (id(conv), id(bn))
    known = _MEMO.get(key)
    if known is None or not known.made_from(tensors, bn.eps):
        if known is None:
            weakref.finalize(conv, _MEMO.pop, key, None)
        known = _MEMO[key] = _Folded(tensors, bn.eps)
    return known.weight, known.bias


def fold_weights(weight: torch.Tensor, bias: torch.Tensor | None, gamma: torch.Tensor | None,
                 beta: torch.Tensor | None, mean: torch.Tensor, var: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of one convolution that computes a convolution (``weight``,
    ``bias``) then a batch norm in eval mode; in the weight's dtype and memory layout, taking
    no gradient.

    Args:
        weight: The convolution's weight, [out, in / groups, kh, kw].
        bias: The convolution's bias, or None (zero).
        gamma: The batch norm's weight, or None (one: no affine part).
        beta: The batch norm's bias, or None (zero).
        mean: The batch norm's running mean.
        var: The batch norm's running variance.
        eps: The batch norm's ``eps``.
    """
    dtype = torch.promote_types(weight.dtype, torch.float32)  # half weights: fold in float32
    # kept across calls: not an inference tensor, which a later backward pass could not save
    with torch.inference_mode(False), torch.no_grad():
        scale = torch.rsqrt(var.to(dtype) + eps)
        if gamma is not None:
            scale = scale * gamma.to(dtype)
        shift = -mean.to(dtype) if bias is None else bias.to(dtype) - mean.to(dtype)
        shift = shift * scale
        if beta is not None:
            shift = shift + beta.to(dtype)
        folded = weight.to(dtype) * scale.view(-1, 1, 1, 1)
    layout = torch.channels_last if weight.is_contiguous(memory_format=torch.channels_last) \
        and not weight.is_contiguous() else torch.contiguous_format
    return (folded.to(weight.dtype).contiguous(memory_format=layout),
            shift.to(weight.dtype))


# -- the graph rewrite -------------------------------------------------------------------------
def _module_call(gm: fx.GraphModule, node: fx.Node, kind: type[nn.Module]) -> nn.Module | None:
    """The module ``node`` calls on one tensor, if it is a plain ``kind`` nobody watches."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    module = gm.get_submodule(node.target)
    if not _is_plain(module, kind) or watched(module):
        return None
    return module


def _norm_after(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The node of the frozen batch norm that is the only user of ``node``, or None."""
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    bn = _module_call(gm, user, nn.BatchNorm2d)
    if bn is None or user.args[0] is not node or not _frozen_norm(bn) or _trained(bn):
        return None
    return user


def _replace(gm: fx.GraphModule, last: fx.Node, fn, args: tuple) -> None:
    """Put a call of ``fn`` in place of ``last``: on ``args``, where a string names a module
    (read when the graph runs)."""
    graph = gm.graph
    with graph.inserting_before(last):
        args = tuple(graph.get_attr(a) if isinstance(a, str) else a for a in args)
        new = graph.call_function(fn, args)
    new.meta = dict(last.meta)
    last.replace_all_uses_with(new)
    graph.erase_node(last)


def _rewrite(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Fold the convolution ``node`` calls with its batch norm, or route a stem through
    :func:`conv_stem`; whether the graph changed."""
    conv = _module_call(gm, node, nn.Conv2d)
    if conv is None or conv.padding_mode != "zeros" or _trained(conv):
        return False
    x = node.args[0]
    norm = _norm_after(gm, node)
    stem = stem_conv.fits(conv.in_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups)
    if norm is not None:
        _replace(gm, norm, conv_bn, (x, node.target, norm.target, stem))
        gm.graph.erase_node(node)
        return True
    if stem:
        _replace(gm, node, conv_stem, (x, node.target))
        return True
    return False


def fold(gm: fx.GraphModule) -> tuple[str, ...]:
    """In ``gm`` (a traced model whose modules are the model's own), fold each frozen batch
    norm into the convolution before it and route stems (:func:`stem_conv.fits`) through
    their phase gradient. Modules that carry hooks (or any module, while global module hooks
    exist), take gradients or are in training mode are left alone. Returns the convolutions
    rewritten, by their module path.

    Args:
        gm: The traced model; its graph is changed in place.
    """
    if _global_hooks():
        return ()
    done = [node.target for node in list(gm.graph.nodes)
            if node.op == "call_module" and _rewrite(gm, node)]
    if done:
        gm.graph.lint()
        gm.recompile()
    return tuple(done)


def might_fold(model: nn.Module) -> bool:
    """Whether ``model`` has something for :func:`fold`: a convolution registered right before
    a batch norm in eval mode, or a stem convolution. A cheap look at its modules, before
    tracing it.

    Args:
        model: The model.
    """
    before = None
    for module in model.modules():
        if _is_plain(module, nn.Conv2d) and stem_conv.fits(
                module.in_channels, module.kernel_size, module.stride, module.padding,
                module.dilation, module.groups):
            return True
        if before is not None and _is_plain(before, nn.Conv2d) and _frozen_norm(module):
            return True
        before = module
    return False


def fold_state(model: nn.Module) -> tuple:
    """What decides which pairs :func:`fold` may fold, besides the graph: the modules' training
    flags, the parameters' ``requires_grad`` and whether any hook waits (part of a cache key).

    Args:
        model: The model.
    """
    return (tuple(m.training for m in model.modules()),
            tuple(p.requires_grad for p in model.parameters()),
            any(watched(m) for m in model.modules()))
