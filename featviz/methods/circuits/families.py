"""Families of units: scan a whole layer with one stimulus family and keep the channels whose
orientation tuning is sharp, unimodal and strong, as "Curve Detectors" (Cammarata et al. 2020)
and "High-Low Frequency Detectors" (Schubert et al. 2021) found their families.

One pass of the family's stimuli through the model measures every channel at the layer's
centre unit at once (:func:`~featviz.methods.circuits.tuning.measure`); :class:`FamilyScan`
holds the per-channel tuning, the units found, their coverage of the orientations, and draws
a sheet of them (feature visualization, tuning curve, top dataset patches).
"""

from __future__ import annotations

import itertools
import os
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...core import images as _images
from ...core import objectives as _objectives
from ...core.render import render
from ...core.sizes import SizeLike
from ...errors import ChannelError, FeatvizError, non_negative
from .._topk import top_k
from .stimuli import Box, Family, get_family
from .tuning import TuningCurve, circular_stats, measure, new_figure, orientation_curve, save_png
from .views import RenderCache

#: Default floor of a member's peak response, as a share of the largest stimulus-driven
#: response (peak minus grey) of any channel of the layer. Measured on BVLC GoogLeNet
#: mixed3b with the default curves: the channels' best responses have a median of 6 % and a
#: 90th percentile of 30 % of the largest, so a quarter keeps about the strongest tenth of
#: the layer and drops units that only tick over on these stimuli.
MIN_RESPONSE = 0.25
#: Default ceiling of a member's circular variance. On the same scan the strongly responding
#: channels split into a sharply tuned group (circular variance <= 0.45) and a broad one
#: (>= 0.53), with nothing between; 0.5 lies in that gap. For reference, a half-wave
#: rectified cosine over 360 degrees has 0.21 and a flat curve 1.
MAX_CIRCULAR_VARIANCE = 0.5


