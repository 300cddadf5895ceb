"""Feature accentuation (Hamblin, Fel, Saha, Konkle & Alvarez 2024, "Feature Accentuation:
Revealing 'What' Features Respond to in Natural Images", arXiv 2402.10039): change a photo
just enough that a feature responds more, and look at what changed.

The image starts as the photo and is described by the photo's own Fourier magnitude (fixed,
times a learnable gain <= 1 per frequency) and an optimized phase
(:func:`featviz.core.param.photo_spectrum.seeded_spectrum`). Each step cuts ``crops`` random square
boxes from it (side uniform in ``crop_sizes`` of the shorter side, placed uniformly inside),
resizes each to the model's input size and adds gaussian noise (std ``noise``) and uniform
noise (width ``noise``); the same boxes and the same noise are cut from the photo. The loss is

    loss = -mean_i O(crop_i) / s  +  weight * D,
    D = sum_i ||f(crop_i) - f(photo crop_i)||² / sum_i ||f(photo crop_i)||²

where ``f`` is the regularized layer and ``s = max(|O(photo)|, mean_i |O(photo crop_i)|)``,
the objective on the whole photo (at the model's input size) or, where larger, on the first
step's crops. The balance: both terms are in relative units, so ``weight`` means the same
for every feature, layer and model: a rise of the objective by its own value on the photo
is worth a squared relative change of the layer of 1 / ``weight``. The reference code
(faccent) instead sets the balance to the ratio of the two gradients' L1 norms at the start;
but at the start the image is the photo, the distance is at its minimum and its gradient is
zero (or only the noise's), so that ratio is ill-defined or noise-driven. Values do not have
that problem, and Adam, which divides each step by the gradient's running size, depends only
on the ratio of the two terms. (A feature silent on the photo, s = 0, gets s = 1 and a
warning: there is no scale to measure it in.)

The default regularized layer is the spatial layer halfway, in forward order, between the
input and the objective's deepest layer (:func:`default_layer`); ``layer="input"`` measures D
on the pixels of the crops instead (Horama's variant: stay close to the photo itself).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ...core import images as _images
from ...core import notebook as _nb
from ...core.files import write_atomic
from ...core.hooks import INPUT, OUTPUT, LayerTap, frozen, layer_aliases, resolve_layer
from ...core.model_info import image_channels, input_hw, model_device, model_dtype
from ...core.objectives import Objective, parse
from ...core.param.photo_spectrum import seeded_spectrum
from ...errors import FeatvizError, NonFiniteLossError, non_negative

#: What ``layer=`` accepts for the pixel-space variant (L2 to the photo's own pixels).
PIXELS = ("input", INPUT)
#: How many history points a run records (plus its last step).
HISTORY_POINTS = 20
#: The default weight of the distance, chosen by looking at results (real InceptionV1, the
#: strongest mixed4d channel of a photo, the other settings at their defaults, so the
#: distance is held at mixed4a). On the chickadee of the sample photos: 3 left the photo
#: almost untouched (objective x1.6, distance 0.31); 0.3 painted the feature over it (x4.0,
#: distance 1.21: a dark animal-face-like shape over the bird's belly, small eye- and
#: head-like blobs all over the background); 1 kept it plainly the photo while the feature
#: clearly grew (x2.7, distance 0.69: small blobs and feather-like texture in the blurred
#: background, more contrast in the wing). On two dogs on grass, 1 gave x3.1, distance 0.68:
#: the dogs intact, fur-like strokes and small dark spots over the grass.
WEIGHT = 1.0


@dataclass(repr=False)
class Accentuation:
    """What :func:`accentuate` made, all on the CPU.

    ``image``: the accentuated photo [C,H,W] in [0, 1]; ``seed``: the photo it started from;
    ``difference`` [H,W]: |image - seed| summed over colour (where it changed);
    ``saliency`` [H,W]: |d objective / d image| summed over colour and accumulated over the
    steps (faccent's "transparency" map: where the objective looked); ``before``/``after``:
    the objective on the whole photo / accentuated image at the model's input size;
    ``distance``: ||f(x) - f(x0)|| / ||f(x0)|| at the regularized layer, on the whole images;
    ``history``: (step, objective, distance) every few steps, both on that step's crops (the
    objective as the mean over crops, the distance relative, not squared, like ``distance``);
    ``layer``, ``objective`` and ``weight``: what ran; ``seconds``: how long it took.
    """

    image: torch.Tensor
    seed: torch.Tensor
    difference: torch.Tensor
    saliency: torch.Tensor
    before: float
    after: float
    distance: float
    layer: str
    objective: str = ""
    weight: float = 0.0
    history: list[tuple[int, float, float]] = field(default_factory=list)
    seconds: float = 0.0

    def picture(self) -> Image.Image:
        """The strip seed | accentuated | difference (the difference scaled to its maximum)."""
        diff = _nb.heat(self.difference)
        shown = torch.stack([_images.as_rgb(self.seed), _images.as_rgb(self.image), diff])
        labels = ["seed", f"{self.before:.3g} -> {self.after:.3g}", "difference"]
        return _images.grid(shown, labels, ncol=3)

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`picture` as an image file (PNG by the suffix), atomically.

        Args:
            path: The file to write; its suffix picks the format (none: PNG).
        """
        pic = self.picture()
        fmt = _images.image_format(path)
        write_atomic(path, lambda tmp: pic.save(tmp, format=fmt))
        return Path(path)

    def __repr__(self) -> str:
        return (f"Accentuation({self.objective}: {self.before:.4g} -> {self.after:.4g}, "
                f"distance {self.distance:.3f} at {self.layer}, weight {self.weight:g}, "
                f"{_nb.shape(self.image)} in {self.seconds:.1f} s)")

    def _repr_png_(self) -> bytes:
        """The strip seed | accentuated | difference."""
        return _nb.png(self.picture())


