"""Objectives for vision transformers: MLP units, attention heads and attention weights.

A LAYER here is a transformer block by its module path in timm's naming (``"blocks.6"``);
each builder reads the submodule it needs under it: ``blocks.6.mlp.act`` (the MLP's hidden
units after the GELU), ``blocks.6.mlp.fc1`` (before it) or ``blocks.6.attn.qkv`` (the
queries, keys and values of every head). Core knows no model: these are names, resolved on
the model as any layer is, and an unknown one is an error that lists the closest.

Taps hand a token layer over as its patch grid ``[B, C, h, w]`` with the class token apart
(:mod:`featviz.core.layouts`), so "the mean over patches" leaves the class token out, as
Ghiasi et al. 2022 do. A residual-stream direction needs nothing new:
``direction("blocks.6", vector)`` is the dot product with a 192-vector averaged over the
patches, and ``logit(n)`` reads the classifier as for any model.

The attention objectives compute a head's softmax weights from ``attn.qkv``'s output:
``softmax(q k^T / sqrt(d))`` for that head is exactly what timm's attention computes (fused or
not), so no module of the model is patched and nothing the fused kernel hides is needed. This
holds for attention without query/key normalization or masks (ViT, DeiT, AugReg), and for
token sequences with at most a class token in front: other leading tokens (registers, DeiT's
distillation token) are not in the taps' grid, so the softmax would miss their keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...errors import ChannelError, FeatvizError
from ..layouts import cls_key
from .base import Acts, Objective, builder
from .builders import _check_channel, _check_position, channel, class_token, neuron
from .grammar import LAYER, Arg, C, X, Y, _whole, register

#: the width of one attention head in ViT-Ti/S/B/L and DeiT (Dosovitskiy et al. 2021,
#: Table 1: hidden size / heads = 64), from which the heads of a qkv layer are counted
HEAD_DIM = 64

H = Arg("H", _whole("H"))
QX = Arg("QX", _whole("QX and QY"))
QY = Arg("QY", _whole("QX and QY"))


def mlp_layer(layer: str, pre: bool = False) -> str:
    """The module path of the MLP hidden units of block ``layer``: ``blocks.6.mlp.act``
    (after the GELU), or ``blocks.6.mlp.fc1`` (before it) with ``pre``.

    Args:
        layer: the block's path (``"blocks.6"``, or its ``"blocks.6.mlp"``).
        pre: the units before the activation function.
    """
    block = layer.removesuffix(".mlp")
    return f"{block}.mlp.{'fc1' if pre else 'act'}"


def qkv_layer(layer: str) -> str:
    """The module path of the query-key-value projection of block ``layer``
    (``blocks.6.attn.qkv``).

    Args:
        layer: the block's path (``"blocks.6"``) or its attention's (``"blocks.6.attn"``).
    """
    attn = layer if layer.rsplit(".", 1)[-1] == "attn" else f"{layer}.attn"
    return f"{attn}.qkv"


def _unnamed(o: Objective) -> Objective:
    """``o`` without its name, so that the builder around it names the result."""
    return Objective(o.fn, o.layers, batch_size=o.batch_size, channels=o.channels)


class _PreWhereNegative(torch.autograd.Function):
    """The units after the activation, unchanged; backward, the gradient goes to the units'
    inputs (slope 1) where they are negative, through the activation elsewhere."""

    @staticmethod
    def forward(ctx, post: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(pre < 0)
        return post.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (negative,) = ctx.saved_tensors
        return grad.masked_fill(negative, 0), grad.masked_fill(~negative, 0)


def _unit(t: torch.Tensor, n: int) -> torch.Tensor:
    """Channel ``n`` of ``t`` kept as a one-channel tensor: the last axis of a token sequence
    ``[B, N, C]`` (as :func:`~.builders.channel` reads it), else the second."""
    return t[..., n:n + 1] if t.dim() == 3 else t[:, n:n + 1]


def _escaping(read: Callable[[str, int], Objective], post: str, pre: str, n: int
              ) -> Objective:
    """Unit ``n`` of ``post`` (after the GELU) as ``read(path, channel)`` reads it, climbing
    out of the GELU's falling branch: its value unchanged, its gradient taken before the GELU
    (``pre``) wherever the unit is negative (see :func:`mlp`). Only the unit's channel is
    rerouted (``read`` sees it as channel 0), not the layer's 768."""
    inner = read(post, 0)
    pairs = [(post, pre), (cls_key(post), cls_key(pre))]

    def fn(acts: Acts) -> torch.Tensor:
        _check_channel(post, acts[post], n)  # named against the whole layer, not the slice
        seen = dict(acts)
        for a, b in pairs:
            if a in acts and b in acts:
                seen[a] = _PreWhereNegative.apply(_unit(acts[a], n), _unit(acts[b], n))
        return inner(seen)

    return Objective(fn, [post, pre], batch_size=inner.batch_size,
                     channels={post: [n], pre: [n]})


