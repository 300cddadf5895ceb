"""Parametric stimuli for tuning curves: gratings, lines, curves, high-low frequency boundaries
and centre-surround discs, each drawn inside one unit's receptive field.

A :class:`Family` names its parameters and their values; :func:`draw` renders every
combination (the last parameter varies fastest) into a grey image, the stimulus confined to a
box (top, left, bottom, right) behind a raised-cosine window, supersampled so that no edge is
jagged. Lengths are fractions of the box's shorter side ``D``, so one family fits a unit of any
receptive-field size; angles are degrees counter-clockwise from the image's x axis (right),
with y pointing up.

The stimuli follow the synthetic ones of the Distill circuits thread: curves as in "Curve
Detectors" (Cammarata et al. 2020), high-low boundaries as in "High-Low Frequency Detectors"
(Schubert et al. 2021).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ...core.sizes import SizeLike, hw
from ...errors import FeatvizError, unknown

Box = tuple[int, int, int, int]
#: A painter: ``paint(params, u, v, px)`` with ``u``, ``v`` the sample positions in units of the
#: box side (right and up from its centre) and ``px`` one sample's size in those units; returns
#: a contrast in [-1, 1] ``[h, w]`` or colours in [0, 1] ``[3, h, w]``.
Painter = Callable[[dict[str, Any], torch.Tensor, torch.Tensor, float], torch.Tensor]

#: Share of the window's radius left untouched before the raised cosine falls to 0 at the box.
FLAT = 0.5
#: Named colours of :func:`centre_surround`.
COLOURS = {"black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0), "red": (1.0, 0.0, 0.0),
           "green": (0.0, 0.8, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}


@dataclass(frozen=True)
class Family:
    """A family of parametric stimuli.

    ``params``: parameter name -> its values, in drawing order (the last varies fastest);
    ``orientation``: the parameter that is the stimulus' orientation (None for a family
    without one); ``period``: its period in degrees (180 for lines and gratings, 360 for
    stimuli with a direction); ``paint``: the function that draws one stimulus; ``fixed``:
    settings every stimulus shares, handed to ``paint`` with its parameters; ``zero_mean``:
    whether each stimulus' windowed mean is taken out, so the image's mean is the grey's.
    """

    name: str
    params: dict[str, tuple]
    paint: Painter = field(repr=False, compare=False)
    orientation: str | None = "orientation"
    period: float | None = 180.0
    fixed: dict[str, Any] = field(default_factory=dict)
    zero_mean: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """The number of values of each parameter, in order: the shape of a response grid."""
        return tuple(len(v) for v in self.params.values())

    def __len__(self) -> int:
        return math.prod(self.shape)

    def grid(self) -> list[dict[str, Any]]:
        """The parameters of every stimulus, in the order :func:`draw` makes them."""
        names = list(self.params)
        return [dict(zip(names, combo, strict=True))
                for combo in itertools.product(*self.params.values())]


def _values(name: str, values: Sequence[float], low: float = 0.0,
            high: float = math.inf) -> tuple[float, ...]:
    """``values`` as a tuple of floats in [low, high], else an error naming ``name``."""
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise FeatvizError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if not out:
        raise FeatvizError(f"{name} needs at least one value")
    bad = [v for v in out if not (low <= v <= high)]
    if bad:
        raise FeatvizError(f"{name} must lie in [{low:g}, {high:g}], got {bad[0]:g}")
    return out


def _angles(orientations: int | Sequence[float], period: float) -> tuple[float, ...]:
    """``orientations`` evenly spaced angles over ``period`` degrees, or the angles given."""
    if isinstance(orientations, int) and not isinstance(orientations, bool):
        if orientations < 1:
            raise FeatvizError(f"orientations must be at least 1, got {orientations}")
        return tuple(period * i / orientations for i in range(orientations))
    return tuple(v % period for v in _values("orientations", orientations, -math.inf))


def _normal(theta: float, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance from the line through the centre along ``theta`` degrees (positive on
    the side 90 degrees counter-clockwise of it)."""
    t = math.radians(theta)
    return -u * math.sin(t) + v * math.cos(t)