@dataclass(repr=False)
class FamilyScan:
    """A layer's channels measured with one stimulus family at its centre unit.

    Per channel (index = channel): ``responses`` ``[C, *family.shape]``, ``baseline`` (the
    grey image's response), ``orientation_curves`` ``[C, n]`` (best response per
    orientation), ``circular_variances`` (on the curve rectified above the grey response),
    ``unimodal`` and ``gains`` (peak minus grey). ``found``: the members, sorted by preferred
    orientation. ``model`` is kept for :meth:`sheet`.
    """

    model: nn.Module
    layer: str
    family: Family
    responses: torch.Tensor
    baseline: torch.Tensor
    orientation_curves: torch.Tensor
    circular_variances: torch.Tensor
    unimodal: torch.Tensor
    gains: torch.Tensor
    found: list[int]
    box: Box
    size: tuple[int, int]
    seconds: float
    min_response: float
    max_circular_variance: float

    @property
    def channels(self) -> int:
        """How many channels the layer has (all were measured)."""
        return int(self.responses.shape[0])

    def preferred_orientation(self, channel: int) -> float:
        """Any channel's preferred orientation in degrees: the peak of its orientation curve.

        Args:
            channel: The channel.
        """
        angles = self.family.params[self.family.orientation]
        return float(angles[int(self.orientation_curves[channel].argmax())])

    @property
    def preferred(self) -> dict[int, float]:
        """Each found channel's preferred orientation in degrees (the peak of its curve)."""
        return {c: self.preferred_orientation(c) for c in self.found}

    @property
    def circular_variance(self) -> dict[int, float]:
        """Each found channel's circular variance."""
        return {c: float(self.circular_variances[c]) for c in self.found}

    def histogram(self, bins: int = 8) -> torch.Tensor:
        """How many found units prefer each of ``bins`` equal orientation bins over the
        period (bin ``i`` holds [i, i+1) x period / bins degrees).

        Args:
            bins: The number of bins over the family's period.
        """
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise FeatvizError(f"bins must be a whole number >= 1, got {bins!r}")
        width = self.family.period / bins
        counts = torch.zeros(bins, dtype=torch.long)
        for angle in self.preferred.values():
            counts[int((angle % self.family.period) // width) % bins] += 1
        return counts

    def coverage(self, bins: int = 8) -> float:
        """The share of ``bins`` equal orientation bins that hold at least one found unit's
        preferred orientation (1: the units tile the circle at that resolution).

        Args:
            bins: The number of bins over the family's period.
        """
        return float((self.histogram(bins) > 0).float().mean())

    def curve(self, channel: int) -> TuningCurve:
        """The tuning curve of one channel, from the scan's measurements.

        Args:
            channel: The channel's index in the layer.
        """
        if isinstance(channel, bool) or not isinstance(channel, int) \
                or not 0 <= channel < self.channels:
            raise ChannelError(f"channel {channel!r} is out of range for layer {self.layer!r}, "
                               f"which has {self.channels} channels (valid: 0-"
                               f"{self.channels - 1})")
        return TuningCurve(self.layer, channel, self.family, self.responses[channel],
                           float(self.baseline[channel]), self.box)

    def summary(self) -> str:
        """A few lines: how many channels were found, which, their coverage, the time."""
        n = len(self.found)
        share = 100 * n / max(self.channels, 1)
        hist = " ".join(str(int(c)) for c in self.histogram(8))
        lines = [f"{self.layer} / {self.family.name}: {n} of {self.channels} channels "
                 f"({share:.1f} %) are sharply tuned (circular variance <= "
                 f"{self.max_circular_variance:g}), unimodal and respond >= "
                 f"{self.min_response:g} x the layer's largest response",
                 f"coverage {self.coverage(8):.0%} of 8 orientation bins over "
                 f"{self.family.period:g} degrees (units per bin: {hist}); measured in "
                 f"{self.seconds:.1f} s"]
        if self.found:
            lines.append("found: " + ", ".join(f"{c} ({a:g}°)" for c, a in self.preferred.items()))
        return "\n".join(lines)

    def __repr__(self) -> str:
        shown = ", ".join(str(c) for c in self.found[:12])
        more = ", ..." if len(self.found) > 12 else ""
        return (f"FamilyScan({self.layer}, {self.family.name}: {len(self.found)} of "
                f"{self.channels} channels [{shown}{more}], coverage {self.coverage(8):.0%} "
                f"of 8 bins, {self.seconds:.1f} s)")

    def sheet(self, path: str | os.PathLike, images: str | os.PathLike | Iterable | None = None,
              k: int = 4, steps: int = 256, seed: int = 0, *, max_units: int = 16,
              render_size: SizeLike | None = 128, max_images: int | None = None,
              progress: bool = False, cache: RenderCache | None = None) -> Path:
        """Write a PNG with one row per found unit (the strongest ``max_units``, in order of
        preferred orientation): its feature visualization (all rendered in one batch with
        ``objectives.channel``), its tuning curve and, with ``images``, its ``k`` strongest
        dataset patches (:func:`~featviz.methods.deconv.top_k`).

        Args:
            path: The PNG to write (atomically).
            images: A folder or other image source for the top-k patches; None: no patches.
            k: Patches per unit.
            steps: Render steps per feature visualization (about 32 for a quick look).
            seed: The renders' seed.
            max_units: At most this many rows.
            render_size: The renders' side (or (h, w)); None: the model's input size.
            max_images: Search only the first this many images of a folder (None: all).
            progress: Show the render's progress bar.
            cache: A :class:`~featviz.methods.circuits.RenderCache` to take the renders from
                (and keep them in); its steps, seed and size then apply instead of these.
        """
        units = self._shown(max_units)
        if not units:
            raise FeatvizError(f"no unit of {self.layer!r} was found with {self.family.name!r}: "
                               "nothing to draw; loosen min_response or "
                               "max_circular_variance")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise FeatvizError(f"k must be a whole number >= 1, got {k!r}")
        if cache is not None:
            rendered = torch.stack(cache.get(self.model, [(self.layer, c) for c in units]))
        else:
            rendered = render(self.model, _objectives.channel(self.layer, units), steps=steps,
                              seed=seed, size=render_size, progress=progress).shown()
        patches = self._patches(units, images, k, max_images) if images is not None else None
        fig = self._figure(units, rendered, patches, k)
        return save_png(fig, path, dpi=90)

    def _shown(self, max_units: int) -> list[int]:
        """The found units with the largest gains, at most ``max_units``, in found order."""
        if isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 1:
            raise FeatvizError(f"max_units must be a whole number >= 1, got {max_units!r}")
        strongest = set(sorted(self.found, key=lambda c: -float(self.gains[c]))[:max_units])
        return [c for c in self.found if c in strongest]

    def _patches(self, units: list[int], images: Any, k: int, max_images: int | None
                 ) -> dict[int, list[torch.Tensor]]:
        """The ``k`` strongest dataset patches of each unit."""
        source = images
        if max_images is not None:
            if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
                raise FeatvizError(f"max_images must be a whole number >= 1, got {max_images!r}")
            if isinstance(images, (str, os.PathLike)):
                source = [str(p) for p in _images.list_images(images)[:max_images]]
            else:
                source = list(itertools.islice(iter(images), max_images))
        found = top_k(self.model, source, self.layer, units, k=k, size=self.size)
        return {c: [e.patch for e in found.entries.get(c, [])] for c in units}

    def _figure(self, units: list[int], rendered: torch.Tensor,
                patches: dict[int, list[torch.Tensor]] | None, k: int) -> Any:
        cols = 2 + (k if patches is not None else 0)
        height = 1.9 * len(units) + 0.7  # inches: the rows, and the header above them
        fig = new_figure((1.9 * cols, height))
        grid = fig.add_gridspec(len(units), cols, hspace=0.5, wspace=0.15, left=0.02,
                                right=0.98, top=1 - 0.75 / height, bottom=0.1 / height)
        head = " ".join(self.summary().split("\n")[:2])
        fig.text(0.5, 1 - 0.08 / height, "\n".join(textwrap.wrap(head, int(22 * cols))),
                 ha="center", va="top", fontsize=6)
        for row, channel in enumerate(units):
            ax = fig.add_subplot(grid[row, 0])
            _show(ax, rendered[row])
            pref = self.curve(channel).preferred
            extra = ", ".join(f"{n} {v:g}" for n, v in pref.items()
                              if n != self.family.orientation and isinstance(v, float))
            cv = float(self.circular_variances[channel])
            angle = self.preferred_orientation(channel)
            ax.set_title(f"{self.layer}:{channel}  {angle:g}°  cv {cv:.2f}\n{extra}",
                         fontsize=6)
            polar = fig.add_subplot(grid[row, 1], projection="polar")
            self.curve(channel).plot(ax=polar, legend=False)
            polar.set_title("")
            for j, patch in enumerate((patches or {}).get(channel, [])[:k]):
                pax = fig.add_subplot(grid[row, 2 + j])
                _show(pax, patch)
                if row == 0 and j == 0:
                    pax.set_title("top dataset patches", fontsize=6, loc="left")
        return fig


def _show(ax: Any, image: torch.Tensor) -> None:
    """``image`` [C, H, W] in [0, 1] on ``ax``, without ticks."""
    img = image.detach().float().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img[:3].permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def members(orientation_curves: torch.Tensor, baseline: torch.Tensor, angles: Sequence[float],
            period: float, min_response: float, max_circular_variance: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which channels belong to a family: (member mask, circular variances, unimodal mask,
    gains) from the orientation curves ``[C, n]`` and grey responses ``[C]``.

    A member's curve is sharp (circular variance <= ``max_circular_variance``) and unimodal,
    and its gain (peak minus grey response) is above 0 and at least ``min_response`` times
    the largest gain of the layer.

    Args:
        orientation_curves: Best response per orientation, ``[C, n]``.
        baseline: Each channel's response to the plain grey image, ``[C]``.
        angles: The orientations in degrees.
        period: Their period in degrees.
        min_response: The gain floor as a share of the layer's largest gain.
        max_circular_variance: The sharpness ceiling.
    """
    cv, uni = circular_stats(orientation_curves, angles, period, baseline)
    gains = orientation_curves.amax(dim=1) - baseline
    floor = min_response * float(gains.max().clamp_min(0))
    strong = (gains > 0) & (gains >= floor)
    return (cv <= max_circular_variance) & uni & strong, cv, uni, gains


def scan(model: nn.Module, layer: str, family: Family | str, *, size: SizeLike | None = None,
         batch_size: int = 64, extent: float = 1.0, min_response: float = MIN_RESPONSE,
         max_circular_variance: float = MAX_CIRCULAR_VARIANCE) -> FamilyScan:
    """Find the channels of ``layer`` that belong to a stimulus family: one pass of all the
    family's stimuli (drawn in the receptive field of the layer's centre unit) measures every
    channel there; a channel belongs when its orientation curve (best response per
    orientation) is sharp and unimodal and its peak is a real response (see :func:`members`).

    Args:
        model: The network (takes images in [0, 1]).
        layer: A convolutional layer's name.
        family: A family with an orientation, or its name (``"curves"``, ``"high_low"``...).
        size: The input: one side or (height, width); default the model's.
        batch_size: Stimuli per forward pass.
        extent: Scale of the stimulus box about the receptive field.
        min_response: Floor of a member's gain (peak minus grey response), as a share of the
            layer's largest gain (:data:`MIN_RESPONSE`).
        max_circular_variance: Ceiling of a member's circular variance
            (:data:`MAX_CIRCULAR_VARIANCE`).
    """
    fam = get_family(family)
    if fam.orientation is None:
        raise FeatvizError(f"family {fam.name!r} has no orientation to be tuned to; scan a "
                           "family with one (gabors, lines, curves, high_low)")
    min_response = non_negative("min_response", min_response, "a share of the largest gain")
    max_cv = non_negative("max_circular_variance", max_circular_variance, "at most 1")
    m = measure(model, layer, fam, size=size, batch_size=batch_size, extent=extent)
    responses = m.responses.T.reshape(m.responses.shape[1], *fam.shape)
    curves = orientation_curve(responses, fam)
    angles = fam.params[fam.orientation]
    member, cv, uni, gains = members(curves, m.baseline, angles, fam.period, min_response,
                                     max_cv)
    peak = curves.argmax(dim=1)
    found = sorted(member.nonzero().flatten().tolist(), key=lambda c: (int(peak[c]), c))
    return FamilyScan(model, layer, fam, responses, m.baseline, curves, cv, uni, gains, found,
                      m.box, m.size, m.seconds, min_response, max_cv)