@register(LAYER, C, X, Y, optional=2, example="mlp:{layer}:123",
          help="MLP hidden unit C of block LAYER (blocks.6), after GELU: the mean\n"
               "over the patches, or at patch column X, row Y")
@builder()
def mlp(layer: str, n: int, x: int | None = None, y: int | None = None, pre: bool = False,
        batch: int | None = None) -> Objective:
    """Hidden unit ``n`` of a transformer block's MLP, the mean over the patch grid (class
    token left out) or at one patch.

    The defaults are Ghiasi et al. 2022's ("What do Vision Transformers Learn?", and their
    code): the MLP's expansion units after the GELU, averaged over the patch tokens without
    the class token; they found these give the most interpretable pictures of a ViT.

    Its value is the unit after the GELU; its gradient, where a patch's unit is negative, is
    taken before the GELU. GELU falls left of -0.75, so plain ascent pushes a unit that
    starts there further left, and it settles just below 0 for good: 6 of the 16 units of
    ``benchmarks/vit_quality.py`` stayed at 0 in a 64-step render with the plain gradient,
    none with this one (the value it reports is the same). ``pre=True`` reads the units
    before the GELU instead (as lucid's ``_pre_relu`` layers do).

    Args:
        layer: the block's path, ``"blocks.6"`` (timm's names).
        n: the unit, 0 to 4 x the width - 1 (767 in ViT-Tiny).
        x: the patch column (0-13 at 224 px with 16-px patches); with ``y``, the unit at that
            one patch instead of the mean.
        y: the patch row.
        pre: read the units before the GELU (``mlp.fc1``) instead of after (``mlp.act``).
        batch: the one image of the batch it drives (all by default).
    """
    if (x is None) != (y is None):
        raise ValueError(f"mlp() takes both x and y (one patch) or neither (the mean over "
                         f"patches), got x={x}, y={y}")
    def read(path: str, c: int) -> Objective:
        return _unnamed(channel(path, c) if x is None else neuron(path, c, x, y))

    path, n = mlp_layer(layer, pre), int(n)
    return read(path, n) if pre else _escaping(read, path, mlp_layer(layer, pre=True), n)


@register(LAYER, C, example="mlp_cls:{layer}:123",
          help="MLP hidden unit C of block LAYER at the class token, after GELU")
@builder()
def mlp_cls(layer: str, n: int, pre: bool = False, batch: int | None = None) -> Objective:
    """Hidden unit ``n`` of a transformer block's MLP at the class token alone: the token the
    classifier reads, which the patch mean of :func:`mlp` leaves out. It reads no patch token
    of that layer (patches still reach it through earlier attention). After the GELU, its
    gradient is taken before the GELU where the unit is negative, as :func:`mlp`'s.

    Args:
        layer: the block's path, ``"blocks.6"``.
        n: the unit.
        pre: read the units before the GELU (``mlp.fc1``) instead of after, as :func:`mlp`.
        batch: the one image of the batch it drives (all by default).
    """
    def read(path: str, c: int) -> Objective:
        return _unnamed(class_token(path, c))

    path, n = mlp_layer(layer, pre), int(n)
    return read(path, n) if pre else _escaping(read, path, mlp_layer(layer, pre=True), n)


def _tokens(key: str, acts: Acts) -> tuple[torch.Tensor, bool, tuple[int, int]]:
    """Layer ``key``'s tokens ``[B, N, C]`` in the model's order (class token first where it
    has one: the taps hand it apart), whether it has a class token, and the patch grid."""
    grid = acts[key]
    if grid.dim() != 4:
        raise FeatvizError(f"layer {key!r} gives {list(grid.shape)} after layout, not a token "
                           "sequence on a patch grid; attention objectives read a block's "
                           "attn.qkv (layout tokens or tokens+cls)")
    tokens = grid.flatten(2).transpose(1, 2)
    cls = acts.get(cls_key(key))
    if cls is not None:
        tokens = torch.cat([cls.unsqueeze(1), tokens], dim=1)
    return tokens, cls is not None, (grid.shape[2], grid.shape[3])


def _head_qkv(key: str, acts: Acts, head: int, head_dim: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, tuple[int, int]]:
    """Head ``head``'s queries, keys and values ``[B, N, head_dim]`` from a qkv layer (timm's
    order: the last axis is (q|k|v, head, channel)), whether the tokens start with a class
    token, and the patch grid."""
    tokens, has_cls, grid = _tokens(key, acts)
    width = tokens.shape[-1]
    if width % (3 * head_dim):
        raise ChannelError(f"layer {key!r} has {width} channels, not 3 x heads x {head_dim}; "
                           "pass head_dim= (each head's width) for this model")
    heads = width // (3 * head_dim)
    if not 0 <= head < heads:
        raise ChannelError(f"head {head} is out of range for layer {key!r}, which has {heads} "
                           f"heads of {head_dim} channels (valid: 0-{heads - 1})")
    q, k, v = tokens.unflatten(-1, (3, heads, head_dim))[:, :, :, head].unbind(2)
    return q, k, v, has_cls, grid


