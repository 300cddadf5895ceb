"""``featviz deconv``: project one activation of an image back to pixels (deconvnet or
guided backprop) and write the image beside its projection."""

from __future__ import annotations

import argparse

import torch

from ...core.model_info import input_size
from ...methods.deconv import MODES as PROJECTION_MODES
from .. import arguments as types
from .common import Loader, add_model_args, add_size_arg, load_image


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz deconv`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    d = subparsers.add_parser("deconv", help="project one activation back to pixels")
    d.add_argument("image", type=types.existing_file, help="image file")
    add_model_args(d)
    _add_unit_args(d)
    d.add_argument("--mode", default="deconvnet", choices=PROJECTION_MODES,
                   help="how gradients pass ReLUs on the way back (default: deconvnet)")
    d.add_argument("--out", required=True, type=types.image_out,
                   help="image file: the image beside its projection")
    d.set_defaults(run=run)


def _add_unit_args(p: argparse.ArgumentParser) -> None:
    """The unit projected: its layer, channel and position, and the image size."""
    p.add_argument("--layer", required=True, help="the layer of the unit")
    p.add_argument("--channel", type=types.index, required=True, help="the unit's channel")
    p.add_argument("--position", type=types.position,
                   help="Y,X of the unit in the layer's map (default: strongest)")
    add_size_arg(p)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Project the unit, write the image beside its projection and print the activation;
    the exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name.
    """
    from ...core import images
    from ...methods import deconv

    model = load(args)
    img = load_image(args.image, model, input_size(model, args.size))
    proj = deconv.project(model, img, args.layer, args.channel, args.position, args.mode)
    images.save(torch.cat([img, proj.image()]), args.out,
                labels=["image", f"{args.mode} {args.layer}:{args.channel}"], ncol=2)
    y, x = proj.positions[0]
    print(f"{args.layer}:{args.channel} at y={y}, x={x} = {float(proj.activations[0]):.3f};"
          f" wrote {args.out}")
    return 0