def accentuate(model: nn.Module, image: torch.Tensor | Image.Image | str | os.PathLike,
               objective: Objective | str, *, layer: str | None = None, weight: float = WEIGHT,
               steps: int = 100, lr: float = 0.05, crops: int = 16,
               crop_sizes: tuple[float, float] = (0.05, 0.99), noise: float = 0.02,
               seed: int = 0, size: int | tuple[int, int] | None = None,
               device: str | torch.device | None = None,
               progress: bool = False) -> Accentuation:
    """Accentuate what ``objective`` responds to in ``image`` (see the module's text for the
    method and the balance of its two terms). The model comes back exactly as it was.

    Args:
        model: The network (a featviz model, or any module taking [0, 1] images).
        image: The photo: a [C,H,W] (or [1,C,H,W]) tensor in [0, 1], used at its own size
            unless ``size`` is given; a PIL image or an image file, brought to ``size``.
        objective: An :class:`Objective` or an objective string (``"channel:mixed4d:7"``).
        layer: The regularized layer (a path or alias), ``"input"`` for the pixels, or None
            for :func:`default_layer`.
        weight: How strongly the layer is held near the photo's (0: not at all). The default,
            1, keeps the photo recognizable while the feature clearly grows (see
            :data:`WEIGHT`).
        steps: Optimization steps (Adam).
        lr: Adam's learning rate.
        crops: Random crops per step.
        crop_sizes: The smallest and largest crop side, as fractions of the shorter side.
        noise: The std of the gaussian noise and the width of the uniform noise per crop.
        seed: Seeds the crops and the noise: the same seed gives the same image.
        size: The side (or (height, width)) the photo is brought to; None: the model's input
            size for files and PIL images, a tensor's own size.
        device: Where to run; None (or the model's device) only: the model is not moved.
        progress: Show a progress bar.
    """
    started = time.perf_counter()
    obj = as_objective(objective)
    _check_settings(weight, steps, lr, crops, crop_sizes, noise, seed)
    dev = _device(model, device)
    photo = seed_image(model, image, size)
    with frozen(model):
        reg = _reg_layer(model, obj, layer)
        run = _Run(model, obj, reg, photo.to(dev), seed, crops, crop_sizes, noise)
        result = run.optimize(float(weight), steps, lr, progress)
    result.seconds = time.perf_counter() - started
    return result


def as_objective(objective: Objective | str) -> Objective:
    """``objective`` as an :class:`Objective`: an objective string is parsed; anything else is
    an error naming it. An objective that drives particular images of a batch is refused:
    accentuation optimizes one image.

    Args:
        objective: An :class:`Objective` or an objective string.
    """
    if isinstance(objective, str):
        obj = parse(objective)
    elif isinstance(objective, Objective):
        obj = objective
    else:
        raise FeatvizError(f"objective must be an Objective or an objective string such as "
                           f"'channel:mixed4d:7', got {type(objective).__name__}")
    if obj.targets:
        raise FeatvizError(f"objective {obj.name} drives particular images of a batch; "
                           "accentuation optimizes one image: leave out batch=")
    return obj