def _stroke(distance: torch.Tensor, width: float, px: float) -> torch.Tensor:
    """Coverage of a stroke ``width`` wide at ``distance`` from its middle: the share of a
    sample it covers, so its edges are smooth (analytic anti-aliasing under the supersampling)."""
    return ((width / 2 - distance) / px + 0.5).clamp(0, 1)


def _paint_gabor(p: dict, u: torch.Tensor, v: torch.Tensor, px: float) -> torch.Tensor:
    s = _normal(p["orientation"], u, v)
    return torch.cos(2 * math.pi * s / p["wavelength"] + math.radians(p["phase"]))


def gabors(orientations: int | Sequence[float] = 16,
           wavelengths: Sequence[float] = (0.15, 0.25, 0.4), phases: int = 4) -> Family:
    """Oriented sine gratings in the soft window (Gabor patches): orientation x wavelength x
    phase. Zero-mean, so responses are not to brightness.

    Args:
        orientations: How many orientations over 180 degrees, or the angles themselves; the
            orientation is that of the stripes.
        wavelengths: Grating periods as fractions of the box side (the defaults keep a
            19-px field's finest grating near 3 px, above the 2-px limit of a pixel grid).
        phases: How many phases, evenly spaced over 360 degrees (phase 0: a bright stripe
            through the centre).
    """
    if not isinstance(phases, int) or phases < 1:
        raise FeatvizError(f"phases must be a whole number >= 1, got {phases!r}")
    params = {"orientation": _angles(orientations, 180.0),
              "wavelength": _values("wavelengths", wavelengths, 1e-3),
              "phase": tuple(360.0 * i / phases for i in range(phases))}
    return Family("gabors", params, _paint_gabor, "orientation", 180.0, zero_mean=True)


def _paint_line(p: dict, u: torch.Tensor, v: torch.Tensor, px: float) -> torch.Tensor:
    return p["contrast"] * _stroke(_normal(p["orientation"], u, v).abs(), p["width"], px)


def lines(orientations: int | Sequence[float] = 16, widths: Sequence[float] = (0.03, 0.08),
          contrasts: Sequence[float] = (-1.0, 1.0)) -> Family:
    """Straight lines through the centre: orientation x width x contrast (-1 dark, 1 light).

    Args:
        orientations: How many orientations over 180 degrees, or the angles themselves.
        widths: Line widths as fractions of the box side.
        contrasts: Line contrasts against the grey, in [-1, 1].
    """
    params = {"orientation": _angles(orientations, 180.0),
              "width": _values("widths", widths, 1e-3),
              "contrast": _values("contrasts", contrasts, -1.0, 1.0)}
    return Family("lines", params, _paint_line, "orientation", 180.0)


