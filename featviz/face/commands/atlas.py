"""``featviz atlas``: an activation atlas of a layer over a folder of photos, or a class
atlas (``--class``), as a PNG and a hoverable HTML page."""

from __future__ import annotations

import argparse

from ...errors import FeatvizError
from .. import arguments as types
from .common import Loader, add_model_args, add_size_arg


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz atlas`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    a = subparsers.add_parser("atlas", help="an activation atlas of a layer over a folder of "
                                            "photos (PNG and a hoverable HTML page); --class "
                                            "for a class atlas")
    a.add_argument("images", type=types.existing_folder,
                   help="folder of photos (with a labels.tsv for their classes)")
    add_model_args(a)
    a.add_argument("--layer", required=True, help="a layer with a spatial map")
    a.add_argument("--store", required=True, type=types.folder_out,
                   help="folder of the collected vectors; run again to continue or reuse it")
    a.add_argument("--positions", type=types.positions, default="all",
                   help="positions per photo: all (default) or a number of random ones")
    a.add_argument("--class", dest="classes", action="append", default=[], metavar="CLASS",
                   help="a class atlas of this class (name or index); twice compares two")
    a.add_argument("--top", type=types.positive_float, default=0.02,
                   help="class atlas: the fraction of all vectors kept, those with the "
                        "largest attribution to the class (default: 0.02)")
    a.add_argument("--grid", type=types.whole_number(1, 100), default=20,
                   help="cells a side, 1-100 (default: 20)")
    a.add_argument("--min-count", type=types.whole_number(1), default=3,
                   help="drop cells with fewer vectors (default: 3)")
    a.add_argument("--layout", choices=["auto", "umap", "tsne"], default="auto",
                   help="auto (default): umap where umap-learn is installed, else tsne")
    a.add_argument("--fit-on", type=types.whole_number(10), default=20000,
                   help="vectors the layout is fitted on, the rest placed (default: 20000)")
    a.add_argument("--cell", type=types.whole_number(types.MIN_SIZE, 256), default=32,
                   help="pixels of each cell's render (default: 32)")
    a.add_argument("--steps", type=types.whole_number(1, types.MAX_STEPS), default=256,
                   help=f"render steps, 1-{types.MAX_STEPS} (default: 256)")
    a.add_argument("--batch-size", type=types.whole_number(1, 4096), default=32,
                   help="photos per batch when collecting (default: 32)")
    add_size_arg(a, "photo size")
    a.add_argument("--seed", type=types.seed, default=0, help="seed of layout and render")
    a.add_argument("--png", type=types.image_out, help="also write the atlas image")
    a.add_argument("--out", required=True, type=types.file_out,
                   help="a self-contained .html page")
    a.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Collect the vectors (or reuse the store), lay them out, render the cells and write
    the page (and ``--png``); the exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name.
    """
    from ...core.hooks import resolve_layer
    from ...methods import atlas, atlas_store
    from .. import atlas_page

    model = load(args)
    resolve_layer(model, args.layer)  # an unknown layer fails before any work
    if len(args.classes) > 2:
        raise FeatvizError(f"--class: give one class, or two to compare, not "
                           f"{len(args.classes)}")
    classes = [int(c) if c.isdigit() else c for c in args.classes]
    store = atlas_store.collect(model, args.images, args.layer, args.store, size=args.size,
                                batch_size=args.batch_size, positions=args.positions,
                                seed=args.seed, attribute=classes)
    kw = {"min_count": args.min_count, "cell": args.cell, "steps": args.steps,
          "seed": args.seed, "method": args.layout}
    if classes:
        made = atlas.class_atlas(model, store, classes, args.grid, top=args.top, **kw)
    else:
        made = atlas.activation_atlas(model, store, args.grid, fit_on=args.fit_on, **kw)
    if args.png:
        made.save(args.png)
        print(f"wrote {args.png}")
    atlas_page.write(made, store, args.out)
    print(f"{len(store)} vectors; " + ", ".join(f"{k} {v:.0f} s"
                                                for k, v in made.seconds.items()))
    print(f"wrote {args.out}")
    return 0
