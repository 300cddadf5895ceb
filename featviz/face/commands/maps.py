"""``featviz maps``: what every layer holds for an image, as a self-contained HTML report
(channel grids, histograms, the top classes)."""

from __future__ import annotations

import argparse

from ...core.model_info import input_size
from .. import arguments as types
from .common import Loader, add_model_args, add_size_arg, load_image


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz maps`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    mp = subparsers.add_parser("maps", help="browse what every layer holds for an image (HTML "
                                            "report)")
    mp.add_argument("image", type=types.existing_file, help="image file")
    add_model_args(mp)
    mp.add_argument("--layers", default="all", type=types.layer_list,
                    help="'all' (default) or comma-separated layers")
    add_size_arg(mp)
    mp.add_argument("--labels", type=types.existing_file,
                    help="class names, one per line, UTF-8 (e.g. imagenet_classes.txt)")
    mp.add_argument("--out", required=True, type=types.file_out,
                    help="a self-contained .html page")
    mp.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Write the report and print the top five classes; the exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name (after the labels file is read).
    """
    from ...methods import featuremaps

    if args.labels:
        featuremaps.read_labels(args.labels, 0)  # an unreadable file fails before the model
    model = load(args)
    size = input_size(model, args.size)
    img = load_image(args.image, model, size)
    layers = "all" if args.layers == ["all"] else args.layers
    featuremaps.report(model, img, args.out, layers=layers, labels=args.labels)
    for index, name, p in featuremaps.top_classes(model, img, 5, args.labels):
        print(f"{p:.3f}  {index}  {name}")
    print(f"wrote {args.out}")
    return 0
