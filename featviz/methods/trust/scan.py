"""One streaming pass over the photos for path similarity: every unit's top-k photos and a
seeded random sample, each kept with its activation profile (the channel means at every
compared layer), memory bounded by what is kept, never by the number of photos."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...core.hooks import LayerTap, frozen
from ...core.model_info import model_device
from ..dataset import Label, iter_labelled_batches, spatial_activation


@dataclass
class Photo:
    """A kept photo: its name, class (where the source tells it), activation profiles by
    layer and the image itself (half precision: attribution profiles need it again)."""

    name: str
    label: Label | None
    profiles: dict[str, torch.Tensor]
    image: torch.Tensor | None = None


@dataclass
class Scan:
    """What the pass kept: per unit its top photos (strongest first, with the unit's spatial
    maximum on each), and the random sample."""

    top: dict[tuple[str, int], list[tuple[float, Photo]]] = field(default_factory=dict)
    random: list[Photo] = field(default_factory=list)
    seen: int = 0


def profiles(acts: dict[str, torch.Tensor], layers: Iterable[str]) -> dict[str, torch.Tensor]:
    """Each layer's activation profile per image: the mean of every channel over positions
    ([B, C], on the CPU). Positions are averaged away because a top photo holds its feature at
    one place and a visualization everywhere: their maps would not line up, their channel
    statistics can.

    Args:
        acts: ``{layer: [B, C, H, W] or [B, C]}`` from a :class:`LayerTap`.
        layers: The layers wanted.
    """
    out = {}
    for name in layers:
        a = acts[name].float()
        out[name] = (a.flatten(2).mean(dim=2) if a.dim() > 2 else a).cpu()
    return out


def tap_profiles(model: nn.Module, images: torch.Tensor, layers: Sequence[str],
                 batch_size: int = 32) -> dict[str, torch.Tensor]:
    """The profiles (see :func:`profiles`) of a batch of images at ``layers``.

    Args:
        model: The network.
        images: [N, C, H, W] images in [0, 1] at the size the model takes.
        layers: The layers to profile.
        batch_size: Images per forward pass.
    """
    device = model_device(model)
    parts: list[dict[str, torch.Tensor]] = []
    with frozen(model), LayerTap(model, layers) as tap, torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device)
            parts.append(profiles(tap(x), layers))
    return {n: torch.cat([p[n] for p in parts]) for n in layers}


def scan(model: nn.Module, photos: Any, units: Sequence[tuple[str, int]], layers: Sequence[str],
         k: int, randoms: int, seed: int, size: tuple[int, int], batch_size: int,
         progress: bool = False) -> Scan:
    """Stream ``photos`` once: keep every unit's ``k`` strongest photos (by the spatial
    maximum of its channel, as top-k dataset examples rank them) and a reservoir sample of
    ``randoms`` photos drawn with ``seed``, each with its profiles at ``layers``.

    Args:
        model: The network.
        photos: A folder, labelled folder, iterable or dataset of photos.
        units: ``(layer, channel)`` pairs.
        layers: Every layer any unit is compared at (the units' own included).
        k: Top photos kept per unit.
        randoms: Photos in the random sample.
        seed: The seed of the random sample.
        size: (height, width) the photos are read at.
        batch_size: Photos per forward pass.
        progress: Show a progress bar.
    """
    out = Scan(top={u: [] for u in units})
    rng = torch.Generator().manual_seed(seed)
    device = model_device(model)
    batches = iter_labelled_batches(photos, size, batch_size)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc="photos", unit="batch")
    with frozen(model), LayerTap(model, layers) as tap, torch.no_grad():
        for names, labels, x in batches:
            acts = tap(x.to(device))
            prof = profiles(acts, layers)
            # clones: a view would keep its whole batch alive as long as one photo is kept
            kept = [Photo(n, lb, {ly: prof[ly][i].clone() for ly in layers}, x[i].half())
                    for i, (n, lb) in enumerate(zip(names, labels, strict=True))]
            for unit in units:
                scores = spatial_activation(unit[0], acts[unit[0]], unit[1]).flatten(1).amax(1)
                _keep_top(out.top[unit], scores.float().cpu().tolist(), kept, k)
            for photo in kept:
                _reservoir(out.random, photo, out.seen, randoms, rng)
                out.seen += 1
    return out


def _keep_top(top: list[tuple[float, Photo]], scores: list[float], photos: list[Photo],
              k: int) -> None:
    top.extend(zip(scores, photos, strict=True))
    top.sort(key=lambda e: -e[0])
    del top[k:]


def _reservoir(sample: list[Photo], photo: Photo, seen: int, size: int,
               rng: torch.Generator) -> None:
    """Reservoir sampling: after n photos, each is in the sample with probability size/n."""
    if len(sample) < size:
        sample.append(photo)
        return
    j = int(torch.randint(0, seen + 1, (1,), generator=rng))
    if j < size:
        sample[j] = photo
