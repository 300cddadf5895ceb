"""Transformation robustness: random jitter, pad, scale and rotation applied each step.

Each image of a batch gets its own random draw, from a ``torch.Generator`` on the images'
device or from :class:`ImageStreams` (one stream per image seed, so that an image's transforms
do not depend on which other images share its batch); a seed repeats a run exactly.

The geometric transforms are affine maps; :class:`Compose` multiplies consecutive ones into a
single matrix per image and resamples once (``grid_sample``), instead of warping the image once
per transform. Integer shifts (pad, jitter, crop) land on pixel centres, so on their own they
copy pixels (up to float32 rounding of the sampling coordinates, below 1e-4). Images may be
rectangles: sizes are (height, width), scale and rotation act about the centre in square
pixels, and pad/jitter change both sides by the same number of pixels.

Presets: ``"standard"`` (lucid's ``render_vis``), ``"distill"`` (the Distill article's
figures) and ``"none"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .colour_jitter import color_jitter as color_jitter  # one of the transforms users list
from .sizes import SizeLike, hw
from .transform_base import ImageStreams as ImageStreams
from .transform_base import Random, Transform
from .transform_base import numbers as _numbers

Size = tuple[int, int]  # (height, width), as every transform reads a size


def _integers(u: torch.Tensor, high: int) -> torch.Tensor:
    """Integers 0..high-1 from numbers in [0, 1)."""
    return (u * high).long().clamp_max(high - 1)


def _pick(values, u: torch.Tensor) -> torch.Tensor:
    """A list picks one of its values; a (low, high) tuple draws uniformly in between."""
    if isinstance(values, tuple) and len(values) == 2:
        lo, hi = values
        return lo + (hi - lo) * u
    table = torch.tensor([float(v) for v in values], device=u.device)
    return table[_integers(u, len(values))]


def _eye(n: int, device) -> torch.Tensor:
    return torch.eye(3, device=device).expand(n, 3, 3).clone()


class Affine(Transform):
    """A geometric transform given, per image, by a 3x3 matrix that maps output pixel
    coordinates (x right, y down, pixel centres at integers) to input pixel coordinates.

    A subclass says how many random numbers per image it uses (``draws``) and builds its
    matrices from them (``from_numbers``), so that :class:`Compose` can draw and build many
    steps' matrices at once."""

    draws = 0

    def out_size(self, size: Size) -> Size:
        return size

    def matrices(self, n: int, size: Size, generator, device) -> torch.Tensor:
        """[n, 3, 3]: one random matrix per image, for an input of ``size``."""
        return self.from_numbers(_numbers(self.draws, n, generator, device), n, size, device)

    def from_numbers(self, u: torch.Tensor, n: int, size: Size, device) -> torch.Tensor:
        """[n, 3, 3] from ``u`` [draws, n], numbers in [0, 1)."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: Random = None) -> torch.Tensor:
        return Compose([self])(x, generator)


class pad(Affine):  # noqa: N801  (lowercase, like the lucid transforms users know)
    """Grow the canvas by ``width`` pixels on every side, filled with ``fill`` (grey), or with
    ``mode="mirror"`` (reflected about the border, edge pixel repeated) or ``"edge"``."""

    def __init__(self, width: int, fill: float = 0.5, mode: str = "constant"):
        if width < 0:
            raise ValueError(f"pad width must be >= 0, got {width}")
        if mode not in _PADDING:
            raise ValueError(f"pad mode must be one of {', '.join(_PADDING)}, got {mode!r}")
        self.width, self.fill, self.mode = int(width), float(fill), mode

    def out_size(self, size: Size) -> Size:
        return size[0] + 2 * self.width, size[1] + 2 * self.width

    def from_numbers(self, u, n, size, device):
        m = _eye(n, device)
        m[:, 0, 2] = m[:, 1, 2] = -self.width
        return m

    def __repr__(self) -> str:
        return f"pad({self.width})"


class jitter(Affine):  # noqa: N801
    """Random crop that shrinks the image by ``d`` pixels: the offset is drawn uniformly from
    0..d in x and y separately, so the content moves by up to ±d/2 in both directions."""

    def __init__(self, d: int):
        if d < 0:
            raise ValueError(f"jitter must be >= 0 pixels, got {d}")
        self.d = int(d)

    def out_size(self, size: Size) -> Size:
        if min(size) <= self.d:
            raise ValueError(f"jitter({self.d}) needs an image larger than {self.d} px, got {size}")
        return size[0] - self.d, size[1] - self.d

    draws = 2  # x, then y

    def from_numbers(self, u, n, size, device):
        m = _eye(n, device)
        m[:, :2, 2] = _integers(u.T, self.d + 1).to(m.dtype)
        return m

    def __repr__(self) -> str:
        return f"jitter({self.d})"


def _about_centre(core: torch.Tensor, size: Size) -> torch.Tensor:
    """Conjugate a per-image 2x2 map with translations so that it acts about the centre."""
    cy, cx = (size[0] - 1) / 2, (size[1] - 1) / 2
    centre = torch.tensor([cx, cy], device=core.device)
    m = _eye(core.shape[0], core.device)
    m[:, :2, :2] = core
    m[:, :2, 2] = centre - core @ centre
    return m


class scale(Affine):  # noqa: N801
    """Zoom about the centre by a factor drawn per image from ``scales`` (a list, as lucid), or
    uniformly from a ``(low, high)`` tuple; the canvas keeps its size."""

    def __init__(self, scales: Sequence[float] | tuple[float, float]):
        if not len(scales) or min(scales) <= 0:
            raise ValueError(f"scales must be positive numbers, got {scales!r}")
        self.scales = scales

    draws = 1

    def from_numbers(self, u, n, size, device):
        s = _pick(self.scales, u[0])
        core = torch.diag_embed(torch.stack([1 / s, 1 / s], dim=1))
        return _about_centre(core, size)

    def __repr__(self) -> str:
        return f"scale({self.scales!r})"


class rotate(Affine):  # noqa: N801
    """Rotate about the centre by an angle in degrees drawn per image from ``angles`` (a list,
    as lucid), or uniformly from a ``(low, high)`` tuple: ``rotate((-10, 10))``."""

    def __init__(self, angles: Sequence[float] | tuple[float, float]):
        if not len(angles):
            raise ValueError("rotate needs at least one angle")
        self.angles = angles

    draws = 1

    def from_numbers(self, u, n, size, device):
        a = _pick(self.angles, u[0]) * (math.pi / 180)
        cos, sin = torch.cos(a), torch.sin(a)
        core = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
        return _about_centre(core, size)

    def __repr__(self) -> str:
        return f"rotate({self.angles!r})"


class crop(Affine):  # noqa: N801
    """Cut the central ``size`` pixels (one side or (height, width)), e.g. to remove padding
    again."""

    def __init__(self, size: SizeLike):
        self.size = hw(size)

    def out_size(self, size: Size) -> Size:
        if self.size[0] > size[0] or self.size[1] > size[1]:
            raise ValueError(f"crop to {self.size} is larger than the image {size}")
        return self.size

    def from_numbers(self, u, n, size, device):
        m = _eye(n, device)
        m[:, 0, 2] = (size[1] - self.size[1]) // 2
        m[:, 1, 2] = (size[0] - self.size[0]) // 2
        return m

    def __repr__(self) -> str:
        return f"crop({self.size})"


class fit(Affine):  # noqa: N801
    """Bring the image to exactly ``size`` (one side or (height, width)), for a model that
    takes no other: the central part when the image is larger (lucid's pad-then-crop: what
    padding added is cut off again), the whole image resampled up when it is smaller; each
    axis on its own, so a rectangle may be cut along one and stretched along the other."""

    def __init__(self, size: SizeLike):
        self.size = hw(size)

    def out_size(self, size: Size) -> Size:
        return self.size

    def from_numbers(self, u, n, size, device):
        m = _eye(n, device)
        for axis, (have, want) in enumerate(zip((size[1], size[0]), (self.size[1], self.size[0]),
                                                strict=True)):
            if have >= want:  # crop: shift by the margin
                m[:, axis, 2] = (have - want) // 2
            else:  # stretch: pixel centres of the output spread over the whole input
                m[:, axis, axis] = have / want
                m[:, axis, 2] = (have / want - 1) / 2
        return m

    def __repr__(self) -> str:
        return f"fit({self.size})"


def fitted(pipeline: Callable, size: SizeLike) -> Callable:
    """``pipeline`` followed by :class:`fit` to ``size``: fused into its affine run when it is
    a :class:`Compose`, so the step still resamples once.

    Args:
        pipeline: The transforms, a callable ``f(x, generator)``.
        size: The size the images are fitted to.
    """
    if isinstance(pipeline, Compose):
        return Compose([*pipeline.transforms, fit(size)])
    return Compose([pipeline, fit(size)])


# grid_sample's "reflection" with align_corners=False mirrors about the pixel border
_PADDING = {"constant": "zeros", "mirror": "reflection", "edge": "border"}


def _theta(m: torch.Tensor, size: Size, out: Size) -> torch.Tensor:
    """grid_sample's [N, 2, 3] matrices for pixel-coordinate maps ``m`` [N, 3, 3] from an
    output of ``out`` into an input of ``size``."""
    h, w = size
    ho, wo = out
    # pixel coords -> grid_sample's normalized coords (align_corners=False), both sides
    to_norm = torch.tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]],
                           device=m.device, dtype=m.dtype)
    from_norm = torch.tensor([[wo / 2, 0, (wo - 1) / 2], [0, ho / 2, (ho - 1) / 2], [0, 0, 1]],
                             device=m.device, dtype=m.dtype)
    return (to_norm @ m @ from_norm)[:, :2]


def _resample(x: torch.Tensor, m: torch.Tensor, out: Size, fill: float, mode: str) -> torch.Tensor:
    """Sample ``x`` at ``m @ (u, v, 1)`` for every output pixel, bilinearly, in one pass."""
    return _sample(x, _theta(m, (x.shape[2], x.shape[3]), out).to(x.dtype), out, fill, mode)


def _sample(x: torch.Tensor, theta: torch.Tensor, out: Size, fill: float,
            mode: str) -> torch.Tensor:
    """Bilinear resampling of ``x`` through grid_sample matrices ``theta`` [B, 2, 3]."""
    ho, wo = out
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], ho, wo], align_corners=False)
    if mode == "constant" and fill != 0:
        return F.grid_sample(x - fill, grid, "bilinear", "zeros", align_corners=False) + fill
    return F.grid_sample(x, grid, "bilinear", _PADDING[mode], align_corners=False)


class Compose(Transform):
    """Apply transforms in order; runs of :class:`Affine` ones are fused into one resampling.

    Any callable ``f(x)`` or ``f(x, generator)`` may stand in the list as well.

    Given :class:`ImageStreams` (as a render does) and only affine transforms, it draws the
    numbers of :attr:`plan_steps` calls at once and builds their matrices in a few batched
    operations, so a call is one grid and one resampling rather than dozens of tiny
    operations (kernel launches, on a GPU). Each image reads its stream in the same order
    either way, so the results are those of drawing call by call.
    """

    #: calls whose matrices are built at once when the images' streams are given
    plan_steps = 32

    def __init__(self, transforms: Sequence[Transform | Callable]):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"transforms must be callables, got {t!r}")
        self._plan: _Plan | None = None

    def out_size(self, size: SizeLike) -> Size:
        """The (height, width) the model sees for an image of ``size`` (one side or (height,
        width)); only the affine transforms are known to change it."""
        size = hw(size)
        for t in self.transforms:
            if isinstance(t, Affine):
                size = t.out_size(size)
        return size

    def __call__(self, x: torch.Tensor, generator: Random = None) -> torch.Tensor:
        if (isinstance(generator, ImageStreams) and self.transforms
                and all(isinstance(t, Affine) for t in self.transforms)):
            return self._planned(x, generator)
        run: list[Affine] = []
        for t in self.transforms:
            if isinstance(t, Affine):
                run.append(t)
                continue
            x = self._apply_run(x, run, generator)
            run = []
            x = t(x, generator) if isinstance(t, Transform) else t(x)
        return self._apply_run(x, run, generator)

    @staticmethod
    def _apply_run(x: torch.Tensor, run: list[Affine], generator) -> torch.Tensor:
        if not run:
            return x
        n, size = x.shape[0], (x.shape[2], x.shape[3])
        total = _eye(n, x.device)
        for t in run:
            total = total @ t.matrices(n, size, generator, x.device)
            size = t.out_size(size)
        fill, mode = _padding(run)
        return _resample(x, total, size, fill, mode)

    def _planned(self, x: torch.Tensor, streams: ImageStreams) -> torch.Tensor:
        n, size = x.shape[0], (x.shape[2], x.shape[3])
        plan = self._plan
        if (plan is None or plan.streams is not streams or plan.next == len(plan.thetas)
                or plan.shape != (n, size, x.device, x.dtype)):
            plan = self._plan = self._make_plan(x, streams)
        theta = plan.thetas[plan.next]
        plan.next += 1
        fill, mode = _padding(self.transforms)
        return _sample(x, theta, plan.out, fill, mode)

    def _make_plan(self, x: torch.Tensor, streams: ImageStreams) -> _Plan:
        n, size, device = x.shape[0], (x.shape[2], x.shape[3]), x.device
        draws = sum(t.draws for t in self.transforms)
        k = max(1, min(self.plan_steps, streams.block // max(draws, 1)))
        # call j of the plan reads rows j*draws .. (j+1)*draws-1 of each image's stream
        u = streams.rows(n, k * draws).view(k, draws, n)
        total = _eye(k * n, device)
        first, out = 0, size
        for t in self.transforms:
            mine = u[:, first:first + t.draws].permute(1, 0, 2).reshape(t.draws, k * n)
            total = total @ t.from_numbers(mine, k * n, out, device)
            first, out = first + t.draws, t.out_size(out)
        thetas = _theta(total, size, out).to(x.dtype).view(k, n, 2, 3)
        return _Plan(streams, (n, size, device, x.dtype), out, thetas)

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


class _Plan:
    """Matrices built ahead for a :class:`Compose`, valid for one set of streams and shape."""

    def __init__(self, streams: ImageStreams, shape: tuple, out: Size, thetas: torch.Tensor):
        self.streams, self.shape, self.out, self.thetas = streams, shape, out, thetas
        self.next = 0


def _padding(run: Sequence) -> tuple[float, str]:
    """The fill and mode of the first pad in ``run`` (grey constant padding without one)."""
    pads = [t for t in run if isinstance(t, pad)]
    return (pads[0].fill, pads[0].mode) if pads else (0.5, "constant")


def standard() -> Compose:
    """lucid's ``render_vis`` transforms: pad 12 (grey), jitter 8, scale 0.9-1.1 in steps of
    0.02, rotate -10..10 degrees (0 five times more often), jitter 4."""
    return Compose([
        pad(12, fill=0.5),
        jitter(8),
        scale([1 + (i - 5) / 50 for i in range(11)]),
        rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(4),
    ])


def distill(size: SizeLike) -> Compose:
    """The Distill article's figures: pad 16, jitter 16, scale {1, .975, 1.025, .95, 1.05},
    rotate -5..5 degrees, jitter 8, then crop the padding back off to ``size``.

    Args:
        size: The size the padding is cropped back to.
    """
    return Compose([
        pad(16, fill=0.5),
        jitter(16),
        scale([1, 0.975, 1.025, 0.95, 1.05]),
        rotate(list(range(-5, 6))),
        jitter(8),
        crop(size),
    ])


PRESETS = ("standard", "distill", "none")


def resolve(spec: str | Sequence | Callable | None, size: SizeLike) -> Callable:
    """Turn what a user passed as ``transforms=`` into a callable ``f(x, generator)``.

    A preset name, ``None``/``"none"`` (identity), a list or tuple (composed in order: never
    silently replaced by the defaults) or any callable.

    Args:
        spec: ``transforms=``: a preset name, None, a list of transforms or a callable.
        size: The render's image size, used by the ``"distill"`` preset.
    """
    if spec is None or spec == "none":
        return Compose([])
    if isinstance(spec, str):
        if spec == "standard":
            return standard()
        if spec == "distill":
            return distill(size)
        raise ValueError(f"unknown transforms preset {spec!r}; choose one of {', '.join(PRESETS)},"
                         " or pass a list of transforms")
    if isinstance(spec, (list, tuple)):
        return Compose(spec)
    if callable(spec):
        return spec
    raise TypeError(f"transforms must be a preset name, a list or a callable, got {spec!r}")
