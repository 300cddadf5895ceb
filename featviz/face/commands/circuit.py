"""``featviz circuit``: one unit and its strongest connections (expanded weights from an
earlier layer, Zoom In), each shown by its feature visualization beside its weight map."""

from __future__ import annotations

import argparse

from .. import arguments as types
from .common import Loader, add_model_args


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz circuit`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    c = subparsers.add_parser("circuit", help="a unit's strongest incoming (and outgoing) "
                                              "connections, with their feature visualizations")
    add_model_args(c)
    c.add_argument("--unit", required=True, help="LAYER:CHANNEL, e.g. mixed4c:447")
    c.add_argument("--source", required=True, help="the earlier layer that feeds the unit")
    c.add_argument("--next", dest="next_layer", help="a later layer: also show the units the "
                                                     "unit excites most there")
    c.add_argument("--top", type=types.whole_number(1, 32), default=4,
                   help="connections of each sign (default: 4)")
    c.add_argument("--steps", type=types.steps, default=256,
                   help="render steps of each feature visualization (default: 256)")
    c.add_argument("--seed", type=types.seed, default=0, help="render seed (default: 0)")
    c.add_argument("--cache", type=types.folder_out,
                   help="a folder that keeps the renders, so the next figure reuses them")
    c.add_argument("--out", required=True, type=types.image_out, help="the figure (.png)")
    c.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Compute the expanded weights, render the units in one batch and write the figure;
    print the connections; the exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name.
    """
    from ...methods import circuits

    model = load(args)
    cache = circuits.RenderCache(steps=args.steps, seed=args.seed, folder=args.cache)
    found = circuits.circuit(model, args.unit, args.source, k=args.top,
                             next_layer=args.next_layer, cache=cache, path=args.out)
    layer, channel = found.unit
    for kind, conns, where in (("excited by", found.excites, args.source),
                               ("inhibited by", found.inhibits, args.source),
                               ("excites", found.feeds, args.next_layer)):
        if conns:
            shown = ", ".join(f"{where}:{c.channel} ({c.strength:+.3g})" for c in conns)
            print(f"{layer}:{channel} {kind} {shown}")
    print(f"wrote {args.out}")
    return 0
