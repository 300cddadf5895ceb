"""What several subcommands share: the parser whose mistakes are one line, the exit status of
an interrupted run, the model flags and the loading of the model and of image files. (The
render options' flags come from their declarations: :mod:`featviz.face.options`.)
"""

from __future__ import annotations

import argparse
import re
import warnings
from collections.abc import Callable
from typing import NoReturn

import torch
from torch import nn

from ...core.model_info import image_channels
from ...errors import FeatvizError
from .. import arguments as types
from ..devices import default_device

#: The exit status of an interrupted command: 128 + SIGINT, what shells report for Ctrl-C.
INTERRUPTED = 130

#: What turns a command's parsed flags into its model (see :func:`load_model`).
Loader = Callable[[argparse.Namespace], nn.Module]


class Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line, ``featviz render: error: ...``, with
    exit status 2 (argparse's usage block above it would hide the message in a long list)."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as the one line and exit with status 2."""
        # "argument --steps: must be ..." reads "--steps must be ...": the messages of
        # featviz's own argument types are written to follow the option's name
        message = re.sub(r"^argument (\S+): (?=must |names |needs |cannot )", r"\1 ", message)
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the "
                     "options)\n")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Add the flags that say which model to load and how: ``--model``, ``--weights``,
    ``--mean``, ``--std``, ``--device`` and ``--option``.

    Args:
        p: the parser of a command that loads a model.
    """
    # the canonical model first: a newcomer reads the start of this line and nothing else
    p.add_argument("--model", required=True,
                   help="inceptionv1 (InceptionV1 as in lucid and the Distill articles, BVLC "
                        "weights, lucid's layer names such as mixed4a), a torchvision "
                        "classifier (googlenet, vgg16, resnet50, mobilenet_v2, ...), "
                        "cifar_resnet20/32/44/56, timm:NAME (pip install 'featviz[timm]') or "
                        "hf:HUB_ID_OR_FOLDER (pip install 'featviz[hf]'); `featviz models` "
                        "lists every name with its size and weights")
    p.add_argument("--weights", default="DEFAULT",
                   help="a local state_dict file, the model's own weights by name (DEFAULT: "
                        "its default ones, which `featviz models` lists; for torchvision "
                        "classifiers also IMAGENET1K_V1, ..., downloaded once into the torch "
                        "hub cache) or 'random' (default: DEFAULT)")
    p.add_argument("--mean", type=types.mean,
                   help="input normalization mean, e.g. 0.5,0.5,0.5 (default: the weights')")
    p.add_argument("--std", type=types.std,
                   help="input normalization std, above 0, e.g. 0.5,0.5,0.5 (default: the "
                        "weights')")
    p.add_argument("--device", type=types.device,
                   help="cpu, cuda, cuda:1, mps (default: cuda if present, else cpu)")
    p.add_argument("--option", type=types.model_option, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="for timm: and hf: models, passed to their builder, e.g. in_chans=1 or "
                        "img_size=64 (repeat for more)")


def load_model(args: argparse.Namespace) -> nn.Module:
    """The model the flags of :func:`add_model_args` name, on ``--device`` (default:
    :func:`~featviz.face.devices.default_device`).

    Args:
        args: the parsed command line; ``args.seed`` (0 when absent) seeds random weights,
            so that ``--weights random`` gives the same network every run.
    """
    from ... import models

    device = args.device or default_device()
    if str(args.weights).lower() in ("random", "none"):
        torch.manual_seed(getattr(args, "seed", 0))  # the same random network every run
    if args.option and not models.source_of(args.model):
        raise FeatvizError(f"--option {args.option[0][0]}=... is for timm:NAME and hf:ID models "
                           f"only, not {args.model!r}")
    return models.load(args.model, weights=args.weights, mean=args.mean, std=args.std,
                       device=device, **dict(args.option))


def load_image(path: str, model: nn.Module, size: int) -> torch.Tensor:
    """An image file read as the model takes it: RGB, or grayscale for a 1-channel model. The
    command line reads no other band counts (the Python API takes them as tensors).

    Args:
        path: the image file.
        model: the model the image is for (its input channels decide RGB or grayscale).
        size: the side in pixels the image is resized to.
    """
    from ...core import images

    channels = image_channels(model)
    if channels not in (1, 3):
        raise FeatvizError(f"the model takes {channels}-channel images; the command line reads "
                           f"image files as RGB or grayscale only: give {channels}-band images "
                           "to the Python API as [1, C, H, W] tensors")
    return images.load(path, size=size, channels=channels)


def add_size_arg(p: argparse.ArgumentParser, what: str = "image size") -> None:
    """Add ``--size`` (default: the model's input size).

    Args:
        p: the parser of the command.
        what: what the size is of, as the help text names it.
    """
    p.add_argument("--size", type=types.size,
                   help=f"{what} in pixels, {types.MIN_SIZE}-{types.MAX_SIZE}: one side, or "
                        "HxW (height x width, e.g. 224x320) (default: the model's)")


def warn_if_no_steps(steps: int) -> None:
    """Warn that ``--steps 0`` optimizes nothing (the command still writes its image).

    Args:
        steps: the ``--steps`` given.
    """
    if steps == 0:
        warnings.warn("--steps 0: nothing is optimized, the starting image is written as it is",
                      stacklevel=2)
