"""``featviz erf``: the effective receptive fields of layers (Luo et al.), beside their
theoretical ones, as heat maps and radial profiles."""

from __future__ import annotations

import argparse

from ...methods.receptive_field import ERF_WEIGHTS
from .. import arguments as types
from .common import Loader, add_model_args, add_size_arg


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz erf`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    e = subparsers.add_parser("erf", help="effective (and theoretical) receptive fields of "
                                          "layers")
    add_model_args(e)
    e.add_argument("--layers", required=True, type=types.layer_list,
                   help="comma-separated layers")
    add_size_arg(e, "input size")
    e.add_argument("--samples", type=types.samples, default=32,
                   help=f"inputs the gradients are averaged over, 1-{types.MAX_STEPS} "
                        "(default: 32)")
    e.add_argument("--inputs", default="noise", help="'noise' (default) or a folder of images")
    e.add_argument("--init", default="trained", choices=ERF_WEIGHTS,
                   help="the model's weights, re-initialized ones, or Luo's uniform case")
    e.add_argument("--channel", type=types.index,
                   help="one channel (default: the sum over channels)")
    e.add_argument("--out", required=True, type=types.plot_out,
                   help="figure file (.png, .pdf, .svg, ...): heat maps and radial profiles")
    e.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Measure the fields, plot them and print the table; the exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name.
    """
    from ...methods import receptive_field

    model = load(args)
    fields = receptive_field.effective_layers(
        model, args.layers, input_size=args.size, samples=args.samples, inputs=args.inputs,
        weights=args.init, channel=args.channel)
    fields.plot(args.out)
    print(fields.table())
    print(f"wrote {args.out}")
    return 0
