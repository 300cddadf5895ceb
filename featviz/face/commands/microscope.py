"""``featviz microscope``: a static site with every view of every unit of chosen layers;
resumable, and split over ranks under ``torchrun``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import arguments as types
from .common import Loader, add_model_args


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz microscope`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    m = subparsers.add_parser(
        "microscope", help="a static site with every view of every unit of layers",
        description="Write a static site (SITE/index.html, SITE/LAYER/index.html, "
                    "SITE/LAYER/UNIT.html) with every unit's feature visualization, facets, "
                    "dataset examples, top classes, tuning curves and strongest connections. "
                    "Run the same command again to resume; under `torchrun --nproc_per_node "
                    "N -m featviz microscope ...` the ranks share the work.")
    add_model_args(m)
    m.add_argument("--layers", required=True, type=types.layer_list,
                   help="comma-separated layers, in order (neighbours are joined by their "
                        "expanded weights)")
    m.add_argument("--units", default="all",
                   help="units of each layer: all (default), a range 0-31 or a list 1,5,9")
    m.add_argument("--images", type=types.existing_folder,
                   help="folder of photos (labels.tsv for classes): dataset examples, "
                        "DeepDream, caricatures, neuron groups, top classes")
    setting = m.add_mutually_exclusive_group()
    setting.add_argument("--quick", dest="setting", action="store_const", const="quick",
                         help="a preview (the default): 64 steps at 128 px, 2 facets, ...")
    setting.add_argument("--full", dest="setting", action="store_const", const="full",
                         help="512 steps at 224 px, 4 facets, four stimulus families, ...")
    m.set_defaults(setting="quick")
    m.add_argument("--steps", type=types.whole_number(1, types.MAX_STEPS),
                   help="feature-visualization steps (default: the setting's)")
    m.add_argument("--size", type=types.whole_number(8, 4096), help="image side in pixels")
    m.add_argument("--facets", type=types.whole_number(0, 16), help="facets per unit (0: none)")
    m.add_argument("--families", type=types.layer_list,
                   help="stimulus families for tuning curves, e.g. curves,high_low")
    m.add_argument("--out", required=True, type=types.folder_out, help="the site's folder")
    m.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Build this rank's share of the site; rank 0 writes the pages. The exit status: 0, or
    130 when interrupted.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name.
    """
    from .. import microscope, sweep

    sweep.parse_channel_spec(args.units)  # a typo fails before the model loads
    weights = args.weights
    shown = Path(weights).name if weights and Path(str(weights)).is_file() else weights
    with sweep.distributed(args.device) as (rank, world, device):
        args.device = device
        model = load(args)
        result = microscope.microscope(
            model, args.out, args.layers, units=args.units, images=args.images,
            setting=args.setting,
            model_name=args.model, weights=shown, rank=rank, world_size=world,
            steps=args.steps, size=args.size, facets=args.facets, families=args.families)
    if result.interrupted:
        return 130
    if result.index is not None:
        print(f"open {result.index}")
    return 0
