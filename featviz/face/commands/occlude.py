"""``featviz occlude``: map how much an activation or a class drops when a grey square covers
each part of an image (Zeiler & Fergus)."""

from __future__ import annotations

import argparse

from ...core.model_info import input_size
from ...core.sizes import hw
from ...errors import FeatvizError
from .. import arguments as types
from .common import Loader, add_model_args, add_size_arg, load_image


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz occlude`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    o = subparsers.add_parser("occlude", help="map how much an activation or a class drops "
                                              "when a grey square covers each part of the "
                                              "image")
    o.add_argument("image", type=types.existing_file, help="image file")
    add_model_args(o)
    o.add_argument("--layer", help="with --channel: the activation to watch")
    o.add_argument("--channel", type=types.index, help="with --layer: the channel to watch")
    o.add_argument("--class", dest="target_class", type=types.index,
                   help="watch the probability of this class instead")
    add_size_arg(o)
    o.add_argument("--patch", type=types.positive, default=32,
                   help="side of the grey square in pixels, at most the image size "
                        "(default: 32)")
    o.add_argument("--stride", type=types.positive, default=8,
                   help="pixels between two positions of the square (default: 8)")
    o.add_argument("--out", required=True, type=types.image_out,
                   help="image file: the image beside the drop map")
    o.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Map the drops, write the image beside the map and print the largest drop; the exit
    status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name (after the flags are checked).
    """
    from ...methods import deconv

    _check_occlusion_target(args)
    if args.size:  # the image size is known before the model loads
        _check_patch(args.patch, args.size)
    model = load(args)
    size = input_size(model, args.size)
    _check_patch(args.patch, size)
    img = load_image(args.image, model, size)
    occ = deconv.occlusion(model, img, args.layer, args.channel, target_class=args.target_class,
                           patch=args.patch, stride=args.stride)
    occ.save(args.out)
    print(f"{occ.what}: {occ.base:.4g} on the whole image, largest drop "
          f"{float(occ.drops.max()):.4g}; wrote {args.out}")
    return 0


def _check_occlusion_target(args: argparse.Namespace) -> None:
    """``occlude`` watches one thing: ``--layer`` with ``--channel``, or ``--class``; an
    error naming the flags otherwise."""
    unit = args.layer is not None or args.channel is not None
    if unit and args.target_class is not None:
        raise FeatvizError(f"--class {args.target_class} cannot go with --layer/--channel: "
                           "watch either a class or one channel of a layer")
    if args.layer is not None and args.channel is None:
        raise FeatvizError(f"--layer {args.layer} needs --channel C, the channel to watch")
    if args.channel is not None and args.layer is None:
        raise FeatvizError(f"--channel {args.channel} needs --layer LAYER, its layer")
    if not unit and args.target_class is None:
        raise FeatvizError("say what to watch: --layer LAYER with --channel C, or --class K")


def _check_patch(patch: int, size: int | tuple[int, int]) -> None:
    """An error when the grey square is larger than the image (its shorter side)."""
    rows, cols = hw(size)
    if patch > min(rows, cols):
        raise FeatvizError(f"--patch {patch} is larger than the {rows}x{cols} image; use at "
                           f"most {min(rows, cols)} (or a larger --size)")
