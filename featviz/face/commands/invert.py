"""``featviz invert``: reconstruct an image from a layer's activations (Mahendran & Vedaldi),
or exaggerate what the layer sees (a caricature), one image per layer."""

from __future__ import annotations

import argparse

from ...core.model_info import input_size
from ...errors import FeatvizError
from .. import arguments as types
from .common import Loader, add_model_args, add_size_arg, load_image, warn_if_no_steps


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz invert`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    v = subparsers.add_parser("invert", help="reconstruct an image from a layer's activations "
                                             "(Mahendran & Vedaldi)")
    v.add_argument("image", type=types.existing_file, help="image file")
    add_model_args(v)
    v.add_argument("--layers", required=True, type=types.layer_list,
                   help="comma-separated layers, one image each")
    v.add_argument("--steps", type=types.steps, default=1000,
                   help=f"optimization steps, 0-{types.MAX_STEPS} (default: 1000)")
    add_size_arg(v)
    v.add_argument("--pixel", action="store_true", help="pixel instead of Fourier parameters")
    v.add_argument("--cosine", action="store_true", help="match directions, not values")
    v.add_argument("--caricature", action="store_true",
                   help="exaggerate what the layer sees instead of matching it (not with "
                        "--cosine)")
    v.add_argument("--seed", type=types.seed, default=0,
                   help="seed of the starting noise and of --weights random (default: 0)")
    v.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    v.add_argument("--out", required=True, type=types.image_out,
                   help="image file: the original, then one image per layer")
    v.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Invert (or caricature) the image at each layer, write them and print the table; the
    exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name (after the flags are checked).
    """
    from ...methods import inversion

    if args.caricature and args.cosine:
        raise FeatvizError("--caricature cannot go with --cosine: a caricature exaggerates "
                           "what the layer sees, --cosine matches its direction; give one")
    warn_if_no_steps(args.steps)
    model = load(args)
    size = input_size(model, args.size)
    img = load_image(args.image, model, size)
    common = dict(steps=args.steps, seed=args.seed, progress=not args.no_progress, size=size,
                  fft=not args.pixel)
    if args.caricature:
        results = [inversion.caricature(model, img, layer, **common) for layer in args.layers]
        sweep = inversion.InversionSweep(results[0].original, results)
    else:
        sweep = inversion.invert_layers(model, img, args.layers, kind="cosine" if args.cosine
                                        else "l2", **common)
    sweep.save(args.out)
    print(sweep.table())
    print(f"wrote {args.out}")
    return 0
