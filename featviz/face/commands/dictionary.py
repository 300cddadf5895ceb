"""``featviz dictionary train|show``: a sparse dictionary (SAE) of one layer, trained from a
photo folder and shown feature by feature beside the layer's neurons."""

from __future__ import annotations

import argparse

from .. import arguments as types
from .common import Loader, add_model_args


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz dictionary`` with its two steps, ``train`` and ``show``.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    d = subparsers.add_parser(
        "dictionary", help="sparse-autoencoder features of a layer: train, then show",
        description="Step 1, `train`: collect the layer's activation vectors over the photos "
                    "(OUT/store), train a TopK sparse autoencoder (OUT/sae) and measure it "
                    "(OUT/measures.json: FVU, L0, dead features, top-1 with the layer "
                    "spliced). Step 2, `show`: find every feature's and neuron's top patches, "
                    "score how single-minded each is, render the most and least "
                    "single-minded and write OUT/page/index.html and OUT/sheet.png. Both "
                    "resume where an interrupted run stopped.")
    steps = d.add_subparsers(dest="step", required=True, help="train first, then show")
    _add_train(steps.add_parser("train", help="collect, train and measure"))
    _add_show(steps.add_parser("show", help="search, score, render and write the page"))
    d.set_defaults(run=run)


def _add_common(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--images", required=True, type=types.existing_folder,
                   help="folder of photos (labels.tsv gives classes and the splice's top-1)")
    p.add_argument("--out", required=True, type=types.folder_out,
                   help="the run's folder (store, dictionary, measures, page)")


def _add_train(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--layer", required=True, help="the layer, e.g. mixed3b or blocks.8")
    p.add_argument("--features", type=types.whole_number(1),
                   help="dictionary size (default: 8 x the layer's channels)")
    p.add_argument("--k", type=types.whole_number(1), default=32,
                   help="features active per vector, TopK (default: 32)")
    p.add_argument("--epochs", type=types.whole_number(1), default=4,
                   help="passes over the stored vectors (default: 4)")
    p.add_argument("--batch", type=types.whole_number(1), default=4096,
                   help="vectors per training step (default: 4096)")
    p.add_argument("--lr", type=types.positive_float,
                   help="Adam's learning rate (default: 2e-4 scaled by the dictionary size)")
    p.add_argument("--limit", type=types.whole_number(1),
                   help="use only this many photos, spread through the folder")
    p.add_argument("--positions", default="all", type=types.positions,
                   help="all (default) positions of each photo, or this many random ones")
    p.add_argument("--classic", choices=("nmf", "dictionary"),
                   help="scikit-learn's NMF or dictionary learning instead of a TopK SAE")
    p.add_argument("--seed", type=types.seed, default=0, help="training seed (default: 0)")


def _add_show(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--sae", type=types.existing_file,
                   help="a dictionary trained elsewhere (a state_dict with W_enc, b_enc, "
                        "W_dec, b_dec) instead of OUT/sae/sae.pt; with --layer, the store "
                        "is collected first where OUT has none")
    p.add_argument("--layer", help="the layer --sae reads (where OUT has no store yet)")
    p.add_argument("--limit", type=types.whole_number(1),
                   help="with --sae and no store: collect only this many photos")
    p.add_argument("--shown", type=types.whole_number(0, 64), default=6,
                   help="most and least single-minded units of each kind shown (default: 6)")
    p.add_argument("--features", type=types.channel_list, default=[],
                   help="features to show besides those, e.g. 3,17")
    p.add_argument("--neurons", type=types.channel_list, default=[],
                   help="neurons to show besides those")
    p.add_argument("--top", type=types.whole_number(2, 64), default=9,
                   help="top patches per unit (default: 9)")
    p.add_argument("--steps", type=types.steps, default=128,
                   help="render steps of each unit (default: 128)")
    p.add_argument("--size", type=types.whole_number(8, 4096), default=128,
                   help="render side in pixels (default: 128)")


def run(args: argparse.Namespace, load: Loader) -> int:
    """Run the step the command line names (``train`` or ``show``); its exit status.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name.
    """
    return (run_train if args.step == "train" else run_show)(args, load)


def run_train(args: argparse.Namespace, load: Loader) -> int:
    """Collect, train and measure; print the measures. The exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name.
    """
    from ...errors import FeatvizError
    from .. import dictionary_run

    if args.features is not None and args.k > args.features:  # before any photo is read
        raise FeatvizError(f"--k {args.k} must be at most --features {args.features} (k is "
                           "how many of the dictionary's features may be active at once)")
    model = load(args)
    m = dictionary_run.train_layer(
        model, args.layer, args.images, args.out, limit=args.limit, positions=args.positions,
        classic=args.classic, n_features=args.features, k=args.k, **_training(args))
    print(", ".join(f"{k} {v}" for k, v in m.items() if k != "settings"))
    return 0


def _training(args: argparse.Namespace) -> dict:
    """The TopK training's flags (scikit-learn's take only the size, k and seed)."""
    if args.classic:
        return {"seed": args.seed}
    return {"epochs": args.epochs, "batch_size": args.batch, "lr": args.lr, "seed": args.seed}


def run_show(args: argparse.Namespace, load: Loader) -> int:
    """Search, score, render and write the page; print where. The exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name.
    """
    from ...methods.dictionary import SparseAutoencoder
    from .. import dictionary_run

    model = load(args)
    sae = SparseAutoencoder.load(args.sae) if args.sae else None
    dictionary_run.show_layer(model, args.out, args.images, sae=sae, layer=args.layer,
                              limit=args.limit, shown=args.shown,
                              features=args.features, neurons=args.neurons, k=args.top,
                              steps=args.steps, render_size=args.size)
    return 0
