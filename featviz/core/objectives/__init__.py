"""Objectives: what an optimization maximizes, as functions of a model's activations.

An :class:`Objective` maps ``{layer name: activation}`` to one value per batch element (shape
``[B]``) and knows which layers it needs, so that only those are hooked. Objectives combine with
``+ - * /`` and scalars; ``batch=i`` makes an objective drive only image ``i`` of the batch, so
one batch can render many channels at once. Objectives are maximized (as in lucid);
regularizers (:func:`l1`, :func:`l2`, :func:`clipping`, :func:`total_variation`, :func:`blur`)
return a penalty and are subtracted: ``channel("features.14", 12) - 0.05 * total_variation()``.

The rooms: ``base`` (the class, its algebra, :func:`builder`, which names what a builder
makes), ``builders``, ``transformer`` (MLP units, attention heads and weights of vision
transformers), ``regularizers``, ``grammar`` (the objective strings of the command
line: :func:`parse`, :func:`terms`, :func:`register` for a new kind) and ``files`` (direction
vectors read from files).
"""

from .base import Acts, Objective, builder, merge_channels, show_value
from .builders import (
    COSSIM_FLOOR,
    channel,
    class_token,
    direction,
    direction_neuron,
    diversity,
    interpolate,
    layer,
    logit,
    neuron,
    softmax,
)
from .builders import _channels_of as _channels_of  # face/sweep/jobs.py reads it
from .files import load_vector
from .grammar import (
    KINDS,
    MAX_CHANNELS,
    Arg,
    Kind,
    Term,
    expand,
    grammar_text,
    parse,
    parse_channels,
    register,
    terms,
)
from .regularizers import RAIL_MARGIN, blur, clipping, l1, l2, neighbour_difference, total_variation
from .transformer import HEAD_DIM, attention, attn_head, mlp, mlp_cls, mlp_layer, qkv_layer

__all__ = [
    "Acts", "Objective", "builder", "merge_channels", "show_value",
    "COSSIM_FLOOR", "channel", "class_token", "direction", "direction_neuron", "diversity",
    "interpolate", "layer", "logit", "neuron", "softmax",
    "RAIL_MARGIN", "blur", "clipping", "l1", "l2", "neighbour_difference", "total_variation",
    "GRAMMAR", "KINDS", "MAX_CHANNELS", "Arg", "Kind", "Term", "expand", "grammar_text", "parse",
    "parse_channels", "register", "terms",
    "load_vector",
    "HEAD_DIM", "attention", "attn_head", "mlp", "mlp_cls", "mlp_layer", "qkv_layer",
]


def __getattr__(name: str) -> str:
    # GRAMMAR is computed when read, so that it lists kinds registered after import
    if name == "GRAMMAR":
        return grammar_text()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