def _softmax_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Attention weights ``[B, R, N]`` of queries ``[B, R, D]`` over keys ``[B, N, D]``,
    scaled by 1/sqrt(D) as timm does; the softmax in float32 (half-precision logits of
    near-equal keys would round the weights)."""
    scores = (q @ k.transpose(1, 2)).float() * q.shape[-1] ** -0.5
    return torch.softmax(scores, dim=-1)


@register(LAYER, H, C, optional=1, example="attn_head:{layer}:2",
          help="output of attention head H of block LAYER, before the projection:\n"
               "mean over patches and channels, or of the head's channel C")
@builder()
def attn_head(layer: str, h: int, n: int | None = None, head_dim: int = HEAD_DIM,
              batch: int | None = None) -> Objective:
    """The output of one attention head: its slice of the attention output before the
    projection (``softmax(q k^T / sqrt(d)) v`` for that head, what timm's ``attn.proj``
    takes in), averaged over the patch tokens (the class token's row left out) and over the
    head's channels, as Ghiasi et al. 2022's code does for heads; or one channel ``n`` of
    it. They report that such attention features give less interpretable pictures than the
    MLP units (:func:`mlp`).

    Args:
        layer: the block's path, ``"blocks.6"`` (or its ``"blocks.6.attn"``).
        h: the head, 0 to heads - 1 (0-2 in ViT-Tiny).
        n: one channel of the head (0 to head_dim - 1) instead of the mean over all.
        head_dim: each head's width, by which the heads are counted (64 in ViT-Ti/S/B/L).
        batch: the one image of the batch it drives (all by default).
    """
    h, key = int(h), qkv_layer(layer)
    if n is not None and not 0 <= int(n) < head_dim:
        raise ChannelError(f"channel {n} is out of range for a head of {head_dim} channels")

    def fn(acts: Acts) -> torch.Tensor:
        q, k, v, has_cls, _ = _head_qkv(key, acts, h, head_dim)
        patches = q[:, 1:] if has_cls else q
        out = _softmax_weights(patches, k).to(v.dtype) @ v  # [B, patches, head_dim]
        return (out.mean(dim=(1, 2)) if n is None else out[:, :, int(n)].mean(dim=1))

    return Objective(fn, [key])


def _query_row(has_cls: bool, grid: tuple[int, int], layer: str, qx: int | None,
               qy: int | None) -> int:
    """The token index of the query: the class token, or patch (qx, qy)."""
    if qx is None:
        if not has_cls:
            raise FeatvizError(f"layer {layer!r} has no class token to attend from; give the "
                               "query patch qx, qy")
        return 0
    _check_position(layer, grid[0], grid[1], qx, qy)
    return int(has_cls) + qy * grid[1] + qx


@register(LAYER, H, X, Y, QX, QY, optional=2, example="attention:{layer}:0:5:7",
          help="softmax attention weight of head H of block LAYER\n"
               "from the class token (or patch QX, QY) to patch column X, row Y")
@builder()
def attention(layer: str, h: int, x: int, y: int, qx: int | None = None,
              qy: int | None = None, head_dim: int = HEAD_DIM,
              batch: int | None = None) -> Objective:
    """The softmax attention weight that head ``h`` gives from a query token to the patch at
    column ``x``, row ``y``: from the class token by default (the attention maps of
    Dosovitskiy et al. 2021 and Caron et al. 2021 are the class token's), or from the patch
    (``qx``, ``qy``). A value in [0, 1], equal to the weight timm's non-fused attention
    computes.

    Args:
        layer: the block's path, ``"blocks.6"`` (or its ``"blocks.6.attn"``).
        h: the head, 0 to heads - 1.
        x: the key patch's column (0-13 at 224 px with 16-px patches).
        y: the key patch's row.
        qx: the query patch's column; with ``qy``, attention from that patch instead of
            from the class token.
        qy: the query patch's row.
        head_dim: each head's width, by which the heads are counted (64 in ViT-Ti/S/B/L).
        batch: the one image of the batch it drives (all by default).
    """
    if (qx is None) != (qy is None):
        raise ValueError(f"attention() takes both qx and qy (a query patch) or neither (the "
                         f"class token), got qx={qx}, qy={qy}")
    h, key = int(h), qkv_layer(layer)

    def fn(acts: Acts) -> torch.Tensor:
        q, k, _, has_cls, grid = _head_qkv(key, acts, h, head_dim)
        _check_position(layer, grid[0], grid[1], x, y)
        row = _query_row(has_cls, grid, layer, qx, qy)
        col = int(has_cls) + y * grid[1] + x
        return _softmax_weights(q[:, row:row + 1], k)[:, 0, col].to(q.dtype)

    return Objective(fn, [key])
