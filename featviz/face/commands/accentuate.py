"""``featviz accentuate``: change a photo just enough that a feature responds more, holding a
middle layer near the photo's (feature accentuation, Hamblin et al. 2024), and write the photo
beside the accentuated image and where it changed."""

from __future__ import annotations

import argparse

from ...core.model_info import input_size
from .. import arguments as types
from .common import Loader, add_model_args, add_size_arg, load_image, warn_if_no_steps


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz accentuate`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    a = subparsers.add_parser("accentuate", help="change a photo just enough that a feature "
                                                 "responds more (feature accentuation)")
    a.add_argument("image", type=types.existing_file, help="image file: the photo")
    a.add_argument("objective", help="objective string, e.g. channel:mixed4d:7 (`featviz "
                                     "render --help` lists the grammar)")
    add_model_args(a)
    a.add_argument("--layer", help="the layer held near the photo's, or 'input' for the pixels "
                                   "(default: the spatial layer halfway to the objective's)")
    a.add_argument("--weight", type=types.non_negative_float, default=1.0,
                   help="how strongly that layer is held near the photo's; 0 not at all "
                        "(default: 1)")
    a.add_argument("--steps", type=types.steps, default=100,
                   help=f"optimization steps, 0-{types.MAX_STEPS} (default: 100)")
    a.add_argument("--seed", type=types.seed, default=0,
                   help="seed of the random crops and noise, and of --weights random "
                        "(default: 0)")
    add_size_arg(a)
    a.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    a.add_argument("--out", required=True, type=types.image_out,
                   help="image file: the photo, the accentuated image and where it changed")
    a.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Accentuate, write the strip and print the objective before and after and the
    distance; the exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name (after the flags are checked).
    """
    from ...methods.trust.accentuation import accentuate, as_objective

    objective = as_objective(args.objective)  # a bad string is named before the model loads
    warn_if_no_steps(args.steps)
    model = load(args)
    size = input_size(model, args.size)
    img = load_image(args.image, model, size)
    result = accentuate(model, img, objective, layer=args.layer, weight=args.weight,
                        steps=args.steps, seed=args.seed, progress=not args.no_progress)
    result.save(args.out)
    print(f"{result.objective}: {result.before:.4g} on the photo, {result.after:.4g} "
          f"accentuated; distance at {result.layer}: {result.distance:.3f} (relative to the "
          f"photo's activations); wrote {args.out}")
    return 0
