"""``featviz paths``: the path check (Geirhos et al. 2023) of every picture of a sweep folder,
recorded beside them so that the gallery and the microscope show it."""

from __future__ import annotations

import argparse

from .. import arguments as types
from .common import Loader, add_model_args


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz paths`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    p = subparsers.add_parser(
        "paths", help="check whether a sweep's pictures are processed like the photos that "
                      "drive their units (path similarity)")
    p.add_argument("folder", help="a folder written by `featviz sweep --out`")
    add_model_args(p)
    p.add_argument("--images", required=True,
                   help="folder of photos to compare with (its labels.tsv, if any, gives the "
                        "top class's photos)")
    p.add_argument("--labels", type=types.existing_file,
                   help="labels file (tab-separated: file, class_name/class_index) for --images")
    p.add_argument("--k", type=types.positive, default=10,
                   help="top photos per unit (default: 10)")
    p.add_argument("--randoms", type=types.positive, default=20,
                   help="random photos, the baseline (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random photos (default: 0)")
    p.add_argument("--measure", choices=("attribution", "activation"), default="attribution",
                   help="an image's profile at a layer: which channels carry the unit's "
                        "activation (attribution, default) or each channel's mean activation "
                        "(activation, Geirhos et al.'s comparison)")
    p.add_argument("--batch-size", type=types.positive, default=32,
                   help="photos per forward pass (default: 32)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Check the units not checked yet, write ``FOLDER/paths.json`` and print each unit's
    numbers; the exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name.
    """
    from ...methods import dataset
    from .. import path_check
    from ..sweep import collect

    collect(args.folder)  # a folder that is no sweep fails before the model loads
    dataset.labelled(args.images, args.labels)
    model = load(args)
    out = path_check.check_sweep(model, args.folder, args.images, k=args.k,
                                 randoms=args.randoms, seed=args.seed,
                                 batch_size=args.batch_size, labels=args.labels,
                                 measure=args.measure)
    for unit, check in path_check.read(args.folder).items():
        print(f"{unit}: {path_check.caption(check) or 'no number (too few photos)'}")
    print(f"wrote {out}; `featviz gallery {args.folder}` shows the numbers beside the pictures")
    return 0
