"""Model specs: a network plus its input normalization and layer aliases, and how to load one.

Every model featviz renders takes images in [0, 1] (RGB, grayscale or any number of bands);
:class:`Preprocessed` wraps a network so that it applies its own normalization, while its
layers stay addressable under the network's own module paths (``"features.14"``,
``"inception4a"``) and any aliases (lucid's ``"mixed4a"``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import model_info
from ..core.hooks import frozen, named_layers, on_output
from ..errors import FeatvizError, MismatchError, WeightsError, unknown
from . import cifar, inception_v1
from .hf_source import wrap_hf as wrap_hf  # re-exported: featviz.models.wrap_hf
from .sources import from_source, random_weights, source_of
from .spatial import SpatialLayer as SpatialLayer
from .spatial import middle_layer as middle_layer
from .spatial import spatial_layers as spatial_layers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: lucid's InceptionV1 layer names -> torchvision GoogLeNet module paths.
LUCID_INCEPTION_V1 = {
    "conv2d0": "conv1",
    "maxpool0": "maxpool1",
    "conv2d1": "conv2",
    "conv2d2": "conv3",
    "maxpool1": "maxpool2",
    "mixed3a": "inception3a",
    "mixed3b": "inception3b",
    "maxpool4": "maxpool3",
    "mixed4a": "inception4a",
    "mixed4b": "inception4b",
    "mixed4c": "inception4c",
    "mixed4d": "inception4d",
    "mixed4e": "inception4e",
    "maxpool10": "maxpool4",
    "mixed5a": "inception5a",
    "mixed5b": "inception5b",
}

_ALIASES = {"googlenet": LUCID_INCEPTION_V1, "inception_v1": LUCID_INCEPTION_V1,
            "inceptionv1": inception_v1.LUCID_NAMES}
#: the file of BVLC GoogLeNet weights ``load("inceptionv1")`` looks for in $FEATVIZ_MODELS
INCEPTION_V1_FILE = "googlenet_bvlc_imagenet.pth"
_RENAMES = {"inception_v1": "googlenet"}
_CIFAR = {f"cifar_resnet{d}": d for d in cifar.DEPTHS}
# torchvision families that check their input size (position embeddings, window grids)
FIXED_SIZE_FAMILIES = ("vit_", "maxvit_")
# where torchvision families keep channels and grid (see featviz.core.layouts); exact paths
# first, then fnmatch patterns in order. Undeclared layers are recognized by their shape.
FAMILY_LAYOUTS = {
    "vit_": {"conv_proj": "nchw", "encoder*": "tokens+cls"},
    "swin_": {"features.0.0": "nchw", "features.*": "nhwc", "norm": "nhwc"},
    "convnext_": {"features.*.block.[1-5]": "nhwc"},
}


class Preprocessed(nn.Module):
    """A network that takes images in [0, 1] and normalizes them itself: ``net((x - mean) /
    std)``, with one mean and std per channel (RGB, grayscale or any number of bands).

    Its layers are addressed by the inner network's own module paths (``featviz_layers``) and by
    the aliases in ``aliases``; ``input_size`` is the image size the network was trained on;
    ``fixed_size`` says that it takes no other (vision transformers, flatten + Linear heads):
    renders then fit their transformed images back to that size. ``layouts`` declares where
    channels and grid are in layers that are not ``[B, C, H, W]`` (``{path or pattern:
    "nhwc" | "tokens" | "tokens+cls" | ...}``, see :mod:`featviz.core.layouts`). ``channels``
    is the number the network takes (``featviz_channels``): by default its first
    convolution's, else the length of ``mean``/``std``, else 3.
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        aliases: Mapping[str, str] | None = None,
        input_size: int = 224,
        name: str = "",
        fixed_size: bool = False,
        layouts: Mapping[str, str] | None = None,
        channels: int | None = None,
        classes: Sequence[str] | None = None,
    ):
        super().__init__()
        channels = channels or _channels(net, mean, std)
        mean_t, std_t = _stats(mean, "mean", channels), _stats(std, "std", channels)
        if (std_t <= 0).any():
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.net = net
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)
        self.featviz_aliases = dict(aliases or {})
        self.input_size = int(input_size)
        self.featviz_fixed_size = self.input_size if fixed_size else None
        self.featviz_layouts = dict(layouts or {})
        self.featviz_channels = channels
        self.featviz_classes = list(classes) if classes is not None else None
        self.name = name or type(net).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_images(x, self.mean.shape[1], self.name)
        return self.net((x - self.mean) / self.std)

    def featviz_layers(self) -> dict[str, nn.Module]:
        """The inner network's modules by their own paths."""
        return {name: m for name, m in self.net.named_modules() if name}

    def extra_repr(self) -> str:
        mean = tuple(round(v, 4) for v in self.mean.flatten().tolist())
        std = tuple(round(v, 4) for v in self.std.flatten().tolist())
        fixed = ", fixed_size=True" if self.featviz_fixed_size else ""
        return (f"name={self.name!r}, mean={mean}, std={std}, "
                f"input_size={self.input_size}{fixed}")