def _check_settings(weight: float, steps: int, lr: float, crops: int,
                    crop_sizes: Sequence[float], noise: float, seed: int) -> None:
    non_negative("weight", weight, "how strongly the layer is held near the photo's")
    non_negative("noise", noise, "the std of the noise added to each crop")
    for name, value, low in (("steps", steps, 0), ("crops", crops, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise FeatvizError(f"{name} must be a whole number >= {low}, got {value!r}")
    if not non_negative("lr", lr, "Adam's learning rate") > 0:
        raise FeatvizError(f"lr must be above 0, got {lr!r}")
    sizes = tuple(crop_sizes) if isinstance(crop_sizes, Sequence) else ()
    if len(sizes) != 2 or not all(isinstance(v, int | float) for v in sizes) \
            or not 0 < sizes[0] <= sizes[1] <= 1:
        raise FeatvizError(f"crop_sizes must be (smallest, largest) with 0 < smallest <= "
                           f"largest <= 1 (fractions of the image's side), got {crop_sizes!r}")


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The model's device; a ``device`` that names another is an error (the model is the
    user's: it is not moved)."""
    own = model_device(model)
    if device is None:
        return own
    asked = torch.device(device)
    if asked.type != own.type or (asked.index is not None and own.index is not None
                                  and asked.index != own.index):
        raise FeatvizError(f"device {str(asked)!r} is not the model's ({own}); accentuation "
                           "runs where the model is: move the model (model.to(device)) first")
    return own


def seed_image(model: nn.Module, image: Any, size: int | tuple[int, int] | None = None
               ) -> torch.Tensor:
    """The photo to accentuate as a [C,H,W] float tensor in [0, 1] on the CPU: a file or a PIL
    image brought to ``size`` (default the model's input size; cover it, cut the centre), a
    tensor as it is (or brought to ``size`` when given). C must be the model's channels.

    Args:
        model: The network (its input size and channels).
        image: A [C,H,W] or [1,C,H,W] tensor in [0, 1], a PIL image or an image file.
        size: One side or (height, width); None for the default above.
    """
    channels = image_channels(model)
    if isinstance(image, str | os.PathLike):
        return _images.load(image, input_hw(model, size), channels=channels)[0]
    if isinstance(image, Image.Image):
        image = _images.from_pil(image.convert("L") if channels == 1 else image)
        image = image[:1] if channels == 1 else image
        size = input_hw(model, size)
    if not torch.is_tensor(image):
        raise FeatvizError(f"image must be a [C,H,W] tensor in [0, 1], a PIL image or an image "
                           f"file, got {type(image).__name__}")
    t = image[0] if image.dim() == 4 and image.shape[0] == 1 else image
    if t.dim() != 3 or t.shape[0] != channels:
        raise FeatvizError(f"image must be [{channels},H,W] or [1,{channels},H,W] for this "
                           f"model ({channels} channels), got {list(image.shape)}")
    t = t.detach().float().cpu()
    if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise FeatvizError("image values must be finite and in [0, 1] (divide 0-255 images "
                           "by 255)")
    return t if size is None else _cover(t, input_hw(model, size))


def _cover(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``t`` [C,H,W] scaled to cover ``hw`` (aspect kept), then its centre cut."""
    h, w = hw
    scale = max(h / t.shape[1], w / t.shape[2])
    size = (max(h, round(t.shape[1] * scale)), max(w, round(t.shape[2] * scale)))
    if size != tuple(t.shape[1:]):
        t = F.interpolate(t[None], size=size, mode="bilinear", antialias=True,
                          align_corners=False)[0].clamp(0, 1)
    top, left = (t.shape[1] - h) // 2, (t.shape[2] - w) // 2
    return t[:, top:top + h, left:left + w].contiguous()


def default_layer(model: nn.Module, objective: Objective) -> str:
    """The layer accentuation holds near the photo's when none is named. Of the spatial layers
    that finish before the objective's deepest layer and lie outside it
    (:func:`featviz.models.spatial.spatial_layers`, in forward order; a layer the list lacks,
    such as the logits, counts as after all of them), take the one halfway (index k // 2 of
    the k), then widen it to the outermost block that holds it and also finishes before the
    objective's layer: a whole stage's output, not a branch inside one (InceptionV1's mixed4d
    gets mixed4a, mixed3a gets conv2d1). With no such layer (an objective on the first
    layer): ``"input"``, the pixels.

    Args:
        model: The network.
        objective: The objective (its ``layers``).
    """
    from ...models.spatial import spatial_layers

    names = [s.name for s in spatial_layers(model)]
    order = {name: i for i, name in enumerate(names)}
    aliases = layer_aliases(model)
    paths = [aliases.get(n, n) for n in objective.layers if n != INPUT]
    deepest = max((order.get(p, len(names)) for p in paths), default=0)
    before = [n for n in names[:deepest] if not any(n.startswith(p + ".") for p in paths)]
    if not before:
        return "input"
    pick = before[len(before) // 2]
    parts = pick.split(".")
    blocks = [".".join(parts[:i]) for i in range(1, len(parts))]  # outermost first
    for block in [b for b in blocks if order.get(b, deepest) < deepest] + [pick]:
        name = _named(block, aliases)
        if name is not None:
            return name
    return pick


def _named(path: str, aliases: dict[str, str]) -> str | None:
    """The name to give ``path``: its first alias (``mixed4a`` rather than ``inception4a``),
    else the path itself, or None when an alias of another layer shadows it."""
    own = next((a for a, p in aliases.items() if p == path), None)
    if own is not None:
        return own
    return None if aliases.get(path, path) != path else path


def _reg_layer(model: nn.Module, objective: Objective, layer: str | None) -> str:
    """The regularized layer: ``layer`` checked (an error naming the closest real ones), or
    :func:`default_layer`; :data:`INPUT` for the pixels."""
    if layer is None:
        layer = default_layer(model, objective)
    if not isinstance(layer, str):
        raise FeatvizError(f"layer must be a layer name or 'input', got {type(layer).__name__}")
    if layer in PIXELS:
        return INPUT
    if layer == OUTPUT:
        raise FeatvizError("layer cannot be the logits (':output'): name a spatial layer, or "
                           "'input' for the pixels")
    resolve_layer(model, layer)
    return layer


class _Run:
    """One accentuation: the parameterization, the crops and noise, the two taps, the loop."""

    def __init__(self, model: nn.Module, objective: Objective, reg: str, photo: torch.Tensor,
                 seed: int, crops: int, crop_sizes: Sequence[float], noise: float):
        self.model, self.objective, self.reg = model, objective, reg
        self.photo = photo[None]
        self.device = photo.device
        self.dtype = model_dtype(model)
        self.hw = input_hw(model)
        self.crops, self.crop_sizes, self.noise = crops, tuple(crop_sizes), float(noise)
        self.boxes = torch.Generator().manual_seed(seed)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        pixels = reg == INPUT
        self.tap = LayerTap(model, [*objective.layers] + ([] if pixels else [reg]))
        self.ref_tap = None if pixels else LayerTap(model, [reg])

    def acts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The objective's and the regularized layer's activations of ``x`` (crops or whole
        images at the input size); the pixels under :data:`INPUT`."""
        with self.tap:
            acts = self.tap(x.to(self.dtype))
        acts[INPUT] = x
        return acts

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The regularized layer's activations of the photo's crops ``x``, without gradients
        (only as deep as that layer runs)."""
        if self.ref_tap is None:
            return x
        with self.ref_tap, torch.no_grad():
            return self.ref_tap(x.to(self.dtype))[self.reg].detach()

    def value(self, acts: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """The objective per image, [n]; an error when it gives anything else."""
        value = self.objective(acts)
        if not torch.is_tensor(value) or value.shape != (n,):
            shape = list(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise FeatvizError(f"objective {self.objective.name} must give one value per "
                               f"image ([{n}]), got {shape}")
        return value.float()

    def cut(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's crops of ``img`` and the same crops of the photo, noise added alike."""
        both = torch.cat([img, self.photo])
        h, w = both.shape[-2:]
        short = min(h, w)
        lo, hi = self.crop_sizes
        u = torch.rand(self.crops, 3, generator=self.boxes).tolist()  # CPU: no device sync
        cut = []
        for s, y, x in u:
            side = max(1, min(short, round((lo + (hi - lo) * s) * short)))
            top, left = int(y * (h - side + 1)), int(x * (w - side + 1))
            cut.append(F.interpolate(both[..., top:top + side, left:left + side], size=self.hw,
                                     mode="bilinear", antialias=True, align_corners=False))
        crops = torch.stack(cut)  # [crops, 2, C, h, w]
        shape = crops[:, 0].shape
        gauss = torch.randn(shape, generator=self.noise_gen, device=self.device)
        flat = torch.rand(shape, generator=self.noise_gen, device=self.device) - 0.5
        noise = self.noise * (gauss + flat)
        return crops[:, 0] + noise, crops[:, 1].detach() + noise

    def whole(self, img: torch.Tensor) -> torch.Tensor:
        """``img`` [1,C,H,W] at the model's input size."""
        if tuple(img.shape[-2:]) == self.hw:
            return img
        return F.interpolate(img, size=self.hw, mode="bilinear", antialias=True,
                             align_corners=False)

    def optimize(self, weight: float, steps: int, lr: float, progress: bool) -> Accentuation:
        """Run the steps from the photo; the result, measured on the whole images."""
        with torch.no_grad():
            start = self.acts(self.whole(self.photo))
            before = self.value(start, 1)
        param = seeded_spectrum(self.photo, device=self.device)
        loop = _Loop(self, param, weight, lr, float(before.abs()))
        loop.run(steps, progress)
        with torch.no_grad():
            final = param().detach()
            end = self.acts(self.whole(final))
            after = self.value(end, 1)
            ref = start[self.reg].float()
            dist = (end[self.reg].float() - ref).norm() / ref.norm().clamp_min(1e-12)
        img, photo = final[0].cpu(), self.photo[0].cpu()
        return Accentuation(img, photo, (img - photo).abs().sum(0), loop.saliency.cpu(),
                            float(before), float(after), float(dist),
                            "input" if self.reg == INPUT else self.reg, self.objective.name,
                            weight, loop.history)


class _Loop:
    """The optimization: Adam on the phase and gain, the balanced loss, the saliency map and
    the history."""

    def __init__(self, run: _Run, param: nn.Module, weight: float, lr: float, before: float):
        self.job, self.param, self.weight = run, param, weight
        self.optimizer = torch.optim.Adam(param.parameters(), lr=lr)
        self.before = before
        self.scale: torch.Tensor | None = None
        self.saliency = torch.zeros(run.photo.shape[-2:], device=run.device)  # [H,W]
        self.history: list[tuple[int, float, float]] = []

    def run(self, steps: int, progress: bool) -> None:
        """``steps`` steps, recording the history every ``steps // 20`` and at the last."""
        from tqdm.auto import tqdm

        every = max(1, steps // HISTORY_POINTS)
        for step in tqdm(range(steps), disable=not progress, desc="accentuate", unit="step"):
            value, dist = self.step()
            if step % every == 0 or step == steps - 1:
                self.record(step, value, dist)

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One step; this step's mean objective and relative squared distance (detached)."""
        job = self.job
        img = self.param()
        current, photo = job.cut(img)
        acts = job.acts(current)
        values = job.value(acts, job.crops)
        value = values.mean()
        ref = job.reference(photo).float()
        act = acts[job.reg].float()
        dist = ((act - ref) ** 2).sum() / (ref ** 2).sum().clamp_min(1e-12)
        if self.scale is None:
            self.scale = self._scale(values)
        grad, = torch.autograd.grad(value, img, retain_graph=self.weight > 0)
        self.saliency += grad[0].abs().sum(0)
        total = -grad / self.scale
        if self.weight > 0:
            total = total + self.weight * torch.autograd.grad(dist, img)[0]
        self.optimizer.zero_grad(set_to_none=True)
        img.backward(total)
        self.optimizer.step()
        return value.detach(), dist.detach()

    def _scale(self, values: torch.Tensor) -> torch.Tensor:
        """s = max(|O(photo)|, mean |O(first crops)|); 1 with a warning where both are 0."""
        scale = max(self.before, float(values.detach().abs().mean()))  # once: one sync
        if not scale > 1e-12:
            warnings.warn(f"objective {self.job.objective.name} is 0 on the photo and its "
                          "crops: there is no scale to balance it against the distance by; "
                          "using 1 (pick a feature the photo drives)", stacklevel=5)
            scale = 1.0
        return torch.tensor(scale, device=self.job.device)

    def record(self, step: int, value: torch.Tensor, dist: torch.Tensor) -> None:
        """A history point (the only reads from the device besides the first step)."""
        v, d = float(value), math.sqrt(max(float(dist), 0.0))
        if not (math.isfinite(v) and math.isfinite(d)):
            raise NonFiniteLossError(f"the objective ({v}) or the distance ({d}) became "
                                     f"non-finite at step {step}; try a smaller lr")
        self.history.append((step, v, d))
