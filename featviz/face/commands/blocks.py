"""``featviz blocks``: the Building Blocks views of a photo (semantic dictionary, activation
grids, neuron groups and their attribution) as one HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...core.model_info import input_size
from .. import arguments as types
from .common import Loader, add_model_args, add_size_arg, load_image


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz blocks`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    b = subparsers.add_parser("blocks", help="the Building Blocks views of a photo (semantic "
                                             "dictionary, activation grids, neuron groups) as "
                                             "one HTML page")
    b.add_argument("image", type=types.existing_file, help="image file")
    add_model_args(b)
    b.add_argument("--layer", required=True, help="layer of the dictionary and the groups")
    b.add_argument("--grid-layers", type=types.layer_list,
                   help="comma-separated layers for activation grids (default: --layer)")
    b.add_argument("--groups", type=types.whole_number(1, 64), default=6,
                   help="neuron groups, 1-64 (default: 6)")
    b.add_argument("--factorization", default="nmf", choices=["nmf", "pca", "ica"],
                   help="how groups are found: nmf (default; needs activations >= 0, as after "
                        "a ReLU), pca or ica for layers with negative values")
    b.add_argument("--top", type=types.whole_number(1, 16), default=4,
                   help="channels per position in the dictionary, 1-16 (default: 4)")
    b.add_argument("--classes", type=types.whole_number(1, 16), default=4,
                   help="top classes in the group attribution table, 1-16 (default: 4)")
    b.add_argument("--steps", type=types.whole_number(1, types.MAX_STEPS), default=256,
                   help=f"steps of every render, 1-{types.MAX_STEPS} (default: 256)")
    b.add_argument("--render-size", type=types.whole_number(types.MIN_SIZE, 512), default=96,
                   help="pixels of channel and group renders (default: 96)")
    b.add_argument("--cell", type=types.whole_number(types.MIN_SIZE, 128), default=32,
                   help="pixels of each activation-grid cell (default: 32)")
    b.add_argument("--renders", type=types.folder_out,
                   help="folder of channel renders to reuse and add to (a sweep's --out works)")
    add_size_arg(b, "photo size")
    b.add_argument("--seed", type=types.seed, default=0, help="seed of every render")
    b.add_argument("--out", required=True, type=types.file_out,
                   help="a self-contained .html page")
    b.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Make the views, write the page and print the time of each; the exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name.
    """
    from ...core.hooks import resolve_layer
    from ...methods.building_blocks import building_blocks
    from .. import blocks_page

    model = load(args)
    for name in [args.layer, *(args.grid_layers or [])]:
        resolve_layer(model, name)  # an unknown layer fails before any render
    img = load_image(args.image, model, input_size(model, args.size))
    blocks = building_blocks(model, img, args.layer, grid_layers=args.grid_layers,
                             groups=args.groups, n=args.top, classes=args.classes,
                             size=args.render_size, cell=args.cell, steps=args.steps,
                             seed=args.seed, method=args.factorization, folder=args.renders)
    blocks_page.write(blocks, args.out, f"{Path(args.image).name}: {args.layer}")
    for name, secs in blocks.seconds.items():
        print(f"{name}: {secs:.0f} s")
    print(f"wrote {args.out}")
    return 0