def _arc_distance(p: dict, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Distance to the arc of curvature ``p["curvature"]`` whose apex sits ``p["offset"]`` from
    the centre along ``p["orientation"]``, the direction it bulges towards; the arc covers at
    most a half circle and one box side of length."""
    t = math.radians(p["orientation"])
    d = (math.cos(t), math.sin(t))
    ax, ay = p["offset"] * d[0], p["offset"] * d[1]
    k = p["curvature"]
    if k == 0:  # a straight line through the apex, across the direction
        return ((u - ax) * d[0] + (v - ay) * d[1]).abs()
    radius = 1.0 / k
    cx, cy = ax - radius * d[0], ay - radius * d[1]
    qx, qy = u - cx, v - cy
    half = min(0.5 / radius, math.pi / 2)  # half the arc's angle: length 1 box side at most
    angle = torch.atan2(qx * d[1] - qy * d[0], qx * d[0] + qy * d[1]).abs()
    on_arc = ((qx ** 2 + qy ** 2).sqrt() - radius).abs()
    ends = []
    for sign in (1, -1):
        ex = cx + radius * math.cos(t + sign * half)
        ey = cy + radius * math.sin(t + sign * half)
        ends.append(((u - ex) ** 2 + (v - ey) ** 2).sqrt())
    return torch.where(angle <= half, on_arc, torch.minimum(*ends))


def _paint_curve(p: dict, u: torch.Tensor, v: torch.Tensor, px: float) -> torch.Tensor:
    return p["contrast"] * _stroke(_arc_distance(p, u, v), p["width"], px)


def curves(orientations: int | Sequence[float] = 16,
           curvatures: Sequence[float] = (0.0, 1.5, 2.5, 4.0, 6.0),
           offsets: Sequence[float] = (0.0,),
           contrasts: Sequence[float] = (-1.0, 1.0), width: float = 0.03) -> Family:
    """Arcs of a circle, like the synthetic curves of "Curve Detectors" (Cammarata et al.
    2020): orientation (over 360 degrees: the direction the arc bulges towards, so 90 is a
    cap, ∩) x curvature x offset x contrast.

    Args:
        orientations: How many directions over 360 degrees, or the angles themselves.
        curvatures: 1 / radius in units of the box side (radius = side / curvature); 0 is a
            straight line across the direction. The arc spans at most one box side and at
            most a half circle.
        offsets: Where the arc's apex sits, as a fraction of the box side from the centre
            along the orientation (negative: towards the arc's inside).
        contrasts: Stroke contrasts against the grey, in [-1, 1] (-1 dark, 1 light).
        width: The stroke's width as a fraction of the box side.
    """
    params = {"orientation": _angles(orientations, 360.0),
              "curvature": _values("curvatures", curvatures, 0.0),
              "offset": _values("offsets", offsets, -0.5, 0.5),
              "contrast": _values("contrasts", contrasts, -1.0, 1.0)}
    fixed = {"width": _values("width", [width], 1e-3)[0]}
    return Family("curves", params, _paint_curve, "orientation", 360.0, fixed)


def _texture(u: torch.Tensor, v: torch.Tensor, frequency: float, seed: int,
             components: int = 48) -> torch.Tensor:
    """Isotropic band-pass texture of unit RMS: random sinusoids with frequencies within half
    an octave of ``frequency`` (cycles per box side), in every direction. A function of
    position, so supersampling anti-aliases it like any other stimulus."""
    if frequency <= 0:  # no texture: flat grey
        return torch.zeros_like(u)
    gen = torch.Generator().manual_seed(seed)
    angle = torch.rand(components, generator=gen) * 2 * math.pi
    freq = frequency * 2 ** (torch.rand(components, generator=gen) - 0.5)
    phase = torch.rand(components, generator=gen) * 2 * math.pi
    out = torch.zeros_like(u)
    for a, f, ph in zip(angle.tolist(), freq.tolist(), phase.tolist(), strict=True):
        out += torch.cos(2 * math.pi * f * (u * math.cos(a) + v * math.sin(a)) + ph)
    return out * math.sqrt(2 / components)


def _paint_high_low(p: dict, u: torch.Tensor, v: torch.Tensor, px: float) -> torch.Tensor:
    t = math.radians(p["orientation"])
    # the textures turn with the boundary: every orientation is one image, rotated
    across, along = u * math.cos(t) + v * math.sin(t), -u * math.sin(t) + v * math.cos(t)
    side = (across / px + 0.5).clamp(0, 1)  # 1 on the high side
    high = _texture(across, along, p["frequency"], p["seed"])
    low = _texture(across, along, p["low"], p["seed"] + 1)
    return (p["rms"] * (side * high + (1 - side) * low)).clamp(-1, 1)


def high_low(orientations: int | Sequence[float] = 16, frequencies: Sequence[float] = (6.0, 12.0),
             low: float = 0.0, rms: float = 0.4, seed: int = 0) -> Family:
    """A straight boundary through the centre with high-frequency texture on one side and
    a smooth side on the other (flat grey, or with ``low`` > 0 a low-frequency texture of
    the same contrast), as the stimuli of "High-Low Frequency Detectors" (Schubert et al.
    2021): orientation (over 360 degrees: the direction of the high side, so 90 puts the
    texture above) x frequency. The image keeps the grey's mean, and every orientation is
    the same image rotated (the textures turn with the boundary).

    Args:
        orientations: How many directions over 360 degrees, or the angles themselves.
        frequencies: The high side's frequency in cycles per box side.
        low: The smooth side's frequency in cycles per box side (0: flat grey, the default,
            so that no luminance edge of a low-frequency blob meets the boundary).
        rms: The textures' RMS contrast (1: the full range around the grey).
        seed: Draws the textures (the same for every stimulus of the family).
    """
    params = {"orientation": _angles(orientations, 360.0),
              "frequency": _values("frequencies", frequencies, 1e-3)}
    fixed = {"low": _values("low", [low], 0.0)[0], "rms": _values("rms", [rms], 0.0, 1.0)[0],
             "seed": int(seed)}
    return Family("high_low", params, _paint_high_low, "orientation", 360.0, fixed,
                  zero_mean=True)


def _paint_disc(p: dict, u: torch.Tensor, v: torch.Tensor, px: float) -> torch.Tensor:
    inside = _stroke((u ** 2 + v ** 2).sqrt(), 2 * p["radius"], px)
    centre = torch.tensor(_rgb(p["centre"]))[:, None, None]
    surround = torch.tensor(_rgb(p["surround"]))[:, None, None]
    return inside * centre + (1 - inside) * surround


def _rgb(colour: str | Sequence[float]) -> tuple[float, float, float]:
    """A colour name of :data:`COLOURS` or an RGB triple in [0, 1], as a triple."""
    if isinstance(colour, str):
        if colour not in COLOURS:
            raise unknown("colour", colour, COLOURS, hint="or give an RGB triple in [0, 1]")
        return COLOURS[colour]
    rgb = _values("colour", colour, 0.0, 1.0)
    if len(rgb) != 3:
        raise FeatvizError(f"a colour is a name or an RGB triple, got {colour!r}")
    return rgb[0], rgb[1], rgb[2]


def centre_surround(colours: Sequence[str | Sequence[float]] = tuple(COLOURS),
                    radii: Sequence[float] = (0.1, 0.2, 0.3)) -> Family:
    """A disc of one colour in a surround of another: centre colour x surround colour x
    radius. No orientation. The surround fills the window, so the mean is not the grey's.

    Args:
        colours: Names of :data:`COLOURS` or RGB triples in [0, 1], used for both the centre
            and the surround.
        radii: Disc radii as fractions of the box side.
    """
    colours = tuple(c if isinstance(c, str) else _rgb(c) for c in colours)
    if not colours:
        raise FeatvizError("colours needs at least one colour")
    for c in colours:
        _rgb(c)
    params = {"centre": colours, "surround": colours, "radius": _values("radii", radii, 0.0)}
    return Family("centre_surround", params, _paint_disc, None, None)


#: The families by name, with their default grids.
FAMILIES: dict[str, Callable[[], Family]] = {
    "gabors": gabors, "lines": lines, "curves": curves, "high_low": high_low,
    "centre_surround": centre_surround}


def get_family(name: Family | str) -> Family:
    """The family named ``name`` with its default grid (a :class:`Family` passes through);
    an unknown name is an error listing the closest.

    Args:
        name: A family name (``"curves"``), or a family.
    """
    if isinstance(name, Family):
        return name
    if not isinstance(name, str) or name not in FAMILIES:
        raise unknown("stimulus family", str(name), FAMILIES,
                      hint=f"the families are {', '.join(FAMILIES)}")
    return FAMILIES[name]()


@dataclass
class _Canvas:
    """The sample grid of one box: positions in box sides, the window, where it lands."""

    u: torch.Tensor
    v: torch.Tensor
    window: torch.Tensor
    px: float
    rows: slice
    cols: slice
    supersample: int


def _canvas(size: tuple[int, int], box: Box, supersample: int) -> _Canvas:
    top, left, bottom, right = box
    r0, r1, c0, c1 = max(top, 0), min(bottom, size[0]), max(left, 0), min(right, size[1])
    side = min(bottom - top, right - left)
    cy, cx = (top + bottom - 1) / 2, (left + right - 1) / 2
    step = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    ys = (torch.arange(r0, r1, dtype=torch.float64)[:, None] + step).flatten()
    xs = (torch.arange(c0, c1, dtype=torch.float64)[:, None] + step).flatten()
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    # the window reaches 0 at the box's edges (an ellipse in a box that is not square)
    r = (((y - cy) / ((bottom - top) / 2)) ** 2 + ((x - cx) / ((right - left) / 2)) ** 2).sqrt()
    ramp = ((r - FLAT) / (1 - FLAT)).clamp(0, 1)
    window = 0.5 * (1 + torch.cos(math.pi * ramp))
    return _Canvas(((x - cx) / side).float(), ((cy - y) / side).float(), window.float(),
                   1.0 / (side * supersample), slice(r0, r1), slice(c0, c1), supersample)


def _check_box(box: Sequence[int], size: tuple[int, int]) -> Box:
    try:
        top, left, bottom, right = (int(b) for b in box)
    except (TypeError, ValueError):
        raise FeatvizError(f"box must be (top, left, bottom, right) in pixels, got {box!r}"
                           ) from None
    if bottom <= top or right <= left:
        raise FeatvizError(f"box {box!r} is empty: it needs top < bottom and left < right")
    if bottom <= 0 or right <= 0 or top >= size[0] or left >= size[1]:
        raise FeatvizError(f"box {box!r} lies outside the {size[0]}x{size[1]} image")
    return top, left, bottom, right


def _draw_one(fam: Family, params: dict, canvas: _Canvas, full: torch.Tensor,
              background: float) -> torch.Tensor:
    """One stimulus: ``full`` ([3, H, W] grey) with the windowed stimulus in the box."""
    pattern = fam.paint({**fam.fixed, **params}, canvas.u, canvas.v, canvas.px)
    if pattern.dim() == 2 and fam.zero_mean:  # a texture's mean is not what is measured
        pattern = pattern - (pattern * canvas.window).sum() / canvas.window.sum()
    if pattern.dim() == 2:  # a contrast: scaled so that +-1 reaches black or white
        amplitude = min(background, 1 - background)
        sub = background + amplitude * pattern * canvas.window
        sub = sub[None].expand(3, -1, -1)
    else:
        sub = background + canvas.window * (pattern - background)
    pooled = F.avg_pool2d(sub[None], canvas.supersample)[0]
    img = full.clone()
    img[:, canvas.rows, canvas.cols] = pooled
    return img.clamp(0, 1)


def _batches(fam: Family, size: SizeLike, box: Sequence[int], background: float = 0.5,
             batch_size: int = 64, supersample: int = 4) -> Iterator[torch.Tensor]:
    """:func:`draw`'s images, ``batch_size`` at a time."""
    size = hw(size)
    box = _check_box(box, size)
    if not 0 <= background <= 1:
        raise FeatvizError(f"background must be a grey level in [0, 1], got {background!r}")
    if not isinstance(supersample, int) or supersample < 1:
        raise FeatvizError(f"supersample must be a whole number >= 1, got {supersample!r}")
    canvas = _canvas(size, box, supersample)
    full = torch.full((3, *size), float(background))
    grid = fam.grid()
    for start in range(0, len(grid), batch_size):
        yield torch.stack([_draw_one(fam, p, canvas, full, background)
                           for p in grid[start:start + batch_size]])


def draw(family: Family | str, size: SizeLike, box: Sequence[int], background: float = 0.5,
         supersample: int = 4) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Draw every stimulus of ``family`` into a grey image of ``size``.

    The stimulus is confined to ``box`` (top, left, bottom, right; exclusive ends, may reach
    outside the image) and centred on it, behind a window that is 1 over the inner half of
    the box's radius and falls as a raised cosine to 0 at its edges, so the box's border draws
    no edge of its own. Each pixel is the mean of ``supersample`` x ``supersample`` samples.

    Args:
        family: A :class:`Family` or the name of one in :data:`FAMILIES` (default grid).
        size: The image: one side or (height, width).
        box: (top, left, bottom, right) in pixels, usually a unit's receptive field.
        background: The grey level in [0, 1] outside the stimulus.
        supersample: Samples per pixel along each axis (anti-aliasing).

    Returns:
        The images ``[N, 3, H, W]`` in [0, 1] and, for each, its parameters
        (:meth:`Family.grid`, the same order).
    """
    fam = get_family(family)
    batches = list(_batches(fam, size, box, background, 256, supersample))
    return torch.cat(batches), fam.grid()