@torch.fx.wrap  # a call in traced graphs (featviz.truncate), checked when the graph runs
def _check_images(x: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} expects images of shape [B, {channels}, H, W] in [0, 1], "
                         f"got {list(x.shape)}")
    return x


def _channels(net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> int:
    """The channels ``net`` takes: its first convolution's, else as many as the statistics
    give per channel, else 3 (RGB)."""
    known = model_info.input_channels(net)
    if known is not None:
        return known
    lengths = {len(list(v)) for v in (mean, std)} - {1}
    return lengths.pop() if len(lengths) == 1 else 3


def _stats(values: Sequence[float], what: str, channels: int = 3) -> torch.Tensor:
    t = torch.as_tensor(list(values), dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.repeat(channels)
    if t.numel() != channels:
        count = "1 value" if channels == 1 else f"1 or {channels} values"
        raise MismatchError(f"{what} needs {count} (one per input channel: the "
                         f"network takes {channels}), got {tuple(values)}")
    return t


def wrap(
    net: nn.Module,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    aliases: Mapping[str, str] | None = None,
    input_size: int = 224,
    name: str = "",
    fixed_size: bool = False,
    layouts: Mapping[str, str] | None = None,
    channels: int | None = None,
    classes: Sequence[str] | None = None,
) -> Preprocessed:
    """Wrap any image network so that it takes [0, 1] images and normalizes with
    ``mean``/``std``.

    ``mean``/``std`` default to no normalization at all (0 and 1), for networks that already
    expect [0, 1] input; pass the statistics your network was trained with otherwise, one
    value per input channel (or one for all). The channel count (1 for grayscale, 3 for RGB,
    N bands) is the network's first convolution's, else the statistics' length; ``channels``
    declares it for a network without a convolution.
    ``fixed_size=True`` declares that the network takes only ``input_size`` (renders fit their
    transformed images back to it); without it a render finds that out by a dry run.
    ``layouts`` declares the layouts of layers that are not ``[B, C, H, W]`` and whose shape
    does not tell (``{"blocks.*": "nhwc"}``; see :mod:`featviz.core.layouts`). ``classes``
    names the outputs (top classes and render labels then speak words).
    """
    return Preprocessed(net, mean if mean is not None else (0.0,),
                        std if std is not None else (1.0,), aliases, input_size, name,
                        fixed_size, layouts, channels, classes)


def available() -> list[str]:
    """Names :func:`load` accepts: torchvision's classification models and featviz's CIFAR nets."""
    import torchvision

    names = set(torchvision.models.list_models(module=torchvision.models))
    return sorted(names | set(_CIFAR) | set(_RENAMES) | {"inceptionv1"})


def load(
    name: str,
    weights: str | os.PathLike | Any | None = "default",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> Preprocessed:
    """Load a classifier by name, ready for featviz: eval mode, [0, 1] RGB input.

    ``weights`` is ``"default"`` (torchvision's best published weights, downloaded into the
    torch hub cache), a torchvision weight enum or its name (``"IMAGENET1K_V1"``), a path to a
    local state_dict file, or ``None`` for random initialization. ``mean``/``std`` override
    the normalization (default: ImageNet statistics, or the weight enum's own). Names
    ``"timm:NAME"`` and ``"hf:ID_OR_FOLDER"`` load from timm and Hugging Face ``transformers``
    (optional extras), with their own preprocessing; ``options`` go to their builders.
    """
    if source_of(name):
        model = from_source(name, weights, mean, std, **options).eval()
        return model.to(device) if device is not None else model
    if options:
        raise TypeError(f"load() got options {sorted(options)}: they are for timm: and hf: "
                        "models only")
    key = _RENAMES.get(name, name)
    if key == "inceptionv1":
        weights = _inception_v1_weights(weights)
        net, input_size = inception_v1.InceptionV1(), 224
        default_stats = (tuple(v / 255 for v in inception_v1.CAFFE_MEAN_RGB), (1 / 255,) * 3)
    elif key in _CIFAR:
        net, input_size, default_stats = cifar.cifar_resnet(_CIFAR[key]), 32, None
    else:
        net, input_size, default_stats = _torchvision(name, key, weights)
    if isinstance(weights, (str, os.PathLike)) and _is_path(weights):
        load_state_dict_file(net, weights)
    elif key in _CIFAR and weights not in (None, "random", "none"):
        raise WeightsError(
            f"{name} has no downloadable weights; pass a local state_dict file with "
            "--weights PATH (weights='path.pth' in Python) or weights=None for random init"
        )
    d_mean, d_std = default_stats or (IMAGENET_MEAN, IMAGENET_STD)
    model = Preprocessed(net, d_mean if mean is None else mean, d_std if std is None else std,
                         _ALIASES.get(name, _ALIASES.get(key)), input_size, name,
                         fixed_size=key.startswith(FIXED_SIZE_FAMILIES),
                         layouts=next((v for k, v in FAMILY_LAYOUTS.items()
                                       if key.startswith(k)), None),
                         classes=None if key in _CIFAR else _imagenet_classes(net))
    model.eval()
    return model.to(device) if device is not None else model


def _inception_v1_weights(weights: Any) -> Any:
    """The weights ``load("inceptionv1")`` reads: a path or None as given; ``"default"``
    the BVLC file in the folder ``$FEATVIZ_MODELS`` names (no public URL serves it in
    torchvision's layout), else an error that says where to get it."""
    if random_weights(weights) or isinstance(weights, (str, os.PathLike)) and _is_path(weights):
        return weights
    if not (isinstance(weights, str) and weights.lower() == "default"):
        raise WeightsError(f"inceptionv1 takes weights='default', a file path or None, not "
                           f"{weights!r}")
    folder = os.environ.get("FEATVIZ_MODELS")
    if folder and (Path(folder) / INCEPTION_V1_FILE).is_file():
        return Path(folder) / INCEPTION_V1_FILE
    where = f"{folder}/{INCEPTION_V1_FILE} does not exist" if folder else "FEATVIZ_MODELS is unset"
    raise WeightsError(
        f"inceptionv1 needs BVLC GoogLeNet weights in torchvision's layout ({where}): pass "
        f"weights='{INCEPTION_V1_FILE}' (--weights PATH), put the file into the folder "
        "$FEATVIZ_MODELS names, or use weights=None for random init")


def _imagenet_classes(net: nn.Module) -> list[str] | None:
    """ImageNet-1k's class names (torchvision's list, shipped with it) for a net with 1000
    outputs, else None."""
    import torchvision

    last = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not last or getattr(last[-1], "out_features", getattr(last[-1], "out_channels", 0)) != 1000:
        return None
    return list(torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"])


def class_index(model: nn.Module, name: str | int) -> int:
    """The index of class ``name`` (its short name, any case: ``"hotdog"``) among the model's
    class names (see :func:`featviz.core.model_info.class_names`); an int is returned as it
    is. An unknown name is an error listing the closest ones."""
    if isinstance(name, int):
        return name
    names = model_info.class_names(model)
    if names is None:
        raise FeatvizError(f"the model has no class names to look {name!r} up in; give the "
                           "class index")
    lowered = [n.lower() for n in names]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    raise unknown("class", name, names, hint="a class name of the model")


def _is_path(weights: str | os.PathLike) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    return (os.sep in weights or "/" in weights or weights.endswith((".pth", ".pt", ".bin"))
            or Path(weights).exists())


def _torchvision(name: str, key: str, weights: Any) -> tuple[nn.Module, int, tuple | None]:
    """Build a torchvision classifier; download enum weights when asked to."""
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(key)
    except ValueError:
        raise unknown("model", name, available(),
                      hint="any torchvision classifier or cifar_resnet20/32/44/56") from None
    local = isinstance(weights, (str, os.PathLike)) and _is_path(weights)
    kwargs: dict[str, Any] = {}
    if key in ("googlenet", "inception_v3"):
        # featviz never runs the auxiliary heads; random init only where no file overwrites it
        kwargs = {"aux_logits": False, "init_weights": not local}
    input_size = 299 if key == "inception_v3" else 224
    if local or weights is None or (isinstance(weights, str)
                                    and weights.lower() in ("random", "none")):
        return builder(weights=None, **kwargs), input_size, None
    enum = _weights_enum(name, key, weights)
    try:
        net = builder(weights=enum)
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
        from torch.hub import get_dir

        raise WeightsError(
            f"could not download {enum} for {name}: {err}. Offline? Fetch the file on a machine "
            f"with internet and pass --weights PATH (weights='file.pth' in Python), or put it "
            f"into the torch hub cache {os.path.join(get_dir(), 'checkpoints')}; or use random "
            f"weights with --weights random (weights=None), enough to try featviz out"
        ) from err
    preset = enum.transforms()
    stats = (tuple(preset.mean), tuple(preset.std)) if hasattr(preset, "mean") else None
    size = getattr(preset, "crop_size", [input_size])
    return net, int(size[0] if isinstance(size, (list, tuple)) else size), stats


def _weights_enum(name: str, key: str, weights: Any):
    import torchvision

    enum_cls = torchvision.models.get_model_weights(key)
    if isinstance(weights, enum_cls):
        return weights
    if isinstance(weights, str):
        wanted = "DEFAULT" if weights.lower() == "default" else weights.split(".")[-1]
        try:
            return enum_cls[wanted]
        except KeyError:
            choices = [w.name for w in enum_cls] + ["DEFAULT", "a local file path", "None"]
            raise unknown("weights", weights, choices, hint=f"for {name}") from None
    raise WeightsError(f"weights for {name} must be a name, {enum_cls.__name__}, a path or None; "
                       f"got {type(weights).__name__}")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict file, unwrapping ``{"state_dict": ...}`` and ``module.`` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        state = (_read_safetensors(path) if path.suffix == ".safetensors"
                 else torch.load(path, map_location="cpu", weights_only=True))
    except WeightsError:
        raise
    except Exception as err:
        raise WeightsError(f"cannot read weights file {path}: {err}") from err
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"],
                                                                           Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state_dict")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file (timm's and Hugging Face's format) as a state_dict."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise WeightsError(f"{path} is a .safetensors file: pip install safetensors (it comes "
                           "with featviz[timm] and featviz[hf]) to read it") from None
    return load_file(str(path), device="cpu")


def load_state_dict_file(net: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a local state_dict file into ``net``; on mismatch, name the path and the keys."""
    state = read_state_dict(path)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    # torchvision's published GoogLeNet/Inception files carry auxiliary heads featviz never runs
    unexpected_aux = [k for k in unexpected if k.startswith(("aux1.", "aux2.", "AuxLogits."))]
    unexpected = [k for k in unexpected if k not in unexpected_aux]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing in the file", missing), ("not in the model", unexpected),
                            ("of another shape", shapes)):
            if keys:
                more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                parts.append(f"{len(keys)} keys {label}: {', '.join(keys[:8])}{more}")
        raise WeightsError(f"weights file {path} does not match {type(net).__name__}: "
                           + "; ".join(parts))
    for k in unexpected_aux:
        state.pop(k)
    net.load_state_dict(state, strict=True)
    return net


def layer_table(model: nn.Module, input_size: int | None = None) -> list[tuple[str, str, str]]:
    """Run one blank image through ``model`` and list (layer, module type, output shape).

    The image has the model's channels and dtype (1 for a grayscale net, N bands, bfloat16).
    Every addressable layer is listed in definition order; a module that does not run in the
    forward pass shows ``"not run"``. Hooks are removed and the model's state restored after.
    """
    size = model_info.input_size(model, input_size)
    layers = named_layers(model)
    shapes: dict[str, str] = {}

    def record(names: list[str], output) -> None:
        shape = ("x".join(str(s) for s in output.shape[1:]) if isinstance(output, torch.Tensor)
                 else type(output).__name__)
        shapes.update(dict.fromkeys(names, shape))

    device = model_info.model_device(model)
    try:
        with on_output(model, layers, record), frozen(model), torch.no_grad():
            model(torch.full((1, model_info.image_channels(model), size, size), 0.5,
                             device=device, dtype=model_info.model_dtype(model)))
    except Exception as err:
        raise FeatvizError(f"a {size}x{size} image does not run through the model: {err}") from err
    return [(name, type(m).__name__, shapes.get(name, "not run")) for name, m in layers.items()]
