"""A manipulated ("fooling") network: a unit whose feature visualization shows a picture of
one's choosing while the network computes exactly what it did on natural images.

The "silent units" manipulation of Geirhos, Zimmermann, Bilodeau, Brendel and Kim 2023, "Don't
trust your eyes: on the (un)reliability of feature visualizations" (arXiv 2306.04719). A copy
of the model gets, beside one unit, a parallel path that is silent (a ReLU at 0) on every photo
of a reference set, and that responds to a target picture:

    s(x)   = cos(centre(x), centre(t))            x: the layer's input, t: the target's
    out'_c = out_c + gain * relu(s(x) - threshold)    (the channel's whole map)

``threshold`` is the largest ``s`` over the photos plus a margin, so on those photos (and, as
:func:`unchanged_on` measures, on other natural photos) every output is the original's to the
bit. Feature visualization is not held to natural images: it finds the path (lucid's
redirected ReLU gradient of the first render steps reaches it even while it is silent) and,
since the path can raise the unit far above anything natural, the rendered picture becomes a
feature inversion of the target: the unit's visualization shows the target, not what the
unit does.

The path is a plain module (:class:`SilentPath` wraps the layer); nothing is hooked.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...core.hooks import frozen, named_layers, resolve_layer
from ...core.model_info import image_channels, input_size, model_device, model_dtype
from ...core.sizes import SizeLike
from ...errors import ChannelError, FeatvizError
from ..dataset import Source, iter_batches, iter_images

#: the default gain makes the path, fully on, this many times the unit's largest activation
#: on the photos: far above anything natural, so a visualization follows the path
GAIN_OVER_NATURAL = 100.0
#: a photo this close to the target (cosine) is taken to be the target itself
SAME_PICTURE = 1 - 1e-5

Watch = Callable[["SilentPath", torch.Tensor, torch.Tensor], None]


class _Stop(Exception):
    """Raised by a watch once it has what it needs: the rest of the model need not run."""


class SilentPath(nn.Module):
    """A layer with a silent parallel path into one of its output channels.

    ``forward(x) = inner(x) + gain * relu(cos(centre(x), centre(target)) - threshold)`` on
    channel ``channel`` (its whole map), nothing on the others; ``x`` is the layer's input,
    ``target`` the target picture's input at the same place (a buffer). ``centre`` takes each
    channel's spatial mean away (maps ``[B, C, ...]``), so that the cosine compares where
    things are, not how much of each feature an image holds overall. An input of another
    spatial size than the target's (a render's transformed images) is compared on the centred
    crop both share, one cell to one cell.

    Args:
        inner: The original layer (its outputs have channels on axis 1).
        channel: The output channel the path feeds.
        target: The target picture's input to the layer, ``[1, ...]``.
        threshold: The cosine the path starts at; inf keeps it off.
        gain: The path's output per unit of cosine above the threshold.
        centre: Whether the cosine compares spatially centred maps.
    """

    def __init__(self, inner: nn.Module, channel: int, target: torch.Tensor,
                 threshold: float = math.inf, gain: float = 0.0, centre: bool = True):
        super().__init__()
        self.inner = inner
        self.channel = int(channel)
        self.register_buffer("target", target.detach().clone())
        self.threshold = float(threshold)
        self.gain = float(gain)
        self.centre = bool(centre)
        # a plain attribute, not a hook: called with (self, input, output) while set
        self.watch: Watch | None = None

    def forward(self, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        """The inner layer's output, plus the path on ``channel``.

        Args:
            *args: The layer's input: exactly one tensor.
            **kwargs: None are allowed (the path needs the layer's one input).
        """
        if len(args) != 1 or kwargs:
            raise FeatvizError(
                f"SilentPath needs a layer called with one tensor, got {len(args)} positional "
                f"and {len(kwargs)} keyword arguments; pick a layer whose input is one tensor")
        x = args[0]
        out = self.inner(x)
        if self.watch is not None:
            self.watch(self, x, out)
        if self.gain == 0.0 or not math.isfinite(self.threshold):
            return out
        bump = self.gain * torch.relu(self.similarity(x) - self.threshold)
        onehot = torch.zeros(out.shape[1], dtype=out.dtype, device=out.device)
        onehot[self.channel] = 1
        shape = (-1, out.shape[1]) + (1,) * (out.dim() - 2)
        # + 0.0 leaves every value as it was: a silent path changes no bit of the output
        return out + bump.to(out.dtype)[:, None].mul(onehot).view(shape)

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """The cosine of each image's input ``x`` with the target's, ``[B]`` (float32).

        Args:
            x: The layer's input for a batch, with the target's channels.
        """
        t = self.target.to(device=x.device, dtype=torch.float32)
        x = x.float()
        if x.shape[1:] != t.shape[1:]:
            x, t = _common_crop(x, t)
        if self.centre and x.dim() > 2:
            dims = tuple(range(2, x.dim()))
            x, t = x - x.mean(dims, keepdim=True), t - t.mean(dims, keepdim=True)
        return F.cosine_similarity(x.flatten(1), t.flatten(1), dim=1, eps=1e-12)

    def get_extra_state(self) -> dict:
        """The path's settings, so that a ``state_dict`` carries them with the target."""
        return {"channel": self.channel, "threshold": self.threshold, "gain": self.gain,
                "centre": self.centre}

    def set_extra_state(self, state: dict) -> None:
        """Take the settings :meth:`get_extra_state` gave.

        Args:
            state: The dict of :meth:`get_extra_state`.
        """
        self.channel, self.threshold = int(state["channel"]), float(state["threshold"])
        self.gain, self.centre = float(state["gain"]), bool(state["centre"])

    def extra_repr(self) -> str:
        return (f"channel={self.channel}, threshold={self.threshold:.4f}, gain={self.gain:.4g}, "
                f"centre={self.centre}")


def _common_crop(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` and ``t`` cut to the centred spatial part they share (their channels must match)."""
    if x.dim() != t.dim() or x.shape[1] != t.shape[1]:
        raise FeatvizError(f"the layer's input {list(x.shape)} does not match the target's "
                           f"{list(t.shape)}: only the spatial sides may differ")
    for dim in range(2, x.dim()):
        n = min(x.shape[dim], t.shape[dim])
        x = x.narrow(dim, (x.shape[dim] - n) // 2, n)
        t = t.narrow(dim, (t.shape[dim] - n) // 2, n)
    return x, t


@dataclass
class Manipulated:
    """A model with a silent path, and the facts of its making.

    Attributes:
        model: The manipulated copy (the user's model is untouched).
        layer: The layer whose channel the path feeds, as given.
        channel: That channel.
        threshold: The cosine with the target above which the path fires.
        gain: The path's output per unit of cosine above the threshold.
        max_cosine: The largest cosine of a photo with the target.
        closest_photo: The name of that photo.
        photos: How many photos were scanned.
        unit_max: The unit's largest activation on the photos (any position).
        seconds: How long the scan took.
    """

    model: nn.Module
    layer: str
    channel: int
    threshold: float
    gain: float
    max_cosine: float
    closest_photo: str
    photos: int
    unit_max: float
    seconds: float

    @property
    def path(self) -> SilentPath:
        """The :class:`SilentPath` module inside :attr:`model`."""
        return next(m for m in self.model.modules() if isinstance(m, SilentPath))

    def cosines(self, images: torch.Tensor) -> torch.Tensor:
        """The cosine of each image with the target at the layer's input, ``[B]`` on the CPU:
        the path fires where it is above :attr:`threshold`.

        Args:
            images: ``[B, C, H, W]`` images in [0, 1], as the model takes them.
        """
        seen: list[torch.Tensor] = []
        with frozen(self.model), torch.no_grad(), _watching(self.path, _cosine_watch(seen)), \
                contextlib.suppress(_Stop):
            self.model(images.to(model_device(self.model), model_dtype(self.model)))
        return torch.cat(seen).cpu()


@dataclass
class Agreement:
    """How a manipulated model compares with the original on a set of photos.

    Attributes:
        photos: How many photos were compared.
        same_top1: On how many of them both models' top-1 classes are the same.
        max_logit_diff: The largest absolute difference of any output between the two.
        fired: On how many photos the silent path fired.
        max_cosine: The largest cosine of a photo with the target.
        closest_photo: The name of that photo.
    """

    photos: int
    same_top1: int
    max_logit_diff: float
    fired: int
    max_cosine: float
    closest_photo: str

    @property
    def top1_agreement(self) -> float:
        """The share of photos whose top-1 class is the same in both models."""
        return self.same_top1 / self.photos

    @property
    def identical(self) -> bool:
        """Whether every output was the same to the bit and the path never fired."""
        return self.max_logit_diff == 0.0 and self.fired == 0


def silent_path(model: nn.Module, layer: str, channel: int, target: object, photos: Source, *,
                gain: float | None = None, margin: float = 0.1, size: SizeLike | None = None,
                batch_size: int = 32, centre: bool = True) -> Manipulated:
    """A copy of ``model`` whose unit ``layer:channel`` visualizes as ``target`` while its
    outputs on ``photos`` stay exactly the original's (Geirhos et al. 2023's silent units).

    The layer is replaced in the copy by a :class:`SilentPath` that adds
    ``gain * relu(cos(centre(x), centre(t)) - threshold)`` to the channel's map, ``x`` the
    layer's input and ``t`` the target's. ``threshold`` is the largest cosine over the photos
    plus ``margin``: the path is silent on every one of them. The default ``gain`` is
    ``100 * unit_max / (1 - threshold)``, ``unit_max`` the channel's largest activation on the
    photos: fully on (cosine 1) the path gives 100 times the largest natural activation, so a
    feature visualization gains far more by copying the target than by anything the unit
    does. The photos (streamed in batches at the model's input size) must not include the
    target. Sub-layers of ``layer`` move under ``layer + ".inner"`` in the copy.

    Args:
        model: The network; left as it is (the path goes into a deep copy).
        layer: The layer (a module path or an alias) whose channel gets the path; its input
            must be one tensor and its output have channels on axis 1.
        channel: The output channel of ``layer`` to manipulate.
        target: The picture the visualization should show: a ``[C, H, W]`` or
            ``[1, C, H, W]`` tensor in [0, 1], a PIL image or an image file.
        photos: The natural images to stay silent on: a folder, an iterable of images or a
            dataset (see :mod:`featviz.methods.dataset`).
        gain: The path's output per unit of cosine above the threshold; None for the default.
        margin: Added to the photos' largest cosine to make the threshold (slack for photos
            not in the set; :func:`unchanged_on` measures how much is needed). 0.1: on
            InceptionV1 ``mixed4a``, 200 random halvings of the 1000 sample photos put a
            held-out photo at most 0.046 above the fitted half's largest cosine, while a
            render reached 0.70.
        size: The image size the photos and the target are brought to; default the model's.
        batch_size: Photos per forward pass.
        centre: Whether the cosine compares spatially centred maps (each channel's mean over
            positions taken away), which makes it see where things are in the picture.
    """
    if not 0 <= margin < 1:
        raise FeatvizError(f"margin must be in [0, 1), got {margin}")
    if gain is not None and not gain > 0:
        raise FeatvizError(f"gain must be positive, got {gain}")
    side = input_size(model, size)
    twin = copy.deepcopy(model)
    path = _install(twin, layer, channel, centre)
    with frozen(twin), torch.no_grad():
        path.target = _target_input(twin, path, target, side)
        start = time.perf_counter()
        scan = _scan_photos(twin, path, photos, side, batch_size)
    seconds = time.perf_counter() - start
    threshold = scan.max_cosine + margin
    if scan.max_cosine >= SAME_PICTURE:
        raise FeatvizError(
            f"photo {scan.closest!r} is the target picture itself (cosine "
            f"{scan.max_cosine:.6f} with it at the input of {layer!r}); the target must not be "
            "among the photos the path is to stay silent on: leave it out")
    if threshold >= 1:
        raise FeatvizError(
            f"photo {scan.closest!r} comes as close as cosine {scan.max_cosine:.4f} to the "
            f"target at the input of {layer!r}: with margin {margin} no image could pass the "
            "threshold (a cosine is at most 1); choose a target less like the photos or a "
            "smaller margin")
    scale = scan.unit_max if scan.unit_max > 0 else 1.0  # a dead unit: a unit scale
    path.threshold = threshold
    path.gain = gain if gain is not None else GAIN_OVER_NATURAL * scale / (1 - threshold)
    return Manipulated(twin, layer, int(channel), threshold, path.gain, scan.max_cosine,
                       scan.closest, scan.count, scan.unit_max, seconds)


def unchanged_on(model: nn.Module, manipulated: Manipulated, photos: Source, *,
                 size: SizeLike | None = None, batch_size: int = 32) -> Agreement:
    """Compare the original and the manipulated model on ``photos``: the largest difference
    of their outputs, how often their top-1 classes agree and how often the path fired.

    Photos other than those the threshold was fitted on give a held-out check.

    Args:
        model: The original network.
        manipulated: What :func:`silent_path` made of it.
        photos: A folder, an iterable of images or a dataset.
        size: The image size; default the model's input size.
        batch_size: Photos per forward pass.
    """
    twin, path = manipulated.model, manipulated.path
    side = input_size(model, size)
    device, dtype = model_device(twin), model_dtype(twin)
    count = same = fired = 0
    diff, best, closest = 0.0, -math.inf, ""
    with frozen(model), frozen(twin), torch.no_grad():
        for names, batch in iter_batches(photos, side, batch_size,
                                         channels=image_channels(model)):
            seen: list[torch.Tensor] = []
            with _watching(path, _cosine_watch(seen, stop=False)):
                changed = _logits(twin(batch.to(device, dtype))).float()
            plain = _logits(model(batch.to(model_device(model), model_dtype(model)))).float()
            plain = plain.to(changed.device)
            cos = torch.cat(seen).cpu()
            diff = max(diff, float((changed - plain).abs().max()))
            same += int((changed.argmax(1) == plain.argmax(1)).sum())
            fired += int((cos > path.threshold).sum())
            count += len(names)
            if float(cos.max()) > best:
                best, closest = float(cos.max()), names[int(cos.argmax())]
    return Agreement(count, same, diff, fired, best, closest)


def _install(twin: nn.Module, layer: str, channel: int, centre: bool) -> SilentPath:
    """Replace ``layer`` in ``twin`` by a :class:`SilentPath` around it (no target yet)."""
    inner = resolve_layer(twin, layer)
    if inner is twin:
        raise FeatvizError(f"layer {layer!r} is the whole model; pick one of its layers")
    places = [(parent, name) for parent in twin.modules()
              for name, child in parent.named_children() if child is inner]
    if len(places) != 1:
        raise FeatvizError(f"layer {layer!r} is used at {len(places)} places in the model; "
                           "the path needs a layer that sits at exactly one")
    path = SilentPath(inner, channel, torch.zeros(0), centre=centre)
    setattr(*places[0], path)
    _move_aliases(twin, path)
    return path


def _move_aliases(twin: nn.Module, path: SilentPath) -> None:
    """Point the copy's aliases of sub-layers of the wrapped layer at their new place."""
    aliases = getattr(twin, "featviz_aliases", None)
    where = next((n for n, m in named_layers(twin).items() if m is path), None)
    if not aliases or where is None:
        return
    inside = where + "."
    twin.featviz_aliases = {a: p.replace(inside, inside + "inner.", 1) if p.startswith(inside)
                            else p for a, p in aliases.items()}


def _target_input(twin: nn.Module, path: SilentPath, target: object,
                  side: SizeLike) -> torch.Tensor:
    """The target picture's input to the wrapped layer, ``[1, ...]``."""
    image = _target_image(target, side, image_channels(twin))
    seen: list[torch.Tensor] = []
    with _watching(path, _input_watch(seen)), contextlib.suppress(_Stop):
        twin(image[None].to(model_device(twin), model_dtype(twin)))
    if not seen:
        raise FeatvizError("the layer did not run in the model's forward pass")
    return seen[0]


def _target_image(target: object, side: SizeLike, channels: int) -> torch.Tensor:
    """``target`` as one ``[C, H, W]`` image of the model's size, with a clear error."""
    if torch.is_tensor(target):
        shape = list(target.shape)
        if not (target.dim() == 3 or (target.dim() == 4 and shape[0] == 1)):
            raise FeatvizError(f"target must be one image, [C, H, W] or [1, C, H, W], got a "
                               f"tensor of shape {shape}")
        if shape[-3] != channels:
            raise FeatvizError(f"target has {shape[-3]} channels (shape {shape}); the model "
                               f"takes {channels}")
    elif isinstance(target, (list, tuple)):
        raise FeatvizError("target must be one image (a tensor, a PIL image or a file), "
                           f"not a {type(target).__name__}")
    try:
        return next(iter_images([target], side, channels=channels))[1]
    except FeatvizError as err:
        raise FeatvizError(f"target: {err}") from None


@dataclass
class _Scan:
    count: int
    max_cosine: float
    closest: str
    unit_max: float


def _scan_photos(twin: nn.Module, path: SilentPath, photos: Source, side: SizeLike,
                 batch_size: int) -> _Scan:
    """The photos' largest cosine with the target and the unit's largest activation; the
    model runs only up to the wrapped layer."""
    seen: list[torch.Tensor] = []
    peaks: list[torch.Tensor] = []
    names: list[str] = []

    def watch(p: SilentPath, x: torch.Tensor, out: torch.Tensor) -> None:
        _check_channel(p, out)
        peaks.append(out[:, p.channel].reshape(len(out), -1).amax(1).float().cpu())
        _cosine_watch(seen)(p, x, out)

    device, dtype = model_device(twin), model_dtype(twin)
    with _watching(path, watch):
        for batch_names, batch in iter_batches(photos, side, batch_size,
                                               channels=image_channels(twin)):
            with contextlib.suppress(_Stop):
                twin(batch.to(device, dtype))
            names += batch_names
    cos = torch.cat(seen)
    return _Scan(len(names), float(cos.max()), names[int(cos.argmax())],
                 float(torch.cat(peaks).max()))


def _check_channel(path: SilentPath, out: torch.Tensor) -> None:
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise FeatvizError("the layer's output must be one tensor with channels on axis 1, got "
                           f"{list(out.shape) if torch.is_tensor(out) else type(out).__name__}")
    if not 0 <= path.channel < out.shape[1]:
        raise ChannelError(f"channel {path.channel} is out of range for a layer with "
                           f"{out.shape[1]} channels (valid: 0-{out.shape[1] - 1})")


def _input_watch(seen: list[torch.Tensor]) -> Watch:
    def watch(path: SilentPath, x: torch.Tensor, out: torch.Tensor) -> None:
        _check_channel(path, out)
        seen.append(x.detach().clone())
        raise _Stop

    return watch


def _cosine_watch(seen: list[torch.Tensor], stop: bool = True) -> Watch:
    def watch(path: SilentPath, x: torch.Tensor, out: torch.Tensor) -> None:
        seen.append(path.similarity(x).detach().cpu())
        if stop:
            raise _Stop

    return watch


@contextlib.contextmanager
def _watching(path: SilentPath, watch: Watch) -> Iterator[None]:
    """Set ``path.watch`` for the body of the ``with``, and take it away after."""
    path.watch = watch
    try:
        yield
    finally:
        path.watch = None


def _logits(output: object) -> torch.Tensor:
    """A model's output as a tensor (the ``.logits`` of a Hugging Face output)."""
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor):
        raise FeatvizError(f"the model returned {type(output).__name__}, not a tensor of logits")
    return logits
