"""The job list of a sweep: which (layer, channel) images there are, where each one is written,
which rank renders it and in which batches.

A sweep's "layer" is a layer (job (LAYER, c) renders ``channel:LAYER:c``) or an objective kind
with its layer, ``KIND:LAYER``, whose job (KIND:LAYER, n) renders the objective string
``KIND:LAYER:n``: ``mlp:blocks.8`` sweeps the MLP units of a transformer block with the
:func:`~featviz.objectives.mlp` objective. The number must be a channel of a layer the
objective reads (:func:`unit_layer`), which gives the count ``--channels all`` means.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...core import model_info
from ...core.files import folder_name
from ...core.hooks import named_layers
from ...core.objectives import Objective, channel, parse
from ...core.sizes import SizeLike, hw
from ...errors import ChannelError, FeatvizError, ObjectiveSyntaxError


@dataclass(frozen=True)
class Job:
    """One image of a sweep: channel ``channel`` of ``layer``; ``index`` is its place in the
    full job list (it decides the rank), ``seed`` its starting noise and transforms."""

    layer: str
    channel: int
    index: int
    seed: int

    @property
    def key(self) -> tuple[str, int]:
        """(layer, channel): what names the job in manifests, whatever its index and seed."""
        return (self.layer, self.channel)


def topk_file(layer: str, channel: int, k: int) -> str:
    """Path of a job's dataset patches (``--images``), relative to the sweep folder.

    Args:
        layer: the job's layer.
        channel: the job's channel.
        k: the number of top images.
    """
    return f"{folder_name(layer)}/c{channel:04d}_top{k}.png"


def is_kind(layer: str) -> bool:
    """Whether a sweep's ``layer`` is ``KIND:LAYER`` (an objective kind with its layer) rather
    than a layer's name.

    Args:
        layer: A sweep's layer, as ``--layers`` gives it.
    """
    return ":" in layer


def job_objective(layer: str, channels: Sequence[int]) -> Objective:
    """The objective of a batch of jobs of one sweep layer, image ``i`` for ``channels[i]``:
    ``channel(LAYER, channels)``, or ``KIND:LAYER:n`` for each ``n`` on its own image.

    Args:
        layer: The sweep's layer, a layer name or ``KIND:LAYER``.
        channels: The channels (units) of the batch's jobs, in image order.
    """
    if not is_kind(layer):
        return channel(layer, list(channels) if len(channels) > 1 else channels[0])
    if len(channels) == 1:
        return parse(f"{layer}:{channels[0]}")
    return Objective.sum([parse(f"{layer}:{c}").on(i) for i, c in enumerate(channels)])


def unit_layer(model: nn.Module, layer: str) -> str:
    """The layer whose channels a sweep layer's jobs are numbered by: ``layer`` itself, or for
    ``KIND:LAYER`` the layer whose channel ``n`` the objective ``KIND:LAYER:n`` reads (the
    deepest, when it reads several: ``mlp`` reads a unit before its GELU for the gradient and
    after it for the value, and the unit is the one after). Top-k dataset patches rank that
    layer's channel.

    Args:
        model: The network.
        layer: The sweep's layer, a layer name or ``KIND:LAYER``.
    """
    if not is_kind(layer):
        return layer
    probe = parse(f"{layer}:0")
    named = [name for name, chans in probe.channels.items() if chans == {0}]
    if not named:
        raise FeatvizError(f"a sweep takes a layer or KIND:LAYER whose objective KIND:LAYER:N "
                           f"reads channel N of a layer (as channel: and mlp: do); "
                           f"{probe.name} reads no one channel: render it with featviz render")
    order = {name: i for i, name in enumerate(named_layers(model))}
    return max(named, key=lambda name: order.get(name, -1))


def _unique_layers(layers: Sequence[str]) -> list[str]:
    """``layers`` without repeats, in their order. Raises a :class:`FeatvizError` when there is
    none, or when two layers would write into the same folder (their images would mix)."""
    if not layers:
        raise FeatvizError("--layers names no layer")
    unique = list(dict.fromkeys(layers))
    folders: dict[str, str] = {}
    for layer in unique:
        other = folders.setdefault(folder_name(layer), layer)
        if other != layer:
            raise FeatvizError(f"layers {other!r} and {layer!r} would share the folder "
                               f"{folder_name(layer)!r}; sweep them into different --out folders")
    return unique


def parse_channel_spec(text: str | Sequence[int]) -> list[int] | None:
    """Read ``--channels``: ``"all"`` gives None (every channel of each layer), ``"0-63"``,
    ``"1,5,9"`` or a mix ``"0-3,8"`` a sorted list without repeats; a list of ints is taken
    as it is. A malformed string raises a :class:`FeatvizError` saying what is accepted.

    Args:
        text: the ``--channels`` text, or a list of channel indices.
    """
    from ...core.objectives import parse_channels

    if isinstance(text, str):
        if text.strip().lower() == "all":
            return None
        try:
            chans = parse_channels(text)
        except ObjectiveSyntaxError:
            raise FeatvizError(f"--channels takes 'all', a range like 0-63, a list like 1,5,9 "
                               f"or a mix like 0-3,8; got {text!r}") from None
    else:
        chans = [int(c) for c in text]
    if not chans:
        raise FeatvizError("--channels names no channel")
    return sorted(set(chans))


def channel_counts(model: nn.Module, layers: Sequence[str],
                   size: SizeLike) -> dict[str, int]:
    """Run one grey image of ``size`` (one side or (height, width)) through ``model`` and
    return the channel count of each layer (the taps hand every layer channels-first,
    whatever its layout). An unknown layer raises an error listing the closest names; one
    that does not run, an error saying so.

    Args:
        model: the network.
        layers: the layer names.
        size: the probe image size, one side or (height, width).
    """
    from ...core.hooks import LayerTap, frozen
    from ...core.objectives import _channels_of

    x = torch.full((1, model_info.image_channels(model), *hw(size)), 0.5,
                   device=model_info.model_device(model), dtype=model_info.model_dtype(model))
    with frozen(model), LayerTap(model, layers, stop_early=False) as tap, torch.no_grad():
        acts = tap(x)
    return {name: _channels_of(name, acts[name]) for name in layers}


def _layer_channels(model: nn.Module, layers: Sequence[str], channels: str | Sequence[int],
                    size: SizeLike) -> dict[str, list[int]]:
    """The channels to sweep of each layer: ``channels`` (as :func:`parse_channel_spec` reads
    it) or, for ``"all"``, every channel the layer has. A channel past a layer's last raises a
    :class:`ChannelError` before anything is rendered."""
    wanted = parse_channel_spec(channels)
    units = {layer: unit_layer(model, layer) for layer in layers}
    counts = channel_counts(model, list(dict.fromkeys(units.values())), size)
    per_layer: dict[str, list[int]] = {}
    for layer in layers:
        n = counts[units[layer]]
        chans = list(range(n)) if wanted is None else wanted
        bad = [c for c in chans if c >= n]
        if bad:
            raise ChannelError(f"channel {bad[0]} is out of range for layer {layer!r}, which has "
                               f"{n} channels (valid: 0-{n - 1})")
        per_layer[layer] = chans
    return per_layer


def job_list(channels: Mapping[str, Sequence[int]], seed: int = 0) -> list[Job]:
    """The full job list: layers in the given order, channels ascending; job (layer, c) gets
    seed ``seed + c`` (see the package docstring for why).

    Args:
        channels: the channels of each layer, by layer name.
        seed: the base seed (default 0).
    """
    jobs: list[Job] = []
    for layer, chans in channels.items():
        start = len(jobs)
        jobs.extend(Job(layer, c, start + i, seed + c) for i, c in enumerate(chans))
    return jobs


def shard(jobs: Sequence[Job], rank: int, world_size: int) -> list[Job]:
    """Rank ``rank``'s share: the jobs whose index is ``rank`` modulo ``world_size``. It
    depends on the full list only, never on what is done, so ranks that read the manifests
    at slightly different moments still never share a job.

    Args:
        jobs: the full job list.
        rank: this process's rank.
        world_size: the number of ranks.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return [j for j in jobs if j.index % world_size == rank]


def batches(jobs: Sequence[Job], batch_size: int) -> Iterator[list[Job]]:
    """Consecutive runs of at most ``batch_size`` jobs of the same layer.

    Args:
        jobs: the jobs, in order.
        batch_size: the most jobs per batch.
    """
    chunk: list[Job] = []
    for job in jobs:
        if chunk and (len(chunk) == batch_size or job.layer != chunk[0].layer):
            yield chunk
            chunk = []
        chunk.append(job)
    if chunk:
        yield chunk
